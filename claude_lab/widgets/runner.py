"""The agent runner panel: pick an agent, write a prompt, Run / Cancel, the live transcript, the result.

The run goes through `lab.claude_stream` on a worker thread, so the kernel stays free while the
agent works; the transcript grows through the Output widget's `append_stdout` (never
`with output:` from a thread), and Cancel stops the run inside the container.
"""
from __future__ import annotations

import html
import threading
from typing import TYPE_CHECKING

import ipywidgets as widgets

from ..errors import LabError, ModelError
from .transcript import event_lines, summary_line

if TYPE_CHECKING:
    from ..lab import Lab
    from ..runs.results import RunResult
    from ..runs.runner import Run

_STATUS_COLOURS = {"success": "#2e7d32", "error": "#c62828", "max_turns": "#ef6c00",
                   "timeout": "#ef6c00", "cancelled": "#757575"}


class RunnerPanel(widgets.VBox):
    """Run Claude Code in one of the lab's agents and watch it work.

    The model is the lab's: `Lab(model=ScriptedModel(...))`, or its configured endpoint.
    `.result` holds the last run's `RunResult`; `.errors` what went wrong, as shown.
    """

    def __init__(self, lab: "Lab", agents: list[str] | None = None, max_turns: int | None = None,
                 timeout: float | None = None):
        agent = widgets.Dropdown(options=[], description="agent", layout=widgets.Layout(width="260px"))
        prompt = widgets.Textarea(placeholder="What should the agent do?",
                                  layout=widgets.Layout(width="98%", height="70px"))
        run = widgets.Button(description="run", button_style="primary", icon="play", tooltip="start the run",
                             layout=widgets.Layout(width="80px"))
        cancel = widgets.Button(description="cancel", icon="stop", disabled=True,
                                tooltip="stop the run inside the container", layout=widgets.Layout(width="90px"))
        run.add_class("claude-lab-run")
        cancel.add_class("claude-lab-cancel")
        status = widgets.HTML()
        transcript = widgets.Output(layout=widgets.Layout(max_height="320px", overflow="auto", display="none",
                                                          border="1px solid #ddd", padding="2px"))
        summary = widgets.HTML()
        super().__init__([widgets.HBox([agent, run, cancel, status]), prompt, transcript, summary])
        self.add_class("claude-lab-runner")
        self.lab = lab
        self.max_turns, self.timeout = max_turns, timeout
        self.agent, self.prompt, self.run_button, self.cancel_button = agent, prompt, run, cancel
        self.status, self.transcript, self.summary = status, transcript, summary
        self.result: "RunResult | None" = None
        self.errors: list[str] = []
        self._run: "Run | None" = None
        self._thread: threading.Thread | None = None
        self._cancel_requested = False
        self._stopped = False
        self._lock = threading.Lock()
        run.on_click(lambda _b: self.start())
        cancel.on_click(lambda _b: self.cancel())
        if agents is None:
            try:
                agents = [a.id for a in lab.agents()]
            except LabError as exc:
                self.show_error(str(exc))
                agents = []
        self.set_agents(agents)

    # -- agents ---------------------------------------------------------------------------------
    def set_agents(self, agent_ids: list[str]) -> None:
        """Offer these agents (the containers panel calls this as agents come and go)."""
        if self._stopped:
            return
        options = tuple(agent_ids)
        if tuple(self.agent.options) != options:
            keep = self.agent.value
            self.agent.options = options
            self.agent.value = keep if keep in options else (options[0] if options else None)

    # -- messages ---------------------------------------------------------------------------------
    def _status(self, text: str, colour: str = "#555") -> None:
        if not self._stopped:
            self.status.value = f"<span style='color:{colour}'>{html.escape(text)}</span>"

    def show_error(self, text: str) -> None:
        self.errors.append(text)
        self._status(f"✗ {text}", "#c62828")

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    # -- run / cancel -----------------------------------------------------------------------------
    def start(self) -> None:
        """Start a run of the chosen agent on the prompt (what the "run" button does)."""
        agent, prompt = self.agent.value, self.prompt.value
        if not agent:
            self.show_error("pick an agent first (create one in the Containers tab)")
            return
        if not prompt.strip():
            self.show_error("write a prompt first: what should the agent do?")
            return
        with self._lock:
            if self.running:
                self.show_error("a run is going: cancel it first")
                return
            self._cancel_requested = False
            self._run = None
            self._thread = threading.Thread(target=self._go, args=(agent, prompt), daemon=True,
                                            name="claude-lab-run")
        self.result = None
        self.transcript.outputs = ()
        self.transcript.layout.display = None  # shown from the first run on
        self.summary.value = ""
        self.run_button.disabled, self.cancel_button.disabled = True, False
        self._status(f"starting a run in {agent}…")
        self._thread.start()

    def _go(self, agent: str, prompt: str) -> None:
        try:
            run = self.lab.claude_stream(agent, prompt, max_turns=self.max_turns, timeout=self.timeout)
            with self._lock:
                self._run = run
                cancel = self._cancel_requested
            if cancel:
                run.cancel()
            self._status(f"running in {agent}…")
            with run:
                for event in run:
                    for line in event_lines(event):
                        if not self._stopped:
                            self.transcript.append_stdout(line if line.endswith("\n") else line + "\n")
            self._finish(run.result)
        except ModelError as exc:
            self._finish(exc.result, error=str(exc))  # type: ignore[arg-type]
        except Exception as exc:
            self.show_error(str(exc))
        finally:
            with self._lock:
                self._run = None
            if not self._stopped:
                self.run_button.disabled, self.cancel_button.disabled = False, True

    def _finish(self, result: "RunResult | None", error: str | None = None) -> None:
        self.result = result
        if error:
            self.errors.append(error)
        if self._stopped:
            return
        if result is None:
            self._status(f"✗ {error}", "#c62828")
            return
        colour = _STATUS_COLOURS.get(result.status, "#555")
        self._status(result.status, colour)
        self.summary.value = (f"<div style='color:{colour};font-weight:bold'>"
                              f"{html.escape(summary_line(result)).replace(chr(10), '<br>')}</div>"
                              + result._repr_html_())

    def cancel(self) -> None:
        """Stop the run inside the container (what the "cancel" button does)."""
        with self._lock:
            self._cancel_requested = True
            run = self._run
        if run is None:
            return
        self._status("cancelling…")
        self.cancel_button.disabled = True
        # Stopping signals the processes in the container (a few seconds at most): off the kernel's thread.
        threading.Thread(target=run.cancel, daemon=True, name="claude-lab-cancel").start()

    def stop(self) -> None:
        """Cancel a run still going: nothing keeps running unseen once the panel is gone."""
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
            self._cancel_requested = True
            run = self._run
        if run is not None:
            run.cancel()

    def close(self) -> None:
        """Stop, then close the widgets."""
        self.stop()
        for w in (self.agent, self.prompt, self.run_button, self.cancel_button, self.status,
                  self.transcript, self.summary):
            w.close()
        super().close()
