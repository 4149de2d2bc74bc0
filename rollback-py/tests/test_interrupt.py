"""Ctrl-C during a blocking rollback: it stops at a step boundary, leaving a journal
that `resume` finishes."""

import signal
import threading

import pytest

import rollback


def test_keyboard_interrupt_stops_at_a_step_boundary(slow_basic):
    stack = rollback.Stack.load(slow_basic.config)
    snap = stack.snapshot()
    slow_basic.deploy_bad()

    def on_event(e):
        # While the slow `worker` restore runs (1.5 s), press Ctrl-C.
        if e["kind"] == "step_started" and e["component"] == "worker" and e["action"] == "restore":
            threading.Timer(0.2, signal.raise_signal, (signal.SIGINT,)).start()

    with pytest.raises(KeyboardInterrupt) as ei:
        stack.rollback(snap, trigger="manual", on_event=on_event)

    record = ei.value.record
    assert isinstance(record, rollback.Record)
    assert record.status == "interrupted"
    assert "resume" in str(ei.value)
    # The worker restore that was running finished; nothing after it ran.
    actions = [(s["component"], s["action"]) for s in record.steps]
    assert ("worker", "restore") in actions
    assert all(s["status"] == "ok" for s in record.steps)
    assert stack.check().unfinished_rollbacks == [record.rollback_id]
    assert stack.history()[-1].status == "interrupted"

    finished = stack.resume(record.rollback_id)
    assert finished.status == "succeeded" and finished.resumed
    assert finished.rollback_id == record.rollback_id
    assert stack.verify(snap)
    assert slow_basic.head() == slow_basic.v1


def test_keyboard_interrupt_during_snapshot_writes_nothing(tmp_path):
    (tmp_path / "x.txt").write_text("x")
    stack = rollback.Stack.from_toml(
        '[[component]]\nname = "x"\ndriver = "command"\n'
        'capture = ["sh", "-c", "sleep 3; cat x.txt"]\nrestore = ["sh", "-c", "cat > x.txt"]\n',
        tmp_path,
    )
    threading.Timer(0.3, signal.raise_signal, (signal.SIGINT,)).start()
    with pytest.raises(KeyboardInterrupt):
        stack.snapshot()
    assert stack.list() == []


def test_keyboard_interrupt_stops_a_resume_at_a_step_boundary_too(tmp_path):
    for f in "ab":
        (tmp_path / f"{f}.txt").write_text(f"{f}1\n")
    stack = rollback.Stack.from_toml(
        "".join(
            f'[[component]]\nname = "{f}"\ndriver = "command"\nphase = {p}\n'
            f'capture = ["cat", "{f}.txt"]\nrestore = ["sh", "-c", "sleep 1; cat > {f}.txt"]\n'
            for f, p in (("a", 1), ("b", 2))
        ),
        tmp_path,
    )
    snap = stack.snapshot()
    for f in "ab":
        (tmp_path / f"{f}.txt").write_text(f"{f}2\n")

    def on_event(e):
        # Ctrl-C while each restore runs: b (during the rollback), then a (during resume).
        if e["kind"] == "step_started" and e["action"] == "restore":
            threading.Timer(0.2, signal.raise_signal, (signal.SIGINT,)).start()

    with pytest.raises(KeyboardInterrupt) as first:
        stack.rollback(snap, on_event=on_event)
    assert first.value.record.status == "interrupted"
    with pytest.raises(KeyboardInterrupt) as second:
        stack.resume(first.value.record, on_event=on_event)
    record = second.value.record
    assert record is not None and record.status == "interrupted", second.value
    assert (tmp_path / "a.txt").read_text() == "a1\n", "the running restore finished"
    assert stack.check().unfinished_rollbacks == [record.rollback_id]
    finished = stack.resume(record)
    assert finished.status == "succeeded"
    assert stack.verify(snap)
