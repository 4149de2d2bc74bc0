"""Smoke run of an installed `rollback-stack` (wheel or sdist) in a fresh venv: the
import resolves to the installed package, and a files stack is snapshotted, changed,
rolled back and verified. Run from outside the source tree:

    python smoke.py EXPECTED_FORM      # "wheel" or "sdist"

Not collected by pytest (its name does not start with `test_`)."""

import asyncio
import sys
import sysconfig
import tempfile
from importlib import metadata
from pathlib import Path

import rollback


def main() -> int:
    form = sys.argv[1] if len(sys.argv) > 1 else "wheel"
    site = Path(sysconfig.get_paths()["purelib"]).resolve()
    where = Path(rollback.__file__).resolve()
    assert site in where.parents, f"rollback imported from {where}, not the venv's {site}"
    dist = metadata.distribution("rollback-stack")
    assert dist.version == rollback.__version__, (dist.version, rollback.__version__)
    native = [f for f in dist.files or [] if f.name.startswith("_rollback") and f.suffix == ".so"]
    assert native and ".abi3." in native[0].name, native
    assert (where.parent / "py.typed").exists() and (where.parent / "__init__.pyi").exists()

    with tempfile.TemporaryDirectory() as d:
        root = Path(d)
        (root / "site").mkdir()
        (root / "site" / "index.html").write_text("v1")
        stack = rollback.Stack.from_toml('[[component]]\nname = "site"\ndriver = "files"\npaths = ["site"]\n', root)
        snap = stack.snapshot(label="smoke")
        (root / "site" / "index.html").write_text("v2 broken")
        (root / "site" / "new.html").write_text("added")
        assert not stack.verify(snap)
        record = stack.rollback(snap, trigger="smoke")
        assert record.succeeded, record.to_json()
        assert (root / "site" / "index.html").read_text() == "v1"
        assert not (root / "site" / "new.html").exists()
        assert stack.verify(snap)
        with_async = asyncio.run(stack.verify_async(snap))
        assert with_async
    print(f"smoke ({form}): rollback-stack {dist.version} from {where.parent}: rollback {record.rollback_id} {record.status}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
