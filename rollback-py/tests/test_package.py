"""What the wheel ships: type stubs and py.typed beside the module, stubs that
match the runtime API."""

import ast
import inspect
import re
import subprocess
import sys
import types
import typing
from pathlib import Path

import pytest

import rollback

PKG = Path(rollback.__file__).parent


def test_stubs_and_py_typed_ship():
    assert (PKG / "py.typed").exists()
    assert (PKG / "__init__.pyi").exists()


def stub_names():
    tree = ast.parse((PKG / "__init__.pyi").read_text())
    out = {}
    for node in tree.body:
        if isinstance(node, ast.ClassDef):
            members = set()
            for item in node.body:
                if isinstance(item, ast.FunctionDef) and not item.name.startswith("_"):
                    members.add(item.name)
                elif isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name):
                    members.add(item.target.id)
            out[node.name] = members
        elif isinstance(node, ast.FunctionDef):
            out[node.name] = None
        elif isinstance(node, ast.ImportFrom) and node.level == 1 and node.module in (None, "_guard"):
            for alias in node.names:  # re-exported: `from ._guard import Guard as Guard`
                out[alias.asname or alias.name] = None
        elif isinstance(node, ast.Assign):
            for t in node.targets:
                if isinstance(t, ast.Name) and not t.id.startswith("_"):
                    out[t.id] = None  # an alias: `SnapshotNotFound = SnapshotNotFoundError`
    return out


def test_stubs_match_the_module():
    stubs = stub_names()
    for name in rollback.__all__:
        if name != "__version__":
            assert name in stubs, f"{name} missing from __init__.pyi"
    for name, members in stubs.items():
        obj = getattr(rollback, name)
        if members is None:
            continue
        # Exceptions: what each class adds itself (the rest is Exception's or the base's).
        names = vars(obj) if issubclass(obj, BaseException) else dir(obj)
        runtime = {m for m in names if not m.startswith("_")}
        assert members == runtime, f"{name}: stub {sorted(members ^ runtime)} differ"


def test_async_methods_exist_for_every_long_call():
    for m in ("snapshot", "plan", "rollback", "verify", "drill", "resume", "check", "gc", "health"):
        assert callable(getattr(rollback.Stack, m + "_async"))


def test_signatures_are_introspectable():
    sig = inspect.signature(rollback.Stack.rollback)
    assert "safety_snapshot" in sig.parameters and sig.parameters["safety_snapshot"].default is True
    assert list(inspect.signature(rollback.assess).parameters) == [
        "error_rate", "perf_degradation", "latency_ms", "data_impact", "security",
    ]


ROOT = Path(__file__).resolve().parents[2]


def test_the_distribution_is_rollback_stack_imported_as_rollback():
    from importlib import metadata

    dist = metadata.distribution("rollback-stack")
    assert dist.metadata["Name"] == "rollback-stack"
    assert dist.version == rollback.__version__
    assert any(str(f) == "rollback/__init__.py" for f in dist.files or [])
    # PyPI's `rollback` is another project: nothing installed here answers to it.
    with pytest.raises(metadata.PackageNotFoundError):
        metadata.distribution("rollback")
    # What users read says the name they can install.
    for readme in (ROOT / "rollback-py" / "README.md", ROOT / "README.md"):
        text = readme.read_text()
        assert "pip install rollback-stack" in text, readme
        assert not re.search(r"pip install rollback(?![-\w])", text), readme
    assert "pip install rollback-stack" in (dist.metadata.get_payload() or "")  # the PyPI page


def test_stack_constructors_are_classmethods():
    for name in ("load", "from_toml", "from_dict"):
        raw = inspect.getattr_static(rollback.Stack, name)
        assert isinstance(raw, (classmethod, types.ClassMethodDescriptorType)), (name, type(raw))


def shipped_texts():
    """What a user of the wheel reads: the stubs, the Python sources, every public
    docstring, and the project description."""
    from importlib import metadata

    for f in sorted(PKG.glob("*.py*")):
        yield f.name, f.read_text()
    seen = set()

    def ours(obj):
        name = obj.__name__ if inspect.ismodule(obj) else getattr(obj, "__module__", None) or ""
        return name == "rollback" or name.startswith("rollback.")

    def docs(prefix, obj):
        if id(obj) in seen or ((isinstance(obj, type) or inspect.ismodule(obj)) and not ours(obj)):
            return
        seen.add(id(obj))
        doc = getattr(obj, "__doc__", None)
        if isinstance(doc, str):
            yield prefix, doc
        if isinstance(obj, type) or inspect.ismodule(obj):
            for k, v in vars(obj).items():
                if not k.startswith("__"):
                    yield from docs(f"{prefix}.{k}", v)

    yield from docs("rollback", rollback)
    yield "README (project description)", metadata.distribution("rollback-stack").metadata.get_payload() or ""


def test_shipped_docs_cite_only_documents_in_the_repository():
    cited = 0
    for where, text in shipped_texts():
        assert "SPEC" not in text and "§" not in text, f"{where} cites a document outside the repository"
        for path in re.findall(r"(?<![\w./-])((?:docs|examples|scripts|benches|rollback-py)/[\w./-]+\.(?:md|py|sh))", text):
            cited += 1
            assert (ROOT / path).exists(), f"{where} cites {path}, which is not in the repository"
    assert cited > 0


def test_stubs_pass_stubtest():
    """The stubs against the installed module, as `mypy.stubtest` reads both."""
    r = subprocess.run(
        [sys.executable, "-m", "mypy.stubtest", "rollback", "--allowlist", str(ROOT / "rollback-py" / "stubtest-allowlist.txt")],
        capture_output=True, text=True, cwd=PKG.parent.parent,
    )
    assert r.returncode == 0, r.stdout + r.stderr


def test_examples_pass_mypy_strict(tmp_path):
    examples = [ROOT / "examples" / "python" / "health_check.py", ROOT / "examples" / "options-trading" / "emergency_rollback.py"]
    r = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--cache-dir", str(tmp_path), *map(str, examples)],
        capture_output=True, text=True, cwd=tmp_path,
    )
    assert r.returncode == 0, r.stdout + r.stderr


def test_typed_dicts_match_what_the_module_returns(basic):
    """Each `rollback.types` TypedDict names exactly the keys the values have."""
    stack = rollback.Stack.load(basic.config)
    events = []
    snap = stack.snapshot(label="t")
    basic.deploy_bad()
    record = stack.rollback(snap, on_event=events.append)

    def keys(td):
        return set(td.__required_keys__), set(td.__required_keys__) | set(td.__optional_keys__)

    def check(td, value):
        required, allowed = keys(td)
        assert required <= set(value) <= allowed, (td.__name__, sorted(set(value) ^ allowed))

    t = rollback.types
    check(t.RecordDict, record.to_dict())
    for s in record.steps:
        check(t.StepRecordDict, s)
        assert s["action"] in typing.get_args(t.StepAction) and s["status"] in typing.get_args(t.StepStatus)
    assert record.status in typing.get_args(t.Status) and record.kind in typing.get_args(t.RecordKind)
    for e in events:
        check(t.Event, e)
        assert e["kind"] in typing.get_args(t.EventKind)
        assert e["status"] is None or e["status"] in typing.get_args(t.EventStatus)
    check(t.SnapshotDict, snap.to_dict())
    for p in snap.parts:
        check(t.PartDict, p)
    plan = stack.plan(snap)
    check(t.PlanDict, plan.to_dict())
    for s in plan.steps:
        check(t.PlanStepDict, s)
        assert s["action"] in typing.get_args(t.Action)
    check(t.ScopeDict, plan.to_dict()["scope"])
    for d in record.discarded:
        check(t.DiscardDict, d)
    check(t.VerificationDict, stack.verify(snap).to_dict())
    check(t.CheckReportDict, stack.check().to_dict())
    check(t.GcReportDict, stack.gc(keep=1).to_dict())
    a = rollback.assess(error_rate=0.31)
    check(t.AssessmentDict, a.to_dict())
    assert a.severity in typing.get_args(t.Severity) and a.decision in typing.get_args(t.Decision)
