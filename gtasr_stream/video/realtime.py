"""Keep this process's threads at the scheduling they had when an encoder opens.

SVT-AV1 (`libsvtav1`), opened by root, switches the thread that opens it to SCHED_FIFO at priority
99 (`switch_to_real_time` in its EbEncHandle.c), and the threads it starts inherit that; so do all
threads that thread starts later. Run as root (as in most containers), `gtasr-stream` would then
run its decode, upscale and encode threads, and the upscale thread's OpenMP team, as real-time
threads above everything else on the machine. On two cores the test suite livelocked so: two
real-time OpenMP threads spinning at a barrier, the thread they waited for never scheduled, the
whole machine down to the 5 % the kernel leaves to other tasks. Nobody asked for real time here:
`keep_scheduling` puts every thread that an open made real-time back to what it was. It reads the
threads from /proc and needs `os.sched_setscheduler`: Linux only; elsewhere it does nothing.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager, suppress

_REALTIME = tuple(getattr(os, name) for name in ("SCHED_FIFO", "SCHED_RR") if hasattr(os, name))


def _scheduling(tid: int) -> tuple[int, int] | None:
    """(policy, priority) of thread `tid` (0: the calling thread); None once it has ended."""
    try:
        return os.sched_getscheduler(tid), os.sched_getparam(tid).sched_priority
    except OSError:
        return None


def _threads() -> list[int]:
    try:
        return [int(t) for t in os.listdir("/proc/self/task")]
    except OSError:
        return []


def realtime_threads() -> list[int]:
    """The threads of this process that run under a real-time policy (FIFO or round-robin)."""
    return [t for t in _threads() if (s := _scheduling(t)) is not None and s[0] & 0xFF in _REALTIME]


@contextmanager
def keep_scheduling() -> Iterator[None]:
    """Run the body (an encoder's open); then every thread that it left real-time, the caller and
    threads it started included, gets back the scheduling it had before (a new one: the caller's)."""
    if not hasattr(os, "sched_setscheduler"):
        yield
        return
    mine = _scheduling(0)
    before = {t: _scheduling(t) for t in _threads()}
    try:
        yield
    finally:
        for t in realtime_threads():
            was = before.get(t) or mine
            if was is not None and _scheduling(t) != was:
                with suppress(OSError):  # ended meanwhile, or not ours to change
                    os.sched_setscheduler(t, was[0], os.sched_param(was[1]))
