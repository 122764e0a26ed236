"""The latest-value hand-off between the preview's threads: why latency cannot build up.

A queue would let a slow consumer fall further and further behind a live source.  A `Latest` slot
holds one item: `put` overwrites it (counting the overwritten item as dropped if nobody took it),
the one consumer `take`s the newest, and any number of readers `wait_newer` than the sequence
number they last saw.  So every stage always works on the newest frame there is.
"""

from __future__ import annotations

import threading
import time
from typing import Generic, TypeVar

T = TypeVar("T")


class Latest(Generic[T]):
    """One item, overwritten by `put`; consumed by `take` (one consumer) or read by `wait_newer`."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._item: T | None = None
        self._seq = 0  # sequence number of `_item`; 0 = nothing put yet
        self._taken = True  # whether `take` returned `_item` already
        self._closed = False
        self.dropped = 0  # items overwritten before `take` returned them

    def put(self, item: T) -> int:
        """Store `item` as the newest; returns its sequence number (1, 2, ...)."""
        with self._cond:
            if not self._taken:
                self.dropped += 1
            self._seq += 1
            self._item, self._taken = item, False
            self._cond.notify_all()
            return self._seq

    def take(self, timeout: float) -> T | None:
        """The newest item not taken before, waiting up to `timeout` s; None on timeout or close."""
        with self._cond:
            if not self._cond.wait_for(lambda: not self._taken or self._closed, timeout):
                return None
            if self._closed:
                return None
            self._taken = True
            return self._item

    def wait_newer(self, after: int, timeout: float) -> tuple[int, T] | None:
        """(seq, item) of the newest item with seq > `after`, waiting up to `timeout` s.

        On timeout it returns the newest item even if it is not newer (None if there is none yet),
        so that callers can tell "nothing new" (seq <= after) from "nothing at all" (None).
        """
        deadline = time.monotonic() + timeout
        with self._cond:
            self._cond.wait_for(
                lambda: self._seq > after or self._closed, max(0.0, deadline - time.monotonic())
            )
            if self._item is None:
                return None
            return self._seq, self._item

    def latest(self) -> tuple[int, T] | None:
        with self._cond:
            return None if self._item is None else (self._seq, self._item)

    def close(self) -> None:
        """Wake every waiter; `take` returns None from now on."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
