"""What the wheel ships: type stubs and py.typed beside the module, stubs that
match the runtime API."""

import ast
import inspect
from pathlib import Path

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
