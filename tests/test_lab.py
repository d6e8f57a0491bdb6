"""The lab's services on the real engine: up, health, ports, idempotence, down, rollback."""
from __future__ import annotations

import socket

import psycopg
import pytest
import redis

from claude_lab import Lab, NotFound, PortInUse
from claude_lab.naming import LAB


def test_up_starts_healthy_services_reachable_from_the_host(lab: Lab):
    df = lab.up(progress=False)
    assert set(df["role"]) == {"postgres", "redis", "dev"}
    assert set(df["state"]) == {"running"}
    assert df.set_index("role").loc["postgres", "health"] == "healthy"
    assert df.set_index("role").loc["redis", "health"] == "healthy"
    assert list(df.columns) == ["name", "role", "state", "health", "image", "ports", "created", "agent", "group",
                                "egress", "node", "secrets"]
    cfg = lab.config
    with psycopg.connect(host="127.0.0.1", port=cfg.postgres_port, user="dev", password="dev",
                         dbname="dev", connect_timeout=5) as conn:
        assert conn.execute("select 40 + 2").fetchone()[0] == 42
    r = redis.Redis(host="127.0.0.1", port=cfg.redis_port, socket_timeout=5)
    assert r.ping()
    r.set("k", "v")
    assert r.get("k") == b"v"


def test_up_is_idempotent_and_down_up_keeps_data(lab: Lab):
    lab.up(progress=False)
    ids = {c.name: c.id for c in lab.containers()}
    lab.up(progress=False)
    assert {c.name: c.id for c in lab.containers()} == ids
    cfg = lab.config
    dsn = dict(host="127.0.0.1", port=cfg.postgres_port, user="dev", password="dev", dbname="dev", connect_timeout=5)
    with psycopg.connect(**dsn) as conn:
        conn.execute("create table kept (v int)")
        conn.execute("insert into kept values (7)")
    lab.down()
    assert set(lab.status()["state"]) == {"exited"}
    lab.up(progress=False)
    with psycopg.connect(**dsn) as conn:
        assert conn.execute("select v from kept").fetchone()[0] == 7


def test_dev_container_mounts_the_project_and_reaches_services_by_name(lab: Lab):
    (lab.config.project_dir / "hello.txt").write_text("from the host\n")
    lab.up(progress=False)
    workdir = f"/workspace/{lab.config.project_name}"
    res = lab.exec("dev", "pwd; cat hello.txt; whoami")
    assert res.stdout.split() == [workdir, "from", "the", "host", "developer"]
    res = lab.exec("dev", "pg_isready -h postgres -p 5432 && redis-cli -h redis ping")
    assert res.exit_code == 0, res.stderr
    assert "PONG" in res.stdout


def test_port_in_use_fails_before_anything_is_created(lab_factory, engine):
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    port = holder.getsockname()[1]
    try:
        lab = lab_factory(postgres_port=port)
        with pytest.raises(PortInUse) as err:
            lab.up(progress=False)
        assert str(port) in str(err.value) and "postgres_port" in str(err.value)
        assert err.value.port == port
        assert "python" in str(err.value).lower()  # the holder, found through psutil
        flt = {"label": f"{LAB}={lab.name}"}
        assert engine.api.containers(all=True, filters=flt) == []
        assert engine.api.networks(filters=flt) == []
        assert (engine.api.volumes(filters=flt).get("Volumes") or []) == []
    finally:
        holder.close()


def test_a_failure_half_way_through_up_removes_what_it_made(lab_factory, engine):
    # The network and the PostgreSQL volume are made, then the first container fails (no such image).
    lab = lab_factory(image_prefix="claude-lab-missing")
    with pytest.raises(NotFound, match="claude-lab-missing/postgres"):
        lab.up(build=False, progress=False)
    flt = {"label": f"{LAB}={lab.name}"}
    assert engine.api.containers(all=True, filters=flt) == []
    assert engine.api.networks(filters=flt) == []
    assert (engine.api.volumes(filters=flt).get("Volumes") or []) == []


def test_host_clients_psql_and_redis_cli_answer(lab: Lab):
    """The same check a person makes: psql and redis-cli on the host (make setup installs them)."""
    import shutil
    import subprocess

    lab.up(progress=False)
    cfg = lab.config
    assert shutil.which("psql") and shutil.which("redis-cli"), "run `make setup`: it installs psql and redis-cli"
    out = subprocess.run(["psql", f"postgresql://dev:dev@localhost:{cfg.postgres_port}/dev", "-tAc", "select 6*7"],
                         capture_output=True, text=True, timeout=30)
    assert out.stdout.strip() == "42", out.stderr
    out = subprocess.run(["redis-cli", "-p", str(cfg.redis_port), "ping"], capture_output=True, text=True, timeout=30)
    assert out.stdout.strip() == "PONG", out.stderr
