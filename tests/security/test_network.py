"""Hostile network probes from inside agents: the host, the Docker API, other groups, outside the
allowlist (IPv4 and IPv6), DNS, and the firewall itself. Every target is this machine or the lab's own.
"""
from __future__ import annotations

import pytest

from claude_lab import Lab, ScriptedModel
from claude_lab import naming as n
from claude_lab.netguard import sidecar as ng
from claude_lab.model.endpoint import lab_gateway
from support import poll

from .conftest import attach_to_outside, connect, control_probe, host_addresses_v4


def all_refused(lab: Lab, agent: str, hosts: list[str], port: int) -> str:
    """'refused' when every address refuses; else the first address that did something else."""
    for host in hosts:
        seen = connect(lab, agent, host, port)
        if seen != "refused":
            return f"{seen} at {host}"
    return "refused"


def test_the_host_is_unreachable_in_every_mode_but_the_lab_model_port(lab: Lab, listener, probes):
    gw = lab_gateway(lab.engine, lab.name)
    backend = listener("0.0.0.0")  # the researcher's backend (port 8000 in the issue), on every host address
    docker_api = [listener(gw, 2375), listener(gw, 2376)]  # a Docker API on the gateway, as some set-ups have
    hosts = host_addresses_v4(lab)
    assert gw in hosts and len(hosts) >= 2
    model = ScriptedModel(["ok"], host=gw).start()  # the lab's model server: the one host port allowed
    try:
        for mode in ("open", "allowlist", "none"):
            agent = f"host-{mode}"
            lab.create_agent(agent, egress=mode, progress=False)
            assert lab.egress(agent).ok, lab.egress(agent).text
            assert probes.record("service on every host address (all bridge gateways, docker0, eth0)",
                                 "refused", all_refused(lab, agent, hosts, backend.port),
                                 area="network", where=f"agent, egress={mode}")
            for api in docker_api:
                assert probes.record(f"Docker API on the bridge gateway :{api.port}", "refused",
                                     connect(lab, agent, gw, api.port), area="network", where=f"agent, egress={mode}")
            ng.allow_endpoint(lab.engine, lab.name, agent, model.url)
            assert probes.record("the lab's model server on the gateway", "answered",
                                 connect(lab, agent, gw, model.port), area="network", where=f"agent, egress={mode}")
            socket_seen = lab.exec(agent, "test -e /var/run/docker.sock && echo present || echo absent").stdout.strip()
            assert probes.record("Docker socket /var/run/docker.sock", "absent", socket_seen,
                                 area="network", where=f"agent, egress={mode}")
        assert backend.accepted == 0 and all(api.accepted == 0 for api in docker_api)
        # The agents' rows show the self-check the netguard ran when it applied its rules.
        rows = lab.status().set_index("agent")
        assert all(rows.loc[f"host-{m}", "egress"].startswith(f"{m}: checked") for m in ("open", "allowlist", "none"))
        assert not (lab.status()["role"] == ng.NETGUARD_ROLE).any()  # folded into the agent rows
    finally:
        model.stop()


def test_outside_the_allowlist_is_refused_over_ipv4_and_ipv6(lab: Lab, outside, listener, probes):
    o = outside
    lab.create_agent("out-allow", progress=False)  # the default allowlist, which does not list the server
    lab.create_agent("out-open", egress="open", progress=False)
    lab.create_agent("out-none", egress="none", progress=False)
    lab.create_agent("out-listed", egress_allow=[f"{o.ip4}:8080", f"[{o.ip6}]:8080"], progress=False)
    for agent in ("out-allow", "out-open", "out-none", "out-listed"):
        attach_to_outside(lab, agent, o)  # a route to the server now exists; the policy is unchanged
    v6_backend = listener("::")  # on every host address, the outside network's IPv6 gateway included
    # Without a netguard the path is open: each refusal below is the firewall's doing.
    assert control_probe(lab, o, o.ip4, 8081) == control_probe(lab, o, o.ip6, 8081) == "answered"
    assert control_probe(lab, o, o.gateway6, v6_backend.port) == "answered"

    expect = {  # agent -> (v4 :8080, v6 :8080, v4 :8081)
        "out-allow": ("refused", "refused", "refused"),
        "out-open": ("answered", "refused", "answered"),  # open: public yes, private (ULA) no
        "out-none": ("refused", "refused", "refused"),
        "out-listed": ("answered", "answered", "refused"),  # only the listed port
    }
    for agent, (v4, v6, other_port) in expect.items():
        mode = {"allow": "allowlist"}.get(agent.split("-")[1], agent.split("-")[1])
        where = f"agent, {'allowlist with the server listed' if mode == 'listed' else 'egress=' + mode}"
        assert probes.record("test server on another network, IPv4 (198.18.x)", v4,
                             connect(lab, agent, o.ip4, 8080), area="network", where=where)
        assert probes.record("test server on another network, IPv6 (ULA)", v6,
                             connect(lab, agent, o.ip6, 8080), area="network", where=where)
        assert probes.record("test server, a port not in the allowlist entry", other_port,
                             connect(lab, agent, o.ip4, 8081), area="network", where=where)
        assert probes.record("service on the host's IPv6 gateway address", "refused",
                             connect(lab, agent, o.gateway6, v6_backend.port), area="network", where=where)
    assert v6_backend.accepted == 1  # the control probe's, and no agent's


def test_allowlisted_names_are_reported_then_resolved_again_on_the_interval(lab: Lab, outside, probes):
    lab.config.egress_refresh = 1
    lab.create_agent("by-name", egress_allow=[f"{outside.name}:8080"], progress=False)
    state = lab.egress("by-name")
    # Not resolvable yet (the agent is not on that network): reported, not fatal.
    assert probes.record("allowlisted name that does not resolve", "reported, agent runs",
                         "reported, agent runs" if state.ok and outside.name in state.unresolved else state.text,
                         area="network", where="netguard")
    assert outside.name in lab.status().set_index("agent").loc["by-name", "egress"]
    attach_to_outside(lab, "by-name", outside)
    seen = poll(lambda: connect(lab, "by-name", outside.name, 8080, timeout=1) == "answered", timeout=30)
    assert probes.record("the same name once it resolves (refresh 1 s)", "answered",
                         "answered" if seen else "no", area="network", where="agent")
    poll(lambda: outside.name not in lab.egress("by-name").unresolved, timeout=10)  # and the report says so
    assert connect(lab, "by-name", outside.name, 8081) == "refused"  # the name's other ports stay closed


def test_agents_of_other_groups_are_unreachable(lab: Lab, probes):
    for agent, group in (("g1-a", "g1"), ("g2-a", "g2"), ("g1-b", "g1")):
        lab.create_agent(agent, group=group, egress="open", progress=False)
    for agent in ("g2-a", "g1-b"):
        lab.exec(agent, "nohup python3 -m http.server 8000 >/dev/null 2>&1 &").check()
        poll(lambda: connect(lab, agent, "127.0.0.1", 8000) == "answered")
    other_ip = next(iter(lab.agent("g2-a").info.ip_addresses.values()))
    assert probes.record("agent of the same group, by name", "answered", connect(lab, "g1-a", "g1-b", 8000),
                         area="network", where="agent, egress=open")
    assert probes.record("agent of another group, by name", "no such name",
                         "no such name" if lab.exec("g1-a", "getent hosts g2-a").exit_code == 2 else "resolved",
                         area="network", where="agent, egress=open")
    assert probes.record("agent of another group, by address", "refused", connect(lab, "g1-a", other_ip, 8000),
                         area="network", where="agent, egress=open")


@pytest.mark.parametrize("services_network", ["shared", "per-group"])
def test_groups_reach_the_services_but_not_each_other(lab_factory, probes, services_network):
    """Shared: every group's agents are on one services network beside their group's; the netguard lets through
    only the services' addresses on it. Per-group: the services join each group's network."""
    lab = lab_factory(services_network=services_network)
    lab.up(progress=False)
    server = "nohup python3 -m http.server 8000 >/dev/null 2>&1 &"
    lab.exec("dev", server).check()
    for agent, group in (("g1-a", "g1"), ("g2-a", "g2"), ("g1-b", "g1")):
        lab.create_agent(agent, group=group, egress="open", progress=False)
    for agent in ("g2-a", "g1-b"):
        lab.exec(agent, server).check()
        poll(lambda: connect(lab, agent, "127.0.0.1", 8000) == "answered")
    where = f"agent, egress=open, services_network={services_network}"
    assert probes.record("agent of the same group, by name", "answered", connect(lab, "g1-a", "g1-b", 8000),
                         area="network", where=where)
    if services_network == "shared":  # Docker names a container by its hostname on every network it joins
        assert probes.record("agent of another group, by name (it resolves on the services network)", "refused",
                             connect(lab, "g1-a", "g2-a", 8000), area="network", where=where)
    else:
        assert probes.record("agent of another group, by name", "no such name",
                             "no such name" if lab.exec("g1-a", "getent hosts g2-a").exit_code == 2 else "resolved",
                             area="network", where=where)
    other = sorted(lab.agent("g2-a").info.ip_addresses.values())  # on its group's network and the shared one
    assert len(other) == (2 if services_network == "shared" else 1)
    assert probes.record("agent of another group, each of its addresses", "refused",
                         all_refused(lab, "g1-a", other, 8000), area="network", where=where)
    for agent in ("g1-a", "g2-a"):  # the services by name, from each group (the first agent of g2 included)
        seen = {f"{host}:{port}": connect(lab, agent, host, port)
                for host, port in (("postgres", 5432), ("redis", 6379), ("dev", 8000))}
        assert probes.record("the services by name from a group's agent", "answered",
                             "answered" if set(seen.values()) == {"answered"} else str(seen),
                             area="network", where=where)
    services = {role: set(lab.engine.container(n.container_name(lab.name, role)).ip_addresses)
                for role in n.SERVICE_ROLES}
    if services_network == "shared":  # no group's network touched the services; dev reaches an agent by name
        assert all(nets == {n.network_name(lab.name), n.services_network(lab.name)} for nets in services.values())
        assert connect(lab, "dev", lab.container_name("g2-a"), 8000) == "answered"
        # a service that is gone: its address (which the next container on the network may get) is dropped
        redis = n.container_name(lab.name, n.REDIS)
        old = lab.engine.container(redis).ip_addresses[n.services_network(lab.name)]

        def allowed() -> str:
            return lab.engine.exec_output(ng.sidecar_name(lab.name, "g2-a"), ["ipset", "list", "clab_svcok4"])[1].decode()

        assert old in allowed()
        lab.engine.remove(redis, force=True)
        poll(lambda: old not in allowed(), timeout=15)
        lab.up(progress=False)  # made again, maybe at another address: let through within seconds
        poll(lambda: connect(lab, "g2-a", "redis", 6379) == "answered", timeout=30)
    else:
        assert all(n.network_name(lab.name, "g2") in nets for nets in services.values())


def test_none_mode_keeps_dns_inside_the_lab(lab: Lab, probes):
    lab.create_agent("dns-none", egress="none", progress=False)
    lab.create_agent("dns-allow", progress=False)
    # Names outside the lab: Docker's DNS would forward them (a channel out); in "none" it cannot.
    # (Resolution only: nothing connects to the answer.)
    none = lab.exec("dns-none", "timeout 5 getent hosts pypi.org").exit_code
    allow = lab.exec("dns-allow", "getent hosts pypi.org").exit_code
    assert probes.record("resolve a public name (pypi.org)", "fails", "fails" if none else "resolved",
                         area="network", where="agent, egress=none")
    assert probes.record("resolve a public name (pypi.org)", "resolved", "resolved" if allow == 0 else "fails",
                         area="network", where="agent, egress=allowlist")
    assert lab.exec("dns-none", "getent hosts dns-allow").exit_code == 0  # lab names still resolve


def test_the_agent_cannot_undo_its_firewall(lab: Lab, listener, engine, probes):
    gw = lab_gateway(lab.engine, lab.name)
    backend = listener(gw)
    lab.create_agent("attacker", progress=False)
    guard = ng.sidecar_name(lab.name, "attacker")
    before = lab.engine.exec_output(guard, ["iptables-save", "-t", "filter"])[1]
    # The agent's own tools, as its user and even as root in its container (no capabilities either way).
    tries = {
        "take the interface down (ip link)": ("ip link set eth0 down", (None, "root")),
        "delete the default route (ip route)": ("ip route del default", (None, "root")),
        "open a raw socket (bypass TCP/UDP)":
            ("python3 -c 'import socket; socket.socket(socket.AF_INET, socket.SOCK_RAW, 255)'", (None, "root")),
        "new user+net namespace with capabilities (unshare -Urn)": ("unshare -Urn true", (None, "root")),
        "become root (setuid 0)": ("python3 -c 'import os; os.setuid(0)'", (None,)),
    }
    for what, (cmd, users) in tries.items():
        for user in users:
            res = lab.exec("attacker", cmd, user=user)
            assert probes.record(what, "denied", "denied" if res.exit_code != 0 else "succeeded",
                                 area="network", where=f"agent as {user or 'developer'}")
    caps = lab.exec("attacker", "grep CapEff /proc/self/status", user="root").stdout.split()[1]
    assert probes.record("capabilities of root inside the agent", "0000000000000000", caps,
                         area="hardening", where="agent as root")
    # The real iptables/ipset binaries, as root, in the agent's namespace, with the agent's settings.
    attempts = {
        "flush the firewall chain (iptables -F)": "iptables -w -F CLAB_OUT",
        "open the default policy (iptables -P OUTPUT ACCEPT)": "iptables -w -P OUTPUT ACCEPT",
        "flush the IPv6 rules (ip6tables -F)": "ip6tables -w -F",
        "empty the host deny set (ipset flush)": "ipset flush clab_deny4",
        "allow itself the host's port (ipset add)": f"ipset add clab_hostok4 {gw},tcp:{backend.port}",
    }
    script = "".join(f"if {cmd} 2>/dev/null; then echo ok; else echo denied; fi; " for cmd in attempts.values())
    api = engine.api
    cid = api.create_container(
        lab.config.image("netguard"), entrypoint=["sh", "-c", script],
        labels={"claude-lab.lab": lab.name, "claude-lab.kind": "container", "claude-lab.role": "test-attacker"},
        host_config=api.create_host_config(network_mode=f"container:{guard}", cap_drop=["ALL"],
                                           security_opt=["no-new-privileges:true"]))["Id"]
    try:
        api.start(cid)
        assert api.wait(cid, timeout=60)["StatusCode"] == 0
        verdicts = api.logs(cid).decode().split()
    finally:
        api.remove_container(cid, force=True)
    assert len(verdicts) == len(attempts)
    for what, verdict in zip(attempts, verdicts):
        assert probes.record(what, "denied", verdict, area="network", where="root in the agent's netns, no caps")
    after = lab.engine.exec_output(guard, ["iptables-save", "-t", "filter"])[1]
    strip = lambda text: [l for l in text.decode().splitlines() if not l.startswith("#")]  # noqa: E731
    assert strip(after) == strip(before)  # not one rule changed
    assert probes.record("the host after every attempt", "refused", connect(lab, "attacker", gw, backend.port),
                         area="network", where="agent")
    assert backend.accepted == 0
