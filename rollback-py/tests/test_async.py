"""asyncio: the *_async forms run on the module's runtime while the event loop
keeps serving other tasks; sync calls release the GIL."""

import asyncio
import threading
import time

import pytest

import rollback


def slow_stack(tmp_path, seconds=0.8):
    """Two command components whose capture each takes `seconds`."""
    for n in ("a", "b"):
        (tmp_path / f"{n}.txt").write_text(n)
    return rollback.Stack.from_toml(
        f"""
[[component]]
name = "a"
driver = "command"
capture = ["sh", "-c", "sleep {seconds}; cat a.txt"]
restore = ["sh", "-c", "cat > a.txt"]

[[component]]
name = "b"
driver = "command"
phase = 2
capture = ["sh", "-c", "sleep {seconds}; cat b.txt"]
restore = ["sh", "-c", "cat > b.txt"]
""",
        tmp_path,
    )


def test_gather_two_snapshots_while_the_loop_ticks(tmp_path):
    stack = slow_stack(tmp_path)

    async def main():
        ticks = 0
        stop = asyncio.Event()

        async def ticker():
            nonlocal ticks
            while not stop.is_set():
                ticks += 1
                await asyncio.sleep(0.01)

        t = asyncio.create_task(ticker())
        before = ticks
        sa, sb = await asyncio.gather(
            stack.snapshot_async(label="a", components=["a"]),
            stack.snapshot_async(label="b", components=["b"]),
        )
        during = ticks - before
        stop.set()
        await t
        return sa, sb, during

    sa, sb, during = asyncio.run(main())
    assert isinstance(sa, rollback.Snapshot) and sa.components == ["a"]
    assert sb.components == ["b"] and sa.id != sb.id
    # 0.8 s of captures at one tick per 10 ms: a blocked loop would tick once or twice.
    assert during >= 20, f"the event loop ticked only {during} times while two snapshots ran"


def test_async_rollback_verify_plan(tmp_path):
    stack = slow_stack(tmp_path, seconds=0)

    async def main():
        snap = await stack.snapshot_async()
        (tmp_path / "a.txt").write_text("changed")
        v = await stack.verify_async(snap)
        assert not v and set(v.drift) == {"a"}
        plan = await stack.plan_async(snap, components=["a"])
        assert "a" in str(plan)
        events = []
        record = await stack.rollback_async(snap, components=["a"], trigger="test", on_event=events.append)
        assert record.status == "succeeded"
        assert any(e["kind"] == "step_finished" for e in events)
        assert await stack.verify_async(snap)
        report = await stack.check_async()
        assert report.ok
        drill = await stack.drill_async(components=["b"])
        assert drill.kind == "drill" and drill.succeeded
        gc = await stack.gc_async(keep=1)
        assert isinstance(gc, rollback.GcReport)
        health = await stack.health_async()
        assert health == {"a": [], "b": []}
        return record

    record = asyncio.run(main())
    assert (tmp_path / "a.txt").read_text() == "a"
    assert record.trigger == "test"


def test_async_errors_are_rollback_errors(tmp_path):
    stack = slow_stack(tmp_path, seconds=0)

    async def main():
        try:
            await stack.verify_async("nope")
        except rollback.SnapshotNotFound as e:
            return e
        raise AssertionError("no error")

    e = asyncio.run(main())
    assert e.code == "NOT_FOUND"


def test_sync_calls_release_the_gil(tmp_path):
    stack = slow_stack(tmp_path, seconds=0.8)
    counter = 0
    done = threading.Event()

    def spin():
        nonlocal counter
        while not done.is_set():
            counter += 1
            time.sleep(0.001)

    t = threading.Thread(target=spin)
    t.start()
    try:
        start = counter
        stack.snapshot(components=["a"])
        during = counter - start
    finally:
        done.set()
        t.join()
    # A thread holding the GIL for 0.8 s would leave the other at a handful of turns.
    assert during >= 50, f"a Python thread ran only {during} times during a blocking snapshot"


def test_a_forked_child_gets_its_own_runtime(tmp_path):
    """tokio's threads do not survive fork(): the child must build a runtime of its own."""
    import os

    stack = slow_stack(tmp_path, seconds=0)
    stack.snapshot(components=["a"])  # the parent's runtime is running now
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            snap = stack.snapshot(components=["b"])
            code = 0 if stack.verify(snap) else 3
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert len(stack.list()) == 2


def test_a_cancelled_snapshot_async_stops_and_frees_the_lock(tmp_path):
    stack = slow_stack(tmp_path, seconds=20)

    async def main():
        task = asyncio.ensure_future(stack.snapshot_async(label="given up"))
        await asyncio.sleep(0.5)
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            pass

    asyncio.run(main())
    # Within moments, not 20 s: the lock is free (gc takes it exclusively) and no
    # snapshot was written.
    deadline = time.monotonic() + 5
    while True:
        try:
            stack.gc(keep=1)
            break
        except rollback.LockedError:
            assert time.monotonic() < deadline, "the cancelled snapshot still holds the lock"
            time.sleep(0.05)
    assert stack.list() == []


def test_async_methods_return_coroutines(tmp_path):
    """What `asyncio.create_task` and task groups take; nothing runs before it is awaited."""
    import inspect

    stack = slow_stack(tmp_path, seconds=0)
    snap = stack.snapshot()
    calls = {
        "snapshot_async": lambda: stack.snapshot_async(label="never"),
        "plan_async": lambda: stack.plan_async(snap),
        "rollback_async": lambda: stack.rollback_async(snap),
        "verify_async": lambda: stack.verify_async(snap),
        "watch_async": lambda: stack.watch_async(snap, duration=1),
        "drill_async": lambda: stack.drill_async(),
        "resume_async": lambda: stack.resume_async(),
        "check_async": lambda: stack.check_async(),
        "gc_async": lambda: stack.gc_async(keep=1),
        "health_async": lambda: stack.health_async(),
    }
    assert set(calls) == {n for n in dir(rollback.Stack) if n.endswith("_async")} - {"guard_async"}
    for name, call in calls.items():
        c = call()
        assert inspect.iscoroutine(c) and asyncio.iscoroutine(c), (name, type(c))
        c.close()  # never awaited: nothing ran
    # Outside any event loop too, and none of them started: no snapshot, no record.
    assert [s.id for s in stack.list()] == [snap.id] and stack.history() == []


def test_coroutines_run_as_tasks_and_in_task_groups(tmp_path):
    import sys

    stack = slow_stack(tmp_path, seconds=0)

    async def main():
        coro = stack.snapshot_async(label="made")
        await asyncio.sleep(0.3)
        assert stack.list() == []  # not started until awaited
        snap = await asyncio.create_task(coro)
        (tmp_path / "a.txt").write_text("changed")
        if sys.version_info >= (3, 11):
            async with asyncio.TaskGroup() as tg:
                plan = tg.create_task(stack.plan_async(snap, components=["a"]))
                verify = tg.create_task(stack.verify_async(snap))
            assert "a" in plan.result().components and not verify.result()
        record = await asyncio.wait_for(stack.rollback_async(snap, components=["a"]), timeout=60)
        return snap, record

    snap, record = asyncio.run(main())
    assert snap.label == "made" and record.succeeded
    assert (tmp_path / "a.txt").read_text() == "a"


def test_bad_arguments_raise_when_the_async_call_is_made(tmp_path):
    stack = slow_stack(tmp_path, seconds=0)
    with pytest.raises(rollback.ConfigError, match="keep"):
        stack.gc_async(keep=True)
    with pytest.raises(rollback.ConfigError, match="components"):
        stack.snapshot_async(components="a")


def test_a_cancelled_rollback_task_stops_at_a_step_boundary(tmp_path):
    for n in ("a", "b"):
        (tmp_path / f"{n}.txt").write_text(f"{n}1")
    stack = rollback.Stack.from_toml(
        "".join(
            f'[[component]]\nname = "{n}"\ndriver = "command"\nphase = {p}\n'
            f'capture = ["cat", "{n}.txt"]\nrestore = ["sh", "-c", "sleep 1; cat > {n}.txt"]\n'
            for n, p in (("a", 1), ("b", 2))
        ),
        tmp_path,
    )
    snap = stack.snapshot()
    for n in ("a", "b"):
        (tmp_path / f"{n}.txt").write_text(f"{n}2")

    async def main():
        started = asyncio.Event()
        loop = asyncio.get_running_loop()

        def on_event(e):
            if e["kind"] == "step_started" and e["action"] == "restore":
                loop.call_soon_threadsafe(started.set)

        task = asyncio.create_task(stack.rollback_async(snap, on_event=on_event, safety_snapshot=False))
        await asyncio.wait_for(started.wait(), 60)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    # The restore that was running finishes; then the rollback stops, `interrupted`.
    deadline = time.monotonic() + 60
    while not stack.history() or stack.history()[-1].status != "interrupted":
        assert time.monotonic() < deadline, [r.status for r in stack.history()]
        time.sleep(0.1)
    record = stack.history()[-1]
    assert stack.resume(record).succeeded
    assert (tmp_path / "a.txt").read_text() == "a1" and (tmp_path / "b.txt").read_text() == "b1"
