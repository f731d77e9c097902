"""Event loops that show what rawsys.aio registers, and hooks to cancel at each await point.

``TrackingLoop`` (asyncio's selector loop) and ``TrackingUvLoop`` (uvloop's,
when uvloop is installed) record, through the public ``add_reader`` /
``remove_reader`` / ``add_writer`` / ``remove_writer`` calls, which fds have
a reader or writer registered.  For the selector loop the record is checked
against the selector's own map too.  Two hooks let a test cancel a task at a
chosen await point:

* ``cancel_at_registration(task, n)``: the n-th time a reader or writer is
  registered, cancel *task* while it is parked on the readiness future;
* ``cancel_at_wakeup(task, n)``: the n-th time a registered fd turns ready,
  run the loop's callback (which wakes the task) and cancel *task* before it
  resumes -- the race of a message arriving just before a cancellation.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any, Callable, Coroutine, List, Set, TypeVar

import pytest

T = TypeVar("T")

try:
    import uvloop
except ImportError:  # pragma: no cover - uvloop is in the test extras
    uvloop = None


class _Tracking:
    """Mixin recording registered readers/writers, with cancellation hooks."""

    readers: Set[int]
    writers: Set[int]
    registrations: int
    wakeups: int
    _on_register: Callable[[int], None] | None
    _on_wakeup: Callable[[int], None] | None

    def _track(self) -> None:
        self.readers = set()
        self.writers = set()
        self.registrations = 0
        self.wakeups = 0
        self._on_register = None
        self._on_wakeup = None

    def _wrap(self, fd: int, callback: Callable[..., Any], args: Any) -> Callable[[], None]:
        def fire() -> None:
            callback(*args)
            self.wakeups += 1
            if self._on_wakeup is not None:
                self._on_wakeup(fd)
        return fire

    def _registered(self, fd: int) -> None:
        self.registrations += 1
        if self._on_register is not None:
            self._on_register(fd)

    def _add(self, writing: bool, fd: Any, callback: Callable[..., Any], args: Any) -> None:
        fd = fd if isinstance(fd, int) else fd.fileno()
        base = super()
        add = base.add_writer if writing else base.add_reader  # type: ignore[attr-defined]
        add(fd, self._wrap(fd, callback, args))
        (self.writers if writing else self.readers).add(fd)
        self._registered(fd)

    def _remove(self, writing: bool, fd: Any) -> bool:
        fd = fd if isinstance(fd, int) else fd.fileno()
        (self.writers if writing else self.readers).discard(fd)
        base = super()
        remove = base.remove_writer if writing else base.remove_reader  # type: ignore[attr-defined]
        return bool(remove(fd))

    def add_reader(self, fd: Any, callback: Callable[..., Any], *args: Any) -> None:
        self._add(False, fd, callback, args)

    def remove_reader(self, fd: Any) -> bool:
        return self._remove(False, fd)

    def add_writer(self, fd: Any, callback: Callable[..., Any], *args: Any) -> None:
        self._add(True, fd, callback, args)

    def remove_writer(self, fd: Any) -> bool:
        return self._remove(True, fd)

    def cancel_at_registration(self, task: asyncio.Task[Any], n: int, fd: int) -> None:
        """At the n-th registration for *fd*, cancel *task* (which then parks on it)."""
        count = [0]

        def hook(registered: int) -> None:
            if registered == fd:
                count[0] += 1
                if count[0] == n:
                    asyncio.get_running_loop().call_soon(task.cancel)
        self._on_register = hook

    def cancel_at_wakeup(self, task: asyncio.Task[Any], n: int, fd: int) -> None:
        """At the n-th time *fd* turns ready, wake its waiters and cancel *task* at once."""
        count = [0]

        def hook(ready: int) -> None:
            if ready == fd:
                count[0] += 1
                if count[0] == n:
                    task.cancel()
        self._on_wakeup = hook

    def clear_hooks(self) -> None:
        self._on_register = None
        self._on_wakeup = None

    def watched(self, fd: int) -> bool:
        """Whether *fd* has a reader or writer registered (checked two ways when possible)."""
        tracked = fd in self.readers or fd in self.writers
        selector = getattr(self, "_selector", None)
        if selector is not None:
            assert (fd in selector.get_map()) == tracked, "tracking disagrees with the selector"
        return tracked

    def watching_nothing(self) -> bool:
        """No reader or writer registered through the public API (the loop's self-pipe aside)."""
        if self.readers or self.writers:
            return False
        selector = getattr(self, "_selector", None)
        if selector is not None:
            own = {self._ssock.fileno()}  # type: ignore[attr-defined]
            return set(selector.get_map()) <= own
        return True


class TrackingLoop(_Tracking, asyncio.SelectorEventLoop):
    def __init__(self) -> None:
        super().__init__()
        self._track()


if uvloop is not None:
    class TrackingUvLoop(_Tracking, uvloop.Loop):  # type: ignore[misc, name-defined]
        def __init__(self) -> None:
            super().__init__()
            self._track()

    # uvloop keeps a few process-wide fds from its first loop on: open them now,
    # before any test counts its fds.
    _warm = uvloop.new_event_loop()
    _warm.close()


# Every test runs on asyncio's selector loop and on uvloop (skipped only if not installed):
# pytestmark = pytest.mark.parametrize("loop_kind", LOOPS)
LOOPS = [
    pytest.param("asyncio"),
    pytest.param("uvloop", marks=pytest.mark.skipif(
        uvloop is None, reason="uvloop is not installed (pip install uvloop)")),
]


def make_loop(kind: str) -> Any:
    return TrackingUvLoop() if kind == "uvloop" else TrackingLoop()


def run(kind: str, main: Callable[[Any], Coroutine[Any, Any, T]]) -> T:
    """Run ``main(loop)`` on a new tracking loop of *kind*; check it leaves nothing watched."""
    loop = make_loop(kind)
    try:
        result = loop.run_until_complete(main(loop))
        assert loop.watching_nothing(), (loop.readers, loop.writers)
        from rawsys._readiness import _WAITERS
        assert not [key for key in _WAITERS if key[0] is loop]
        return result
    finally:
        loop.close()


def open_fds() -> List[int]:
    return sorted(int(name) for name in os.listdir("/proc/self/fd"))


async def until(predicate: Callable[[], bool], limit: int = 100000) -> None:
    """Let the loop run until *predicate* holds (no clock involved)."""
    for _ in range(limit):
        if predicate():
            return
        await asyncio.sleep(0)
    raise AssertionError("condition never became true")
