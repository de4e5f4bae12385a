#!/usr/bin/env python3
"""``apsis-lite serve`` with a probe greenlet that records the event loop's lag.

Used by ``loop_lag.py`` in place of ``python -m apsis_lite``: the probe sleeps
PROBE_STEP on the server's own event loop, again and again, and appends each
wake-up's delay beyond that and the CPU time the server's main thread used
meanwhile (``epoch lag_ms cpu_ms``) to the file named by ``LAG_PROBE_FILE``.
On a busy machine the lag also counts time the process waited for a core;
the CPU time is what the loop's own work cost: how long something held it.
"""

import os
import sys

from gevent import monkey

monkey.patch_all()

import gevent  # noqa: E402
import time  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

PROBE_STEP = 0.005
#: With LAG_PROBE_STACKS=FILE, a native thread writes the main thread's stack to FILE
#: whenever the main thread has used this much CPU since the probe last woke: where
#: the loop is held.
STALL = 0.02
_beat = [time.thread_time()]


def watchdog(path):
    import traceback
    sleep = monkey.get_original("time", "sleep")
    main_id = threading_main_ident()
    clock = time.pthread_getcpuclockid(main_id)
    seen = None
    with open(path, "a") as f:
        while True:
            sleep(0.005)
            if time.clock_gettime(clock) - _beat[0] > STALL and seen != _beat[0]:
                seen = _beat[0]
                frame = sys._current_frames().get(main_id)
                if frame is not None:
                    f.write(f"--- {time.time():.3f}\n" + "".join(traceback.format_stack(frame)[-14:]))
                    f.flush()


_MAIN = monkey.get_original("_thread", "get_ident")()  # the real thread's, as sys._current_frames() has it


def threading_main_ident():
    return _MAIN


def probe(path):
    lines = []
    with open(path, "a") as f:
        while True:
            began, cpu = time.perf_counter(), time.thread_time()
            gevent.sleep(PROBE_STEP)
            _beat[0] = time.thread_time()
            lag, held = time.perf_counter() - began - PROBE_STEP, time.thread_time() - cpu
            lines.append(f"{time.time():.4f} {lag * 1000:.2f} {held * 1000:.2f}\n")
            if len(lines) >= 100:
                f.write("".join(lines))
                f.flush()
                lines.clear()


if __name__ == "__main__":
    gevent.spawn(probe, os.environ["LAG_PROBE_FILE"])
    if os.environ.get("LAG_PROBE_STACKS"):
        monkey.get_original("_thread", "start_new_thread")(watchdog, (os.environ["LAG_PROBE_STACKS"],))
    from apsis_lite.__main__ import main
    main(sys.argv[1:])
