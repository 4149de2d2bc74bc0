"""The stack through the Python API: snapshot, plan, rollback at each level,
verify, records, drill, resume, history, check, gc, errors, events, logging."""

import json
import logging
import os
import sys
import datetime as dt

import pytest

import rollback


def test_public_names_have_docstrings():
    for name in rollback.__all__:
        if name == "__version__":
            continue
        obj = getattr(rollback, name)
        assert obj.__doc__ and obj.__doc__.strip(), name
        if isinstance(obj, type):
            for attr, member in vars(obj).items():
                if attr.startswith("_") or not (callable(member) or hasattr(member, "__get__")):
                    continue
                assert getattr(member, "__doc__", None), f"{name}.{attr}"


def test_every_blocking_method_has_an_async_twin_with_its_signature():
    twins = [n for n in dir(rollback.Stack) if n.endswith("_async")]
    assert len(twins) == 11, twins  # the ten long calls, and guard()
    for name in twins:
        sync = getattr(rollback.Stack, name[: -len("_async")])
        assert getattr(rollback.Stack, name).__text_signature__ == sync.__text_signature__, name


def test_error_hierarchy():
    for cls in (
        rollback.ConfigError,
        rollback.DriverError,
        rollback.SnapshotNotFoundError,
        rollback.VerificationError,
        rollback.LockedError,
        rollback.RollbackTimeoutError,
        rollback.PermissionDeniedError,
        rollback.UnreachableError,
        rollback.CorruptError,
        rollback.UnsupportedError,
    ):
        assert issubclass(cls, rollback.RollbackError)
        assert cls.__module__ == "rollback"
        assert cls.__name__.endswith("Error")
        assert cls.__doc__
    assert issubclass(rollback.RollbackError, Exception)
    assert rollback.RollbackError("x").component is None
    # The built-in each kind of failure is already caught as.
    assert issubclass(rollback.ConfigError, ValueError)
    assert issubclass(rollback.SnapshotNotFoundError, LookupError)
    assert issubclass(rollback.RollbackTimeoutError, TimeoutError)
    assert issubclass(rollback.PermissionDeniedError, PermissionError)
    assert issubclass(rollback.UnreachableError, ConnectionError)
    assert issubclass(rollback.UnsupportedError, NotImplementedError)
    for cls in (rollback.RollbackTimeoutError, rollback.PermissionDeniedError, rollback.UnreachableError,
                rollback.CorruptError, rollback.UnsupportedError):
        assert issubclass(cls, rollback.DriverError)  # what earlier versions raised for them
    # The old name is the same class.
    assert rollback.SnapshotNotFound is rollback.SnapshotNotFoundError
    e = rollback.RollbackTimeoutError("slow")
    assert str(e) == "slow" and e.code is None


def test_raised_errors_are_caught_as_builtins(basic, tmp_path):
    stack = rollback.Stack.load(basic.config)
    with pytest.raises(LookupError) as ei:
        stack.show("no-such-snapshot")
    assert type(ei.value) is rollback.SnapshotNotFoundError and ei.value.code == "NOT_FOUND"
    with pytest.raises(ValueError) as ei:
        stack.gc(keep="all")
    assert type(ei.value) is rollback.ConfigError and "keep" in str(ei.value)
    # A step that runs out of time: a TimeoutError naming the component.
    (tmp_path / "s.txt").write_text("x")
    slow = rollback.Stack.from_toml(
        '[[component]]\nname = "slow"\ndriver = "command"\ntimeout = "1s"\n'
        'capture = ["sh", "-c", "sleep 30; cat s.txt"]\nrestore = ["sh", "-c", "cat > s.txt"]\n',
        tmp_path,
    )
    with pytest.raises(TimeoutError) as ei:
        slow.snapshot()
    assert isinstance(ei.value, rollback.DriverError) and ei.value.code == "TIMEOUT"
    assert ei.value.component == "slow"


def test_snapshot_attributes(basic):
    stack = rollback.Stack.load(basic.config)
    assert stack.components == ["code", "config", "release", "worker"]
    assert stack.config_file is not None
    snap = stack.snapshot(label="pre-phase4")
    assert isinstance(snap, rollback.Snapshot)
    assert snap.label == "pre-phase4"
    assert snap.components == ["code", "config", "release", "worker"]
    assert isinstance(snap.created_at, dt.datetime)
    assert snap.created_at.tzinfo is not None
    assert abs((dt.datetime.now(dt.timezone.utc) - snap.created_at).total_seconds()) < 600
    assert str(snap) == snap.id
    parts = {p["component"]: p for p in snap.parts}
    assert basic.v1 in json.dumps(parts["code"]["state"])
    assert parts["release"]["driver"] == "releases"
    assert snap.to_dict()["id"] == snap.id
    assert json.loads(snap.to_json())["label"] == "pre-phase4"
    listed = stack.list()
    assert [s.id for s in listed] == [snap.id]
    assert listed[0] == snap and hash(listed[0]) == hash(snap)
    assert stack.show("latest").id == snap.id
    assert stack.show(snap.id[:12]).id == snap.id


def test_complete_rollback_verify_and_record(basic):
    stack = rollback.Stack.load(basic.config)
    snap = stack.snapshot(label="v1")
    assert stack.verify(snap)
    basic.deploy_bad()

    v = stack.verify(snap)
    assert not v and v.ok is False
    assert set(v.drift) == {"code", "config", "release", "worker"}
    assert all(isinstance(x, str) for diffs in v.drift.values() for x in diffs)
    with pytest.raises(rollback.VerificationError) as ei:
        v.raise_for_drift()
    assert ei.value.component in v.drift and ei.value.code == "VERIFICATION"

    plan = stack.plan(snap)
    text = str(plan)
    assert text.startswith("Plan: complete rollback to snapshot " + snap.id)
    assert "Predicted duration" in text
    assert plan.level == "complete" and len(plan) == len(plan.steps)
    assert [s["action"] for s in plan.steps if s["component"] == "code"] == ["restore", "verify"]
    assert any(d["component"] == "code" for d in plan.discards)

    record = stack.rollback(snap, trigger="error_rate", severity="high")
    assert isinstance(record, rollback.Record)
    assert record.status == "succeeded" and record.succeeded
    assert record.kind == "rollback" and record.level == "complete"
    assert record.snapshot_id == snap.id
    assert record.trigger == "error_rate" and record.severity == "high"
    assert sorted(record.components) == ["code", "config", "release", "worker"]
    assert record.components[0] == "code" and record.components[-1] == "worker"  # deploy order
    assert record.phases == [1, 2, 3]
    assert isinstance(record.start_time, dt.datetime) and record.completion_time >= record.start_time
    assert record.duration_ms >= 0 and record.rto_target_ms == 5 * 60 * 1000 and record.rto_met
    assert record.safety_snapshot_id and record.data_loss is False
    assert all(s["status"] == "ok" for s in record.steps)
    assert set(record.verification) == set(record.components)
    assert all(x["ok"] for x in record.verification.values())
    assert record.error is None and record.resumed is False

    doc = json.loads(record.to_json())
    for key in (
        "rollback_id", "snapshot_id", "kind", "level", "phases", "components", "trigger", "severity",
        "start_time", "completion_time", "duration_ms", "rto_target_ms", "rto_met", "status",
        "data_loss", "safety_snapshot_id", "steps", "verification",
    ):
        assert key in doc, key
    assert record.to_dict() == doc
    assert "# Rollback" in record.to_markdown()

    assert basic.head() == basic.v1
    assert (basic.root / "conf" / "app.toml").read_text() == 'mode = "live"\n'
    assert basic.link() == "v1"
    assert (basic.root / "state.txt").read_text() == "one\n"
    assert stack.verify(snap)

    assert [r.rollback_id for r in stack.history()] == [record.rollback_id]
    assert stack.record(record.rollback_id).to_dict() == doc
    assert stack.record("latest").rollback_id == record.rollback_id


def test_phase_rollback(basic):
    stack = rollback.Stack.load(basic.config)
    snap = stack.snapshot()
    basic.deploy_bad()
    plan = stack.plan(snap, level="phase", phases=[2])
    assert sorted(plan.components) == ["config", "release"] and plan.phases == [2]
    record = stack.rollback(snap, level="phase", phases=[2], trigger="latency")
    assert record.status == "succeeded"
    assert record.level == "phase" and record.phases == [2]
    assert record.rto_target_ms == 15 * 60 * 1000
    # Phase 2 is back; the others still carry the bad deploy.
    assert basic.link() == "v1"
    assert (basic.root / "conf" / "app.toml").read_text() == 'mode = "live"\n'
    assert basic.head() != basic.v1
    v = stack.verify(snap)
    assert set(v.drift) == {"code", "worker"}
    assert stack.verify(snap, components=["config", "release"])


def test_component_rollback(basic):
    stack = rollback.Stack.load(basic.config)
    snap = stack.snapshot()
    basic.deploy_bad()
    record = stack.rollback(snap, components=["code"], trigger="latency", safety_snapshot=False)
    assert record.level == "component" and record.components == ["code"]
    assert record.safety_snapshot_id is None
    assert record.rto_target_ms == 30 * 60 * 1000
    assert basic.head() == basic.v1
    assert basic.link() == "v2"
    assert stack.verify(snap, components=["code"])


def test_on_event_receives_steps_in_order(basic):
    stack = rollback.Stack.load(basic.config)
    seen_snapshot = []
    snap = stack.snapshot(on_event=seen_snapshot.append)
    kinds = [e["kind"] for e in seen_snapshot]
    assert kinds[0] == "snapshot_started"
    assert kinds.count("part_captured") == 4
    basic.deploy_bad()
    events = []
    record = stack.rollback(snap, level="component", components=["config"], on_event=events.append)
    assert record.succeeded
    steps = [(e["kind"], e["action"]) for e in events if e["kind"].startswith("step_")]
    assert steps == [
        ("step_started", "restore"), ("step_finished", "restore"),
        ("step_started", "verify"), ("step_finished", "verify"),
    ]
    finished = [e for e in events if e["kind"] == "step_finished"]
    assert all(e["status"] == "ok" and e["component"] == "config" for e in finished)
    assert all(isinstance(e["duration_ms"], int) for e in finished)


def test_callback_errors_do_not_stop_a_rollback(basic):
    stack = rollback.Stack.load(basic.config)
    snap = stack.snapshot()
    basic.deploy_bad()

    def broken(event):
        raise RuntimeError("callback bug")

    reported = []
    old, sys.unraisablehook = sys.unraisablehook, reported.append
    try:
        record = stack.rollback(snap, components=["config"], on_event=broken)
    finally:
        sys.unraisablehook = old
    assert record.succeeded
    assert reported and all(isinstance(r.exc_value, RuntimeError) for r in reported)


def test_errors_carry_kind_and_component(basic, tmp_path):
    stack = rollback.Stack.load(basic.config)
    with pytest.raises(rollback.SnapshotNotFound) as ei:
        stack.plan("no-such-snapshot")
    assert ei.value.code == "NOT_FOUND"
    assert "no-such-snapshot" in str(ei.value)

    bad = tmp_path / "bad.toml"
    bad.write_text('[[component]]\nname = "x"\ndriver = "git"\nphase = "one"\n')
    with pytest.raises(rollback.ConfigError) as ei:
        rollback.Stack.load(bad)
    assert "bad.toml" in str(ei.value) and ei.value.code == "CONFIG"

    with pytest.raises(rollback.ConfigError, match="nosuchdriver"):
        rollback.Stack.from_toml('[[component]]\nname = "x"\ndriver = "nosuchdriver"\n', tmp_path)

    snap = stack.snapshot()
    with pytest.raises(rollback.ConfigError, match="level"):
        stack.plan(snap, level="everything")
    with pytest.raises(rollback.ConfigError):
        stack.rollback(snap, level="component")
    with pytest.raises(rollback.ConfigError, match="severity `urgent` is not one of low, medium, high, critical"):
        stack.rollback(snap, severity="urgent")
    assert stack.history() == []

    # The git driver refuses a dirty tree: a DriverError naming the component.
    (basic.repo / "app.py").write_text("dirty\n")
    with pytest.raises(rollback.RollbackError) as ei:
        stack.snapshot(components=["code"])
    assert ei.value.component == "code"
    assert not isinstance(ei.value, rollback.ConfigError) or "dirty" in str(ei.value)

    with pytest.raises(rollback.ConfigError, match="`snapshot` must be a Snapshot, a Record or an id string"):
        stack.plan(42)


def test_missing_target_is_a_driver_error(tmp_path):
    stack = rollback.Stack.from_toml(
        '[[component]]\nname = "code"\ndriver = "git"\nrepo = "missing-repo"\n', tmp_path
    )
    with pytest.raises(rollback.RollbackError) as ei:
        stack.snapshot()
    assert ei.value.component == "code"
    report = stack.check()
    assert not report and report.components["code"]["ok"] is False


def test_locked_error_while_held(slow_basic):
    import threading
    stack = rollback.Stack.load(slow_basic.config)
    snap = stack.snapshot()
    slow_basic.deploy_bad()
    started = threading.Event()
    result = {}

    def run():
        result["record"] = stack.rollback(
            snap, components=["worker"], on_event=lambda e: e["kind"] == "step_started" and started.set()
        )

    t = threading.Thread(target=run)
    t.start()
    assert started.wait(30)
    with pytest.raises(rollback.LockedError) as ei:
        stack.rollback(snap, components=["config"])
    assert ei.value.code == "LOCKED"
    t.join(60)
    assert result["record"].succeeded


def test_drill_history_check_gc(basic):
    stack = rollback.Stack.load(basic.config)
    record = stack.drill(level="phase", phases=[2])
    assert record.kind == "drill" and record.status == "succeeded"
    assert any("perturbed" in n or "drill snapshot" in n for n in record.notes)
    assert stack.history()[-1].rollback_id == record.rollback_id

    for i in range(3):
        stack.snapshot(label=f"s{i}")
    report = stack.check()
    assert report and report.ok
    assert set(report.components) == {"code", "config", "release", "worker"}
    assert report.newest_snapshot is not None and report.newest_drill[0] == record.rollback_id
    assert report.unfinished_rollbacks == []
    assert json.loads(report.to_json())["ok"] is True

    regular = [s for s in stack.list() if s.safety_for is None]
    gc = stack.gc(keep=1)
    assert isinstance(gc, rollback.GcReport)
    assert regular[-1].id in gc.kept and len(gc.removed) >= 3
    with pytest.raises(rollback.ConfigError):
        stack.gc(keep=0)
    with pytest.raises(rollback.ConfigError):
        stack.gc(max_age="soon")
    assert stack.gc(max_age=dt.timedelta(days=1)).removed == []
    assert stack.gc(max_age="7d").removed == []


def test_build_in_code(tmp_path):
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "index.html").write_text("v1")
    stack = rollback.Stack.from_dict(
        {
            "store": {"path": "snapshots"},
            "component": [{"name": "site", "driver": "files", "paths": ["site"], "phase": 1, "timeout": None}],
        },
        base_dir=tmp_path,
    )
    assert stack.store_path == tmp_path / "snapshots"
    snap = stack.snapshot()
    (tmp_path / "site" / "index.html").write_text("v2")
    assert stack.rollback(snap).succeeded
    assert (tmp_path / "site" / "index.html").read_text() == "v1"

    toml_stack = rollback.Stack.from_toml(
        '[[component]]\nname = "site"\ndriver = "files"\npaths = ["site"]\n', str(tmp_path)
    )
    assert [x.id for x in toml_stack.list()] == []  # its store is the default .rollback, not snapshots/
    assert toml_stack.components == ["site"]


def test_health_probes(tmp_path):
    (tmp_path / "beat").write_text("x")
    stack = rollback.Stack.from_toml(
        """
[[component]]
name = "svc"
driver = "files"
paths = ["beat"]
health = [{ heartbeat = "beat", max_age = "1h" }, { command = ["false"], timeout = "1s" }]
""",
        tmp_path,
    )
    h = stack.health()
    assert [r["ok"] for r in h["svc"]] == [True, False]
    assert all(isinstance(r["detail"], str) for r in h["svc"])
    with pytest.raises(rollback.SnapshotNotFound, match="nope"):
        stack.health(components=["nope"])


def test_health_results_carry_no_secrets(tmp_path, monkeypatch):
    monkeypatch.setenv("RB_TEST_HEALTH_TOKEN", "tok-5d1e9c0a77")
    stack = rollback.Stack.from_toml(
        """
[[component]]
name = "svc"
driver = "files"
paths = ["."]
health = [
  { http = "http://ops:pw-0f3b2a@127.0.0.1:9/health", timeout = "200ms" },
  { command = ["sh", "-c", "echo denied for $0 >&2; exit 1", "${RB_TEST_HEALTH_TOKEN}"], timeout = "1s" },
]
""",
        tmp_path,
    )
    h = stack.health()
    text = repr(h)
    assert [r["ok"] for r in h["svc"]] == [False, False]
    assert "pw-0f3b2a" not in text and "tok-5d1e9c0a77" not in text, text
    assert "denied for ***" in text, text


def test_assess_matrix():
    a = rollback.assess(error_rate=0.31, perf_degradation=0.55, data_impact="none")
    assert (a.severity, a.decision, a.should_roll_back) == ("high", "rollback", True)
    assert a.reasons and all(isinstance(r, str) for r in a.reasons)
    assert rollback.assess(error_rate=0.6).severity == "critical"
    assert rollback.assess(error_rate=0.6).decision == "immediate_rollback"
    assert rollback.assess(error_rate=0.12).decision == "fix_forward_or_rollback"
    assert rollback.assess(error_rate=0.01).decision == "fix_forward"
    assert rollback.assess(security=True).severity == "critical"
    assert rollback.assess(latency_ms=900).severity == "high"
    assert rollback.assess(data_impact="loss").severity == "critical"
    assert rollback.assess(data_impact="corruption").severity == "high"
    assert a.to_dict()["decision"] == "rollback"
    with pytest.raises(rollback.ConfigError):
        rollback.assess(data_impact="meh")
    with pytest.raises(TypeError):
        rollback.assess(0.3, 0.5)
    # A monitor that divided by zero requests must hear an error, not "fix forward".
    for bad in (dict(error_rate=float("nan")), dict(error_rate=-0.1), dict(perf_degradation=float("inf")),
                dict(latency_ms=float("nan")), dict(latency_ms=-5.0)):
        with pytest.raises(rollback.ConfigError):
            rollback.assess(**bad)


def test_huge_durations_are_config_errors_not_panics(basic):
    stack = rollback.Stack.load(basic.config)
    snap = stack.snapshot()
    # PanicException is not an Exception subclass: `except Exception` would miss it.
    for kw in (dict(step_timeout=1e300), dict(step_timeout=float("nan"))):
        with pytest.raises(rollback.ConfigError, match="step_timeout"):
            stack.rollback(snap.id, **kw)
    with pytest.raises(rollback.ConfigError, match="max_age"):
        stack.gc(max_age=1e300)
    with pytest.raises(rollback.ConfigError):
        stack.assess(error_rate=float("nan"))


def test_stack_thresholds(tmp_path):
    (tmp_path / "f").write_text("x")
    stack = rollback.Stack.from_toml(
        '[decision]\nerror_rate_medium = 0.01\nerror_rate_high = 0.02\nerror_rate_critical = 0.05\n'
        '[[component]]\nname = "f"\ndriver = "files"\npaths = ["f"]\n',
        tmp_path,
    )
    assert stack.assess(error_rate=0.03).severity == "high"
    assert rollback.assess(error_rate=0.03).severity == "low"


def test_logging_receives_library_records(basic, caplog):
    stack = rollback.Stack.load(basic.config)
    with caplog.at_level(logging.INFO, logger="rollback"):
        snap = stack.snapshot()
    ours = [r for r in caplog.records if r.name == "rollback"]
    assert any(snap.id in r.getMessage() for r in ours), [r.getMessage() for r in ours]
    assert all(r.levelno >= logging.INFO for r in ours)


def test_resume_after_interruption_by_record(slow_basic):
    """An asyncio cancel stops the rollback at a step boundary; resume finishes it."""
    import asyncio

    stack = rollback.Stack.load(slow_basic.config)
    snap = stack.snapshot()
    slow_basic.deploy_bad()

    async def main():
        started = asyncio.Event()
        loop = asyncio.get_running_loop()

        def ev(e):
            if e["kind"] == "step_started" and e["component"] == "worker":
                loop.call_soon_threadsafe(started.set)

        task = asyncio.ensure_future(stack.rollback_async(snap, on_event=ev))
        await started.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    # The rollback goes on to the next step boundary in the background.
    import time
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if stack.history():
            break
        time.sleep(0.1)
    interrupted = stack.history()[-1]
    assert interrupted.status == "interrupted"
    assert stack.check().unfinished_rollbacks == [interrupted.rollback_id]
    finished = stack.resume(interrupted)
    assert finished.status == "succeeded" and finished.resumed
    assert stack.verify(snap)
    assert stack.check().unfinished_rollbacks == []


def _slow_callback_rollback(basic, run):
    """A rollback whose on_event sleeps `pause` seconds per event; returns the record,
    the events seen when the call returned, and the callback's total sleep."""
    import time

    pause = 0.2
    stack = rollback.Stack.load(basic.config)
    snap = stack.snapshot()
    basic.deploy_bad()
    events = []

    def slow(e):
        time.sleep(pause)
        events.append(e)

    record = run(stack, snap, slow)
    seen = list(events)
    return record, seen, pause * len(seen) * 1000


def test_a_slow_on_event_does_not_slow_the_rollback(basic):
    # Before: the callback ran inline, on the step's thread, and the record's
    # duration was the sum of the callback's sleeps.
    record, seen, slept_ms = _slow_callback_rollback(basic, lambda s, snap, cb: s.rollback(snap, on_event=cb))
    assert record.succeeded
    assert len(seen) >= 10, [e["kind"] for e in seen]
    assert record.duration_ms < slept_ms / 2, (record.duration_ms, slept_ms)
    assert all(s["duration_ms"] < 1000 for s in record.steps), record.steps
    # Every event was delivered, in order, before the call returned.
    assert seen[-1]["kind"] == "finished" and seen[-1]["status"] == "succeeded"
    started = [e["index"] for e in seen if e["kind"] == "step_started"]
    assert started == sorted(started) and len(started) == len(record.steps)


def test_a_slow_on_event_does_not_slow_an_async_rollback(basic):
    import asyncio

    def run(stack, snap, cb):
        async def main():
            return await stack.rollback_async(snap, on_event=cb)

        return asyncio.run(main())

    record, seen, slept_ms = _slow_callback_rollback(basic, run)
    assert record.succeeded
    assert record.duration_ms < slept_ms / 2, (record.duration_ms, slept_ms)
    assert seen[-1]["kind"] == "finished"
