"""IPython magics: `%claude_exec`, `%%in_container` and `%lab`, thin front ends over `Lab`.

`%load_ext claude_lab` registers them. The lab they act on is the one of the kernel's working
directory (`Lab()`), until another is chosen:

    %lab use myproject          # a lab by name (the project is still the working directory)
    %lab use lab                # a Lab object in a variable (`$lab` works too), e.g. Lab(model=ScriptedModel(...))
    claude_lab.magics.set_lab(lab)   # the same from Python

Runs use that lab's model: its `Lab(model=...)` ScriptedModel, or its configured endpoint.
"""
from __future__ import annotations

import argparse
import re
import sys
from typing import Any, Callable

from IPython.core.error import UsageError
from IPython.core.getipython import get_ipython
from IPython.core.magic import Magics, cell_magic, line_cell_magic, line_magic, magics_class, no_var_expand
from IPython.core.magic_arguments import argument, magic_arguments, parse_argstring

from .containers.execution import OutputChunk, drain
from .errors import ExecError, InvalidName, LabError, ModelError, NotFound, NotRunning
from .lab import Lab
from .runs.results import RunResult
from .util.hints import in_idiom
from .widgets.transcript import event_lines, summary_line

__all__ = ["LabMagics", "ContainerCellError", "load_ipython_extension", "unload_ipython_extension",
           "set_lab", "get_lab"]

SHELLS = {"bash": ["bash", "-c"], "sh": ["sh", "-c"], "python3": ["python3", "-c"]}
LAB_COMMANDS = ("status", "up", "down", "agents", "pool", "stats", "panel", "use", "diff", "changes", "merge")
AGENT_COMMANDS = ("diff", "changes", "merge")
_TOKEN = re.compile(r"\S+")


class ContainerCellError(ExecError):
    """A `%%in_container` cell exited non-zero. Shown as one line: the cause is in the container's output."""

    def _render_traceback_(self) -> list[str]:  # IPython shows this instead of a Python traceback
        return [f"\x1b[0;31m{type(self).__name__}\x1b[0m: {self}"]


def _usage(func: Any) -> str:
    """The magic's usage line, without the reST `::` that IPython puts in front for its docstrings."""
    text = func.parser.format_usage().replace("::", "")
    return "usage: " + " ".join(text.split())


def _parse(func: Any, argv: str | list[str]) -> argparse.Namespace:
    """Parse a magic's arguments; a mistake says what is wrong and shows the usage."""
    try:
        if isinstance(argv, str):
            return parse_argstring(func, argv)
        return func.parser.parse_args(argv)
    except UsageError as exc:
        raise UsageError(f"{exc}\n{_usage(func)}") from None


def _run_cell(lab: Lab, target: str, command: list[str], *, user: str | None, workdir: str | None,
              env: dict[str, str] | None, timeout: float | None,
              on_chunk: Callable[[OutputChunk], None]) -> tuple[str, int | None]:
    """RUN STORE CALL SITE: the one place a `%%in_container` cell runs; returns (status, exit code).

    The cell is recorded as a run of kind "exec" (`lab.record_exec`, listed by `lab.runs()`),
    unless the project turned recording off (`record_runs = false`): then a plain `exec_stream`.
    Either way the command stops inside the container on timeout or interrupt, and status is
    success, error, timeout or cancelled.
    """
    if lab.config.record_runs:
        recorded = lab.record_exec(target, command, user=user, workdir=workdir, env=env, timeout=timeout,
                                   on_event=on_chunk)  # type: ignore[arg-type]
        return recorded.status, recorded.exit_code
    drained = drain(lab.exec_stream(target, command, user=user, workdir=workdir, env=env, timeout=timeout), on_chunk)
    return drained.status, drained.exit_code


@magics_class
class LabMagics(Magics):
    """The claude-lab magics; `current_lab` is the lab they act on."""

    def __init__(self, shell: Any = None):
        super().__init__(shell)
        self._lab: Lab | None = None
        self.panels: list[Any] = []  # panels made by %lab panel, closed when the extension unloads

    # -- which lab --------------------------------------------------------------------------------
    @property
    def current_lab(self) -> Lab:
        if self._lab is None:
            try:
                self._lab = Lab()
            except LabError as exc:
                raise UsageError(f"no lab for this folder: {exc}. Choose one with `%lab use NAME` "
                                 f"or `claude_lab.magics.set_lab(Lab(...))`") from exc
        return self._lab

    @current_lab.setter
    def current_lab(self, lab: Lab | None) -> None:
        if lab is not None and not isinstance(lab, Lab):
            raise UsageError(f"{lab!r} is not a Lab; give a claude_lab.Lab, or a lab's name to `%lab use`")
        self._lab = lab

    # -- %claude_exec -------------------------------------------------------------------------------
    @magic_arguments()
    @argument("--max-turns", type=int, metavar="N", help="stop the agent after N turns")
    @argument("--model", metavar="NAME", help="the model to ask for (for example sonnet); default the lab's")
    @argument("--timeout", type=float, metavar="S", help="stop the run after S seconds")
    @argument("-q", "--quiet", action="store_true", help="print nothing while it runs; only return the result")
    @argument("agent", nargs="?", help="the agent id, for example agent-001")
    @argument("prompt", nargs=argparse.REMAINDER,
              help="the rest of the line is the prompt (with %%%%claude_exec: the cell body)")
    @no_var_expand
    @line_cell_magic
    def claude_exec(self, line: str, cell: str | None = None) -> RunResult:
        """Run Claude Code in an agent of the lab; the run streams into the cell, the RunResult is returned.

        Options go before the agent id; everything after it is the prompt, as written::

            %claude_exec agent-001 create a new FastAPI endpoint
            %claude_exec --max-turns 5 agent-001 fix the failing test

            %%claude_exec agent-001
            A longer prompt, over several lines.

        While it runs the cell shows a line per tool call and the assistant's text, then a
        summary (status, turns, cost, changed files); the returned RunResult shows the diff.
        Interrupting the kernel stops the run inside the container.
        """
        tokens = list(_TOKEN.finditer(line))
        args = _parse(self.claude_exec, [_unquote(t.group()) for t in tokens])
        prompt = line[tokens[len(tokens) - len(args.prompt)].start():].strip() if args.prompt else ""
        prompt = _unquote(prompt)
        usage = _usage(self.claude_exec)
        if cell is not None:
            if prompt:
                raise UsageError(f"%%claude_exec takes the prompt from the cell body; put only options and the "
                                 f"agent id on its first line.\n{usage}")
            prompt = cell.strip()
        lab = self.current_lab
        if not args.agent:
            raise UsageError(f"missing the agent id. {_known_agents(lab)}\n{usage}")
        if not prompt:
            where = "in the cell body" if cell is not None else "after the agent id"
            raise UsageError(f"missing the prompt: write what {args.agent} should do {where}.\n{usage}")
        try:
            lab.agent(args.agent)
            run = lab.claude_stream(args.agent, prompt, max_turns=args.max_turns, model=args.model,
                                    timeout=args.timeout)
        except NotFound:
            raise UsageError(f"no agent {args.agent!r} in lab {lab.name!r}. {_known_agents(lab)}") from None
        except LabError as exc:  # not running, no engine, no API key, model unreachable, a bad option
            raise UsageError(in_idiom(str(exc), "magic")) from exc
        say = (lambda text: None) if args.quiet else _printer(sys.stdout)
        interrupted = False
        with run:
            try:
                for event in run:
                    for text in event_lines(event):
                        say(text)
            except KeyboardInterrupt:  # the kernel's interrupt: stop the run in the container, keep its result
                interrupted = True
                run.close()
            except ModelError as exc:  # e.g. the endpoint refused the key half-way
                if run.result is not None:
                    say(summary_line(run.result))
                raise UsageError(in_idiom(str(exc), "magic")) from exc
        result = run.result
        assert result is not None
        if interrupted:
            print("interrupted: the run was stopped inside the container", file=sys.stderr, flush=True)
        say(summary_line(result))
        return result

    # -- %%in_container -----------------------------------------------------------------------------
    @magic_arguments("%in_container")  # IPython puts one more % in front: the usage reads %%in_container
    @argument("target", help="an agent id, dev, postgres, redis, or a container name of the lab")
    @argument("-u", "--user", help="run as this user (default: the container's)")
    @argument("-w", "--workdir", metavar="DIR", help="run in this folder (default: the container's)")
    @argument("-e", "--env", action="append", default=[], metavar="K=V", help="set a variable (repeatable)")
    @argument("--shell", choices=sorted(SHELLS), default="bash", help="what runs the cell body (default bash)")
    @argument("--timeout", type=float, metavar="S", help="stop the command after S seconds")
    @argument("-o", "--out", metavar="VAR", help="store the output (stdout, as a str) in this variable")
    @argument("--no-raise", action="store_true", help="do not raise when the cell exits non-zero")
    @cell_magic
    def in_container(self, line: str, cell: str) -> None:
        """Run the cell in a container of the lab; stdout and stderr stream into the cell as they come.

            %%in_container agent-001 --env DEBUG=1 -o listing
            ls -la /workspace

        A non-zero exit raises an error naming the exit code (unless --no-raise); interrupting
        the kernel stops the command inside the container.
        """
        args = _parse(self.in_container, line)
        usage = _usage(self.in_container)
        env: dict[str, str] = {}
        for item in args.env:
            key, sep, value = item.partition("=")
            if not sep or not key:
                raise UsageError(f"--env {item!r}: give KEY=VALUE, for example --env DEBUG=1\n{usage}")
            env[key] = value
        if args.out is not None and not args.out.isidentifier():
            raise UsageError(f"-o {args.out!r}: give a Python variable name to store the output in")
        if not cell.strip():
            raise UsageError(f"the cell is empty: write the {args.shell} commands to run below the first line")
        lab = self.current_lab
        command = [*SHELLS[args.shell], cell]
        seen: dict[str, list[str]] = {"stdout": [], "stderr": []}

        def show(chunk: OutputChunk) -> None:  # decoded incrementally: a character split across reads comes whole
            seen[chunk.stream].append(chunk.text)
            out = sys.stdout if chunk.stream == "stdout" else sys.stderr
            out.write(chunk.text)
            out.flush()

        try:
            status, exit_code = _run_cell(lab, args.target, command, user=args.user, workdir=args.workdir,
                                          env=env or None, timeout=args.timeout, on_chunk=show)
        except (NotFound, InvalidName) as exc:  # an unknown target: the message lists what exists
            raise UsageError(in_idiom(str(exc), "magic")) from exc
        except NotRunning as exc:  # says how to start it
            raise UsageError(in_idiom(str(exc), "magic")) from exc
        stdout, stderr = "".join(seen["stdout"]), "".join(seen["stderr"])
        if args.out:
            self.shell.user_ns[args.out] = stdout
        if status == "cancelled":
            print("\ninterrupted: the command was stopped inside the container", file=sys.stderr, flush=True)
            raise KeyboardInterrupt
        what = f"the {args.shell} cell in {args.target}"
        if status == "timeout":
            message = f"{what} did not finish within {args.timeout:g}s; it was stopped inside the container"
        elif exit_code != 0:
            message = f"{what} exited with code {exit_code}"
        else:
            return None
        if args.no_raise:
            print(f"[{message}]", file=sys.stderr, flush=True)
            return None
        raise ContainerCellError(message, exit_code, stdout, stderr)

    # -- %lab -----------------------------------------------------------------------------------------
    @magic_arguments()
    @argument("command", nargs="?", choices=LAB_COMMANDS, metavar="COMMAND",
              help=f"one of: {', '.join(LAB_COMMANDS)} (none: show the lab)")
    @argument("name", nargs="?", help="for `use`: a lab's name, or a variable holding a Lab; for diff, changes, merge: the agent")
    @no_var_expand
    @line_magic("lab")
    def lab_magic(self, line: str) -> Any:
        """The lab of the magics: show it, start or stop it, list agents, stats, a panel, or choose another.

            %lab                 the lab and its containers
            %lab status          every container: role, state, health, image, ports
            %lab up / down       start the services (building images if needed) / stop every container
            %lab agents          the agents
            %lab pool            the warm pool's ready agents (setting agent_pool; `%lab up` keeps it filled)
            %lab stats           CPU, memory, network and disk per container
            %lab panel           the live panel (containers, runner, stats)
            %lab use NAME        use the lab called NAME; `%lab use VAR` uses the Lab object in VAR
            %lab diff AGENT      the agent's changes against the commit it was seeded from
            %lab changes AGENT   one row per file the agent changed
            %lab merge AGENT     its work merged into your project's branch (refused, changing nothing, on a
                                 conflict or an overlap with your uncommitted changes)
        """
        args = _parse(self.lab_magic, line)
        if args.command in AGENT_COMMANDS:
            if not args.name:
                raise UsageError(f"%lab {args.command} AGENT: give the agent's id. {_known_agents(self.current_lab)}")
            return self._agent_command(args.command, args.name)
        if args.command != "use" and args.name is not None:
            raise UsageError(f"%lab {args.command or ''} takes no argument (got {args.name!r}).\n"
                             f"{_usage(self.lab_magic)}")
        if args.command == "use":
            return self._use(args.name)
        lab = self.current_lab
        try:
            if args.command is None:
                return lab
            if args.command == "status":
                return lab.status()
            if args.command == "up":
                return lab.up()
            if args.command == "down":
                return lab.down()
            if args.command == "agents":
                status = lab.status()
                return status[status["role"] == "agent"][["agent", "group", "state", "name"]].reset_index(drop=True)
            if args.command == "pool":
                return lab.pool()
            if args.command == "stats":
                return lab.stats()
            panel = lab.panel()
            self.panels.append(panel)
            return panel
        except UsageError:
            raise
        except LabError as exc:
            raise UsageError(in_idiom(str(exc), "magic")) from exc

    def _agent_command(self, command: str, agent: str) -> Any:
        lab = self.current_lab
        try:
            if command == "diff":
                print(lab.diff(agent) or f"(no changes in {agent})", end="")
                return None
            if command == "changes":
                return lab.changes(agent)
            return lab.merge(agent)
        except NotFound:
            raise UsageError(f"no agent {agent!r} in lab {lab.name!r}. {_known_agents(lab)}") from None
        except LabError as exc:  # a merge conflict says which files and how to merge by hand
            raise UsageError(in_idiom(str(exc), "magic")) from exc

    def _use(self, name: str | None) -> Lab:
        if not name:
            raise UsageError("%lab use NAME: give a lab's name (`%lab use myproject`) or a variable holding "
                             "a Lab (`%lab use lab`)")
        key = name[1:] if name.startswith("$") else name
        value = self.shell.user_ns.get(key) if self.shell is not None else None
        if isinstance(value, Lab):
            self.current_lab = value
            return value
        if name.startswith("$"):
            raise UsageError(f"{key!r} is not a variable holding a Lab; "
                             f"{'it is a ' + type(value).__name__ if value is not None else 'there is no such variable'}")
        try:
            self.current_lab = Lab(name=name)
        except LabError as exc:
            raise UsageError(in_idiom(str(exc), "magic")) from exc
        return self._lab  # type: ignore[return-value]


def _unquote(text: str) -> str:
    """Drop one pair of quotes around the whole text (`--model "sonnet"`, a prompt in quotes)."""
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        return text[1:-1]
    return text


def _printer(stream: Any):
    def say(text: str) -> None:
        stream.write(text if text.endswith("\n") else text + "\n")
        stream.flush()
    return say


def _known_agents(lab: Lab) -> str:
    try:
        agents = [a.id for a in lab.agents()]
    except LabError:
        return ""
    return (f"Agents in lab {lab.name!r}: {', '.join(agents)}." if agents
            else f"Lab {lab.name!r} has no agents yet: create one with lab.create_agent('agent-001').")


# -- the extension ---------------------------------------------------------------------------------

def load_ipython_extension(ipython: Any) -> None:
    """`%load_ext claude_lab`: register the magics."""
    ipython.register_magics(LabMagics(ipython))


def unload_ipython_extension(ipython: Any) -> None:
    """`%unload_ext claude_lab`: close the panels the magics made and remove the magics."""
    manager = ipython.magics_manager
    instance = manager.registry.pop(LabMagics.__name__, None)
    if instance is None:
        return
    for panel in instance.panels:
        try:
            panel.close()
        except Exception:
            pass
    for kind, names in instance.magics.items():
        for name in names:
            manager.magics[kind].pop(name, None)


def _magics(shell: Any = None) -> LabMagics:
    shell = shell or get_ipython()
    if shell is None:
        raise LabError("no IPython shell here: set_lab() and get_lab() work in a notebook or IPython")
    instance = shell.magics_manager.registry.get(LabMagics.__name__)
    if instance is None:
        shell.extension_manager.load_extension("claude_lab")
        instance = shell.magics_manager.registry[LabMagics.__name__]
    return instance


def set_lab(lab: Lab | None, shell: Any = None) -> None:
    """Make the magics act on `lab` (None: back to the working directory's lab). Loads the extension."""
    _magics(shell).current_lab = lab


def get_lab(shell: Any = None) -> Lab:
    """The lab the magics act on."""
    return _magics(shell).current_lab
