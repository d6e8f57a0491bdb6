"""The netguard sidecar at run time: the policy of a new agent, the sidecar's spec, its report, its upkeep.

The sidecar (`<lab>_<agent>_netguard`) owns the agent's network namespace and applies the rules that
`policy.EgressPolicy` generates on every start; what it reports (one JSON line in its log) is read
back here as an `EgressState`. Everything here gets the engine and plain values, never a `Lab`.
"""
from __future__ import annotations

import ipaddress
import json
import socket
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Iterable, Iterator
from urllib.parse import urlsplit

from .. import naming as n
from ..engine.types import ContainerInfo, ContainerSpec
from ..errors import ConfigError, LabError, LabTimeout
from ..util.waiting import first_of, wait_until
from .policy import EgressPolicy, check_mode, endpoint_entries, group_settings, parse_entry

if TYPE_CHECKING:
    from ..config import LabConfig
    from ..engine.face import EngineFace

NETGUARD_ROLE = n.NETGUARD_ROLE
EGRESS_LABEL = n.EGRESS
NETGUARD_LABEL = n.NETGUARD
SIDECAR_MEMORY = "48m"
SIDECAR_PIDS = 64
SIDECAR_CPUS = 1.0
LOCAL_CHECK_WAIT, SWARM_CHECK_WAIT = 20, 90  # seconds the self-check waits for PostgreSQL to answer


def host_addresses(engine: EngineFace) -> list[str]:
    """The host's own addresses an agent could reach: every Docker network's gateway, and (local
    engine) every interface address of this machine. Loopback is the agent's own, so not listed."""
    found = list(engine.gateways())
    if engine.is_local:
        import psutil

        for addrs in psutil.net_if_addrs().values():
            for a in addrs:
                if a.family not in (socket.AF_INET, socket.AF_INET6):
                    continue
                ip = ipaddress.ip_address(a.address.split("%")[0])
                if not (ip.is_loopback or ip.is_link_local):  # link-local is denied as a whole range
                    found.append(str(ip))
    return list(dict.fromkeys(found))


def policy_for(engine: EngineFace, cfg: LabConfig, lab_name: str, group: str | None, network: str,
               model_url: str | None, egress: str | None = None,
               egress_allow: Iterable[str] | None = None, *, services_network: str | None = None) -> EgressPolicy:
    """The policy of a new agent: keywords > its group's table > the lab's settings. `model_url` is the
    model endpoint every mode allows (None for a scripted model: allowed per run instead). On the shared
    `services_network` (if the agent joins one) only the services' own addresses are let through."""
    per_group = group_settings(cfg, group)
    mode = check_mode(egress if egress is not None else per_group.get("egress", cfg.egress))
    raw_allow = list(egress_allow) if egress_allow is not None else list(per_group.get("egress_allow",
                                                                                      cfg.egress_allow))
    if isinstance(egress_allow, str):
        raise ConfigError(f"egress_allow={egress_allow!r}: give a list of entries, e.g. ['github.com:443']")
    allow = tuple(dict.fromkeys(parse_entry(e) for e in raw_allow))
    model, host_allow = endpoint_entries(model_url)
    subnets, gateways = engine.network_addresses(network)
    hosts = host_addresses(engine)
    postgres = engine.container(n.container_name(lab_name, n.POSTGRES))
    check_allowed = ("postgres", 5432) if postgres is not None and postgres.running else None
    gw4 = next((g for g in gateways if ":" not in g), None)
    services: tuple[str, ...] = ()
    services_subnets: tuple[str, ...] = ()
    if services_network is not None:
        services_subnets = tuple(engine.network_addresses(services_network)[0])
        # a name answers with the service's address on the network (on a swarm: its virtual IP, which the
        # node's IPVS turns into a task's address before the filter sees it: so the tasks' addresses too)
        services = n.SERVICE_ROLES + (tuple(f"tasks.{r}" for r in n.SERVICE_ROLES) if engine.backend != "local" else ())
    return EgressPolicy(
        mode=mode, allow=allow, model=tuple(model), own_subnets=tuple(subnets), host_addresses=tuple(hosts),
        services=services, services_subnets=services_subnets,
        host_allow=tuple(host_allow), dns_servers=tuple(engine.dns_servers()),
        refresh=int(cfg.egress_refresh),
        check_blocked=(gw4, 9) if gw4 else None, check_allowed=check_allowed,
        check_wait=SWARM_CHECK_WAIT if engine.backend != "local" else LOCAL_CHECK_WAIT,
    )


def sidecar_name(lab_name: str, agent_id: str) -> str:
    return f"{n.container_name(lab_name, n.AGENT_ROLE, agent_id)}_netguard"


def sidecar_spec(lab_name: str, image: str, agent_id: str, group: str | None, network: str,
                 policy: EgressPolicy, *, services_network: str | None = None) -> ContainerSpec:
    """The sidecar: NET_ADMIN (+ NET_RAW: iptables' set match talks to ipset over a raw socket), read-only
    root, tiny limits, restarted by Docker with the agent. On the shared services network it is known by
    the agent's container name only (the dev container reaches it so): never by the agent's id, which
    stays a name on its group's network alone."""
    extra = {services_network: [n.container_name(lab_name, n.AGENT_ROLE, agent_id)]} if services_network else {}
    return ContainerSpec(
        extra_networks=extra,
        name=sidecar_name(lab_name, agent_id), image=image,
        labels=n.labels(lab_name, "container", role=NETGUARD_ROLE, agent=agent_id, group=group,
                        egress=policy.mode),
        network=network, aliases=[agent_id], hostname=agent_id,
        environment=policy.environment(),
        mem_limit=SIDECAR_MEMORY, nano_cpus=int(SIDECAR_CPUS * 1e9), pids_limit=SIDECAR_PIDS,
        cap_drop=["ALL"], cap_add=["NET_ADMIN", "NET_RAW"], security_opt=["no-new-privileges:true"],
        read_only=True, tmpfs={"/run": "size=4m", "/tmp": "size=4m"},
    )


# -- reading the sidecar's result ------------------------------------------------------------------
@dataclass(frozen=True)
class EgressState:
    """What the sidecar last reported for an agent, and a one-line summary for `lab.status()`."""

    agent: str
    mode: str | None
    state: str  # the sidecar's container state, or "missing"
    result: dict[str, Any] = field(default_factory=dict)  # the last JSON line ({} before the first)
    stale: bool = False  # the sidecar restarted after the agent: the agent sits in a dead namespace
    secrets: tuple[str, ...] = ()  # names of the lab's secrets this agent's commands get (they enter it)

    @property
    def ok(self) -> bool:
        return self.state == "running" and bool(self.result.get("ok")) and not self.stale

    @property
    def unresolved(self) -> list[str]:
        return list(self.result.get("unresolved") or [])

    @property
    def text(self) -> str:
        mode = self.mode or "?"
        if self.state == "missing":
            return "unguarded (created without netguard)"
        if self.state != "running":
            return f"{mode}: netguard {self.state}"
        if self.stale:
            return f"{mode}: netguard restarted; restart the agent"
        if not self.result:
            return f"{mode}: applying"
        if not self.result.get("ok"):
            why = self.result.get("error") or "; ".join(
                v for v in (self.result.get("blocked"), self.result.get("allowed")) if "FAILED" in str(v))
            return f"{mode}: FAILED ({why})"
        names = self.unresolved
        extra = (f", unresolved: {', '.join(names)}" if len(names) <= 2 else
                 f", {len(names)} names unresolved (lab.egress(id).unresolved)") if names else ""
        return f"{mode}: checked{extra}"

    def __str__(self) -> str:
        return self.text


def _report(line: str) -> dict[str, Any] | None:
    """A sidecar's JSON report line (applied/refreshed), or None for any other line."""
    line = line.strip()
    if not line.startswith('{"netguard"'):
        return None
    try:
        return json.loads(line)
    except ValueError:
        return None


def last_result(engine: EngineFace, sidecar: str) -> dict[str, Any]:
    """The sidecar's last JSON line (applied/refreshed), or {} if it printed none yet."""
    try:
        raw = engine.logs(sidecar, tail=40)
    except LabError:
        return {}
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else ""
    for line in reversed(text.splitlines()):
        result = _report(line)
        if result is not None:
            return result
    return {}


def _lines(chunks: Iterable[bytes]) -> Iterator[str]:
    """A followed log's chunks as lines (a chunk may hold several lines, or part of one)."""
    rest = b""
    for chunk in chunks:
        rest += chunk
        *whole, rest = rest.split(b"\n")
        for line in whole:
            yield line.decode("utf-8", "replace")
    if rest:
        yield rest.decode("utf-8", "replace")


def state_of(engine: EngineFace, agent: ContainerInfo, sidecar: ContainerInfo | None) -> EgressState:
    agent_id = agent.labels.get(n.AGENT, "")
    mode = agent.labels.get(EGRESS_LABEL)
    if sidecar is None:
        return EgressState(agent_id, mode, "missing")
    result = last_result(engine, sidecar.name) if sidecar.running else {}
    if sidecar.network_mode.startswith("container:"):  # a swarm pod: the sidecar joined the agent's task
        stale = bool(agent.running and sidecar.running and sidecar.network_mode != f"container:{agent.id}")
    else:
        stale = bool(agent.running and sidecar.running and agent.started_at and sidecar.started_at
                     and sidecar.started_at > agent.started_at)
    return EgressState(agent_id, mode or sidecar.labels.get(EGRESS_LABEL), sidecar.state, result, stale)


def _since_start(result: dict[str, Any], info: ContainerInfo | None) -> bool:
    """The line was printed by the sidecar's current run (its log keeps earlier runs' lines)."""
    if not result or info is None or info.started_at is None:
        return bool(result)
    return str(result.get("at", "")) >= info.started_at.strftime("%Y-%m-%dT%H:%M:%SZ")


def wait_applied(engine: EngineFace, sidecar: str, timeout: float | None = None) -> dict[str, Any]:
    """Follow the sidecar's log until its current run reports the rules applied and checked; raise if not.
    No polling: the report is read the moment the sidecar prints it. `timeout` defaults to the policy's
    `apply_timeout` for this backend."""
    if timeout is None:
        timeout = (LOCAL_CHECK_WAIT if engine.backend == "local" else SWARM_CHECK_WAIT) + 40.0
    deadline = time.monotonic() + timeout

    def failed(result: dict[str, Any]) -> LabError:
        why = result.get("error") or f"blocked check: {result.get('blocked')}; allowed check: {result.get('allowed')}"
        return LabError(f"the egress firewall of {sidecar} failed, so the agent was not started: {why}. "
                        f"Its log: `docker logs {sidecar}`")

    def how_far() -> str:
        info = engine.container(sidecar)
        try:
            raw = engine.logs(sidecar, tail=5)
            text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else ""
            tail = " | ".join(line.strip() for line in text.splitlines() if line.strip())
        except LabError:
            tail = ""
        return (f"the egress firewall {sidecar} did not report within {timeout:.0f}s (state: "
                f"{info.state if info else 'gone'}; its last output: {tail or 'none'}); "
                f"see `docker logs {sidecar}`")

    def settled() -> list[ContainerInfo | None] | None:  # not while Docker is (re)starting it
        info = engine.container(sidecar)
        return None if info is not None and info.state in ("created", "restarting") else [info]

    followed: list[object] = []  # the starts whose log was followed to its end
    while True:  # once, unless the sidecar restarted while we followed it (its log stream ends then)
        info = wait_until(settled, max(0.0, deadline - time.monotonic()), how_far)[0]
        if info is None or info.state in ("exited", "dead"):
            raise LabError(f"the egress firewall {sidecar} stopped before applying its rules "
                           f"(exit {info.exit_code if info else '?'}); see `docker logs {sidecar}`")
        if info.started_at in followed:
            raise LabError(f"the log of the egress firewall {sidecar} ended while it runs, without its report; "
                           f"see `docker logs {sidecar}`")
        followed.append(info.started_at)

        def current(line: str, info: ContainerInfo = info) -> dict[str, Any] | None:
            result = _report(line)
            if result is None or not _since_start(result, info):
                return None  # output, or a report of an earlier run (the log keeps them)
            if not result.get("ok"):
                raise failed(result)
            return result

        stream = engine.logs(sidecar, follow=True)  # the whole log, then each line as it comes
        result = first_of(_lines(stream), current, max(0.0, deadline - time.monotonic()), how_far,  # type: ignore[arg-type]
                          close=getattr(stream, "close", None))
        if result is not None:
            return result
        if time.monotonic() >= deadline:
            raise LabTimeout(how_far())


def guard_of(engine: EngineFace, agent: ContainerInfo) -> ContainerInfo | None:
    """An agent's netguard sidecar, or None for an agent made without one."""
    if agent.labels.get(n.ROLE) != n.AGENT_ROLE or not (agent.network_mode.startswith("container:")
                                                        or agent.labels.get(NETGUARD_LABEL)):
        return None
    return engine.container(sidecar_name(agent.labels[n.LAB], agent.labels[n.AGENT]))


def pod_addresses(engine: EngineFace, agent: ContainerInfo) -> frozenset[str] | None:
    """The addresses an agent's traffic to this host comes from: its pod's own (the sidecar owns the namespace)
    on one engine. None on a swarm, where it leaves its node through the node's gateway bridge (NAT): the
    model proxy then binds the run's token to the address the run's set-up step called from."""
    if engine.backend != "local":
        return None
    found = set(agent.ip_addresses.values())
    sidecar = guard_of(engine, agent)
    if sidecar is not None:
        found |= set(sidecar.ip_addresses.values())
    return frozenset(found) or None


def before_start(engine: EngineFace, agent: ContainerInfo) -> str | None:
    """Before an agent (re)starts: its sidecar must run with its rules applied, since the agent joins
    the sidecar's network namespace. Returns the sidecar's name (None: the agent has none)."""
    if not engine.pods_anchor_first:
        return None  # the engine attaches the sidecar to the agent's new task: after_start checks it
    guard = guard_of(engine, agent)
    if guard is None:
        return None
    if not guard.running:
        engine.start(guard.name)
    wait_applied(engine, guard.name)
    return guard.name


def after_start(engine: EngineFace, agent: ContainerInfo) -> None:
    """On a swarm the sidecar comes after the agent's task: wait for its rules like create_agent does."""
    if engine.pods_anchor_first:
        return
    guard = guard_of(engine, agent)
    if guard is not None:
        wait_applied(engine, guard.name)


# The endpoint rules this process added, per engine and sidecar: a rule stays while the sidecar lives, so
# the next run of the agent needs no round trip for it. A sidecar that restarted has lost its rules; the
# run's probe finds that out and asks again (`again=True`).
_ALLOWED: set[tuple[int, str, str, int]] = set()


def allow_endpoint(engine: EngineFace, lab_name: str, agent_id: str, url: str | None, *, again: bool = False) -> bool:
    """Let one agent reach the model endpoint of a run when it is an address (the lab's model server or
    recording proxy on the gateway); a named endpoint is in the policy already. True if a rule was added now
    (False: not needed, or added before by this process and `again` not asked)."""
    if not url:
        return False
    parts = urlsplit(url)
    try:
        ip = ipaddress.ip_address((parts.hostname or "").strip("[]"))
    except ValueError:
        return False
    port = parts.port or (443 if parts.scheme == "https" else 80)
    name = sidecar_name(lab_name, agent_id)
    key = (id(engine), name, str(ip), port)
    if key in _ALLOWED and not again:
        return False
    info = engine.container(name)
    if info is None or not info.running:
        return False
    _, out, err = engine.exec_output(name, ["netguard", "allow", str(ip), str(port)], user="root")
    if err.strip():
        raise LabError(f"could not let {agent_id} reach its model endpoint {ip}:{port}: {err.decode().strip()}")
    _ALLOWED.add(key)
    return True
