"""Hardened defaults, verified on the real engine: the agent's sandbox and its netguard's."""
from __future__ import annotations

import pytest

from claude_lab import ConfigError, Lab, ScriptedModel
from claude_lab.netguard import sidecar as ng


def test_agent_and_netguard_defaults(lab: Lab, engine, probes):
    lab.create_agent("plain", memory="512m", cpus=0.5, pids=128, progress=False)
    status = lab.exec("plain", "id -u; grep -E '^(CapEff|CapBnd|NoNewPrivs|Seccomp):' /proc/self/status").stdout
    lines = status.split("\n")
    fields = dict(line.split(":\t") for line in lines[1:] if line)
    hc = engine.api.inspect_container(lab.agent("plain").name)["HostConfig"]
    guard = engine.api.inspect_container(ng.sidecar_name(lab.name, "plain"))["HostConfig"]
    seen = {
        ("user id", "1000"): lines[0],
        ("effective capabilities", "0000000000000000"): fields["CapEff"],
        ("bounding capabilities", "0000000000000000"): fields["CapBnd"],
        ("no-new-privileges", "1"): fields["NoNewPrivs"],
        ("seccomp filter (mode 2)", "2"): fields["Seccomp"],
        ("memory / CPU / pids limits", "512m, 0.5, 128"):
            f"{hc['Memory'] >> 20}m, {hc['NanoCpus'] / 1e9:g}, {hc['PidsLimit']}",
        ("published ports", "none"): "none" if not hc.get("PortBindings") else str(hc["PortBindings"]),
        ("network of its own", "none (the netguard's namespace)"):
            "none (the netguard's namespace)" if hc["NetworkMode"].startswith("container:") else hc["NetworkMode"],
        ("Docker socket mounted", "no"): "yes" if any("docker.sock" in b for b in hc.get("Binds") or []) else "no",
    }
    for (what, expected), observed in seen.items():
        assert probes.record(what, expected, observed, area="hardening", where="agent")
    netguard = {
        ("capabilities", "NET_ADMIN, NET_RAW only"):
            "NET_ADMIN, NET_RAW only" if guard["CapDrop"] == ["ALL"] and sorted(guard["CapAdd"]) == ["NET_ADMIN", "NET_RAW"]
            else f"{guard['CapDrop']} / {guard['CapAdd']}",
        ("read-only root, memory / pids limits", "yes, 48m, 64"):
            f"{'yes' if guard['ReadonlyRootfs'] else 'no'}, {guard['Memory'] >> 20}m, {guard['PidsLimit']}",
        ("restart policy (re-applies rules on every start)", "unless-stopped"): guard["RestartPolicy"]["Name"],
    }
    for (what, expected), observed in netguard.items():
        assert probes.record(what, expected, observed, area="hardening", where="netguard")


def test_read_only_root_keeps_the_real_cli_working(lab: Lab, probes):
    lab.create_agent("ro", read_only=True, progress=False)
    root = lab.exec("ro", "touch /usr/local/x")
    assert probes.record("write to the root filesystem", "denied (read-only)",
                         "denied (read-only)" if "Read-only file system" in root.stderr else root.stderr or "written",
                         area="hardening", where="agent, read_only=True")
    scratch = lab.exec("ro", "echo a > /tmp/a && echo b > /workspace/b && echo c > ~/.cache/c && cat /tmp/a /workspace/b")
    assert scratch.stdout == "a\nb\n", scratch.stderr
    model = ScriptedModel([[{"type": "tool_use", "name": "Write",
                             "input": {"file_path": "/workspace/made.txt", "content": "made\n"}}], "written"])
    try:
        result = lab.claude("ro", "write a file", model=model, timeout=120)
    finally:
        model.stop()
    ok = result.status == "success" and lab.exec("ro", "cat /workspace/made.txt").stdout == "made\n"
    assert probes.record("the real Claude Code CLI run (writes a file)", "success",
                         "success" if ok else f"{result.status}: {result.error}",
                         area="hardening", where="agent, read_only=True")


def test_runtime_passes_through_or_says_what_the_engine_has(lab: Lab, engine, probes):
    have = engine.runtimes()
    assert "runc" in have
    agent = lab.create_agent("runc", runtime="runc", progress=False)
    assert engine.api.inspect_container(agent.name)["HostConfig"]["Runtime"] == "runc"
    if "runsc" in have:
        pytest.skip("this engine has gVisor: the missing-runtime error cannot be shown here")
    with pytest.raises(ConfigError) as err:
        lab.create_agent("gvisor", runtime="runsc", progress=False)
    message = str(err.value)
    ok = "runsc" in message and "runc" in message and "daemon.json" in message
    assert probes.record("runtime='runsc' on an engine without gVisor", "clear error, nothing created",
                         "clear error, nothing created" if ok and [a.id for a in lab.agents()] == ["runc"] else message,
                         area="hardening", where="lab")
