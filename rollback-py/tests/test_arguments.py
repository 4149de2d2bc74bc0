"""Bad arguments are `ConfigError`s naming the argument, raised before anything runs;
paths may be `pathlib.Path`s. PyO3 alone took `True` as 1 (`keep=True`,
`duration=True`, `phases=[True]`) and raised `TypeError`/`OverflowError` for the rest."""

import datetime as dt
import math
import pathlib

import pytest

import rollback


def refused(call, pattern):
    with pytest.raises(rollback.ConfigError, match=pattern) as ei:
        call()
    assert ei.value.code == "CONFIG"
    return ei.value


def test_bad_arguments_are_config_errors_naming_them_and_change_nothing(basic):
    stack = rollback.Stack.load(basic.config)
    snap = stack.snapshot()
    basic.deploy_bad()
    cases = [
        (lambda: stack.gc(keep=-1), r"`keep` = -1 must be at least 1"),
        (lambda: stack.gc(keep=0), r"`keep` = 0 must be at least 1"),
        (lambda: stack.gc(keep=True), r"`keep` must be a whole number, not a bool"),
        (lambda: stack.gc(keep=1.5), r"`keep` must be a whole number, not a float"),
        (lambda: stack.gc(keep=2**70), r"`keep` = \d+ is out of range"),
        (lambda: stack.gc(max_age=True), r"`max_age` must be a duration"),
        (lambda: stack.gc(max_age=-1), r"`max_age`"),
        (lambda: stack.gc(max_age=dt.timedelta(days=-1)), r"`max_age` must not be negative"),
        (lambda: stack.gc(max_age=dt.timedelta(days=999_999_999)), r"`max_age`: .* out of range"),
        (lambda: stack.plan(snap, phases=[2**70]), r"`phases\[0\]` = \d+ is out of range"),
        (lambda: stack.plan(snap, phases=[1.9]), r"`phases\[0\]` must be a whole number, not a float"),
        (lambda: stack.plan(snap, phases=[True]), r"`phases\[0\]` must be a whole number, not a bool"),
        (lambda: stack.plan(snap, phases=2), r"`phases` must be a list, not an int"),
        (lambda: stack.plan(snap, components="code"), r"`components` must be a list, not a str"),
        (lambda: stack.plan(snap, level=3), r"`level` must be a string, not an int"),
        (lambda: stack.plan(5), r"`snapshot` must be a Snapshot, a Record or an id string"),
        (lambda: stack.plan(None), r"`snapshot` must be a Snapshot, a Record or an id string"),
        (lambda: stack.dry_run(snap, phases=[math.nan]), r"`phases\[0\]` must be a whole number"),
        (lambda: stack.rollback(snap, phases=[2.0]), r"`phases\[0\]` must be a whole number, not a float"),
        (lambda: stack.rollback(snap, safety_snapshot=0), r"`safety_snapshot` must be True or False, not an int"),
        (lambda: stack.rollback(snap, step_timeout=True), r"`step_timeout` must be a duration"),
        (lambda: stack.rollback(snap, step_timeout=0), r"`step_timeout` must be more than 0"),
        (lambda: stack.rollback(snap, step_timeout=math.nan), r"`step_timeout`"),
        (lambda: stack.rollback(snap, on_event=5), r"`on_event` must be callable, not an int"),
        (lambda: stack.rollback(snap, trigger=5), r"`trigger` must be a string"),
        (lambda: stack.rollback(snap, severity=3), r"`severity` must be a string"),
        (lambda: stack.rollback(snap, components=["code", 1]), r"`components\[1\]` must be a string, not an int"),
        (lambda: stack.drill(safety_snapshot="no"), r"`safety_snapshot` must be True or False"),
        (lambda: stack.resume(5), r"`rollback_id` must be a Snapshot, a Record or an id string"),
        (lambda: stack.resume(on_event="print"), r"`on_event` must be callable"),
        (lambda: stack.watch(duration="0s"), r"`duration` must be more than 0"),
        (lambda: stack.watch(duration=0), r"`duration` must be more than 0"),
        (lambda: stack.watch(duration=True), r"`duration` must be a duration .*not a bool"),
        (lambda: stack.watch(duration=dt.timedelta(0)), r"`duration` must be more than 0"),
        (lambda: stack.watch(dry_run=1), r"`dry_run` must be True or False"),
        (lambda: stack.verify(snap, components="code"), r"`components` must be a list, not a str"),
        (lambda: stack.snapshot(label=5), r"`label` must be a string"),
        (lambda: stack.snapshot(components=[None]), r"`components\[0\]` must be a string, not None"),
        (lambda: stack.health(components=[1]), r"`components\[0\]` must be a string"),
        (lambda: stack.show(5), r"`snapshot` must be a Snapshot"),
        (lambda: stack.record(None), r"`id` must be a Snapshot"),
        (lambda: stack.assess(error_rate=True), r"`error_rate` must be a number, not a bool"),
        (lambda: rollback.assess(error_rate="high"), r"`error_rate` must be a number, not a str"),
        (lambda: rollback.assess(perf_degradation=None, security=1), r"`security` must be True or False"),
        (lambda: rollback.assess(latency_ms=True), r"`latency_ms` must be a number"),
        (lambda: rollback.assess(data_impact=1), r"`data_impact` must be a string"),
        (lambda: rollback.Stack.load(5), r"`path` must be a path"),
        (lambda: rollback.Stack.from_toml(None), r"`text` must be a string, not None"),
        (lambda: rollback.Stack.from_toml("", base_dir=5), r"`base_dir` must be a path"),
        (lambda: rollback.Stack.from_dict([]), r"`config` must be a dict"),
    ]
    for call, pattern in cases:
        refused(call, pattern)
    # Nothing ran: no record, no second snapshot, the bad deploy in place.
    assert stack.history() == []
    assert [s.id for s in stack.list()] == [snap.id]
    assert (basic.root / "conf" / "app.toml").read_text() == 'mode = "broken"\n'
    assert (basic.root / "state.txt").read_text() == "two\n"


def test_async_forms_check_their_arguments_the_same_way(basic):
    import asyncio

    stack = rollback.Stack.load(basic.config)
    snap = stack.snapshot()
    refused(lambda: stack.gc_async(keep=-1), r"`keep` = -1")
    refused(lambda: stack.plan_async(snap, phases=[2**70]), r"`phases\[0\]`")
    refused(lambda: stack.watch_async(duration=True), r"`duration`")

    async def main():
        return await stack.plan_async(snap, phases=[2])

    assert asyncio.run(main()).phases == [2]


def test_config_dicts_refuse_what_toml_cannot_hold_naming_the_key(tmp_path):
    def comp(**kw):
        return {"component": [{"name": "c", "driver": "files", "paths": ["conf"], **kw}]}

    refused(lambda: rollback.Stack.from_dict(comp(phase=math.nan), tmp_path), r"`component\[0\]\.phase` = nan is not a finite")
    refused(lambda: rollback.Stack.from_dict(comp(phase=2**70), tmp_path), r"`component\[0\]\.phase` = \d+ is out of range")
    refused(lambda: rollback.Stack.from_dict(comp(paths={"conf"}), tmp_path), r"`component\[0\]\.paths` is a set")
    refused(lambda: rollback.Stack.from_dict({"component": [{1: "x"}]}, tmp_path), r"`component\[0\]` has a key that is not a string")
    refused(lambda: rollback.Stack.from_dict(comp(paths=[object()]), tmp_path), r"`component\[0\]\.paths\[0\]` is an object")
    cyclic = {"component": []}
    cyclic["store"] = {"again": cyclic}
    refused(lambda: rollback.Stack.from_dict(cyclic, tmp_path), r"nests deeper")


def test_pathlib_paths_simply_work(tmp_path):
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "app.toml").write_text("a = 1\n")
    stack = rollback.Stack.from_dict(
        {
            "store": {"path": tmp_path / "store"},
            "rto": {"component": dt.timedelta(minutes=20)},
            "component": [{"name": "conf", "driver": "files", "paths": [tmp_path / "conf"], "timeout": dt.timedelta(seconds=90)}],
        },
        base_dir=pathlib.Path(tmp_path),
    )
    assert stack.store_path == tmp_path / "store"
    snap = stack.snapshot()
    (tmp_path / "conf" / "app.toml").write_text("a = 2\n")
    record = stack.rollback(snap, components=["conf"])
    assert record.succeeded and record.rto_target_ms == 20 * 60 * 1000
    assert (tmp_path / "conf" / "app.toml").read_text() == "a = 1\n"
    (tmp_path / "rollback.toml").write_text('[[component]]\nname = "conf"\ndriver = "files"\npaths = ["conf"]\n')
    assert rollback.Stack.load(tmp_path / "rollback.toml").components == ["conf"]
    assert rollback.Stack.from_toml("", base_dir=tmp_path).store_path == tmp_path / ".rollback"
    # A duration may be a timedelta or seconds; 0 is a fine max_age.
    assert stack.gc(max_age=dt.timedelta(0)).kept
    assert stack.gc(keep=1, max_age=0).kept


def test_integers_of_other_libraries_count_as_integers(basic):
    """What `operator.index` takes (numpy's integers, say) is a whole number; a bool
    is not, whatever its type."""
    import operator

    class Index:
        def __init__(self, n):
            self.n = n

        def __index__(self):
            return self.n

    assert operator.index(Index(2)) == 2
    stack = rollback.Stack.load(basic.config)
    snap = stack.snapshot()
    assert stack.plan(snap, phases=[Index(2)]).phases == [2]
    assert stack.gc(keep=Index(1)).kept
    assert rollback.assess(error_rate=Index(1)).severity == "critical"
    refused(lambda: stack.plan(snap, phases=[Index(2**70)]), r"`phases\[0\]` = \d+ is out of range")


def test_latency_ms_takes_a_timedelta():
    import datetime as dt

    assert rollback.assess(latency_ms=dt.timedelta(milliseconds=900)).severity == "high"
    assert rollback.assess(latency_ms=dt.timedelta(milliseconds=900)).to_dict() == rollback.assess(latency_ms=900).to_dict()
    assert rollback.assess(latency_ms=dt.timedelta(microseconds=500)).severity == "low"
    with pytest.raises(rollback.ConfigError, match="latency_ms"):
        rollback.assess(latency_ms=dt.timedelta(milliseconds=-5))
    with pytest.raises(rollback.ConfigError, match="latency_ms"):
        rollback.assess(latency_ms="900ms")
