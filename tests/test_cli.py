"""`claude-lab` as a user runs it: a separate process on the test's lab (real engine, no mocks).

Every call goes through the real entry point (`python -m claude_lab.cli`) with `-C <project> -n <lab>`
and the fixture's free ports in CLAUDE_LAB_*_PORT, so the CLI process works on the same lab that the
`lab` fixture destroys afterwards. State reaches the CLI only through the engine's labels.
"""
from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import typer.main

from claude_lab import Lab, __version__
from claude_lab.cli import app
from claude_lab.engine import Engine
from claude_lab.naming import LAB

ROOT = Path(__file__).resolve().parents[1]
COMMANDS = ["start", "stop", "restart", "destroy", "status", "stats", "list", "create", "remove", "exec", "enter",
            "logs", "cleanup", "build", "doctor", "diff", "changes", "fetch", "merge", "apply", "cp", "url",
            "claude", "runs", "show", "replay", "export", "import", "experiment", "pool", "swarm-sim"]


def run_cli(*args: str, lab: Lab | None = None, as_json: bool = False, timeout: float = 120,
            env: dict[str, str] | None = None, columns: str | None = "250",
            input_text: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run `claude-lab [-C project -n lab] [--json] args...` in a fresh process (COLUMNS=250 unless told:
    wide, so no table leaves a column out; `columns=None` leaves COLUMNS to `env`, as a pipe has it)."""
    argv = [sys.executable, "-m", "claude_lab.cli"]
    given = env or {}
    env = dict(os.environ, **given)
    if "COLUMNS" not in given:
        if columns is None:
            env.pop("COLUMNS", None)
        else:
            env["COLUMNS"] = columns
    if lab is not None:
        argv += ["-C", str(lab.config.project_dir), "-n", lab.name]
        env["CLAUDE_LAB_POSTGRES_PORT"] = str(lab.config.postgres_port)
        env["CLAUDE_LAB_REDIS_PORT"] = str(lab.config.redis_port)
    if as_json:
        argv.append("--json")
    return subprocess.run(argv + list(args), cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout,
                          input=input_text if input_text is not None else "")


def cli(lab: Lab, *args: str, as_json: bool = False, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return run_cli(*args, lab=lab, as_json=as_json, timeout=timeout)


def ok(proc: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert proc.returncode == 0, f"exit {proc.returncode}\nstdout: {proc.stdout}\nstderr: {proc.stderr}"
    return proc


def flat(text: str) -> str:
    """Rich wraps long error lines; compare messages with whitespace collapsed."""
    return " ".join(text.split())


def poll(condition, timeout: float = 10.0, interval: float = 0.05):
    """Wait for a condition with a deadline (never a bare sleep)."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        time.sleep(interval)


# -- help and version (no engine needed) ---------------------------------------------------------

def test_every_command_is_covered_by_the_help_tests():
    assert sorted(typer.main.get_command(app).commands) == sorted(COMMANDS)


def test_app_help_lists_every_command():
    for flag in ("--help", "-h"):
        proc = ok(run_cli(flag))
        assert "Usage:" in proc.stdout
        for command in COMMANDS:
            assert re.search(rf"^\W*{command}\b", proc.stdout, re.M), f"{command} missing from {flag}"


@pytest.mark.parametrize("command", COMMANDS)
def test_command_help(command: str):
    proc = ok(run_cli(command, "--help"))
    assert re.search(rf"Usage: .* {command} ", proc.stdout), proc.stdout


def test_version_alone_prints_the_version():
    assert ok(run_cli("--version")).stdout.strip() == __version__


# -- agents ---------------------------------------------------------------------------------------

def test_create_then_exec_as_developer_without_capabilities(lab: Lab):
    proc = ok(cli(lab, "create", "agent-001"))
    assert f"{lab.name}_agent-001" in flat(proc.stdout)
    assert lab.agent("agent-001").state == "running"

    assert ok(cli(lab, "exec", "agent-001", "--", "id", "-u")).stdout == "1000\n"
    status = ok(cli(lab, "exec", "agent-001", "--", "sh", "-c", "grep CapEff /proc/self/status")).stdout
    key, _, value = status.strip().partition(":")
    assert key == "CapEff" and re.fullmatch(r"0{16}", value.strip()), status
    # Without `--` the command runs as it is too (options end at the target).
    assert ok(cli(lab, "exec", "agent-001", "id", "-un")).stdout == "developer\n"
    # Options before the target: user, workdir, environment.
    proc = ok(cli(lab, "exec", "-u", "root", "-w", "/tmp", "-e", "GREETING=hi", "agent-001", "--",
                  "sh", "-c", 'echo "$GREETING $(id -u) $(pwd)"'))
    assert proc.stdout == "hi 0 /tmp\n"


def test_exec_exit_code_and_streams_are_the_commands(lab: Lab):
    lab.create_agent("runner", progress=False)
    proc = cli(lab, "exec", "runner", "--", "sh", "-c", "echo out; echo err >&2; exit 7")
    assert (proc.returncode, proc.stdout, proc.stderr) == (7, "out\n", "err\n")
    assert cli(lab, "exec", "runner", "--", "true").returncode == 0
    assert cli(lab, "exec", "runner", "--", "false").returncode == 1
    proc = cli(lab, "exec", "runner", "--", "sh", "-c", "echo out; exit 3", as_json=True)
    assert proc.returncode == 3
    result = json.loads(proc.stdout)
    assert (result["exit_code"], result["stdout"], result["target"]) == (3, "out\n", "runner")


def test_exec_timeout_exits_124_and_stops_the_command(lab: Lab):
    lab.create_agent("slow", progress=False)
    started = time.monotonic()
    proc = cli(lab, "exec", "--timeout", "1", "slow", "--", "sleep", "30")
    elapsed = time.monotonic() - started
    assert proc.returncode == 124, proc.stderr
    assert elapsed < 20, f"took {elapsed:.1f}s for a 1s timeout"
    assert "did not finish within 1.0s" in flat(proc.stderr)
    poll(lambda: "sleep 30" not in lab.exec("slow", "ps -eo args").stdout)


def test_a_fresh_cli_process_finds_agents_made_in_python_list_and_status(lab: Lab):
    lab.create_agent("from-python", group="g1", progress=False)
    lab.create_agent("other", progress=False)

    agents = json.loads(ok(cli(lab, "list", as_json=True)).stdout)
    assert [(a["agent"], a["group"], a["state"], a["name"]) for a in agents] == [
        ("from-python", "g1", "running", f"{lab.name}_from-python"),
        ("other", None, "running", f"{lab.name}_other"),
    ]
    assert all(a["image"] == lab.config.image("agent") for a in agents)
    only_g1 = json.loads(ok(cli(lab, "list", "--group", "g1", as_json=True)).stdout)
    assert [a["agent"] for a in only_g1] == ["from-python"]
    assert json.loads(ok(cli(lab, "list", "-g", "nope", as_json=True)).stdout) == []

    rows = json.loads(ok(cli(lab, "status", as_json=True)).stdout)
    assert {(r["name"], r["role"], r["state"], r["agent"]) for r in rows} == {
        (f"{lab.name}_from-python", "agent", "running", "from-python"),
        (f"{lab.name}_other", "agent", "running", "other"),
    }
    # And the tables for people.
    table = ok(cli(lab, "list")).stdout
    assert "from-python" in table and "g1" in table and f"lab {lab.name}: agents" in table
    # The CLI's exec reaches the container the Python object made.
    assert ok(cli(lab, "exec", "from-python", "--", "hostname")).stdout == "from-python\n"


def test_list_and_status_of_an_empty_lab(lab: Lab):
    assert json.loads(ok(cli(lab, "list", as_json=True)).stdout) == []
    assert json.loads(ok(cli(lab, "status", as_json=True)).stdout) == []


def test_logs(lab: Lab):
    lab.create_agent("talker", progress=False)
    # Whatever PID 1 writes is the container's log.
    lab.exec("talker", "echo first-line > /proc/1/fd/1; echo second-line > /proc/1/fd/1").check()
    text = poll(lambda: (lambda out: out if "second-line" in out else None)(ok(cli(lab, "logs", "talker")).stdout))
    assert text.splitlines()[-2:] == ["first-line", "second-line"]
    assert ok(cli(lab, "logs", "talker", "--tail", "1")).stdout == "second-line\n"
    proc = cli(lab, "logs", "nobody")
    assert proc.returncode == 4 and "nobody" in flat(proc.stderr)


def test_remove_stop_and_cleanup(lab: Lab, engine: Engine):
    for agent in ("keep", "gone", "wiped"):
        ok(cli(lab, "create", agent))

    def volumes() -> set[str]:
        return {v.name for v in engine.volumes({LAB: lab.name})}

    assert "removed agent gone" in ok(cli(lab, "remove", "gone")).stdout
    assert f"{lab.name}_gone_workspace" in volumes()  # the workspace stays without --volumes
    ok(cli(lab, "remove", "--volumes", "wiped"))
    assert f"{lab.name}_wiped_workspace" not in volumes()
    assert [a.id for a in lab.agents()] == ["keep"]
    proc = cli(lab, "remove", "gone")
    assert proc.returncode == 4 and "keep" in flat(proc.stderr)

    ok(cli(lab, "stop"))
    rows = json.loads(ok(cli(lab, "status", as_json=True)).stdout)
    assert [(r["agent"], r["state"]) for r in rows] == [("keep", "exited")]

    removed = json.loads(ok(cli(lab, "cleanup", as_json=True)).stdout)
    assert removed == {"containers": [f"{lab.name}_keep", f"{lab.name}_keep_netguard"],  # + its firewall
                       "networks": [f"{lab.name}_net"], "volumes": []}
    assert json.loads(ok(cli(lab, "status", as_json=True)).stdout) == []
    assert f"{lab.name}_keep_workspace" in volumes()
    # Nothing left to clean: an empty report, still exit 0.
    assert json.loads(ok(cli(lab, "cleanup", "--volumes", as_json=True)).stdout) == {
        "containers": [], "networks": [], "volumes": []}


def test_start_brings_up_healthy_services_then_stop(lab: Lab):
    proc = ok(cli(lab, "start", as_json=True, timeout=300))
    started = {r["role"]: r for r in json.loads(proc.stdout)}
    assert set(started) == {"postgres", "redis", "dev"}

    rows = {r["role"]: r for r in json.loads(ok(cli(lab, "status", as_json=True)).stdout)}
    assert {role: r["state"] for role, r in rows.items()} == {"postgres": "running", "redis": "running",
                                                              "dev": "running"}
    assert rows["postgres"]["health"] == "healthy" and rows["redis"]["health"] == "healthy"
    # The ports came from the environment the CLI was given.
    assert f"127.0.0.1:{lab.config.postgres_port}->5432/tcp" == rows["postgres"]["ports"]
    assert f"127.0.0.1:{lab.config.redis_port}->6379/tcp" == rows["redis"]["ports"]
    with socket.create_connection(("127.0.0.1", lab.config.redis_port), timeout=5) as s:
        s.sendall(b"PING\r\n")
        assert s.recv(16) == b"+PONG\r\n"

    assert ok(cli(lab, "exec", "dev", "--", "pwd")).stdout == f"/workspace/{lab.config.project_name}\n"
    assert "ready to accept connections" in ok(cli(lab, "logs", "postgres")).stdout
    assert len(ok(cli(lab, "logs", "--tail", "1", "postgres")).stdout.strip().splitlines()) == 1

    ids = {c.name: c.id for c in lab.containers()}
    ok(cli(lab, "start", timeout=120))  # idempotent: the same containers
    assert {c.name: c.id for c in lab.containers()} == ids

    stopped = json.loads(ok(cli(lab, "stop", as_json=True)).stdout)
    assert {r["role"]: r["state"] for r in stopped} == {"postgres": "exited", "redis": "exited", "dev": "exited"}


def test_build_reports_images_up_to_date(lab: Lab):
    outcomes = json.loads(ok(cli(lab, "build", as_json=True)).stdout)
    assert [(o["image"], o["tag"], o["built"]) for o in outcomes] == [
        (name, lab.config.image(name), False) for name in ("base", "dev", "agent", "postgres", "redis", "netguard")]
    proc = cli(lab, "build", "nope")
    assert proc.returncode == 4 and "no image named 'nope'" in flat(proc.stderr)


# -- doctor ---------------------------------------------------------------------------------------

def doctor(lab: Lab) -> tuple[int, dict[str, dict]]:
    proc = cli(lab, "doctor", as_json=True)
    checks = json.loads(proc.stdout)
    assert all(set(c) == {"name", "ok", "detail", "fix"} for c in checks)
    by_name = {c["name"]: c for c in checks}
    assert len(by_name) == len(checks)
    assert proc.returncode == (0 if all(c["ok"] for c in checks) else 1), checks
    return proc.returncode, by_name


def test_doctor_json(lab: Lab):
    _, checks = doctor(lab)
    pg, rd = lab.config.postgres_port, lab.config.redis_port
    assert {"engine", "api version", "base image", "images", "ca certs", f"port {pg}", f"port {rd}"} <= set(checks)
    for name in ("engine", "api version", "base image", "images", f"port {pg}", f"port {rd}"):
        assert checks[name]["ok"], checks[name]
    assert checks["images"]["detail"] == "all built and up to date"
    for check in checks.values():
        assert check["ok"] or check["fix"], f"a failing check without a fix: {check}"
    # The human table has the same checks.
    table = cli(lab, "doctor")
    assert "claude-lab doctor" in table.stdout and "api version" in table.stdout


def test_doctor_fails_with_exit_1_when_a_port_is_taken(lab: Lab):
    port = lab.config.postgres_port
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", port))
        holder.listen()
        code, checks = doctor(lab)
    assert code == 1
    assert checks[f"port {port}"]["ok"] is False
    assert "postgres_port" in checks[f"port {port}"]["fix"]
    assert checks[f"port {lab.config.redis_port}"]["ok"] is True


def test_without_an_engine_doctor_says_so_and_commands_exit_3(tmp_path: Path):
    nowhere = {"DOCKER_HOST": "tcp://127.0.0.1:1"}  # nothing listens on port 1
    proc = run_cli("-C", str(tmp_path), "--json", "doctor", env=nowhere)
    assert proc.returncode == 1
    checks = json.loads(proc.stdout)
    assert [(c["name"], c["ok"]) for c in checks] == [("engine", False)]
    assert "DOCKER_HOST" in checks[0]["fix"]
    proc = run_cli("-C", str(tmp_path), "status", env=nowhere)
    assert proc.returncode == 3
    assert "no Docker engine answers at tcp://127.0.0.1:1" in flat(proc.stderr)


# -- errors ---------------------------------------------------------------------------------------

def test_error_exit_codes(lab: Lab, tmp_path: Path):
    lab.create_agent("agent-001", progress=False)

    proc = cli(lab, "exec", "agent-999", "--", "true")
    assert proc.returncode == 4
    assert "agent-999" in flat(proc.stderr) and "Agents: agent-001" in flat(proc.stderr)
    proc = cli(lab, "exec", "agent-999", "--", "true", as_json=True)
    assert proc.returncode == 4
    assert json.loads(proc.stdout)["error"] == "NotFound"

    for args in (("create", "Agent_1"), ("exec", "Agent_1", "--", "true"), ("logs", "Agent_1")):
        proc = cli(lab, *args)
        assert proc.returncode == 8, (args, proc.stderr)
        assert "invalid" in proc.stderr and "'Agent_1'" in proc.stderr
    # An error message with rich markup in it is printed as it is, never parsed (it used to crash).
    proc = cli(lab, "create", "[/x]")
    assert proc.returncode == 8 and "'[/x]'" in proc.stderr and "Traceback" not in proc.stderr
    proc = cli(lab, "exec", "[bold]x", "--", "true")
    assert proc.returncode == 8 and "'[bold]x'" in proc.stderr

    proc = cli(lab, "create", "agent-001")
    assert proc.returncode == 9 and "already exists" in flat(proc.stderr)
    assert [a.id for a in lab.agents()] == ["agent-001"]

    proc = cli(lab, "exec", "agent-001", "--")
    assert proc.returncode == 2 and "no command" in flat(proc.stderr)
    proc = cli(lab, "exec", "-e", "NOEQUALS", "agent-001", "--", "true")
    assert proc.returncode == 2 and "KEY=VALUE" in proc.stderr

    lab.stop("agent-001")
    proc = cli(lab, "exec", "agent-001", "--", "true")
    assert proc.returncode == 1 and "not running" in flat(proc.stderr)

    proc = run_cli("-C", str(tmp_path / "no-such-folder"), "status")
    assert proc.returncode == 8 and "no-such-folder" in flat(proc.stderr)


def test_enter_a_missing_or_stopped_target_fails_clearly(lab: Lab):
    proc = cli(lab, "enter", "nobody")
    assert proc.returncode == 4
    assert "no container 'nobody'" in flat(proc.stderr)
    proc = cli(lab, "enter")  # the dev container, which is not started
    assert proc.returncode == 4
    assert "no container 'dev'" in flat(proc.stderr) and "start them" in flat(proc.stderr)
    lab.create_agent("sleeper", progress=False)
    lab.stop("sleeper")
    proc = cli(lab, "enter", "sleeper")
    assert proc.returncode == 1 and "sleeper is not running" in flat(proc.stderr)
