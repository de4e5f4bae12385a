"""Long computations on the event loop, cut into slices so that the loop is never held long.

The server's greenlets share one thread: a page, a reload or a background
task that computed for a second would hold every start due meanwhile. Such
a computation calls its ``Slices`` between small steps; once SLICE seconds
have passed since it last let others in, the call gives way (``give_way``),
then the next slice begins.
"""

import time

#: The longest stretch a computation runs between two yields (seconds).
SLICE = 0.01


def give_way():
    """Let everything else that is ready run first: under gevent, wait until the loop is
    idle (``gevent.idle``: due timers, I/O and other greenlets first; ``sleep(0)`` would
    often come straight back without the loop looking at timers or sockets); elsewhere,
    a bare yield of the thread."""
    idle = _idle()
    if idle is None:
        time.sleep(0)
    else:
        idle()


def _idle():
    if _IDLE:
        return _IDLE[0]
    idle = None
    try:
        from gevent import monkey
        if monkey.is_module_patched("time"):
            import gevent
            idle = gevent.idle
    except ImportError:  # the agent's stdlib-only world never gets here, but a plain install might
        pass
    _IDLE.append(idle)
    return idle


_IDLE = []


class Slices:
    """A pacer: call it between steps; it gives way when the current slice has lasted ``budget``."""

    def __init__(self, budget=None, clock=time.perf_counter, give_way=None):
        self.budget = SLICE if budget is None else budget
        self.clock, self._give_way = clock, give_way
        self.yields = 0
        self.began = clock()

    def __call__(self):
        if self.clock() - self.began >= self.budget:
            (self._give_way or give_way)()
            self.yields += 1
            self.began = self.clock()
