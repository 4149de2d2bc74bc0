"""`with stack.guard(...)` and `async with stack.guard_async(...)`: a snapshot on
entry, a rollback when the block raises, the exception propagated with the record."""

import asyncio
import sys

import pytest

import rollback


class DeployFailed(Exception):
    pass


def test_guard_rolls_back_a_block_that_raises(basic):
    stack = rollback.Stack.load(basic.config)
    with pytest.raises(DeployFailed) as ei:
        with stack.guard(label="before deploy") as snap:
            assert isinstance(snap, rollback.Snapshot) and snap.label == "before deploy"
            basic.deploy_bad()
            raise DeployFailed("health check failed")
    record = ei.value.rollback_record
    assert isinstance(record, rollback.Record) and record.succeeded
    assert record.snapshot_id == snap.id and record.level == "complete"
    assert record.trigger == "guard: DeployFailed"
    assert ei.value.rollback_error is None
    if sys.version_info >= (3, 11):
        assert any(record.rollback_id in n for n in ei.value.__notes__)
    assert basic.head() == basic.v1 and basic.link() == "v1"
    assert (basic.root / "state.txt").read_text() == "one\n"
    assert stack.verify(snap)


def test_guard_changes_nothing_when_the_block_ends_normally(basic):
    stack = rollback.Stack.load(basic.config)
    with stack.guard(label="ok") as snap:
        basic.deploy_bad()
    assert stack.history() == [] and [s.id for s in stack.list()] == [snap.id]
    assert basic.link() == "v2"


def test_guard_scope_and_trigger(basic):
    stack = rollback.Stack.load(basic.config)
    events = []
    with pytest.raises(KeyError) as ei:
        with stack.guard(components=["config"], trigger="canary", severity="high", on_event=events.append) as snap:
            basic.deploy_bad()
            raise KeyError("x")
    record = ei.value.rollback_record
    assert snap.components == ["config"]
    assert record.level == "component" and record.components == ["config"]
    assert record.trigger == "canary" and record.severity == "high"
    assert (basic.root / "conf" / "app.toml").read_text() == 'mode = "live"\n'
    assert basic.link() == "v2"  # outside the guard's components
    assert any(e["kind"] == "snapshot_started" for e in events)
    assert any(e["kind"] == "step_finished" for e in events)


def test_guard_checks_its_arguments_before_the_snapshot(basic):
    stack = rollback.Stack.load(basic.config)
    for kw, name in (
        (dict(severity="urgent"), "severity"),
        (dict(step_timeout=True), "step_timeout"),
        (dict(safety_snapshot=1), "safety_snapshot"),
        (dict(components="config"), "components"),
        (dict(level="everything"), "level"),
        (dict(on_event=42), "on_event"),
        (dict(label=7), "label"),
    ):
        with pytest.raises(rollback.ConfigError, match=name):
            stack.guard(**kw)
        with pytest.raises(rollback.ConfigError, match=name):
            stack.guard_async(**kw)
    assert stack.list() == []


def test_a_rollback_that_cannot_start_is_reported_on_the_exception(basic):
    stack = rollback.Stack.load(basic.config)
    with pytest.raises(DeployFailed) as ei:
        with stack.guard() as snap:
            # The snapshot's artifacts are gone: the preflight refuses to start.
            for p in stack.store_path.rglob("*"):
                if p.is_file() and "objects" in p.parts:
                    p.write_bytes(b"corrupted")
            raise DeployFailed()
    assert ei.value.rollback_record is None
    assert isinstance(ei.value.rollback_error, rollback.RollbackError)
    assert snap is not None


def test_guard_async_rolls_back_and_lets_the_loop_run(basic):
    stack = rollback.Stack.load(basic.config)

    async def main():
        with pytest.raises(DeployFailed) as ei:
            async with stack.guard_async(label="async") as snap:
                basic.deploy_bad()
                raise DeployFailed()
        return snap, ei.value

    snap, exc = asyncio.run(main())
    assert exc.rollback_record.succeeded and exc.rollback_record.snapshot_id == snap.id
    assert basic.head() == basic.v1


def test_guard_async_rolls_back_a_cancelled_task(basic):
    stack = rollback.Stack.load(basic.config)

    async def main():
        entered = asyncio.Event()

        async def deploy():
            async with stack.guard_async() as snap:
                basic.deploy_bad()
                entered.set()
                await asyncio.sleep(60)
            return snap

        task = asyncio.create_task(deploy())
        await asyncio.wait_for(entered.wait(), 60)
        task.cancel()
        try:
            await task
        except asyncio.CancelledError as e:
            return e
        raise AssertionError("not cancelled")

    exc = asyncio.run(main())
    assert exc.rollback_record.succeeded
    assert basic.link() == "v1"
