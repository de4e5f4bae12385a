"""Bounded templates: a Jinja2 sandbox in which a template uses bounded time and memory.

Every string of a job's program, conditions and actions is a template that
whoever writes job files controls, rendered inside the server when a run is
bound. Jinja's own sandbox refuses unsafe attributes and ranges of more than
100,000 numbers; ``BoundedEnvironment`` adds, per render:

* no changes to lists, dicts and sets (``ImmutableSandboxedEnvironment``);
* at most MAX_STEPS steps (loop iterations, calls, filters, operators,
  literals) and MAX_SECONDS of time;
* every value the template makes (a literal, an operator's result, a call's
  or filter's result, a namespace attribute, an output) is measured: at most
  MAX_CHARS characters and MAX_ITEMS items in it all told (aliases counted
  as often as they occur), integers of at most MAX_INT_BITS bits; and all the
  values of one render together at most MAX_MADE;
* operations whose result would break those limits are refused before they
  allocate it: ``'x' * 10**9``, ``2 ** 10**9``, widths and counts over
  MAX_WIDTH (``center(10**9)``, ``'%1000000000d'``, ``round(-10**9)``), a
  replace, join or format that would make too long a string;
* the output is streamed and stopped past MAX_CHARS.

Crossing a limit raises ``TemplateLimit``, whose message says which.
``render(template, variables)`` is the one way in: the step and time
budget belongs to it.
"""

from __future__ import annotations

import contextvars
import functools
import re
import time
from numbers import Number

import jinja2
from jinja2 import nodes
from jinja2.sandbox import ImmutableSandboxedEnvironment, SandboxedFormatter
from jinja2.utils import Namespace
from jinja2.visitor import NodeTransformer

MAX_STEPS = 100_000
MAX_SECONDS = 1.0
MAX_CHARS = 1 << 20          # characters in one value or one output (1 MiB of text)
MAX_ITEMS = 100_000          # list, tuple, dict and set items in one value
MAX_INT_BITS = 256
MAX_WIDTH = 100_000          # a width, count or precision given to a string function
MAX_MADE = 32 << 20          # characters, plus 8 per item, of all values one render makes
ITEM_COST = 8


class TemplateLimit(Exception):
    """A template went past one of the limits; the message says which."""


class _Budget:
    __slots__ = ("steps", "made", "deadline")

    def __init__(self):
        self.steps = 0
        self.made = 0
        self.deadline = time.monotonic() + MAX_SECONDS

    def step(self):
        self.steps += 1
        if self.steps > MAX_STEPS:
            raise TemplateLimit(f"more than {MAX_STEPS:,} steps (loop iterations, calls, "
                                "filters and operations)")
        if time.monotonic() > self.deadline:
            raise TemplateLimit(f"took more than {MAX_SECONDS:g} s")

    def make(self, size):
        self.made += size
        if self.made > MAX_MADE:
            raise TemplateLimit(f"made more than {MAX_MADE >> 20} MiB of values")


_BUDGET: contextvars.ContextVar[_Budget | None] = contextvars.ContextVar("template_budget", default=None)


def _step():
    budget = _BUDGET.get()
    if budget is not None:
        budget.step()


def measure(value) -> tuple[int, int]:
    """``(characters, items)`` in ``value`` all told; TemplateLimit past MAX_CHARS or MAX_ITEMS.

    Shared parts count as often as they occur (as printing them would), and
    the walk stops at the limits, so it is cheap even for a value built by
    doubling a list on itself.
    """
    chars = items = 0
    stack = [value]
    while stack:
        v = stack.pop()
        if isinstance(v, (str, bytes)):
            chars += len(v)
            if chars > MAX_CHARS:
                raise TemplateLimit(f"a value of more than {MAX_CHARS:,} characters")
        elif isinstance(v, int):
            if v.bit_length() > MAX_INT_BITS:
                raise TemplateLimit(f"an integer of more than {MAX_INT_BITS} bits")
        elif isinstance(v, (list, tuple, set, frozenset, dict, Namespace)):
            if isinstance(v, Namespace):
                v = v._Namespace__attrs  # its attributes (a dict); Jinja keeps them private
            items += len(v)
            if items > MAX_ITEMS:
                raise TemplateLimit(f"a value of more than {MAX_ITEMS:,} items")
            if isinstance(v, dict):
                stack.extend(v.keys())
                stack.extend(v.values())
            else:
                stack.extend(v)
    return chars, items


def _made(value):
    """``value``, measured and charged to the render's budget."""
    chars, items = measure(value)
    budget = _BUDGET.get()
    if budget is not None:
        budget.make(chars + ITEM_COST * items)
    return value


def _too_long(what, n):
    return TemplateLimit(f"{what} would make {n:,} characters (at most {MAX_CHARS:,})")


def _width(n, what="width"):
    if isinstance(n, int) and not isinstance(n, bool) and abs(n) > MAX_WIDTH:
        raise TemplateLimit(f"{what} {n:,} is too large (at most {MAX_WIDTH:,})")


# --------------------------------------------------------------------------
# Operators.

_PERCENT_SPEC = re.compile(r"%(?:\([^)]*\))?[-#0 +]*(\*|\d+)?(?:\.(\*|\d+))?[hlL]?([a-zA-Z%])")


def _check_percent(fmt, args):
    """Refuse ``fmt % args`` if a width is too large or the result could be too long."""
    chars = None
    size = len(fmt)
    for width, precision, conv in _PERCENT_SPEC.findall(fmt):
        for n in (width, precision):
            if n == "*":
                raise TemplateLimit("'*' widths are not allowed in templates")
            if n:
                _width(int(n))
        if conv != "%":
            if chars is None:
                chars, _ = measure(args)
            # A conversion shows at most all of the args' text, or a number
            # (at most MAX_INT_BITS bits), padded to its width or precision.
            size += chars + 100 + max(int(width or 0), int(precision or 0))
    if size > MAX_CHARS:
        raise _too_long("formatting", size)


def _check_binop(op, left, right):
    if op == "*":
        for seq, n in ((left, right), (right, left)):
            if isinstance(seq, (str, bytes, list, tuple)) and isinstance(n, int):
                chars, items = measure(seq)
                n = max(n, 0)
                if chars * n > MAX_CHARS:
                    raise _too_long("repetition", chars * n)
                if items * n > MAX_ITEMS:
                    raise TemplateLimit(f"repetition would make {items * n:,} items (at most {MAX_ITEMS:,})")
                return
        if isinstance(left, int) and isinstance(right, int):
            if left.bit_length() + right.bit_length() > MAX_INT_BITS + 1:
                raise TemplateLimit(f"an integer of more than {MAX_INT_BITS} bits")
    elif op == "**":
        if isinstance(left, int) and isinstance(right, int) and right > 0 and abs(left) > 1:
            if (abs(left).bit_length() - 1) * right > MAX_INT_BITS:
                raise TemplateLimit(f"an integer of more than {MAX_INT_BITS} bits")
    elif op == "+":
        if isinstance(left, (str, bytes, list, tuple)) and isinstance(right, (str, bytes, list, tuple)):
            (c1, i1), (c2, i2) = measure(left), measure(right)
            if c1 + c2 > MAX_CHARS:
                raise _too_long("joining", c1 + c2)
            if i1 + i2 > MAX_ITEMS:
                raise TemplateLimit(f"joining would make {i1 + i2:,} items (at most {MAX_ITEMS:,})")
    elif op == "%":
        if isinstance(left, (str, bytes)):
            _check_percent(left if isinstance(left, str) else left.decode("latin-1"), right)


# --------------------------------------------------------------------------
# Calls: string methods that can make long strings, and filters.


def _check_str_method(name, s, args, kwargs):
    """Refuse a call of ``s.name(...)`` (s a str or bytes) whose result would be too long."""
    if name in ("center", "ljust", "rjust", "zfill"):
        for n in (*args, *kwargs.values()):
            _width(n)
    elif name == "expandtabs":
        size = args[0] if args else kwargs.get("tabsize", 8)
        _width(size, "tab size")
        if isinstance(size, int) and len(s) * max(size, 1) > MAX_CHARS:
            bound = len(s) + s.count("\t" if isinstance(s, str) else b"\t") * max(size, 0)
            if bound > MAX_CHARS:
                raise _too_long("expandtabs", bound)
    elif name == "replace" and len(args) >= 2:
        old, new = args[0], args[1]
        if isinstance(old, type(s)) and isinstance(new, type(s)):
            count = s.count(old) if old else len(s) + 1
            if len(args) > 2 and isinstance(args[2], int) and args[2] >= 0:
                count = min(count, args[2])
            size = len(s) + count * (len(new) - len(old))
            if size > MAX_CHARS:
                raise _too_long("replace", size)
    elif name == "join" and args:
        items = args[0]
        if not isinstance(items, (list, tuple, str)):
            raise TemplateLimit("join takes a list in templates (add |list)")
        chars, _ = measure(items)
        size = chars + len(s) * max(len(items) - 1, 0)
        if size > MAX_CHARS:
            raise _too_long("join", size)
    elif name == "translate":
        raise TemplateLimit("translate is not allowed in templates")


def _check_filter(name, value, args, kwargs):
    """Refuse a filter call whose result would break the limits, before it is made."""
    if name in _WIDTH_FILTERS:
        for n in (*args, *kwargs.values()):
            _width(n, f"{name}: {'precision' if name == 'round' else 'width or count'}")
        if name == "indent":
            _check_indent(value, args[0] if args else kwargs.get("width", 4))
    elif name == "replace" and len(args) >= 2 and isinstance(value, str):
        _check_str_method("replace", value, tuple(str(a) for a in args[:2]) + tuple(args[2:]), {})
    elif name == "format" and isinstance(value, str):
        _check_percent(value, kwargs or args)
    elif name == "join":
        sep = args[0] if args else kwargs.get("d", "")
        chars, _ = measure(value)
        size = chars + len(str(sep)) * max(len(value) - 1, 0)
        if size > MAX_CHARS:
            raise _too_long("join", size)
    elif name == "sum":
        start = args[1] if len(args) > 1 else kwargs.get("start", 0)
        if not isinstance(start, Number):
            raise TemplateLimit("sum adds numbers in templates (start must be a number)")


def _check_indent(value, width):
    """Refuse ``value|indent(width)`` if it would make too long a string (``width``: spaces or a text)."""
    if isinstance(value, str) and isinstance(width, (str, int)):
        pad = len(width) if isinstance(width, str) else max(width, 0)
        size = len(value) + (value.count("\n") + 1) * pad
        if size > MAX_CHARS:
            raise _too_long("indent", size)


# Filters whose number arguments are widths, counts or precisions.
_WIDTH_FILTERS = frozenset({"center", "indent", "wordwrap", "truncate", "batch", "slice",
                            "tojson", "urlize", "round", "filesizeformat"})


def _bounded_filter(name, func):
    """``func`` as a filter that is checked before and measured after."""
    value_at = 1 if getattr(func, "jinja_pass_arg", None) is not None else 0

    @functools.wraps(func)  # keeps jinja_pass_arg: the filter gets what it asked for
    def filter_(*args, **kwargs):
        _step()
        if len(args) > value_at:
            if name == "join" and not isinstance(args[value_at], (list, tuple, str)):
                # Measured before it is joined: an iterator is gone once read.
                args = (*args[:value_at], list(_counted(args[value_at])), *args[value_at + 1:])
            _check_filter(name, args[value_at], args[value_at + 1:], kwargs)
        return _made(func(*args, **kwargs))

    return filter_


def _counted(iterable):
    """``iterable``, one step per item."""
    for item in iterable:
        _step()
        yield item


class _BoundedFormatter(SandboxedFormatter):
    """str.format in templates: widths and precisions bounded, the result too."""

    def __init__(self, env):
        super().__init__(env)
        self.size = 0

    def format_field(self, value, format_spec):
        for n in re.findall(r"\d+", format_spec):
            _width(int(n), "format width or precision")
        text = super().format_field(value, format_spec)
        self.size += len(text)
        if self.size > MAX_CHARS:
            raise _too_long("format", self.size)
        return text


class _BoundedNamespace(Namespace):
    """``namespace()``: what is stored in it is measured."""

    def __setitem__(self, name, value):
        _step()
        measure(value)
        super().__setitem__(name, value)


# --------------------------------------------------------------------------
# The environment.


def _internal(func):
    # pass_context: never evaluated when the template is compiled, only when rendered.
    return jinja2.pass_context(lambda context, value: func(value))


def _value(value):
    _step()
    return _made(value)


def _concat(parts):
    _step()
    texts, size = [], 0
    for part in parts:  # each part is a measured value: its text is bounded
        texts.append(str(part))
        size += len(texts[-1])
        if size > MAX_CHARS:
            raise _too_long("'~'", size)
    return _made("".join(texts))


def _range(*args):
    """``range`` with at most MAX_ITEMS numbers."""
    numbers = range(*args)
    if len(numbers) > MAX_ITEMS:
        raise TemplateLimit(f"a range of {len(numbers):,} numbers (at most {MAX_ITEMS:,})")
    return numbers


def _filter(node, name):
    return nodes.Filter(node, name, [], [], None, None, lineno=node.lineno)


class _Bounding(NodeTransformer):
    """Routes loops, literals and ``~`` through the internal filters that count and measure them."""

    def visit_For(self, node):
        self.generic_visit(node)
        node.iter = _filter(node.iter, "_steps")
        return node

    def visit_Concat(self, node):
        self.generic_visit(node)
        return _filter(nodes.List(node.nodes, lineno=node.lineno), "_concat")

    def _literal(self, node):
        self.generic_visit(node)
        if getattr(node, "ctx", "load") != "load":
            return node  # an assignment target: {% for a, b in ... %}
        return _filter(node, "_value")

    visit_List = visit_Tuple = visit_Dict = _literal


def _bounded_concat(parts):
    """Joins a block's output (a macro, ``{% set %}...{% endset %}``, a filter block)."""
    out, size = [], 0
    for part in parts:
        size += len(part)
        if size > MAX_CHARS:
            raise _too_long("a block", size)
        out.append(part)
    return "".join(out)


def _finalize(value):
    measure(value)
    return value


class BoundedEnvironment(ImmutableSandboxedEnvironment):
    """The sandbox with the limits of this module; render with ``render()``."""

    intercepted_binops = frozenset({"+", "-", "*", "/", "//", "%", "**"})

    def __init__(self, **options):
        super().__init__(finalize=_finalize, **options)
        self.concat = _bounded_concat
        self.globals.pop("lipsum", None)  # makes as many paragraphs as asked
        self.globals["namespace"] = _BoundedNamespace
        self.globals["range"] = _range
        self.filters = {name: _bounded_filter(name, f) for name, f in self.filters.items()}
        self.filters.update(_steps=_internal(_counted), _value=_internal(_value),
                            _concat=_internal(_concat))

    def add_filters(self, **filters):
        """Add filters, bounded like the built-in ones."""
        self.filters.update({name: _bounded_filter(name, f) for name, f in filters.items()})

    def _parse(self, source, name, filename):
        tree = super()._parse(source, name, filename)
        tree = _Bounding().visit(tree)
        tree.set_environment(self)
        return tree

    def call_binop(self, context, operator, left, right):
        _step()
        _check_binop(operator, left, right)
        return _made(super().call_binop(context, operator, left, right))

    def call(__self, __context, __obj, *args, **kwargs):  # noqa: N805 - Jinja's own signature
        _step()
        owner = getattr(__obj, "__self__", None)
        if isinstance(owner, (str, bytes)):
            _check_str_method(getattr(__obj, "__name__", ""), owner, args, kwargs)
        return _made(super().call(__context, __obj, *args, **kwargs))

    def wrap_str_format(self, value):
        wrapper = super().wrap_str_format(value)
        if wrapper is None:
            return None
        s, is_map = value.__self__, value.__name__ == "format_map"

        def bounded(*args, **kwargs):
            if is_map:
                if kwargs or len(args) != 1:
                    raise TypeError("format_map() takes exactly one argument")
                args, kwargs = (), args[0]
            return type(s)(_BoundedFormatter(self).vformat(s, args, kwargs))

        return functools.update_wrapper(bounded, value)


def render(template: jinja2.Template, variables: dict) -> str:
    """``template`` rendered with ``variables`` within the limits; TemplateLimit if it goes past one."""
    budget = _Budget()
    token = _BUDGET.set(budget)
    try:
        out, size = [], 0
        for chunk in template.generate(variables):
            budget.step()
            size += len(chunk)
            if size > MAX_CHARS:
                raise TemplateLimit(f"output of more than {MAX_CHARS:,} characters")
            out.append(chunk)
        return "".join(out)
    finally:
        _BUDGET.reset(token)
