"""An `*_async` call still running when the interpreter exits: the module's threads
must not reach for an interpreter that is gone (a panic of the runtime thread,
"The Python interpreter is not initialized", and a backtrace on stderr)."""

import os
import subprocess
import sys
import textwrap
import time

import pytest

# The script holds the process open after the interpreter has finalized (a C-level
# `atexit` handler reading stdin), so that the call ends in the window where the
# interpreter is gone and the process is not; the test then lets it exit.
SCRIPT = textwrap.dedent(
    """
    import asyncio, ctypes, pathlib, sys
    import rollback

    root = pathlib.Path(sys.argv[1])
    mode = sys.argv[2]
    (root / "a.txt").write_text("a")
    stack = rollback.Stack.from_toml('''
    [[component]]
    name = "a"
    driver = "command"
    capture = ["sh", "-c", "if [ -e hold-capture ]; then sleep 1; touch captured; fi; cat a.txt"]
    restore = ["sh", "-c", "sleep 1; cat > a.txt; touch restored"]
    ''', root)

    libc = ctypes.CDLL("libc.so.6")
    libc.__cxa_atexit(ctypes.cast(libc.getchar, ctypes.c_void_p), None, None)

    def on_event(e):
        pass

    if mode == "script-ends":
        # A task the script never awaits: the loop is left with it pending.
        (root / "hold-capture").write_text("")
        loop = asyncio.new_event_loop()

        async def start():
            return asyncio.ensure_future(stack.snapshot_async(on_event=on_event))

        task = loop.run_until_complete(start())
        loop.run_until_complete(asyncio.sleep(0.3))
    elif mode == "task-cancelled":
        # A rollback whose task is cancelled runs on to its step boundary.
        snap = stack.snapshot()

        async def main():
            task = asyncio.ensure_future(stack.rollback_async(snap, on_event=on_event))
            await asyncio.sleep(0.3)
            task.cancel()

        asyncio.run(main())
    print("script ended", flush=True)
    """
)


@pytest.mark.parametrize("mode,marker", [("script-ends", "captured"), ("task-cancelled", "restored")])
def test_a_call_pending_at_exit_ends_quietly(tmp_path, mode, marker):
    script = tmp_path / "script.py"
    script.write_text(SCRIPT)
    root = tmp_path / "stack"
    root.mkdir()
    env = {**os.environ, "RUST_BACKTRACE": "1"}
    proc = subprocess.Popen(
        [sys.executable, str(script), str(root), mode],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )
    try:
        # The call's command ends after the script did; give the call itself a moment
        # more to finish and look for its caller.
        deadline = time.monotonic() + 60
        while not (root / marker).exists():
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, f"{marker} never appeared"
            time.sleep(0.05)
        time.sleep(2)
        out, err = proc.communicate(input="", timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert "script ended" in out
    for bad in ("panicked", "not initialized", "fatal runtime error", "stack backtrace"):
        assert bad not in err, err
    assert proc.returncode == 0, err
