"""Shared fixtures: a real engine, the lab's images built once, and a unique lab per test.

Every lab made here is named `pytest-<session>-<random>`; at the end of the session anything of
this session's labs still on the engine fails the run (and is removed, so runs do not pile up).
Labs of other pytest sessions running at the same time are left alone.
"""
from __future__ import annotations

import socket
import signal
import uuid
from pathlib import Path

import pytest

from claude_lab import Lab
from claude_lab.engine import Engine
from claude_lab.naming import LAB

TEST_PREFIX = f"pytest-{uuid.uuid4().hex[:6]}-"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(autouse=True)
def sigint_handler_kept(request):
    """A test (or the code it drives) that leaves another SIGINT handler behind fails, naming itself,
    instead of breaking a later Ctrl-C test."""
    before = signal.getsignal(signal.SIGINT)
    yield
    after = signal.getsignal(signal.SIGINT)
    if after is not before:
        signal.signal(signal.SIGINT, before)
        pytest.fail(f"{request.node.nodeid} left SIGINT handled by {after!r} (was {before!r})")


@pytest.fixture
def ctrl_c():
    """Ctrl-C raises KeyboardInterrupt in the main thread, as in a terminal or a kernel, however this run was
    started: a runner launched in the background by a non-interactive shell inherits SIGINT ignored, and
    Python then installs no handler (a real SIGINT would do nothing)."""
    before = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, before)


@pytest.fixture(scope="session")
def engine() -> Engine:
    return Engine()


@pytest.fixture(scope="session")
def images(engine: Engine) -> None:
    """Build (or find up to date) every image once per session."""
    Lab(Path.cwd(), name="pytest-images", engine=engine).build(progress=False)


def make_lab(tmp_path: Path, engine: Engine, **overrides) -> Lab:
    project = tmp_path / "project"
    project.mkdir(exist_ok=True)
    overrides.setdefault("postgres_port", free_port())
    overrides.setdefault("redis_port", free_port())
    return Lab(project, name=f"{TEST_PREFIX}{uuid.uuid4().hex[:8]}", engine=engine, **overrides)


@pytest.fixture
def lab(tmp_path: Path, engine: Engine, images: None):
    lab = make_lab(tmp_path, engine)
    yield lab
    lab.destroy(volumes=True)


@pytest.fixture
def lab_factory(tmp_path: Path, engine: Engine, images: None):
    """More labs in one test; each is destroyed afterwards."""
    made: list[Lab] = []

    def factory(**overrides) -> Lab:
        sub = tmp_path / f"lab{len(made)}"
        sub.mkdir()
        made.append(make_lab(sub, engine, **overrides))
        return made[-1]

    yield factory
    for lab in made:
        lab.destroy(volumes=True)


@pytest.fixture(scope="session")
def swarm_sim(engine: Engine):
    """A real swarm for the session: the host engine as manager plus two Docker-in-Docker workers.

    Named `pytest-sim-<hex>` with its registry on a free port; removed at the end of the session
    (leaving the swarm if the sim made it), and the teardown fails if anything labelled with its
    name is left.
    """
    from claude_lab.swarmsim import sim_down, sim_up

    name = f"pytest-sim-{uuid.uuid4().hex[:6]}"
    try:
        yield sim_up(2, name=name, registry_port=free_port(), engine=engine)
    finally:
        removed = sim_down(name, force=True, engine=engine)
        label = {"label": f"claude-lab.sim={name}"}
        api = engine.api
        # A sim that made the swarm while another sim (a parallel session) still uses it hands the
        # swarm over and keeps its network (the manager's address); the heir removes it when it leaves.
        kept = {removed["kept_network"]} if removed.get("kept_network") else set()
        left = ([c["Names"][0] for c in api.containers(all=True, filters=label)]
                + [v["Name"] for v in api.volumes(filters=label).get("Volumes") or []]
                + [n["Name"] for n in api.networks(filters=label) if n["Name"] not in kept])
        assert not left, f"swarm sim {name} left behind: {left}"


def leftovers(engine: Engine) -> list[str]:
    api = engine.api
    found = []
    for c in api.containers(all=True, filters={"label": LAB}):
        if c["Labels"].get(LAB, "").startswith(TEST_PREFIX):
            found.append(f"container {c['Names'][0].lstrip('/')}")
            api.remove_container(c["Id"], force=True)
    for v in api.volumes(filters={"label": LAB}).get("Volumes") or []:
        if (v.get("Labels") or {}).get(LAB, "").startswith(TEST_PREFIX):
            found.append(f"volume {v['Name']}")
            api.remove_volume(v["Name"], force=True)
    for net in api.networks(filters={"label": LAB}):
        if (net.get("Labels") or {}).get(LAB, "").startswith(TEST_PREFIX):
            found.append(f"network {net['Name']}")
            api.remove_network(net["Id"])
    return found


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    try:
        engine = Engine()
    except Exception:
        return
    left = leftovers(engine)
    if left:
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        message = "test labs left behind (now removed): " + ", ".join(left)
        if reporter:
            reporter.write_line(message, red=True)
        session.exitstatus = 1
