"""Reading a netguard's report as it prints it (a followed log, no polling), against real sidecars."""
from __future__ import annotations

import time
from dataclasses import replace

import pytest

from claude_lab import Lab, LabError, LabTimeout
from claude_lab import naming as n
from claude_lab.netguard import sidecar as guard
from claude_lab.engine import ContainerSpec


def _sidecar(lab: Lab, agent_id: str, env: dict[str, str] | None = None, **changes) -> ContainerSpec:
    """A sidecar spec as create_agent makes it, with `env` and `changes` (a command) to make it misbehave."""
    net = n.network_name(lab.name, None)
    lab.engine.ensure_network(net, n.labels(lab.name, "network"))
    policy = guard.policy_for(lab.engine, lab.config, lab.name, None, net, None, "none", ())
    spec = guard.sidecar_spec(lab.name, lab.config.image("netguard"), agent_id, None, net, policy)
    return replace(spec, environment={**spec.environment, **(env or {})}, **changes)


def test_the_report_is_read_the_moment_it_is_printed(lab: Lab):
    spec = _sidecar(lab, "fine")
    started = time.monotonic()
    lab.engine.create_container(spec)
    result = guard.wait_applied(lab.engine, spec.name, timeout=30)
    assert result["ok"] is True and result["ipv4"] == "enforced"
    assert time.monotonic() - started < 10
    # asked again (an agent's restart checks its running sidecar): the line already in the log answers
    assert guard.wait_applied(lab.engine, spec.name, timeout=5)["at"] == result["at"]


def test_a_failed_report_names_the_failure_and_a_silent_sidecar_times_out(lab: Lab):
    broken = _sidecar(lab, "broken", env={"NETGUARD_RULES4": "*filter\n-A NOSUCHCHAIN -j ACCEPT\nCOMMIT\n"})
    lab.engine.create_container(broken)
    with pytest.raises(LabError, match=r"egress firewall of .*broken_netguard failed.*iptables"):
        guard.wait_applied(lab.engine, broken.name, timeout=30)

    silent = _sidecar(lab, "silent", command=["result"], restart_policy=None)  # no report: `cat` of no file
    lab.engine.create_container(silent)
    with pytest.raises(LabError, match=r"silent_netguard stopped before applying its rules \(exit 1\)"):
        guard.wait_applied(lab.engine, silent.name, timeout=30)


def test_a_sidecar_that_never_reports_times_out_saying_how_far_it_got(lab: Lab):
    # its "allowed" check waits a minute for a port on its own loopback that nothing listens on
    spec = _sidecar(lab, "mute", env={"NETGUARD_CHECK_ALLOWED": "127.0.0.1 9", "NETGUARD_CHECK_WAIT": "60"})
    lab.engine.create_container(spec)
    started = time.monotonic()
    with pytest.raises(LabTimeout, match=r"mute_netguard did not report within 2s \(state: running"):
        guard.wait_applied(lab.engine, spec.name, timeout=2)
    assert time.monotonic() - started < 10
