"""Type stubs of the `rollback` package (the native module `rollback._rollback`)."""

import datetime
import pathlib
from datetime import timedelta
from typing import Any, Coroutine, Dict, List, Optional, Sequence, Tuple, Union, final

from . import types as types
from ._guard import AsyncGuard as AsyncGuard, Guard as Guard
from .types import (
    Action,
    AssessmentDict,
    CheckReportDict,
    ComponentCheckDict,
    DataImpact,
    Decision,
    DiscardDict,
    DriftDict,
    Duration,
    GcReportDict,
    HealthResultDict,
    Level,
    OnEvent,
    PartDict,
    PathLike,
    PlanDict,
    PlanStepDict,
    RecordDict,
    RecordKind,
    Severity,
    SnapshotDict,
    SnapshotRef,
    Status,
    StepRecordDict,
    VerificationDict,
    WatchReport,
)

__version__: str
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

class RollbackError(Exception):
    """Base of every error raised by rollback."""

    component: Optional[str]
    """The component concerned, or None."""
    code: Optional[str]
    """Stable short name: CONFIG, NOT_FOUND, DRIVER, VERIFICATION, LOCKED, TIMEOUT,
    CORRUPT, UNSUPPORTED, PERMISSION_DENIED, CANCELLED."""
    kind: Optional[str]
    """The core's error kind, snake_case (`config_invalid`, `unreachable`...)."""
    temporary: bool
    """Retrying the same call may succeed."""

class ConfigError(RollbackError, ValueError):
    """The configuration or an argument is invalid. Nothing was changed."""

class SnapshotNotFoundError(RollbackError, LookupError):
    """No snapshot (or record, or component) by that name."""

SnapshotNotFound = SnapshotNotFoundError

class VerificationError(RollbackError):
    """The current state does not equal the snapshot, or a health gate failed."""

class LockedError(RollbackError):
    """Another rollback holds the lock of this stack."""

class DriverError(RollbackError):
    """A driver or the store could not do its work (unreachable, permission denied,
    timeout, corrupt artifact, unsupported)."""

class RollbackTimeoutError(DriverError, TimeoutError):
    """A step, a connection or a command ran out of time."""

class PermissionDeniedError(DriverError, PermissionError):
    """A server, a file or a tool refused access."""

class UnreachableError(DriverError, ConnectionError):
    """A server or a tool could not be reached."""

class CorruptError(DriverError):
    """A stored artifact, manifest or journal does not read back as written."""

class UnsupportedError(DriverError, NotImplementedError):
    """The driver cannot do what was asked."""

@final
class Snapshot:
    """One capture of some or all components. `str(snapshot)` is its id."""

    @property
    def id(self) -> str:
        """Unique id, e.g. `20261123T100000123Z-3f9a1c`."""
    @property
    def label(self) -> Optional[str]:
        """The operator's label, or None."""
    @property
    def created_at(self) -> datetime.datetime:
        """When it was taken (timezone-aware UTC)."""
    @property
    def components(self) -> List[str]:
        """Names of the components it holds, in phase order."""
    @property
    def healthy(self) -> Optional[bool]:
        """Whether the health checks passed when it was taken (None: no checks)."""
    @property
    def safety_for(self) -> Optional[str]:
        """For a safety snapshot: the id of the rollback it protects."""
    @property
    def size(self) -> int:
        """Total size of its stored artifacts, in bytes."""
    @property
    def parts(self) -> List[PartDict]:
        """One dict per component: component, driver, phase, state, artifacts, capture_ms."""
    def to_dict(self) -> SnapshotDict:
        """The manifest as plain Python objects."""
    def to_json(self) -> str:
        """The manifest as JSON text."""

@final
class Plan:
    """The ordered steps a rollback would run; `str(plan)` is the preview."""

    @property
    def snapshot_id(self) -> str:
        """The snapshot rolled back to."""
    @property
    def level(self) -> Level:
        """`complete`, `phase` or `component`."""
    @property
    def components(self) -> List[str]:
        """Components restored, in deploy order."""
    @property
    def phases(self) -> List[int]:
        """Their phases."""
    @property
    def steps(self) -> List[PlanStepDict]:
        """One dict per step: component, action, description, predicted_ms."""
    @property
    def discards(self) -> List[DiscardDict]:
        """What the restore would discard: component, target, changes, unit, kept_in_safety_snapshot."""
    @property
    def predicted_ms(self) -> int:
        """Predicted duration of the whole plan, in milliseconds."""
    def to_dict(self) -> PlanDict:
        """The plan as plain Python objects."""
    def to_json(self) -> str:
        """The plan as JSON text."""
    def __len__(self) -> int: ...

@final
class Record:
    """The result of one rollback or drill, also written to the store (`docs/records.md`)."""

    @property
    def rollback_id(self) -> str:
        """Id of this rollback (what `Stack.resume()` and `Stack.record()` take)."""
    @property
    def snapshot_id(self) -> str:
        """Snapshot rolled back to."""
    @property
    def kind(self) -> RecordKind:
        """`rollback` or `drill`."""
    @property
    def level(self) -> Level:
        """`complete`, `phase` or `component`."""
    @property
    def phases(self) -> List[int]:
        """Phases restored."""
    @property
    def components(self) -> List[str]:
        """Components restored."""
    @property
    def trigger(self) -> Optional[str]:
        """Why it was started, or None."""
    @property
    def severity(self) -> Optional[Severity]:
        """Severity from `assess`, or None."""
    @property
    def start_time(self) -> datetime.datetime:
        """Start (timezone-aware UTC)."""
    @property
    def completion_time(self) -> datetime.datetime:
        """End (timezone-aware UTC)."""
    @property
    def duration_ms(self) -> int:
        """Wall time in milliseconds."""
    @property
    def rto_target_ms(self) -> int:
        """Recovery-time objective of this level, in milliseconds."""
    @property
    def rto_met(self) -> bool:
        """`duration_ms <= rto_target_ms`."""
    @property
    def status(self) -> Status:
        """`succeeded`, `failed`, `compensated` or `interrupted`."""
    @property
    def succeeded(self) -> bool:
        """True when the status is `succeeded`."""
    @property
    def data_loss(self) -> bool:
        """True when discarded changes cannot be read back from a safety snapshot."""
    @property
    def safety_snapshot_id(self) -> Optional[str]:
        """Snapshot taken just before the first change, or None."""
    @property
    def steps(self) -> List[StepRecordDict]:
        """One dict per step run: component, action, status, duration_ms (and error)."""
    @property
    def verification(self) -> Dict[str, DriftDict]:
        """Per component: `{"ok": bool, "differences": [...]}`."""
    @property
    def discarded(self) -> List[DiscardDict]:
        """What the restore discarded."""
    @property
    def error(self) -> Optional[str]:
        """The first error when not succeeded, or None."""
    @property
    def resumed(self) -> bool:
        """True when it was finished by `resume`."""
    @property
    def notes(self) -> List[str]:
        """Free-form notes (drill perturbations...)."""
    def to_dict(self) -> RecordDict:
        """The record as plain Python objects (the same keys as `to_json()`)."""
    def to_json(self) -> str:
        """The record as JSON text, as the store holds it (`docs/records.md`)."""
    def to_markdown(self) -> str:
        """The incident report, in Markdown."""

@final
class Verification:
    """The result of `Stack.verify()`: truthy when every component equals the snapshot."""

    @property
    def snapshot_id(self) -> str:
        """Snapshot compared with."""
    @property
    def ok(self) -> bool:
        """Every component equal."""
    @property
    def drift(self) -> Dict[str, List[str]]:
        """The components that differ: `{component: [difference, ...]}`."""
    @property
    def components(self) -> Dict[str, DriftDict]:
        """Every component compared: `{component: {"ok": bool, "differences": [...]}}`."""
    def raise_for_drift(self) -> None:
        """Raises `VerificationError` naming the first differing component."""
    def to_dict(self) -> VerificationDict:
        """The verification as plain Python objects."""
    def to_json(self) -> str:
        """The verification as JSON text."""
    def __bool__(self) -> bool: ...

@final
class Assessment:
    """The decision matrix's answer (`docs/decision-matrix.md`)."""

    @property
    def severity(self) -> Severity:
        """`low`, `medium`, `high` or `critical`."""
    @property
    def decision(self) -> Decision:
        """`fix_forward`, `fix_forward_or_rollback`, `rollback` or `immediate_rollback`."""
    @property
    def should_roll_back(self) -> bool:
        """True for `rollback` and `immediate_rollback`."""
    @property
    def reasons(self) -> List[str]:
        """One line per signal that reached the severity."""
    def to_dict(self) -> AssessmentDict:
        """`{"severity", "decision", "should_roll_back", "reasons"}`."""

@final
class CheckReport:
    """The result of `Stack.check()`: truthy when every component is reachable."""

    @property
    def ok(self) -> bool:
        """Every component reachable."""
    @property
    def components(self) -> Dict[str, ComponentCheckDict]:
        """Per component: `{"ok": bool, "detail": str}`."""
    @property
    def newest_snapshot(self) -> Optional[Tuple[str, int]]:
        """`(id, age_seconds)` of the newest snapshot, or None."""
    @property
    def newest_drill(self) -> Optional[Tuple[str, int]]:
        """`(id, age_seconds)` of the newest drill, or None."""
    @property
    def unfinished_rollbacks(self) -> List[str]:
        """Rollbacks left unfinished: `Stack.resume(id)` finishes them."""
    def to_dict(self) -> CheckReportDict:
        """The report as plain Python objects."""
    def to_json(self) -> str:
        """The report as JSON text."""
    def __bool__(self) -> bool: ...

@final
class GcReport:
    """The result of `Stack.gc()`."""

    @property
    def removed(self) -> List[str]:
        """Snapshots removed."""
    @property
    def kept(self) -> List[str]:
        """Snapshots kept."""
    @property
    def freed_files(self) -> int:
        """Artifact files freed."""
    @property
    def freed_bytes(self) -> int:
        """Bytes freed."""
    def to_dict(self) -> GcReportDict:
        """The report as plain Python objects."""

def assess(
    *,
    error_rate: float = 0.0,
    perf_degradation: float = 0.0,
    latency_ms: Union[float, timedelta, None] = None,
    data_impact: DataImpact = "none",
    security: bool = False,
) -> Assessment:
    """Applies the decision matrix with the default thresholds (`docs/decision-matrix.md`)."""

@final
class Stack:
    """A stack: components, their drivers and the store. Blocking methods release the
    GIL; `*_async` methods return coroutines; `guard()` rolls back a block that raises."""

    @classmethod
    def load(cls, path: PathLike) -> "Stack":
        """Loads `rollback.toml` (relative paths in it resolve beside the file)."""
    @classmethod
    def from_toml(cls, text: str, base_dir: Optional[PathLike] = None) -> "Stack":
        """Builds a stack from TOML text, as if it were a `rollback.toml` in `base_dir`."""
    @classmethod
    def from_dict(cls, config: Dict[str, Any], base_dir: Optional[PathLike] = None) -> "Stack":
        """Builds a stack from a dict shaped like `rollback.toml`; paths may be
        `pathlib.Path`s and durations `timedelta`s."""
    @property
    def components(self) -> List[str]:
        """Component names, in config order."""
    @property
    def store_path(self) -> pathlib.Path:
        """Where snapshots, journals and records live."""
    @property
    def config_file(self) -> Optional[pathlib.Path]:
        """The config file, or None for a stack built in code."""
    def assess(
        self,
        *,
        error_rate: float = 0.0,
        perf_degradation: float = 0.0,
        latency_ms: Union[float, timedelta, None] = None,
        data_impact: DataImpact = "none",
        security: bool = False,
    ) -> Assessment:
        """Applies the decision matrix with this stack's `[decision]` thresholds."""
    def guard(
        self,
        *,
        label: Optional[str] = None,
        components: Optional[Sequence[str]] = None,
        level: Optional[Level] = None,
        phases: Optional[Sequence[int]] = None,
        trigger: Optional[str] = None,
        severity: Optional[Severity] = None,
        safety_snapshot: bool = True,
        on_event: Optional[OnEvent] = None,
        step_timeout: Optional[Duration] = None,
    ) -> Guard:
        """`with stack.guard(label=...) as snap:` snapshots on entry and rolls back when
        the block raises; the exception then carries `rollback_record`."""
    def guard_async(
        self,
        *,
        label: Optional[str] = None,
        components: Optional[Sequence[str]] = None,
        level: Optional[Level] = None,
        phases: Optional[Sequence[int]] = None,
        trigger: Optional[str] = None,
        severity: Optional[Severity] = None,
        safety_snapshot: bool = True,
        on_event: Optional[OnEvent] = None,
        step_timeout: Optional[Duration] = None,
    ) -> AsyncGuard:
        """`guard()` for `async with`."""
    def snapshot(
        self, *, label: Optional[str] = None, components: Optional[Sequence[str]] = None, on_event: Optional[OnEvent] = None
    ) -> Snapshot:
        """Captures the components (all unless `components` is given)."""
    def snapshot_async(
        self, *, label: Optional[str] = None, components: Optional[Sequence[str]] = None, on_event: Optional[OnEvent] = None
    ) -> Coroutine[Any, Any, Snapshot]:
        """`snapshot()` as a coroutine."""
    def list(self) -> List[Snapshot]:
        """Every snapshot, oldest first."""
    def show(self, snapshot: SnapshotRef) -> Snapshot:
        """One snapshot by id, unique prefix, `latest` or `last-good`."""
    def plan(
        self,
        snapshot: SnapshotRef,
        *,
        level: Optional[Level] = None,
        phases: Optional[Sequence[int]] = None,
        components: Optional[Sequence[str]] = None,
    ) -> Plan:
        """The steps a rollback would run for the scope; changes nothing."""
    def plan_async(
        self,
        snapshot: SnapshotRef,
        *,
        level: Optional[Level] = None,
        phases: Optional[Sequence[int]] = None,
        components: Optional[Sequence[str]] = None,
    ) -> Coroutine[Any, Any, Plan]:
        """`plan()` as a coroutine."""
    def dry_run(
        self,
        snapshot: SnapshotRef,
        *,
        level: Optional[Level] = None,
        phases: Optional[Sequence[int]] = None,
        components: Optional[Sequence[str]] = None,
    ) -> Plan:
        """Runs the preflight of a rollback without changing anything; returns its plan."""
    def rollback(
        self,
        snapshot: SnapshotRef,
        *,
        level: Optional[Level] = None,
        phases: Optional[Sequence[int]] = None,
        components: Optional[Sequence[str]] = None,
        trigger: Optional[str] = None,
        severity: Optional[Severity] = None,
        safety_snapshot: bool = True,
        on_event: Optional[OnEvent] = None,
        step_timeout: Optional[Duration] = None,
    ) -> Record:
        """Rolls back to `snapshot`; returns the record whatever its status. Ctrl-C
        stops it at the next step boundary (`KeyboardInterrupt.record` is the
        `interrupted` record; `resume()` finishes it)."""
    def rollback_async(
        self,
        snapshot: SnapshotRef,
        *,
        level: Optional[Level] = None,
        phases: Optional[Sequence[int]] = None,
        components: Optional[Sequence[str]] = None,
        trigger: Optional[str] = None,
        severity: Optional[Severity] = None,
        safety_snapshot: bool = True,
        on_event: Optional[OnEvent] = None,
        step_timeout: Optional[Duration] = None,
    ) -> Coroutine[Any, Any, Record]:
        """`rollback()` as a coroutine; cancelling its task stops at a step boundary."""
    def verify(self, snapshot: SnapshotRef, *, components: Optional[Sequence[str]] = None) -> Verification:
        """Compares the current state with `snapshot`."""
    def verify_async(
        self, snapshot: SnapshotRef, *, components: Optional[Sequence[str]] = None
    ) -> Coroutine[Any, Any, Verification]:
        """`verify()` as a coroutine."""
    def drill(
        self,
        *,
        level: Optional[Level] = None,
        phases: Optional[Sequence[int]] = None,
        components: Optional[Sequence[str]] = None,
        trigger: Optional[str] = None,
        safety_snapshot: bool = True,
        on_event: Optional[OnEvent] = None,
        step_timeout: Optional[Duration] = None,
    ) -> Record:
        """Rehearsal: snapshot, perturb, roll back, verify, timed against the objective."""
    def drill_async(
        self,
        *,
        level: Optional[Level] = None,
        phases: Optional[Sequence[int]] = None,
        components: Optional[Sequence[str]] = None,
        trigger: Optional[str] = None,
        safety_snapshot: bool = True,
        on_event: Optional[OnEvent] = None,
        step_timeout: Optional[Duration] = None,
    ) -> Coroutine[Any, Any, Record]:
        """`drill()` as a coroutine."""
    def watch(
        self,
        snapshot: Optional[SnapshotRef] = None,
        *,
        level: Optional[Level] = None,
        phases: Optional[Sequence[int]] = None,
        components: Optional[Sequence[str]] = None,
        duration: Optional[Duration] = None,
        dry_run: bool = False,
        on_event: Optional[OnEvent] = None,
    ) -> WatchReport:
        """Watches with the `[watch]` probes; rolls back to `snapshot` (default
        `last-good`) when the policy says so, then stops. Ctrl-C stops it
        (`KeyboardInterrupt.report` is the report)."""
    def watch_async(
        self,
        snapshot: Optional[SnapshotRef] = None,
        *,
        level: Optional[Level] = None,
        phases: Optional[Sequence[int]] = None,
        components: Optional[Sequence[str]] = None,
        duration: Optional[Duration] = None,
        dry_run: bool = False,
        on_event: Optional[OnEvent] = None,
    ) -> Coroutine[Any, Any, WatchReport]:
        """`watch()` as a coroutine; cancelling its task stops the watch."""
    def resume(self, rollback_id: Union[Record, str, None] = None, *, on_event: Optional[OnEvent] = None) -> Record:
        """Finishes an interrupted rollback from its journal (default: the latest)."""
    def resume_async(
        self, rollback_id: Union[Record, str, None] = None, *, on_event: Optional[OnEvent] = None
    ) -> Coroutine[Any, Any, Record]:
        """`resume()` as a coroutine."""
    def history(self) -> List[Record]:
        """Past records, oldest first."""
    def record(self, id: Union[Record, str]) -> Record:
        """One record by id, unique prefix, `latest`, or path."""
    def check(self) -> CheckReport:
        """Preflight of the stack: drivers reachable, newest snapshot and drill, unfinished rollbacks."""
    def check_async(self) -> Coroutine[Any, Any, CheckReport]:
        """`check()` as a coroutine."""
    def health(self, *, components: Optional[Sequence[str]] = None) -> Dict[str, List[HealthResultDict]]:
        """Probes each component's health checks once."""
    def health_async(
        self, *, components: Optional[Sequence[str]] = None
    ) -> Coroutine[Any, Any, Dict[str, List[HealthResultDict]]]:
        """`health()` as a coroutine."""
    def gc(self, *, keep: Optional[int] = None, max_age: Optional[Duration] = None) -> GcReport:
        """Retention: keeps the newest `keep` snapshots and those younger than `max_age`."""
    def gc_async(
        self, *, keep: Optional[int] = None, max_age: Optional[Duration] = None
    ) -> Coroutine[Any, Any, GcReport]:
        """`gc()` as a coroutine."""
