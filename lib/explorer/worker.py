"""One background thread that works on the latest request only, so slow measurements (the
artifact writer, timed forwards) never hold up the controls and never pile up behind them."""
from __future__ import annotations

import threading
import traceback
from typing import Any, Callable


class LatestOnly:
    """Runs ``work(item)`` on a daemon thread for the most recently submitted item; an item
    replaced before its turn is dropped. ``done(item, result, error)`` is called on that
    thread after each run (``error`` is the exception, ``result`` None, when ``work`` raised).
    """

    def __init__(self, work: Callable[[Any], Any],
                 done: Callable[[Any, Any, BaseException | None], None]):
        self._work, self._done = work, done
        self._pending: list[Any] = []
        self._idle = True
        self._closed = False
        self._wake = threading.Condition()
        self._thread = threading.Thread(target=self._loop, name="explorer-measure", daemon=True)
        self._thread.start()

    def submit(self, item: Any) -> None:
        with self._wake:
            self._pending[:] = [item]
            self._wake.notify()

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Block until nothing is pending or running; False when ``timeout`` ran out first."""
        with self._wake:
            return self._wake.wait_for(lambda: self._idle and not self._pending, timeout)

    def close(self) -> None:
        """Stop after the current run; pending items are dropped."""
        with self._wake:
            self._closed = True
            self._pending.clear()
            self._wake.notify_all()

    def _loop(self) -> None:
        while True:
            with self._wake:
                self._idle = True
                self._wake.notify_all()
                self._wake.wait_for(lambda: self._pending or self._closed)
                if self._closed:
                    return
                item = self._pending.pop()
                self._idle = False
            try:
                result, error = self._work(item), None
            except Exception as exc:  # reported to done(), the thread carries on
                result, error = None, exc
            try:
                self._done(item, result, error)
            except Exception:  # a failing callback must not end the thread: show it, go on
                traceback.print_exc()
