"""End to end in a real browser: JupyterLab on localhost, Debian's Chromium driven by Playwright.

The test starts JupyterLab (a token, a free port, a temporary folder that is the test lab's
project), opens tests/notebooks/lab_panel.ipynb, runs all its cells from the Run menu (load the
extension, create an agent, %%in_container, %lab panel), checks the panel rendered as a widget,
clicks the agent's stop button and checks through the engine that the container stopped. A
screenshot of the panel is kept in test-artifacts/. Every wait has a deadline; the server and
its kernels are stopped at the end.

JupyterLab and Chromium run in a network namespace of their own that holds only a loopback
interface (as root, which CI is): Chromium aborts requests in flight with ERR_NETWORK_CHANGED
whenever an interface comes or goes, and Docker adds one for every container started on the
machine, this test's agent included. The kernel still reaches the engine (a unix socket).
There, nothing but 127.0.0.1 exists to be contacted; JupyterLab's news and update checks are
off too, and Chromium resolves no other host.
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import textwrap
import uuid
import warnings
from pathlib import Path

import pytest

from claude_lab import Lab
from support import poll

playwright = pytest.importorskip("playwright.sync_api")
pytest.importorskip("jupyterlab")
psutil = pytest.importorskip("psutil")

CHROMIUM = os.environ.get("CLAUDE_LAB_TEST_CHROMIUM", "/usr/bin/chromium")
NOTEBOOK = Path(__file__).parent / "notebooks" / "lab_panel.ipynb"
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
    "--disable-sync", "--no-first-run", "--disable-default-apps", "--disable-dev-shm-usage",
    "--no-proxy-server", "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
]
DISABLED_LAB_PLUGINS = ["@jupyterlab/apputils-extension:announcements"]  # the "get Jupyter news?" toast


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def jupyter_config(path: Path, port: int, token: str) -> Path:
    path.write_text(textwrap.dedent(f"""
        c.ServerApp.ip = "127.0.0.1"
        c.ServerApp.port = {port}
        c.ServerApp.port_retries = 0
        c.ServerApp.open_browser = False
        c.ServerApp.allow_root = True  # CI runs as root
        c.IdentityProvider.token = {token!r}
        c.ServerApp.terminals_enabled = False
        c.LabApp.news_url = None
        c.LabApp.check_for_updates_class = "jupyterlab.handlers.announcements.NeverCheckForUpdate"
        c.LabApp.extension_manager = "readonly"
        c.LabApp.expose_app_in_browser = True
        c.LanguageServerManager.autodetect = False
    """))
    return path


@contextlib.contextmanager
def loopback_namespace():
    """A network namespace with only `lo` up (None where we may not make one: not root, no `ip`)."""
    if os.geteuid() != 0 or shutil.which("ip") is None or shutil.which("nsenter") is None:
        yield None
        return
    name = f"claude-lab-test-{uuid.uuid4().hex[:8]}"
    made = subprocess.run(["ip", "netns", "add", name], capture_output=True, text=True, timeout=30)
    if made.returncode != 0:  # a sandbox that forbids namespaces: share the host's (may see ERR_NETWORK_CHANGED)
        warnings.warn(f"no private network namespace for the browser test: {made.stderr.strip()}")
        yield None
        return
    try:
        subprocess.run(["ip", "netns", "exec", name, "ip", "link", "set", "lo", "up"], check=True, timeout=30)
        yield name
    finally:
        subprocess.run(["ip", "netns", "delete", name], check=False, timeout=30)


def agent_state(lab: Lab, agent: str) -> str | None:
    found = [a for a in lab.agents() if a.id == agent]
    return found[0].state if found else None


def stop_server(server: subprocess.Popen) -> None:
    """Stop JupyterLab (on SIGTERM it shuts its kernels down), then make sure they are all gone."""
    try:
        family = [server.pid, *(c.pid for c in psutil.Process(server.pid).children(recursive=True))]
    except psutil.NoSuchProcess:
        family = [server.pid]
    server.terminate()
    try:
        server.wait(timeout=30)
    except subprocess.TimeoutExpired:
        server.kill()
        server.wait(timeout=10)
    for pid in family:  # kernels the server started, by their ids
        try:
            proc = psutil.Process(pid)
            proc.terminate()
            proc.wait(timeout=5)
        except psutil.TimeoutExpired:
            proc.kill()
        except psutil.NoSuchProcess:
            pass


@pytest.mark.timeout(420)
def test_panel_in_jupyterlab_in_chromium(lab: Lab, tmp_path: Path):
    if not Path(CHROMIUM).exists():
        message = f"{CHROMIUM} is missing: run `make setup` as root (it installs Debian's chromium)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    project = lab.config.project_dir
    shutil.copy(NOTEBOOK, project / NOTEBOOK.name)
    port, token = free_port(), uuid.uuid4().hex
    config = jupyter_config(tmp_path / "jupyter_config.py", port, token)
    config_dir = tmp_path / "jupyter-config"
    (config_dir / "labconfig").mkdir(parents=True)
    (config_dir / "labconfig" / "page_config.json").write_text(
        json.dumps({"disabledExtensions": {plugin: True for plugin in DISABLED_LAB_PLUGINS}}))
    env = {
        **os.environ,
        "CLAUDE_LAB_NAME": lab.name,  # the notebook's Lab() is this test's lab
        "JUPYTER_CONFIG_DIR": str(config_dir),
        "JUPYTER_RUNTIME_DIR": str(tmp_path / "jupyter-runtime"),
        "IPYTHONDIR": str(tmp_path / "ipython"),
        "JUPYTERLAB_SETTINGS_DIR": str(tmp_path / "lab-settings"),
        "JUPYTERLAB_WORKSPACES_DIR": str(tmp_path / "lab-workspaces"),
    }
    log_path = tmp_path / "jupyterlab.log"
    ARTIFACTS.mkdir(exist_ok=True)
    with loopback_namespace() as netns:
        # nsenter switches the network only (`ip netns exec` would also hide /sys/fs/cgroup, the stats' source)
        inside = ["nsenter", f"--net=/run/netns/{netns}", "--"] if netns else []
        browser_path = CHROMIUM
        if netns:  # Playwright talks to the browser over pipes, which cross namespaces
            browser_path = str(tmp_path / "chromium-in-netns")
            Path(browser_path).write_text(f'#!/bin/sh\nexec {" ".join(inside)} {CHROMIUM} "$@"\n')
            os.chmod(browser_path, 0o755)
        with log_path.open("wb") as log:
            server = subprocess.Popen([*inside, sys.executable, "-m", "jupyterlab", f"--config={config}"],
                                      cwd=project, env=env, stdout=log, stderr=subprocess.STDOUT,
                                      stdin=subprocess.DEVNULL)
        page = None
        try:
            def serving() -> bool:
                if server.poll() is not None:
                    raise AssertionError(f"JupyterLab exited {server.returncode}:\n{log_path.read_text()[-3000:]}")
                return f"127.0.0.1:{port}/lab" in log_path.read_text(errors="replace")
            poll(serving, timeout=90, interval=0.25)

            with playwright.sync_playwright() as pw:
                browser = pw.chromium.launch(executable_path=browser_path, headless=True, args=CHROMIUM_ARGS)
                try:
                    page = browser.new_page(viewport={"width": 1400, "height": 1000})
                    page.set_default_timeout(60_000)
                    page.goto(f"http://127.0.0.1:{port}/lab/tree/{NOTEBOOK.name}?token={token}",
                              wait_until="domcontentloaded")
                    page.locator(".jp-NotebookPanel .jp-Notebook").first.wait_for(state="visible")
                    # The kernel is up, then Run > Run All Cells, as a person would.
                    page.wait_for_function(
                        "() => { const w = window.jupyterapp.shell.currentWidget;"
                        " const k = w && w.sessionContext && w.sessionContext.session"
                        "           && w.sessionContext.session.kernel;"
                        " return k && k.connectionStatus === 'connected' && k.status === 'idle'; }",
                        timeout=90_000)
                    page.locator(".lm-MenuBar-itemLabel", has_text="Run").first.click()
                    page.locator(".lm-Menu-itemLabel", has_text="Run All Cells").first.click()

                    panel = page.locator(".claude-lab-panel")
                    panel.wait_for(state="visible", timeout=120_000)
                    row = panel.locator(".claude-lab-row-agent-001")
                    row.wait_for(state="visible")
                    playwright.expect(row).to_contain_text("running")
                    # A live widget, not the "Loading widget..." placeholder or an error.
                    playwright.expect(page.get_by_text("Loading widget...")).to_have_count(0)
                    playwright.expect(page.get_by_text("Error displaying widget")).to_have_count(0)
                    playwright.expect(page.locator(".jp-OutputArea-output", has_text="hello from agent-001")
                                      ).to_have_count(1)  # %%in_container's output
                    playwright.expect(panel.get_by_role("tab", name="Containers")).to_be_visible()

                    cpu = row.locator(".widget-html").nth(4)  # name, role, state, health, CPU %
                    playwright.expect(cpu).to_have_text(re.compile(r"^\s*\d+\.\d\s*$"), timeout=30_000)
                    panel.screenshot(path=str(ARTIFACTS / "lab-panel-running.png"))
                    row.locator("button.claude-lab-stop").click()
                    poll(lambda: agent_state(lab, "agent-001") == "exited", timeout=60, interval=0.25)
                    playwright.expect(row).to_contain_text("exited", timeout=30_000)  # the panel caught up
                    playwright.expect(panel.locator(".claude-lab-message")).to_contain_text("stopped agent-001")
                    panel.screenshot(path=str(ARTIFACTS / "lab-panel.png"))
                    page.screenshot(path=str(ARTIFACTS / "lab-notebook.png"), full_page=True)
                    panel.get_by_role("tab", name="Stats").click()  # the chart, drawn from the lab's stats
                    chart = panel.locator(".claude-lab-stats img")
                    playwright.expect(chart).to_be_visible(timeout=30_000)  # shown once drawn
                    assert chart.evaluate("img => img.complete && img.naturalWidth") > 300
                    panel.screenshot(path=str(ARTIFACTS / "lab-panel-stats.png"))
                    panel.get_by_role("tab", name="Run an agent").click()
                    playwright.expect(panel.locator(".claude-lab-runner textarea")).to_be_visible()
                    panel.screenshot(path=str(ARTIFACTS / "lab-panel-runner.png"))
                except BaseException:
                    if page is not None:
                        page.screenshot(path=str(ARTIFACTS / "browser-failure.png"), full_page=True)
                    shutil.copy(log_path, ARTIFACTS / "browser-failure-jupyterlab.log")
                    raise
                finally:
                    browser.close()
        finally:
            stop_server(server)
    assert (ARTIFACTS / "lab-panel.png").stat().st_size > 10_000
    assert agent_state(lab, "agent-001") == "exited"
