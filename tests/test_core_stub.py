"""The `_core.pyi` stub matches the compiled extension: the same public names, and
for every function and method the same parameter names in the same order (read
from the binary's `__text_signature__`)."""

import ast
import inspect
import pathlib

import pytest

import pyfuncnet
from pyfuncnet import _core

STUB = pathlib.Path(pyfuncnet.__file__).with_name("_core.pyi")


def _stub_tree():
    return ast.parse(STUB.read_text())


def _params(fn: ast.FunctionDef):
    args = fn.args
    names = [a.arg for a in args.posonlyargs + args.args + args.kwonlyargs]
    return [n for n in names if n != "self"]


def _stub_entries():
    """(qualified name, parameter names or None for non-functions)."""
    out = {}
    for node in _stub_tree().body:
        if isinstance(node, ast.FunctionDef):
            out[node.name] = _params(node)
        elif isinstance(node, ast.ClassDef):
            out[node.name] = None
            for item in node.body:
                if isinstance(item, ast.FunctionDef):
                    out[f"{node.name}.{item.name}"] = _params(item)
                elif isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name):
                    out[f"{node.name}.{item.target.id}"] = None
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            out[node.target.id] = None
    return out


def _runtime_names():
    return {n for n in dir(_core) if not n.startswith("_") or n == "__version__"}


def test_stub_and_binary_name_the_same_things():
    stub_top = {k for k in _stub_entries() if "." not in k}
    runtime = _runtime_names()
    assert stub_top == runtime, (
        f"only in the stub: {sorted(stub_top - runtime)}; only in the binary: {sorted(runtime - stub_top)}"
    )


@pytest.mark.parametrize("name", sorted(k for k, v in _stub_entries().items() if v is not None))
def test_stub_signature_matches_binary(name):
    obj = _core
    for part in name.split("."):
        obj = getattr(obj, part, None)
        assert obj is not None, f"{name} is in the stub but not in the binary"
    expected = _stub_entries()[name]
    if name.endswith("__init__"):
        obj = getattr(_core, name.split(".")[0])
    if name.endswith("__len__"):
        return  # slot wrappers carry no parameter list beyond self
    try:
        sig = inspect.signature(obj)
    except (TypeError, ValueError):
        pytest.fail(f"{name}: the binary exposes no text signature")
    got = [p for p in sig.parameters if p not in ("self", "$self")]
    assert got == expected, f"{name}: binary has {got}, stub says {expected}"


def test_stub_classes_list_every_public_method():
    entries = _stub_entries()
    for cls_name in [k for k, v in entries.items() if v is None and "." not in k]:
        cls = getattr(_core, cls_name)
        if not isinstance(cls, type) or issubclass(cls, BaseException):
            continue
        public = {n for n, _ in inspect.getmembers(cls) if not n.startswith("_")}
        stubbed = {k.split(".", 1)[1] for k in entries if k.startswith(cls_name + ".")}
        assert public <= stubbed, f"{cls_name}: not in the stub: {sorted(public - stubbed)}"
