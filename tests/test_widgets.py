"""The panels, driven through their widgets (clicks, form values) with the engine's real state checked after.

Widgets here have no front end attached (ipywidgets uses a no-op comm outside a kernel): clicking
runs the same handlers the browser's click would. The model is a local ScriptedModel.
"""
from __future__ import annotations

import types
import uuid

import pytest

pytest.importorskip("ipywidgets")
from claude_lab import Lab, ScriptedModel  # noqa: E402
from claude_lab.widgets import (  # noqa: E402
    ContainersPanel,
    LabPanel,
    RunnerPanel,
    StatsPanel,
    draw_chart,
    start_sampler,
    stop_all,
)
from support import git, git_project, poll  # noqa: E402

PNG = b"\x89PNG\r\n\x1a\n"


def tool(name: str, **tool_input) -> list[dict]:
    return [{"type": "tool_use", "name": name, "input": tool_input}]


def state(lab: Lab, agent: str) -> str | None:
    found = [a for a in lab.agents() if a.id == agent]
    return found[0].state if found else None


def pid1_start(lab: Lab, agent: str) -> str:
    """When the container's first process started (field 22 of /proc/1/stat): changes on restart."""
    return lab.exec(agent, "cut -d' ' -f22 /proc/1/stat").check().stdout.strip()


def transcript_text(runner: RunnerPanel) -> str:
    return "".join(o.get("text", "") for o in runner.transcript.outputs)


def test_containers_panel_row_actions_change_the_engine(lab: Lab):
    lab.create_agent("agent-001", progress=False)
    panel = ContainersPanel(lab, refresh=0.5)
    try:
        row = panel.row("agent-001")
        assert "running" in row.cells["state"].value
        assert row.buttons["start"].disabled and not row.buttons["stop"].disabled

        row.buttons["stop"].click()
        poll(lambda: state(lab, "agent-001") == "exited", timeout=30)
        poll(lambda: "exited" in row.cells["state"].value and not row.buttons["start"].disabled, timeout=10)
        assert "stopped agent-001" in panel.message.value

        row.buttons["start"].click()
        poll(lambda: state(lab, "agent-001") == "running", timeout=30)
        started = pid1_start(lab, "agent-001")
        poll(lambda: not row.buttons["restart"].disabled, timeout=10)
        row.buttons["restart"].click()
        poll(lambda: "restarted agent-001" in panel.message.value, timeout=30)
        assert state(lab, "agent-001") == "running" and pid1_start(lab, "agent-001") != started

        token = uuid.uuid4().hex
        lab.exec("agent-001", f"echo log-{token} > /proc/1/fd/1").check()  # a line in the container's log
        row.buttons["logs"].click()
        poll(lambda: f"log-{token}" in panel.logs.value, timeout=15)

        # The table follows the engine by itself: an agent made elsewhere shows up, no kernel involved.
        lab.create_agent("agent-002", group="g2", progress=False)
        poll(lambda: "agent-002" in panel.agent_ids, timeout=15)
        assert "(g2)" in panel.row("agent-002").cells["name"].value

        poll(lambda: not row.buttons["remove"].disabled, timeout=10)
        row.buttons["remove"].click()
        poll(lambda: state(lab, "agent-001") is None, timeout=30)
        poll(lambda: panel.agent_ids == ["agent-002"] and row.box not in panel.table.children, timeout=10)
        assert panel.errors == []
    finally:
        panel.close()
    assert not panel.refresher.thread.is_alive()


def test_new_agent_form_and_errors_shown_in_the_panel(lab: Lab):
    panel = ContainersPanel(lab, refresh=60)  # no background refresh during the test: rows go stale on purpose
    try:
        assert panel.agent_ids == []
        panel.new_id.value, panel.new_group.value = "agent-007", "team-a"
        panel.create_button.click()
        poll(lambda: state(lab, "agent-007") == "running", timeout=60)
        assert lab.agent("agent-007").group == "team-a"
        poll(lambda: panel.agent_ids == ["agent-007"] and not panel.create_button.disabled, timeout=10)
        assert panel.new_id.value == ""  # cleared for the next one

        panel.new_id.value = "Bad_Name"
        panel.create_button.click()
        poll(lambda: any("invalid agent id" in e for e in panel.errors), timeout=10)
        assert "invalid agent id" in panel.message.value and "Bad_Name" in panel.message.value
        poll(lambda: not panel.create_button.disabled, timeout=10)

        panel.new_id.value = "agent-007"
        panel.create_button.click()
        poll(lambda: any("already exists" in e for e in panel.errors), timeout=10)

        panel.new_id.value = ""
        panel.create_button.click()
        assert "give the new agent an id" in panel.errors[-1]

        lab.remove_agent("agent-007")  # behind the panel's back: its row is stale now
        stale = panel.row("agent-007")
        stale.buttons["stop"].click()
        poll(lambda: any(e.startswith("stop agent-007") and "no container" in e for e in panel.errors), timeout=10)
        assert "stop agent-007" in panel.message.value
        poll(lambda: "agent-007" not in panel.agent_ids, timeout=10)  # the failed action refreshed the table
    finally:
        panel.close()


def test_runner_panel_runs_and_cancels_a_real_cli(lab: Lab):
    lab.create_agent("agent-001", progress=False)
    marker = f"/tmp/started-{uuid.uuid4().hex[:8]}"
    lab.model = model = ScriptedModel([
        [{"type": "text", "text": "Creating notes.txt."},
         *tool("Write", file_path="/workspace/notes.txt", content="remember the milk\n")],
        "Wrote notes.txt.",
        tool("Bash", command=f"touch {marker} && sleep 133"),
    ])
    runner = RunnerPanel(lab)
    try:
        assert runner.agent.options == ("agent-001",)
        runner.run_button.click()
        assert "write a prompt first" in runner.errors[-1]

        runner.prompt.value = "write a note"
        runner.run_button.click()
        assert runner.run_button.disabled and not runner.cancel_button.disabled
        poll(lambda: runner.result is not None, timeout=90)
        assert runner.result.status == "success", runner.result.error
        assert runner.result.changed_files == ["notes.txt"]
        text = transcript_text(runner)
        assert "Creating notes.txt." in text and "⏺ Write: /workspace/notes.txt" in text
        assert "SUCCESS" in runner.summary.value and "notes.txt" in runner.summary.value
        assert lab.exec("agent-001", "cat /workspace/notes.txt").stdout == "remember the milk\n"
        poll(lambda: not runner.run_button.disabled, timeout=10)

        runner.prompt.value = "wait for a long time"
        runner.run_button.click()
        poll(lambda: lab.exec("agent-001", ["test", "-e", marker]).ok, timeout=60)
        poll(lambda: "⏺ Bash" in transcript_text(runner), timeout=10)  # the transcript is live
        assert runner.running
        runner.cancel_button.click()
        poll(lambda: runner.result is not None, timeout=60)
        assert runner.result.status == "cancelled"
        assert "cancelled" in runner.status.value
        ps = lab.exec("agent-001", ["ps", "-eo", "args="]).stdout
        assert "sleep 133" not in ps and "claude" not in ps  # stopped inside the container
    finally:
        runner.close()
        model.stop()


def test_lab_panel_stats_chart_static_fallback_and_close(lab: Lab):
    lab.create_agent("agent-001", progress=False)
    panel = lab.panel(refresh=0.5, stats_interval=0.5)
    second = LabPanel(lab, refresh=5)
    try:
        assert isinstance(panel, LabPanel) and panel.tabs.titles == ("Containers", "Run an agent", "Stats")
        assert panel.runner.agent.options == ("agent-001",)
        # CPU and memory columns and the chart come from the lab's stats sampler.
        poll(lambda: bytes(panel.stats.image.value).startswith(PNG), timeout=30)
        row = panel.containers.row("agent-001")
        poll(lambda: row.cells["memory"].value.endswith("GiB"), timeout=15)  # "1.2 MiB / 2.0 GiB"
        assert row.cells["CPU %"].value != "–"
        assert "last 5 min" in panel.stats.note.value

        bundle = panel._repr_mimebundle_()
        assert "application/vnd.jupyter.widget-view+json" in bundle
        assert f"{lab.name}_agent-001" in bundle["text/plain"]
        assert "<table>" in bundle["text/html"] and "agent-001" in bundle["text/html"]

        threads = [panel.containers.refresher.thread, panel.stats.refresher.thread]
        assert all(t.is_alive() for t in threads) and panel.sampler.running
        panel._close_button.click()  # the × button
        assert panel.closed and not any(t.is_alive() for t in threads) and not panel.sampler.running

        # What the kernel's shutdown runs (atexit) stops the threads of the panels still open.
        kept = [second.containers.refresher.thread, second.stats.refresher.thread]
        assert all(t.is_alive() for t in kept) and not second.stopped
        stop_all()
        assert second.stopped and not any(t.is_alive() for t in kept) and not second.sampler.running
    finally:
        panel.close()
        second.close()


def test_stats_unavailable_without_a_sampler_and_chart_from_samples(lab: Lab):
    no_stats = types.SimpleNamespace(name="old-lab")  # a Lab from before lab.watch_stats() existed
    sampler, problem = start_sampler(no_stats)  # type: ignore[arg-type]
    assert sampler is None and problem.startswith("stats unavailable")
    panel = StatsPanel(lab, sampler=None, problem=problem)
    try:
        assert "stats unavailable" in panel.note.value and panel.refresher is None
    finally:
        panel.close()

    lab.create_agent("agent-001", progress=False)
    with lab.watch_stats(interval=0.2) as sampler:
        poll(lambda: sampler.samples >= 3, timeout=15)
        png = draw_chart(sampler.frame(), window_s=60)
    assert png.startswith(PNG) and len(png) > 5000


def test_changes_view_and_merge_button_of_a_seeded_agent(lab: Lab):
    project = git_project(lab.config.project_dir, {"notes.txt": "one\n"})
    lab.create_agent("agent-001", progress=False)
    lab.exec("agent-001", "echo two >> /workspace/notes.txt").check()
    panel = ContainersPanel(lab, refresh=0.5)
    try:
        row = panel.row("agent-001")
        poll(lambda: row.cells["changes"].value == "1 file", timeout=20)
        assert panel.merge_button.layout.display == "none"
        row.buttons["changes"].click()
        poll(lambda: "+two" in panel.logs.value, timeout=20)
        assert panel.merge_button.layout.display != "none"
        (project / "notes.txt").write_text("one\nmine\n")  # the user's uncommitted change in the same file
        panel.merge_button.click()
        poll(lambda: "uncommitted changes touch notes.txt" in panel.message.value, timeout=20)
        assert (project / "notes.txt").read_text() == "one\nmine\n"  # refused: nothing changed
        git(project, "checkout", "notes.txt")
        panel.merge_button.click()
        poll(lambda: "merged claude-lab/agent-001 into main" in panel.message.value, timeout=20)
        assert (project / "notes.txt").read_text() == "one\ntwo\n"
    finally:
        panel.close()
