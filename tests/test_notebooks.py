"""The example notebooks (notebooks/*.ipynb), run for real against the engine.

Each notebook runs in its own `pytest --nbval` process, as a user would run it: a fresh kernel in
notebooks/, every cell executed in order, and the output of every cell not marked
`# NBVAL_IGNORE_OUTPUT` compared with the output saved in the notebook, after
notebooks/sanitize.cfg has masked what legitimately varies (lab names, run ids, ports, times,
durations, hashes). Cells that run magics are followed by cells that assert on the result, so a
magic that fails does not pass unnoticed.

The notebooks run next to a lab of the user's: while they run, 5433 and 6380 (the default ports)
are held, as the user's own lab would hold them, and the notebooks that start services take free
ports themselves (`postgres_port=0`). The child gets a run id
(CLAUDE_LAB_NOTEBOOK_RUN) that the notebooks put in their lab names (`nb01-<run>`). After the
child ends, whatever it left on the engine under that run id fails the test and is removed: the
notebooks' last cells must clean up after themselves, and a notebook that stops half-way leaves
nothing behind for the next run either.

The Binder path (no engine) is checked too: with DOCKER_HOST pointing at a closed port, the first
code cell of each notebook shows how to point it at an engine and stops the notebook there.
"""
from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from claude_lab.engine import Engine
from claude_lab.naming import LAB

nbformat = pytest.importorskip("nbformat")
pytest.importorskip("nbval")

ROOT = Path(__file__).resolve().parent.parent
FOLDER = ROOT / "notebooks"
SANITIZE = FOLDER / "sanitize.cfg"
NOTEBOOKS = sorted(FOLDER.glob("[0-9][0-9]_*.ipynb"))
NAMES = [nb.stem for nb in NOTEBOOKS]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def hold(*ports: int) -> list[socket.socket]:
    """Listen on these ports of 127.0.0.1 (those that are free: something may hold them already)."""
    held = []
    for port in ports:
        sock = socket.socket()
        try:
            sock.bind(("127.0.0.1", port))
            sock.listen()
            held.append(sock)
        except OSError:
            sock.close()
    return held


def leftovers(engine: Engine, run: str) -> list[str]:
    """Remove, and name, every container, volume and network of a lab whose name ends in -<run>."""
    api = engine.api
    mine = lambda labels: (labels or {}).get(LAB, "").endswith(f"-{run}")  # noqa: E731
    found = []
    for c in api.containers(all=True, filters={"label": LAB}):
        if mine(c["Labels"]):
            found.append(f"container {c['Names'][0].lstrip('/')}")
            api.remove_container(c["Id"], force=True)
    for v in api.volumes(filters={"label": LAB}).get("Volumes") or []:
        if mine(v.get("Labels")):
            found.append(f"volume {v['Name']}")
            api.remove_volume(v["Name"], force=True)
    for net in api.networks(filters={"label": LAB}):
        if mine(net.get("Labels")):
            found.append(f"network {net['Name']}")
            api.remove_network(net["Id"])
    return found


def code_cells(path: Path) -> list:
    return [c for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code"]


def test_the_notebooks_are_there_and_follow_the_rules():
    assert NAMES == ["01_environment_setup", "02_agents_from_notebooks", "03_resource_stats",
                     "04_reproducible_runs", "05_agents_on_your_project", "06_experiments"]
    for path in NOTEBOOKS:
        cells = code_cells(path)
        number = path.name[:2]
        assert "NoDockerEngine" in cells[0].source, f"{path.name}: the first code cell checks the engine"
        assert any(f'name=f"nb{number}-{{RUN}}"' in c.source for c in cells), f"{path.name}: name its lab nb{number}-<run>"
        assert "lab.destroy(volumes=True)" in cells[-1].source, f"{path.name}: the last cell removes the lab"
        # Saved outputs, so the notebooks read well on GitHub, and nbval has something to compare.
        assert all(c.execution_count is not None for c in cells), f"{path.name}: run it and save the outputs"


@pytest.mark.timeout(900)
@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=NAMES)
def test_notebook_runs_and_matches_its_saved_outputs(notebook: Path, engine: Engine, images: None,
                                                      tmp_path: Path):
    run = uuid.uuid4().hex[:6]
    env = {
        **os.environ,
        "CLAUDE_LAB_NOTEBOOK_RUN": run,
        "IPYTHONDIR": str(tmp_path / "ipython"),  # no profile or startup files of the user's
        "JUPYTER_RUNTIME_DIR": str(tmp_path / "jupyter-runtime"),
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    for key in ("CLAUDE_LAB_NAME", "CLAUDE_LAB_POSTGRES_PORT", "CLAUDE_LAB_REDIS_PORT"):
        env.pop(key, None)
    command = [sys.executable, "-m", "pytest", "--nbval", str(notebook.relative_to(ROOT)),
               "--nbval-sanitize-with", str(SANITIZE.relative_to(ROOT)), "--nbval-current-env",
               "--nbval-cell-timeout", "600", "-p", "no:cacheprovider", "-q", "--color", "no"]
    held = hold(5433, 6380)  # the user's own lab on the default ports
    try:
        done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=840)
    finally:
        left = leftovers(engine, run)
        for sock in held:
            sock.close()
    assert done.returncode == 0, f"{' '.join(command)} failed:\n{done.stdout[-12000:]}\n{done.stderr[-3000:]}"
    assert re.search(r"\b\d+ passed\b", done.stdout), done.stdout[-3000:]
    assert not left, f"{notebook.name} left these behind (now removed): {', '.join(left)}"


@pytest.mark.timeout(300)
@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=NAMES)
def test_without_an_engine_the_notebook_says_so_and_stops(notebook: Path, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch):
    """What Binder shows: nothing pretends to run."""
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    with socket.socket() as s:  # a port of this machine where nothing listens
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    monkeypatch.setenv("DOCKER_HOST", f"tcp://127.0.0.1:{closed}")
    monkeypatch.setenv("IPYTHONDIR", str(tmp_path / "ipython"))
    nb = nbformat.read(notebook, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    client = NotebookClient(nb, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(FOLDER)}})
    handler = signal.getsignal(signal.SIGINT)  # nbclient's kernel manager takes SIGINT over; Ctrl-C is ours again after
    try:
        with pytest.raises(CellExecutionError) as stopped:
            client.execute()
    finally:
        signal.signal(signal.SIGINT, handler)
    assert "NoDockerEngine" in str(stopped.value)
    cells = [c for c in nb.cells if c.cell_type == "code"]
    first = cells[0]
    shown = "".join(o.get("data", {}).get("text/markdown", "") for o in first.outputs)
    assert "No Docker engine answers here" in shown and "DOCKER_HOST" in shown
    assert f"tcp://127.0.0.1:{closed}" in shown  # what was tried
    error = [o for o in first.outputs if o.output_type == "error"]
    assert [e.ename for e in error] == ["NoDockerEngine"]
    assert error[0].traceback == ["NoDockerEngine: no Docker engine answers; see the message above"]
    assert all(c.execution_count is None and not c.outputs for c in cells[1:])  # nothing after it ran
