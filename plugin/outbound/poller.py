"""What the sender's loop waits with: epoll where there is one (no cap on descriptors, unlike
``select``), else poll; and the name of its thread as the operating system shows it."""

from __future__ import annotations

import select
import threading
from typing import Any


class Poller:
    """epoll where there is one, else poll: the same calls, timeouts in seconds."""

    def __init__(self) -> None:
        self._epoll = hasattr(select, "epoll")
        self._impl: Any = select.epoll() if self._epoll else select.poll()
        self.register, self.modify = self._impl.register, self._impl.modify
        self.unregister = self._impl.unregister

    def poll(self, timeout: float) -> list[tuple[int, int]]:
        if self._epoll:
            return self._impl.poll(timeout)  # type: ignore[no-any-return]
        return self._impl.poll(int(timeout * 1000))  # type: ignore[no-any-return]

    def close(self) -> None:
        if self._epoll:
            self._impl.close()


def name_thread(name: str) -> None:
    """Give this thread its name in the operating system too (``top -H``, ``ps -L``, and the
    benchmark's CPU split read it); Python names it only for itself."""
    try:
        with open(f"/proc/self/task/{threading.get_native_id()}/comm", "w") as comm:
            comm.write(name[:15])
    except OSError:
        pass  # not Linux, or not allowed: only the name is lost
