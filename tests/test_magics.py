"""The magics through a real IPython shell, against the real engine and the real Claude Code CLI.

The model is a local ScriptedModel (served by the lab on its own network's gateway); nothing
here talks to anything but this machine.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import uuid

import pandas as pd
import pytest

pytest.importorskip("IPython")
from IPython.core.error import UsageError  # noqa: E402
from IPython.core.interactiveshell import InteractiveShell  # noqa: E402

from claude_lab import ExecError, Lab, LabError, RunResult, ScriptedModel  # noqa: E402
from claude_lab.magics import ContainerCellError, get_lab, set_lab  # noqa: E402
from support import git, git_project, poll  # noqa: E402


def tool(name: str, **tool_input) -> list[dict]:
    return [{"type": "tool_use", "name": name, "input": tool_input}]


class Recorder:
    """A stand-in for sys.stdout/sys.stderr that keeps every write, in order, and can react to them."""

    def __init__(self, name: str, log: list, on_write=None):
        self.name, self.log, self.on_write = name, log, on_write

    def write(self, text: str) -> int:
        self.log.append((self.name, text))
        if self.on_write is not None:
            self.on_write(self.name, text)
        return len(text)

    def flush(self) -> None:
        pass

    def text(self) -> str:
        return "".join(t for n, t in self.log if n == self.name)


@pytest.fixture
def ip(lab: Lab):
    """A real IPython shell with the extension loaded, its magics pointed at the test's lab."""
    shell = InteractiveShell.instance()
    shell.extension_manager.load_extension("claude_lab")  # what %load_ext does (quiet when loaded)
    set_lab(lab, shell)
    yield shell
    set_lab(None, shell)


@pytest.fixture
def record(monkeypatch):
    """Call in the test itself (pytest re-installs its own sys.stdout between set-up and the test)."""
    def start() -> tuple[Recorder, Recorder]:
        log: list = []
        out, err = Recorder("stdout", log), Recorder("stderr", log)
        monkeypatch.setattr(sys, "stdout", out)
        monkeypatch.setattr(sys, "stderr", err)
        return out, err
    return start


def running(lab: Lab, agent: str, needle: str) -> list[str]:
    out = lab.exec(agent, ["ps", "-eo", "pid=,stat=,args="]).stdout
    return [line for line in out.splitlines() if needle in line and " Z" not in line]


def test_import_claude_lab_never_imports_ipython():
    code = ("import sys, claude_lab; assert callable(claude_lab.load_ipython_extension); "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('IPython', 'ipywidgets', 'ipykernel')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


# -- %%in_container ------------------------------------------------------------------------------

def test_in_container_streams_output_as_it_comes(ip, lab: Lab, record):
    lab.create_agent("agent-001", progress=False)
    gate = f"/tmp/gate-{uuid.uuid4().hex[:8]}"
    out, err = record()
    seen: dict = {}

    def on_write(stream, text):
        # The command waits for the gate after printing "first"; only the test opens it, on
        # seeing "first". If output were held until the end, the cell would never finish.
        if stream == "stdout" and "first" in text and "gate_existed" not in seen:
            seen["gate_existed"] = lab.exec("agent-001", ["test", "-e", gate]).ok
            seen["second_written"] = "second" in out.text()
            lab.exec("agent-001", ["touch", gate]).check()

    out.on_write = on_write
    body = (f"echo first\n"
            f"while [ ! -e {gate} ]; do sleep 0.05; done\n"
            f"printf 'caf\\303'; sleep 0.3; printf '\\251\\n'\n"  # one character, split across two writes
            f"echo to-stderr >&2\n"
            f"echo second\n")
    assert ip.run_cell_magic("in_container", "agent-001 --timeout 60", body) is None
    assert seen == {"gate_existed": False, "second_written": False}
    assert out.text() == "first\ncafé\nsecond\n"  # decoded whole, never a replacement character
    assert err.text() == "to-stderr\n"


def test_in_container_options_and_output_variable(ip, lab: Lab, record):
    lab.create_agent("agent-001", progress=False)
    ip.run_cell_magic("in_container", "agent-001 --env GREETING=hi -e EMPTY= --user root --workdir /tmp -o got",
                      'echo "$GREETING/${EMPTY-unset}"; id -un; pwd\n')
    assert ip.user_ns["got"] == "hi/\nroot\n/tmp\n"
    ip.run_cell_magic("in_container", "agent-001 --shell python3 -o py", "import sys\nprint(6 * 7, sys.argv[0])\n")
    assert ip.user_ns["py"] == "42 -c\n"
    ip.run_cell_magic("in_container", f"{lab.name}_agent-001 --shell sh -o plain", "echo $0\n")  # a container name
    assert ip.user_ns["plain"] == "sh\n"
    # Each cell is a recorded run (kind "exec") in the project's run store.
    runs = lab.runs(kind="exec")
    assert runs["status"].tolist() == ["success"] * 3
    assert "print(6 * 7, sys.argv[0])" in runs["prompt"].iloc[1]
    lab.config.record_runs = False  # a project that records nothing: the cell still runs and streams
    ip.run_cell_magic("in_container", "agent-001 -o unrecorded", "echo quiet\n")
    assert ip.user_ns["unrecorded"] == "quiet\n" and len(lab.runs(kind="exec")) == 3


def test_in_container_nonzero_exit_and_timeout_raise(ip, lab: Lab, record):
    lab.create_agent("agent-001", progress=False)
    out, err = record()
    with pytest.raises(ContainerCellError) as failed:
        ip.run_cell_magic("in_container", "agent-001 -o partial", "echo partial\nexit 3\n")
    assert isinstance(failed.value, ExecError) and isinstance(failed.value, LabError)
    assert failed.value.exit_code == 3 and "exited with code 3" in str(failed.value)
    assert ip.user_ns["partial"] == "partial\n"  # kept even though the cell failed

    assert ip.run_cell_magic("in_container", "agent-001 --no-raise", "exit 4\n") is None
    assert "exited with code 4" in err.text()

    with pytest.raises(ContainerCellError, match="did not finish within 1s"):
        ip.run_cell_magic("in_container", "agent-001 --timeout 1", "sleep 77\n")
    assert running(lab, "agent-001", "sleep 77") == []  # stopped inside the container

    # In a cell, the failure shows as one line, not a Python traceback through the magic.
    before = len(out.log)
    result = ip.run_cell("%%in_container agent-001\nexit 5\n")
    shown = "".join(text for _, text in out.log[before:])
    assert isinstance(result.error_in_exec, ContainerCellError)
    assert "ContainerCellError" in shown and "exited with code 5" in shown
    assert "Traceback" not in shown and "magics.py" not in shown


def test_interrupt_stops_commands_and_runs_inside_the_container(ip, lab: Lab, record, ctrl_c):
    lab.create_agent("agent-001", progress=False)
    out, err = record()
    marker = f"/tmp/started-{uuid.uuid4().hex[:8]}"
    main = threading.main_thread().ident
    assert threading.current_thread().ident == main

    def interrupt_when(path):  # a real SIGINT, as Jupyter's interrupt button sends to the kernel
        def press():
            poll(lambda: lab.exec("agent-001", ["test", "-e", path]).ok, timeout=60)
            signal.pthread_kill(main, signal.SIGINT)
        threading.Thread(target=press, daemon=True).start()

    interrupt_when(marker)
    with pytest.raises(KeyboardInterrupt):
        ip.run_cell_magic("in_container", "agent-001", f"touch {marker}; sleep 131\n")
    assert running(lab, "agent-001", "sleep 131") == []
    assert "stopped inside the container" in err.text()

    model = ScriptedModel([tool("Bash", command=f"touch {marker}-2 && sleep 132")])
    lab.model = model
    try:
        interrupt_when(f"{marker}-2")
        result = ip.run_line_magic("claude_exec", "agent-001 wait for a long time")
    finally:
        model.stop()
    assert isinstance(result, RunResult) and result.status == "cancelled"
    assert running(lab, "agent-001", "sleep 132") == [] and running(lab, "agent-001", "claude") == []
    assert "interrupted" in err.text() and "CANCELLED" in out.text()


# -- %claude_exec ----------------------------------------------------------------------------------

def test_claude_exec_streams_the_run_and_returns_its_result(ip, lab: Lab, record):
    lab.create_agent("agent-001", progress=False)
    gate = f"/tmp/go-{uuid.uuid4().hex[:8]}"
    out, _ = record()
    model = ScriptedModel([
        [{"type": "text", "text": "Writing the endpoint."},
         *tool("Write", file_path="/workspace/app.py", content="def health():\n    return 'ok'\n")],
        # The Bash step finishes only once its line has reached the cell: the output streams live.
        tool("Bash", command=f"while [ ! -e {gate} ]; do sleep 0.1; done; python3 -B -c 'import app; print(app.health())'"),
        "Added health() to app.py.",
        # the second run (%%claude_exec, --max-turns 1): stops after its first turn
        tool("Bash", command="echo one"), "never reached",
    ])
    lab.model = model
    opened: list = []

    def on_write(stream, text):
        if "⏺ Bash" in text and not opened:
            opened.append(lab.exec("agent-001", ["test", "-e", gate]).ok)
            lab.exec("agent-001", ["touch", gate]).check()

    out.on_write = on_write
    try:
        result = ip.run_line_magic("claude_exec", "--timeout 120 agent-001 create a health() function in app.py, "
                                                  "don't forget to run it")
        assert opened == [False]
        assert isinstance(result, RunResult) and result.status == "success", result.error
        text = out.text()
        assert "Writing the endpoint." in text
        assert "⏺ Write: /workspace/app.py" in text and "⏺ Bash: while" in text
        assert text.index("⏺ Write") < text.index("⏺ Bash") < text.index("Added health() to app.py.")
        assert "SUCCESS · 3 turns · cost n/a (scripted)" in text and "changed: app.py" in text
        assert result.prompt == "create a health() function in app.py, don't forget to run it"  # verbatim
        assert "+def health():" in result._repr_mimebundle_()["text/html"]  # what the cell's Out shows

        cell = "Say one thing.\n  Then another; keep $HOME and {braces} as written.\n"
        second = ip.run_cell_magic("claude_exec", "--max-turns 1 -q agent-001", cell)
    finally:
        model.stop()
    assert second.status == "max_turns" and second.prompt == cell.strip()
    sent = [r for r in model.requests if r.kind == "main"][-1].body["messages"][0]
    assert "keep $HOME and {braces} as written" in str(sent)
    assert "⏺ Bash: echo one" not in out.text()  # --quiet


def test_usage_errors_say_what_to_do(ip, lab: Lab, record):
    lab.create_agent("agent-001", progress=False)
    lab.create_agent("agent-002", progress=False)
    lab.stop("agent-002")

    def usage_error(kind, line, cell=None):
        with pytest.raises(UsageError) as err:
            if kind == "cell":
                ip.run_cell_magic(line.split()[0], line.partition(" ")[2], cell or "")
            else:
                ip.run_line_magic(line.split()[0], line.partition(" ")[2])
        return str(err.value)

    missing_agent = usage_error("line", "claude_exec")
    assert "missing the agent id" in missing_agent and "agent-001, agent-002" in missing_agent
    assert "usage: %claude_exec" in missing_agent
    missing_prompt = usage_error("line", "claude_exec agent-001")
    assert "missing the prompt" in missing_prompt and "usage: %claude_exec" in missing_prompt
    unknown = usage_error("line", "claude_exec agent-404 do things")
    assert "agent-404" in unknown and "agent-001, agent-002" in unknown
    assert "usage" in usage_error("line", "claude_exec --max-turns many agent-001 go")
    if not os.environ.get("ANTHROPIC_API_KEY"):
        assert "no API key" in usage_error("line", "claude_exec agent-001 go")
    lab.model = model = ScriptedModel([])
    try:
        assert "not running" in usage_error("line", "claude_exec agent-002 go")
    finally:
        model.stop()
    assert "prompt from the cell body" in usage_error("cell", "claude_exec agent-001 also here", "and here")
    assert "missing the prompt" in usage_error("cell", "claude_exec agent-001", "  \n")

    no_target = usage_error("cell", "in_container nope", "ls")
    assert "no container 'nope'" in no_target and "Agents: agent-001, agent-002" in no_target
    assert "usage: %%in_container" in usage_error("cell", "in_container", "ls")  # no target at all
    assert "KEY=VALUE" in usage_error("cell", "in_container agent-001 --env NOEQUALS", "ls")
    assert "variable name" in usage_error("cell", "in_container agent-001 -o 1bad", "ls")
    assert "cell is empty" in usage_error("cell", "in_container agent-001", "\n")
    assert "invalid choice" in usage_error("cell", "in_container agent-001 --shell zsh", "ls")
    assert "not running" in usage_error("cell", "in_container agent-002", "ls")

    assert "invalid choice" in usage_error("line", "lab bogus")
    assert "give a lab's name" in usage_error("line", "lab use")
    assert "takes no argument" in usage_error("line", "lab status now")
    ip.user_ns["not_a_lab"] = 42
    assert "not a variable holding a Lab" in usage_error("line", "lab use $not_a_lab")
    assert "invalid lab name" in usage_error("line", "lab use Not_A_Name")

    # `%claude_exec?` shows the usage and the options.
    out, _ = record()
    ip.run_cell("%claude_exec?")
    shown = out.text()
    assert "%claude_exec [--max-turns N] [--model NAME] [--timeout S] [-q]" in shown
    assert "Options go before the agent id" in shown


# -- %lab ------------------------------------------------------------------------------------------

def test_lab_magic_status_agents_stats_use_panel_down(ip, lab: Lab, lab_factory):
    lab.create_agent("agent-001", group="g1", progress=False)
    assert ip.run_line_magic("lab", "") is lab
    status = ip.run_line_magic("lab", "status")
    assert isinstance(status, pd.DataFrame) and status["name"].tolist() == [f"{lab.name}_agent-001"]
    agents = ip.run_line_magic("lab", "agents")
    assert agents.to_dict("records") == [{"agent": "agent-001", "group": "g1", "state": "running",
                                          "name": f"{lab.name}_agent-001"}]
    stats = ip.run_line_magic("lab", "stats")
    assert f"{lab.name}_agent-001" in set(stats["name"])
    pool = ip.run_line_magic("lab", "pool")  # agent_pool unset: an empty pool, in the same columns
    assert isinstance(pool, pd.DataFrame) and pool.empty and "state" in pool.columns

    other = lab_factory()
    other.create_agent("agent-009", progress=False)
    assert ip.run_line_magic("lab", f"use {other.name}").name == other.name  # by name: a new Lab object
    assert ip.run_line_magic("lab", "agents")["agent"].tolist() == ["agent-009"]
    ip.user_ns["first_lab"] = lab
    assert ip.run_line_magic("lab", "use $first_lab") is lab  # by variable, `$` or not
    assert ip.run_line_magic("lab", "use first_lab") is lab and get_lab(ip) is lab

    panel = ip.run_line_magic("lab", "panel")
    assert panel.lab is lab and not panel.closed
    threads = [panel.containers.refresher.thread]
    assert all(t.is_alive() for t in threads)
    ip.run_line_magic("unload_ext", "claude_lab")  # closes the panels the magics made
    assert panel.closed and not any(t.is_alive() for t in threads)
    assert ip.find_line_magic("claude_exec") is None and ip.find_cell_magic("in_container") is None
    ip.run_line_magic("load_ext", "claude_lab")
    set_lab(lab, ip)

    down = ip.run_line_magic("lab", "down")
    assert down["state"].tolist() == ["exited"]
    assert lab.agent("agent-001").state == "exited"


def test_lab_magic_diff_changes_and_merge_of_a_seeded_agent(ip, lab: Lab, capsys):
    project = git_project(lab.config.project_dir, {"app.py": "x = 1\n"})
    lab.create_agent("agent-001", progress=False)
    lab.exec("agent-001", "echo 'y = 2' >> /workspace/app.py").check()
    assert ip.run_line_magic("lab", "diff agent-001") is None
    assert "+y = 2" in capsys.readouterr().out
    assert ip.run_line_magic("lab", "changes agent-001")["path"].tolist() == ["app.py"]
    (project / "app.py").write_text("x = 1\nmine\n")
    with pytest.raises(UsageError, match="uncommitted changes touch app.py"):
        ip.run_line_magic("lab", "merge agent-001")
    assert (project / "app.py").read_text() == "x = 1\nmine\n"
    git(project, "checkout", "app.py")
    result = ip.run_line_magic("lab", "merge agent-001")
    assert result.files == ["app.py"] and (project / "app.py").read_text() == "x = 1\ny = 2\n"
    with pytest.raises(UsageError, match="give the agent's id"):
        ip.run_line_magic("lab", "diff")
