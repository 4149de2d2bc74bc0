"""rollback: snapshot every part of a deployed system and put it back, in process.

    import rollback
    stack = rollback.Stack.load("rollback.toml")
    snap = stack.snapshot(label="pre-phase4")
    print(stack.plan(snap, level="component", components=["db"]))
    record = stack.rollback(snap, level="component", components=["db"], trigger="latency")
    assert stack.verify(snap)

    with stack.guard(label="deploy 1.4"):   # rolls back if the block raises
        deploy()

Every long call has a blocking form (the GIL is released while it runs, Ctrl-C stops
a rollback at its next step boundary) and an ``*_async`` form that returns a
coroutine. Errors are ``RollbackError`` subclasses carrying ``.component`` and
``.code``, each also a subclass of the built-in exception for its kind
(``ConfigError`` is a ``ValueError``, ``SnapshotNotFoundError`` a ``LookupError``,
``RollbackTimeoutError`` a ``TimeoutError``...). Log records go to the ``logging``
logger named ``rollback``. The shapes of the dicts (records, events, plans) are
``TypedDict``s in ``rollback.types``.
"""

from ._rollback import (
    Assessment,
    CheckReport,
    ConfigError,
    CorruptError,
    DriverError,
    GcReport,
    LockedError,
    PermissionDeniedError,
    Plan,
    Record,
    RollbackError,
    RollbackTimeoutError,
    Snapshot,
    SnapshotNotFound,
    SnapshotNotFoundError,
    Stack,
    UnreachableError,
    UnsupportedError,
    Verification,
    VerificationError,
    __version__,
    assess,
)
from . import types
from ._guard import AsyncGuard, Guard

__all__ = [
    "AsyncGuard",
    "Assessment",
    "CheckReport",
    "ConfigError",
    "CorruptError",
    "DriverError",
    "GcReport",
    "Guard",
    "LockedError",
    "PermissionDeniedError",
    "Plan",
    "Record",
    "RollbackError",
    "RollbackTimeoutError",
    "Snapshot",
    "SnapshotNotFound",
    "SnapshotNotFoundError",
    "Stack",
    "UnreachableError",
    "UnsupportedError",
    "Verification",
    "VerificationError",
    "__version__",
    "assess",
    "types",
]
