"""Upkeep that runs now and then every `interval` seconds on a thread of its own (compaction,
retention): a failing round is logged and tried again at the next one."""

from __future__ import annotations

import logging
import threading

__all__ = ["Periodic"]


class Periodic:
    """Subclasses set their state, then call `__init__` (which starts the thread), and do one
    round in `round`, stopping early once `self.stopping` is set."""

    name = "periodic"  # the thread's name
    what = "upkeep"  # what a failure is logged as

    def __init__(self, interval: float, logger: logging.Logger) -> None:
        self._interval = interval
        self._logger = logger
        self.stopping = threading.Event()
        self.rounds = 0
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self._thread.start()

    def round(self) -> None:
        raise NotImplementedError

    def _run(self) -> None:
        while not self.stopping.is_set():
            try:
                self.round()
            except Exception:
                self._logger.exception("%s failed; retrying in %.0f s", self.what, self._interval)
            self.rounds += 1
            self.stopping.wait(self._interval)

    def close(self) -> None:
        self.stopping.set()
        self._thread.join()
