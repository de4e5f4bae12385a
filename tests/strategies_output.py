"""Strategies for the output sink's property test: what a program prints, and
when the disk fills up and empties while it does."""

from hypothesis import strategies as st

#: One step: ("write", bytes count), ("fill",), ("free",) or ("later",): time
#: enough passes for the sink to try storing again. Writes are the most
#: common, in sizes from a byte to a few pages.
steps = st.lists(
    st.one_of(
        st.tuples(st.just("write"), st.integers(min_value=1, max_value=3_000)),
        st.tuples(st.just("write"), st.integers(min_value=1, max_value=12_000)),
        st.tuples(st.just("fill")),
        st.tuples(st.just("free")),
        st.tuples(st.just("later")),
    ),
    max_size=40,
)

#: Head and tail sizes: small enough that page boundaries and the ring's
#: wrapping come up often, or a tail the output seldom goes round.
sizes = st.tuples(st.integers(min_value=0, max_value=9_000),
                  st.one_of(st.integers(min_value=0, max_value=40_000),
                            st.integers(min_value=40_000, max_value=300_000)))
