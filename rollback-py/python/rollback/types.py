"""The shapes of what rollback returns and reports as plain Python objects: the
``to_dict()`` of records, snapshots, plans and reports, the events given to
``on_event``, the report of ``Stack.watch()``, and the words each field may hold.

For annotations only; nothing here checks a value::

    from rollback.types import Event

    def on_event(e: Event) -> None:
        if e["kind"] == "step_finished" and e["status"] == "failed":
            ...

Times are ISO 8601 strings in UTC (the attributes of ``Record`` and ``Snapshot``
give them as ``datetime``). Keys that a value may lack are in the ``total=False``
part of each class.
"""

import os
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Literal, Optional, TypedDict, Union

if TYPE_CHECKING:
    from . import Record, Snapshot

__all__ = [
    "Action",
    "ArtifactDict",
    "AssessmentDict",
    "CheckReportDict",
    "ComponentCheckDict",
    "DataImpact",
    "Decision",
    "DiscardDict",
    "DriftDict",
    "Duration",
    "Event",
    "EventKind",
    "EventStatus",
    "FenceDict",
    "GcReportDict",
    "HealthResultDict",
    "Level",
    "OnEvent",
    "PartDict",
    "PathLike",
    "PlanDict",
    "PlanStepDict",
    "PolicyAction",
    "RecordDict",
    "RecordKind",
    "ScopeDict",
    "Severity",
    "SnapshotDict",
    "SnapshotRef",
    "Status",
    "StepAction",
    "StepRecordDict",
    "StepStatus",
    "VerificationDict",
    "WatchDecisionDict",
    "WatchOutcome",
    "WatchReport",
]

Level = Literal["complete", "phase", "component"]
"""How much a rollback covers."""
Severity = Literal["low", "medium", "high", "critical"]
"""A severity of the decision matrix."""
Decision = Literal["fix_forward", "fix_forward_or_rollback", "rollback", "immediate_rollback"]
"""What the decision matrix says to do."""
DataImpact = Literal["none", "corruption", "loss"]
"""The `data_impact` of `assess()`."""
Status = Literal["succeeded", "failed", "compensated", "interrupted"]
"""How a rollback or a drill ended."""
RecordKind = Literal["rollback", "drill"]
"""What a record is the record of."""
Action = Literal["stop", "restore", "start", "health_gate", "verify"]
"""What a planned step does."""
StepAction = Literal["stop", "restore", "start", "health_gate", "verify", "compensate"]
"""What an executed step did: a planned action, or the compensation after a failed step."""
StepStatus = Literal["ok", "failed"]
"""How an executed step ended."""
EventKind = Literal[
    "snapshot_started",
    "part_captured",
    "safety_snapshot",
    "fence_raised",
    "fence_lifted",
    "step_started",
    "step_finished",
    "progress",
    "compensating",
    "finished",
    "watch_started",
    "watch_probe",
    "watch_decision",
    "watch_finished",
]
"""What an event reports."""
EventStatus = Literal[
    "ok",
    "failed",
    "succeeded",
    "compensated",
    "interrupted",
    "bad",
    "rollback",
    "notify",
    "ignore",
    "elapsed",
    "stopped",
    "rolled_back",
    "would_roll_back",
]
"""How what an event reports ended: a step (`ok`, `failed`), a rollback or drill (its
status), a probe reading (`ok`, `bad`), a watch's decision (its policy action) or the
watch itself (its outcome)."""
PolicyAction = Literal["rollback", "notify", "ignore"]
"""What a watch policy does at a severity."""
WatchOutcome = Literal["elapsed", "stopped", "rolled_back", "would_roll_back", "failed"]
"""How a watch ended."""
Duration = Union[str, float, timedelta]
"""A length of time: `"10m"`, `"1h30m"`, a number of seconds, or a `timedelta`."""
PathLike = Union[str, "os.PathLike[str]"]
"""A path: a string or a `pathlib.Path`."""
SnapshotRef = Union["Snapshot", str]
"""A snapshot, or its id, a unique prefix of it, `latest` or `last-good`."""


class Event(TypedDict):
    """A progress event, as `on_event` receives it."""

    kind: EventKind
    component: Optional[str]
    action: Optional[StepAction]
    probe: Optional[str]
    index: Optional[int]
    total: Optional[int]
    status: Optional[EventStatus]
    message: str
    duration_ms: Optional[int]


OnEvent = Callable[[Event], object]
"""An `on_event` callback: called with each event, in order, on a thread of the call's
own (with the GIL), off the rollback's path; the call returns once every event has
been delivered."""


class DriftDict(TypedDict, total=False):
    """One component compared with a snapshot; `differences` only when it differs."""

    ok: bool
    differences: List[str]


class DiscardDict(TypedDict, total=False):
    """What a restore discards (`Plan.discards`) or discarded (`Record.discarded`)."""

    component: str
    target: str
    changes: int
    unit: str
    kept_in_safety_snapshot: bool
    keepable: bool


class _StepRecordBase(TypedDict):
    component: str
    action: StepAction
    status: StepStatus
    duration_ms: int


class StepRecordDict(_StepRecordBase, total=False):
    """One executed step of a record; `error` when it failed or has a detail."""

    error: str


class _FenceBase(TypedDict):
    component: str
    how: str
    window_ms: int


class FenceDict(_FenceBase, total=False):
    """A write fence a rollback held on a component."""

    error: str


class WatchDecisionDict(TypedDict):
    """A decision of a watch."""

    probe: str
    severity: Severity
    action: PolicyAction
    reason: str
    bad: int
    window: int
    values: Dict[str, float]
    first_bad_at: str
    decided_at: str
    detect_ms: int
    dry_run: bool


class _RecordBase(TypedDict):
    rollback_id: str
    snapshot_id: str
    kind: RecordKind
    level: Level
    phases: List[int]
    components: List[str]
    trigger: Optional[str]
    severity: Optional[Severity]
    start_time: str
    completion_time: str
    duration_ms: int
    rto_target_ms: int
    rto_met: bool
    status: Status
    data_loss: bool
    safety_snapshot_id: Optional[str]
    steps: List[StepRecordDict]
    verification: Dict[str, DriftDict]
    discarded: List[DiscardDict]
    resumed: bool


class RecordDict(_RecordBase, total=False):
    """`Record.to_dict()`: the record as the store holds it."""

    error: str
    notes: List[str]
    fences: List[FenceDict]
    watch: WatchDecisionDict


class ScopeDict(TypedDict, total=False):
    """A plan's scope: `phases` at level `phase`, `components` at level `component`."""

    level: Level
    phases: List[int]
    components: List[str]


class PlanStepDict(TypedDict):
    """One step of a plan."""

    component: str
    action: Action
    description: str
    predicted_ms: int


class PlanDict(TypedDict):
    """`Plan.to_dict()`."""

    snapshot_id: str
    scope: ScopeDict
    components: List[str]
    phases: List[int]
    steps: List[PlanStepDict]
    discards: List[DiscardDict]
    predicted_ms: int


class ArtifactDict(TypedDict):
    """A stored artifact of a snapshot part."""

    name: str
    sha256: str
    size: int


class PartDict(TypedDict):
    """One component's share of a snapshot (`Snapshot.parts`)."""

    component: str
    driver: str
    phase: int
    state: Any
    artifacts: List[ArtifactDict]
    capture_ms: int


class HealthResultDict(TypedDict):
    """One health check's result (`Stack.health()`)."""

    check: str
    ok: bool
    detail: str


class SnapshotDict(TypedDict):
    """`Snapshot.to_dict()`: the manifest."""

    format: int
    id: str
    label: Optional[str]
    created_at: str
    healthy: Optional[bool]
    health: Dict[str, List[HealthResultDict]]
    safety_for: Optional[str]
    parts: List[PartDict]


class VerificationDict(TypedDict):
    """`Verification.to_dict()`."""

    snapshot_id: str
    ok: bool
    components: Dict[str, DriftDict]


class ComponentCheckDict(TypedDict):
    """One component in `CheckReport.components`."""

    ok: bool
    detail: str


class CheckReportDict(TypedDict):
    """`CheckReport.to_dict()`; the newest snapshot and drill are `[id, age_seconds]`."""

    ok: bool
    components: Dict[str, ComponentCheckDict]
    newest_snapshot: Optional[List[Union[str, int]]]
    newest_drill: Optional[List[Union[str, int]]]
    unfinished_rollbacks: List[str]
    warnings: List[str]


class GcReportDict(TypedDict):
    """`GcReport.to_dict()`."""

    removed: List[str]
    kept: List[str]
    freed_files: int
    freed_bytes: int


class AssessmentDict(TypedDict):
    """`Assessment.to_dict()`."""

    severity: Severity
    decision: Decision
    should_roll_back: bool
    reasons: List[str]


class _WatchReportBase(TypedDict):
    outcome: WatchOutcome
    snapshot_id: str
    rounds: int
    start_time: str
    end_time: str
    decisions: List[WatchDecisionDict]
    record: Optional["Record"]


class WatchReport(_WatchReportBase, total=False):
    """What `Stack.watch()` returns; `record` is a `Record` when it rolled back."""

    error: str
    undelivered: List[str]
