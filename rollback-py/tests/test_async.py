"""asyncio: the *_async forms run on the module's runtime while the event loop
keeps serving other tasks; sync calls release the GIL."""

import asyncio
import threading
import time

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
