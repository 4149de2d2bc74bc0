"""stack.watch(): a heartbeat probe over a real file, the rollback it starts, its
decisions through on_event, a dry run, and cancellation."""

import asyncio
import os
import threading
import time
from datetime import timedelta

import pytest

import rollback

WATCH_TOML = """
[[component]]
name = "app"
driver = "files"
paths = ["app"]
# Snapshots taken while this passes are `last-good`, what a watch rolls back to. (Not
# the heartbeat: as a gate it would wait for a beat of the restored version.)
health = [{ command = ["true"] }]

[watch]
interval = "200ms"
window = 3
failure_limit = 2

[[watch.probe]]
name = "bot"
heartbeat = "heartbeat"
max_age = "1s"
"""


def make(tmp_path):
    (tmp_path / "app").mkdir()
    (tmp_path / "app" / "version").write_text("v1\n")
    (tmp_path / "heartbeat").write_text("")
    (tmp_path / "rollback.toml").write_text(WATCH_TOML)
    stack = rollback.Stack.load(tmp_path / "rollback.toml")
    snap = stack.snapshot(label="good")
    (tmp_path / "app" / "version").write_text("v2\n")
    return stack, snap


def stale(tmp_path):
    old = time.time() - 60
    os.utime(tmp_path / "heartbeat", (old, old))


def beating(tmp_path):
    """Touches the heartbeat every 100 ms until the returned event is set."""
    stop = threading.Event()

    def beat():
        while not stop.wait(0.1):
            os.utime(tmp_path / "heartbeat")

    threading.Thread(target=beat, daemon=True).start()
    return stop


def test_a_stopped_heartbeat_rolls_back_and_decisions_reach_on_event(tmp_path):
    stack, snap = make(tmp_path)
    stale(tmp_path)
    events = []
    report = stack.watch(duration="30s", on_event=events.append)
    assert report["outcome"] == "rolled_back", report
    rec = report["record"]
    assert isinstance(rec, rollback.Record)
    assert rec.status == "succeeded" and rec.snapshot_id == snap.id
    assert report["decisions"][0]["probe"] == "bot"
    assert report["decisions"][0]["action"] == "rollback"
    assert (tmp_path / "app" / "version").read_text() == "v1\n"
    kinds = [e["kind"] for e in events]
    assert kinds[0] == "watch_started"
    assert "watch_decision" in kinds and "step_started" in kinds, kinds
    # A watch's events name their probe in `probe`; `action` is a step's only.
    decision = next(e for e in events if e["kind"] == "watch_decision")
    assert (decision["probe"], decision["action"], decision["status"]) == ("bot", None, "rollback"), decision
    step = next(e for e in events if e["kind"] == "step_started")
    assert step["probe"] is None and step["action"] in ("stop", "restore", "start", "health_gate", "verify")
    assert events[-1]["kind"] == "watch_finished" and events[-1]["status"] == "rolled_back", events[-1]


def test_a_dry_run_decides_and_changes_nothing(tmp_path):
    stack, snap = make(tmp_path)
    stale(tmp_path)
    report = stack.watch(snap, duration=30, dry_run=True)
    assert report["outcome"] == "would_roll_back"
    assert report["record"] is None
    assert report["decisions"][0]["dry_run"] is True
    assert (tmp_path / "app" / "version").read_text() == "v2\n"
    assert stack.history() == []


def test_a_healthy_window_elapses_without_a_decision(tmp_path):
    stack, _ = make(tmp_path)
    stop = beating(tmp_path)
    try:
        report = stack.watch(duration=timedelta(milliseconds=900))
    finally:
        stop.set()
    assert report["outcome"] == "elapsed", report
    assert report["decisions"] == [] and report["record"] is None
    assert report["rounds"] >= 3


def test_watch_async_is_cancelled_cleanly(tmp_path):
    stack, _ = make(tmp_path)
    stop = beating(tmp_path)

    async def main():
        task = asyncio.ensure_future(stack.watch_async())
        await asyncio.sleep(0.6)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    try:
        asyncio.run(main())
    finally:
        stop.set()
    assert stack.history() == []
    assert (tmp_path / "app" / "version").read_text() == "v2\n"


def test_bad_input_raises_before_the_watch_starts(tmp_path):
    stack, _ = make(tmp_path)
    with pytest.raises(rollback.ConfigError, match="duration"):
        stack.watch(duration="soon")
    with pytest.raises(rollback.RollbackError):
        stack.watch("no-such-snapshot")
