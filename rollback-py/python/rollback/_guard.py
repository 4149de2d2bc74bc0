"""``Stack.guard()`` and ``Stack.guard_async()``: snapshot on entry, roll back when the
block raises."""

import logging
from types import TracebackType
from typing import TYPE_CHECKING, Any, Dict, Optional, Type

if TYPE_CHECKING:
    from . import Record, Snapshot, Stack

log = logging.getLogger("rollback")


def _trigger(exc: BaseException) -> str:
    # The class name only: an exception's message may hold what must not reach a
    # record (a DSN, a token).
    return f"guard: {type(exc).__name__}"


def _attach(exc: BaseException, record: "Optional[Record]", error: Optional[BaseException]) -> None:
    for name, value in (("rollback_record", record), ("rollback_error", error)):
        try:
            setattr(exc, name, value)
        except (AttributeError, TypeError):  # an exception class with __slots__
            pass
    if record is not None:
        note = f"rollback: rolled back to snapshot {record.snapshot_id} (rollback {record.rollback_id}, status {record.status})"
    else:
        note = f"rollback: the rollback could not run: {error}"
    add_note = getattr(exc, "add_note", None)  # Python >= 3.11
    if add_note is not None:
        add_note(note)


class _Base:
    def __init__(self, stack: "Stack", snapshot: Dict[str, Any], rollback: Dict[str, Any]) -> None:
        self.stack = stack
        self._snapshot_args = snapshot
        self._rollback_args = rollback
        self.snapshot: "Optional[Snapshot]" = None
        """The snapshot taken on entry (also what ``as`` binds)."""
        self.record: "Optional[Record]" = None
        """The rollback's record, when the block raised and the rollback ran."""

    def _rollback_kwargs(self, exc: BaseException) -> Dict[str, Any]:
        kw = dict(self._rollback_args)
        kw.setdefault("trigger", _trigger(exc))
        return kw

    def _done(self, exc: BaseException, record: "Optional[Record]", error: Optional[BaseException]) -> None:
        self.record = record
        _attach(exc, record, error)
        snap = self.snapshot.id if self.snapshot is not None else None
        if record is None:
            log.error("the block raised %s and the rollback to %s could not run: %s", type(exc).__name__, snap, error)
        elif record.status != "succeeded":
            log.error("the block raised %s; the rollback to %s ended %s", type(exc).__name__, snap, record.status)

    def __repr__(self) -> str:
        snap = self.snapshot.id if self.snapshot is not None else None
        return f"{type(self).__name__}(snapshot={snap!r})"


class Guard(_Base):
    """What ``Stack.guard()`` returns: ``with stack.guard(label="deploy") as snap:``."""

    def __enter__(self) -> "Snapshot":
        if self.snapshot is not None:
            raise RuntimeError("a guard is used once")
        snap = self.stack.snapshot(**self._snapshot_args)
        self.snapshot = snap
        return snap

    def __exit__(
        self, exc_type: Optional[Type[BaseException]], exc: Optional[BaseException], tb: Optional[TracebackType]
    ) -> None:
        if exc is None or self.snapshot is None:
            return
        try:
            record = self.stack.rollback(self.snapshot, **self._rollback_kwargs(exc))
        except Exception as error:  # the rollback refused to start: say so on the original
            self._done(exc, None, error)
        else:
            self._done(exc, record, None)


class AsyncGuard(_Base):
    """What ``Stack.guard_async()`` returns: ``async with stack.guard_async(...) as snap:``."""

    async def __aenter__(self) -> "Snapshot":
        if self.snapshot is not None:
            raise RuntimeError("a guard is used once")
        snap = await self.stack.snapshot_async(**self._snapshot_args)
        self.snapshot = snap
        return snap

    async def __aexit__(
        self, exc_type: Optional[Type[BaseException]], exc: Optional[BaseException], tb: Optional[TracebackType]
    ) -> None:
        if exc is None or self.snapshot is None:
            return
        try:
            record = await self.stack.rollback_async(self.snapshot, **self._rollback_kwargs(exc))
        except Exception as error:
            self._done(exc, None, error)
        else:
            self._done(exc, record, None)
