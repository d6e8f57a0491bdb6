"""The house rules of the code, checked: layers, no import cycles, small modules, the public surface,
lazy imports, and the engine face that both backends satisfy."""
from __future__ import annotations

import inspect
import subprocess
import sys
from pathlib import Path

import grimp
import pytest

import claude_lab
from claude_lab.engine import (Engine, EngineFace, NetworkInfo, NodeInfo, VersionInfo, VolumeInfo)
from claude_lab.engine.swarm import SwarmEngine
from claude_lab.naming import LAB

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "claude_lab"
MAX_LINES = 500


def test_layer_contracts_hold():
    """import-linter's contracts in pyproject.toml: the layers, docker only in engine/, IPython and
    ipywidgets only in the notebook front, no tqdm or rich in the core."""
    from importlinter.cli import lint_imports

    assert lint_imports(config_filename=str(ROOT / "pyproject.toml"), no_cache=True, no_logo=True) == 0


def test_every_module_sits_in_a_layer():
    """A new top-level module or package must be placed in the layers contract, or the contract says nothing of it."""
    import tomllib

    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]
    layers = next(c["layers"] for c in config if c["type"] == "layers")
    placed = {name.strip() for layer in layers for name in layer.replace("|", ":").split(":")}
    mine = {f"claude_lab.{p.stem}" for p in PACKAGE.glob("*.py") if p.stem != "__init__"} | \
        {f"claude_lab.{p.parent.name}" for p in PACKAGE.glob("*/__init__.py")}
    assert sorted(mine - placed - {"claude_lab.__main__"}) == []


def _cycles(graph: grimp.ImportGraph) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iteratively)."""
    edges = {m: sorted(graph.find_modules_directly_imported_by(m)) for m in graph.modules}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0
    for root in sorted(edges):
        if root in index:
            continue
        work = [(root, iter(edges[root]))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(edges.get(child, []))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_no_import_cycle_counting_lazy_and_type_checking_imports():
    graph = grimp.build_graph("claude_lab", exclude_type_checking_imports=False, cache_dir=None)
    assert _cycles(graph) == []


def test_the_cycle_finder_finds_a_cycle(tmp_path, monkeypatch):
    """So that the test above can fail: two modules importing each other lazily are a cycle."""
    pkg = tmp_path / "cyclic_pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("def f():\n    from . import b\n")
    (pkg / "b.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from . import a\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    graph = grimp.build_graph("cyclic_pkg", cache_dir=None)
    assert _cycles(graph) == [["cyclic_pkg.a", "cyclic_pkg.b"]]


def test_no_module_over_500_lines():
    long = {str(p.relative_to(ROOT)): n for p in PACKAGE.rglob("*.py")
            if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_LINES}
    assert long == {}


def test_every_folder_says_what_it_is_for():
    for init in PACKAGE.rglob("__init__.py"):
        doc = inspect.cleandoc((__import__("ast").get_docstring(__import__("ast").parse(init.read_text())) or ""))
        assert doc, f"{init.relative_to(ROOT)} has no docstring saying what the folder is for"


def test_public_surface_is_sorted_and_exact():
    names = claude_lab.__all__
    assert names == sorted(names)
    assert len(names) == len(set(names))
    for name in names:
        assert getattr(claude_lab, name) is not None, name
    exported = {n for n in dir(claude_lab) if not n.startswith("_") and n not in ("annotations", "magics", "widgets")
                and not inspect.ismodule(getattr(claude_lab, n))}
    assert exported == set(names) - {"__version__"}
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        claude_lab.nope  # noqa: B018


def _fresh_modules(code: str) -> set[str]:
    out = subprocess.run([sys.executable, "-c", code + "\nimport sys; print(' '.join(sorted(sys.modules)))"],
                         capture_output=True, text=True, check=True, cwd=ROOT)
    return set(out.stdout.split())


def test_import_claude_lab_is_light():
    loaded = _fresh_modules("import claude_lab")
    assert not {"docker", "pandas", "IPython", "ipywidgets", "tqdm", "rich"} & loaded


def test_the_cli_starts_without_pandas_or_the_engine_client():
    """`claude-lab --help` draws help with typer (and rich, which typer loads for it); pandas loads to build a
    table, docker to talk to the engine, rich to print through it."""
    loaded = _fresh_modules("import claude_lab.cli")
    assert not {"pandas", "docker", "requests", "rich", "IPython", "ipywidgets"} & loaded
    loaded = _fresh_modules("import claude_lab.lab")  # what `claude-lab exec` needs: the engine, not pandas
    assert "pandas" not in loaded and "docker" in loaded


@pytest.mark.parametrize("module", ["claude_lab.magics", "claude_lab.widgets.transcript"])
def test_notebook_text_fronts_do_not_import_ipywidgets(module):
    assert "ipywidgets" not in _fresh_modules(f"import {module}")


def test_a_panel_module_does_import_ipywidgets():
    """The other side of the test above: a widget module really brings ipywidgets."""
    assert "ipywidgets" in _fresh_modules("import claude_lab.widgets.panel")


# -- the engine face ---------------------------------------------------------------------------------
def _face_members() -> dict[str, inspect.Signature | None]:
    members: dict[str, inspect.Signature | None] = {}
    for name, value in vars(EngineFace).items():
        if name.startswith("_"):
            continue
        members[name] = inspect.signature(value) if inspect.isfunction(value) else None
    members.update({name: None for name in EngineFace.__annotations__})
    return members


@pytest.mark.parametrize("backend", [Engine, SwarmEngine], ids=["local", "swarm"])
def test_both_backends_have_every_member_of_the_face(backend):
    for name, signature in _face_members().items():
        assert hasattr(backend, name) or name in ("backend", "base_url"), f"{backend.__name__} lacks {name}"
        if signature is None or not hasattr(backend, name):
            continue
        theirs = inspect.signature(getattr(backend, name))
        assert list(theirs.parameters) == list(signature.parameters), f"{backend.__name__}.{name}{theirs}"
        for param in signature.parameters.values():
            if param.default is not inspect.Parameter.empty:
                assert theirs.parameters[param.name].default == param.default, f"{backend.__name__}.{name}"


def test_the_local_engine_is_the_face_and_answers_in_records(engine: Engine):
    assert isinstance(engine, EngineFace)
    assert isinstance(engine.version(), VersionInfo) and engine.version().api >= (1, 41)
    assert engine.version()["Version"] == engine.version().version  # Docker's own keys still read
    assert [type(n) for n in engine.nodes()] == [NodeInfo]
    lab = f"pytest-arch-{__import__('uuid').uuid4().hex[:8]}"
    labels = {LAB: lab, "claude-lab.kind": "network"}
    try:
        assert engine.create_network(f"{lab}_net", labels) is True
        engine.create_volume(f"{lab}_vol", {LAB: lab, "claude-lab.kind": "volume"})
        (net,) = engine.networks({LAB: lab})
        (vol,) = engine.volumes({LAB: lab})
        assert isinstance(net, NetworkInfo) and net.name == f"{lab}_net" and net.labels[LAB] == lab
        assert isinstance(vol, VolumeInfo) and vol.name == f"{lab}_vol" and vol.labels[LAB] == lab
    finally:
        engine.remove_network(f"{lab}_net")
        engine.remove_volume(f"{lab}_vol")
    assert engine.networks({LAB: lab}) == [] and engine.volumes({LAB: lab}) == []
