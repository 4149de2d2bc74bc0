"""rollback: snapshot every part of a deployed system and put it back, in process.

    import rollback
    stack = rollback.Stack.load("rollback.toml")
    snap = stack.snapshot(label="pre-phase4")
    print(stack.plan(snap, level="component", components=["db"]))
    record = stack.rollback(snap, level="component", components=["db"], trigger="latency")
    assert stack.verify(snap)

Every long call has a blocking form (the GIL is released while it runs, Ctrl-C stops
a rollback at its next step boundary) and an ``*_async`` form for asyncio. Errors are
``RollbackError`` subclasses carrying ``.component`` and ``.code``. Log records go to
the ``logging`` logger named ``rollback``.
"""

from ._rollback import (
    Assessment,
    CheckReport,
    ConfigError,
    DriverError,
    GcReport,
    LockedError,
    Plan,
    Record,
    RollbackError,
    Snapshot,
    SnapshotNotFound,
    Stack,
    Verification,
    VerificationError,
    __version__,
    assess,
)

__all__ = [
    "Assessment",
    "CheckReport",
    "ConfigError",
    "DriverError",
    "GcReport",
    "LockedError",
    "Plan",
    "Record",
    "RollbackError",
    "Snapshot",
    "SnapshotNotFound",
    "Stack",
    "Verification",
    "VerificationError",
    "__version__",
    "assess",
]
