"""Egress policy per agent: what an agent may reach, enforced by a netguard sidecar in its netns.

Why a sidecar, not a one-shot helper: the sidecar (`<lab>_<agent>_netguard`, image `netguard`)
*owns* the agent's network namespace; the agent joins it with `network_mode=container:<netguard>`,
so it has no network config of its own and no `NET_ADMIN` to change the rules. Docker restarts the
sidecar with the agent (restart policy), and the sidecar re-applies its rules on every start from
its environment -- after an engine restart too, with no Python process involved.

This module holds the policy model (modes, allowlist entries, per-group and per-agent overrides)
and generates everything the sidecar applies: `ipset restore` text for the sets and
`iptables-restore` / `ip6tables-restore` text for the filter table, IPv4 and IPv6 alike. The
sidecar's POSIX-sh entrypoint (images/netguard/netguard.sh) only resolves names, fills the sets,
applies, self-checks and prints one JSON line, which `lab.status()` reads back from its log.

Modes (every mode keeps host isolation: nothing on the host but the lab's model server/proxy):

- ``open``: anything public; no private ranges (RFC 1918, CGNAT, link-local, ULA) but the
  agent's own lab networks and allowlisted entries;
- ``allowlist`` (default): the lab networks, the model endpoint and `egress_allow` entries;
- ``none``: the lab networks and the model endpoint only; Docker's DNS stops forwarding outside.
"""
from __future__ import annotations

import ipaddress
import json
import re
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Protocol
from urllib.parse import urlsplit

from .. import naming as n
from ..errors import ConfigError


class EgressSettings(Protocol):
    """The network settings of a lab (`LabConfig` has them)."""

    egress: str
    egress_allow: list[str]
    egress_refresh: float
    groups: Mapping[str, Any]

MODES = ("open", "allowlist", "none")
DEFAULT_EGRESS = "allowlist"
DEFAULT_REFRESH = 300.0
# Seconds between re-resolutions of the services' names on the shared services network: a restarted service
# (or, on a swarm, a new task) may have a new address; one that is gone is dropped at the next one.
SERVICES_REFRESH = 3

# What Claude Code needs to work: its model, the npm registry and PyPI for installs, GitHub for
# git (ssh and https) and release downloads. Editable with `egress_allow` in claude-lab.toml.
DEFAULT_ALLOW: tuple[str, ...] = (
    "api.anthropic.com:443",
    "registry.npmjs.org:443",
    "pypi.org:443",
    "files.pythonhosted.org:443",
    "github.com:22,443",
    "api.github.com:443",
    "codeload.github.com:443",
    "objects.githubusercontent.com:443",
    "raw.githubusercontent.com:443",
)

# Never reachable in any mode: cloud metadata and link-local neighbours (the host's bridge side).
ALWAYS_DENY4 = ("169.254.0.0/16",)
ALWAYS_DENY6 = ("fe80::/10",)
# Denied in "open" mode unless a lab network or an allowlist entry says otherwise.
PRIVATE4 = ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "169.254.0.0/16")
PRIVATE6 = ("fc00::/7", "fe80::/10")


_DOMAIN = re.compile(r"^(?=.{1,253}$)([a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9])?)(\.[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9])?)*$")


# -- the policy model ----------------------------------------------------------------------------
@dataclass(frozen=True)
class AllowEntry:
    """One allowlist entry: a domain or a network, and the TCP ports allowed (empty: any port)."""

    target: str  # a lowercase domain, or a network in CIDR form ("203.0.113.0/24", "2001:db8::/32")
    ports: tuple[int, ...] = ()

    @property
    def is_network(self) -> bool:
        return "/" in self.target

    @property
    def family(self) -> int | None:
        """4 or 6 for a network, None for a domain (it may resolve to both)."""
        return ipaddress.ip_network(self.target).version if self.is_network else None

    def __str__(self) -> str:
        host = f"[{self.target}]" if self.family == 6 and self.ports else self.target
        return host + (":" + ",".join(map(str, self.ports)) if self.ports else "")


def parse_entry(raw: str) -> AllowEntry:
    """`"github.com:22,443"`, `"pypi.org"`, `"10.1.0.0/16"`, `"203.0.113.5:8080"`, `"[2001:db8::/32]:443"`."""
    if not isinstance(raw, str) or not raw.strip():
        raise ConfigError(f"egress_allow entry {raw!r}: give a domain, an address or a CIDR, "
                          f"optionally with ports, e.g. 'github.com:22,443' or '10.1.0.0/16'")
    text = raw.strip().lower()
    host, ports_text = text, ""
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise ConfigError(f"egress_allow entry {raw!r}: write IPv6 with ports as '[2001:db8::1]:443'")
        ports_text = rest[1:]
    elif text.count(":") == 1:
        host, _, ports_text = text.partition(":")
        if not ports_text:
            raise ConfigError(f"egress_allow entry {raw!r}: give ports after ':', e.g. ':443' or ':22,443'")
    ports: list[int] = []
    for part in filter(None, ports_text.split(",")) if ports_text else ():
        if not part.isdigit() or not 1 <= int(part) <= 65535:
            raise ConfigError(f"egress_allow entry {raw!r}: port {part!r} is not a TCP port (1-65535)")
        ports.append(int(part))
    if ports_text and not ports:
        raise ConfigError(f"egress_allow entry {raw!r}: give ports after ':', e.g. ':443' or ':22,443'")
    try:
        net = ipaddress.ip_network(host, strict=False)
        return AllowEntry(str(net), tuple(sorted(set(ports))))
    except ValueError:
        pass
    if not _DOMAIN.match(host) or host.replace(".", "").isdigit():
        raise ConfigError(f"egress_allow entry {raw!r}: {host!r} is neither a domain nor an address/CIDR")
    return AllowEntry(host, tuple(sorted(set(ports))))


def check_mode(mode: Any, where: str = "egress") -> str:
    if mode not in MODES:
        raise ConfigError(f"{where}={mode!r}: use one of {', '.join(repr(m) for m in MODES)} "
                          f"(see SECURITY.md)")
    return mode


def check_settings(cfg: EgressSettings) -> None:
    """Validate the network settings of a config (called when a config is made)."""
    check_mode(cfg.egress)
    for entry in cfg.egress_allow:
        parse_entry(entry)
    if not isinstance(cfg.egress_refresh, (int, float)) or cfg.egress_refresh < 0:
        raise ConfigError(f"egress_refresh={cfg.egress_refresh!r}: give seconds (0: never re-resolve)")
    if not isinstance(cfg.groups, Mapping):
        raise ConfigError(f"groups={cfg.groups!r}: give a table per group, e.g. [groups.g1] egress = 'none'")
    for group in cfg.groups:
        n.validate_label(group, "group name")
        for key, value in group_settings(cfg, group).items():
            if key == "egress":
                check_mode(value, f"groups.{group}.egress")
            elif key == "egress_allow":
                for entry in value:
                    parse_entry(entry)
            else:
                raise ConfigError(f"groups.{group}.{key}: unknown; a group sets egress and egress_allow")


def group_settings(cfg: EgressSettings, group: str | None) -> dict[str, Any]:
    """A group's overrides: `[groups.g1] egress = "none"`, or the short form `groups = {g1 = "none"}`."""
    if group is None:
        return {}
    raw = (cfg.groups or {}).get(group)
    if raw is None:
        return {}
    if isinstance(raw, str):
        return {"egress": raw}
    if not isinstance(raw, Mapping):
        raise ConfigError(f"groups.{group}={raw!r}: give a table, e.g. [groups.{group}] egress = 'none'")
    out = dict(raw)
    if isinstance(out.get("egress_allow"), str):
        out["egress_allow"] = out["egress_allow"].split()
    return out


@dataclass(frozen=True)
class EgressPolicy:
    """Everything the sidecar enforces for one agent; `environment()` is what it is given."""

    mode: str
    allow: tuple[AllowEntry, ...] = ()  # egress_allow (used in open and allowlist modes)
    model: tuple[AllowEntry, ...] = ()  # the model endpoint: allowed in every mode
    own_subnets: tuple[str, ...] = ()  # the agent's lab networks: services and same-group agents
    services: tuple[str, ...] = ()  # names of the services on the shared services network (resolved every few s)
    services_subnets: tuple[str, ...] = ()  # that network: nothing on it but the services' addresses
    host_addresses: tuple[str, ...] = ()  # the host's own addresses: denied in every mode
    host_allow: tuple[tuple[str, int], ...] = ()  # (address, port) on the host: the model server/proxy
    dns_servers: tuple[str, ...] = ()  # where Docker's DNS forwards; empty: any address (port 53 only)
    refresh: int = int(DEFAULT_REFRESH)
    check_blocked: tuple[str, int] | None = None
    check_allowed: tuple[str, int] | None = None
    # seconds the allowed check may take: a swarm node learns a new overlay's endpoints by gossip, which can take
    # half a minute for the first task of a group on a node
    check_wait: int = 20
    services_refresh: int = SERVICES_REFRESH

    @property
    def apply_timeout(self) -> float:
        """How long the sidecar may take to report: names (8 s + 8 s), the blocked check (3 s), the allowed one."""
        return self.check_wait + 40.0

    @property
    def entries(self) -> tuple[AllowEntry, ...]:
        return self.model + (self.allow if self.mode != "none" else ())

    @property
    def ttl(self) -> int:
        """How long a resolved address stays allowed after it was last seen (0: forever)."""
        if self.mode == "none" or not self.refresh:
            return 0
        return max(3 * self.refresh, 600)

    def names(self) -> str:
        """Lines "domain ports" for the sidecar to resolve; ports "*" means any."""
        merged: dict[str, set[int] | None] = {}
        for e in self.entries:
            if e.is_network:
                continue
            if not e.ports or merged.get(e.target, set()) is None:
                merged[e.target] = None
            else:
                merged.setdefault(e.target, set()).update(e.ports)  # type: ignore[union-attr]
        return "\n".join(f"{name} {'*' if ports is None else ','.join(map(str, sorted(ports)))}"
                         for name, ports in sorted(merged.items()))

    def ipset_restore(self) -> str:
        """The sets, with their fixed members (networks, host addresses); names are added at run time."""
        lines = []
        timeout = max(self.ttl, 1) if self.ttl else 600  # sets always take timeouts; 0 on an entry = forever
        for fam, family in ((4, "inet"), (6, "inet6")):
            lines += [
                f"create clab_hostok{fam} hash:ip,port family {family} -exist",
                f"create clab_deny{fam} hash:net family {family} -exist",
                f"create clab_own{fam} hash:net family {family} -exist",
                f"create clab_private{fam} hash:net family {family} -exist",
                f"create clab_allow{fam} hash:net family {family} timeout {timeout} -exist",
                f"create clab_allowp{fam} hash:net,port family {family} timeout {timeout} -exist",
                f"create clab_svcnet{fam} hash:net family {family} -exist",
                f"create clab_svcok{fam} hash:ip family {family} -exist",
            ]
        deny = [*ALWAYS_DENY4, *ALWAYS_DENY6, *self.host_addresses]
        for net in _nets(deny):
            lines.append(f"add clab_deny{net.version} {net} -exist")
        for net in _nets(self.own_subnets):
            lines.append(f"add clab_own{net.version} {net} -exist")
        for net in _nets(self.services_subnets):
            lines.append(f"add clab_svcnet{net.version} {net} -exist")
        for net in _nets([*PRIVATE4, *PRIVATE6]):
            lines.append(f"add clab_private{net.version} {net} -exist")
        for addr, port in self.host_allow:
            ip = ipaddress.ip_address(addr)
            lines.append(f"add clab_hostok{ip.version} {ip},tcp:{port} -exist")
        for e in self.entries:
            if not e.is_network:
                continue
            net = ipaddress.ip_network(e.target)
            if e.ports:
                lines += [f"add clab_allowp{net.version} {_setnet(net)},tcp:{p} timeout 0 -exist" for p in e.ports]
            else:
                lines.append(f"add clab_allow{net.version} {_setnet(net)} timeout 0 -exist")
        return "\n".join(lines)

    def rules(self, family: int) -> str:
        """`iptables-restore` text for the filter table: default deny, REJECT for a fast refusal."""
        v = family
        reject_other = "icmp-admin-prohibited" if v == 4 else "icmp6-adm-prohibited"
        out = [
            "*filter",
            ":INPUT ACCEPT [0:0]", ":FORWARD DROP [0:0]", ":OUTPUT DROP [0:0]",
            ":CLAB_OUT - [0:0]", ":CLAB_DNS - [0:0]", ":CLAB_HOSTDENY - [0:0]", ":CLAB_REJECT - [0:0]",
            "-A OUTPUT -j CLAB_OUT",
            "-A CLAB_OUT -o lo -j ACCEPT",
            "-A CLAB_OUT -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT",
        ]
        if v == 6:  # neighbour discovery, so an IPv6 lab network works at all; carries no data
            out += [f"-A CLAB_OUT -p ipv6-icmp -m icmp6 --icmpv6-type {t} -j ACCEPT"
                    for t in ("router-solicitation", "neighbour-solicitation", "neighbour-advertisement")]
        out += [
            f"-A CLAB_OUT -p tcp -m set --match-set clab_hostok{v} dst,dst -j ACCEPT",
            "-A CLAB_OUT -j CLAB_DNS",
            f"-A CLAB_OUT -m set --match-set clab_deny{v} dst -j CLAB_HOSTDENY",
            # the shared services network: the services' addresses (kept current by the sidecar), nothing else
            # (other groups' agents are on it too), in every mode
            f"-A CLAB_OUT -m set --match-set clab_svcok{v} dst -j ACCEPT",
            f"-A CLAB_OUT -m set --match-set clab_svcnet{v} dst -j CLAB_REJECT",
            f"-A CLAB_OUT -m set --match-set clab_own{v} dst -j ACCEPT",
            f"-A CLAB_OUT -m set --match-set clab_allow{v} dst -j ACCEPT",
            f"-A CLAB_OUT -p tcp -m set --match-set clab_allowp{v} dst,dst -j ACCEPT",
        ]
        if self.mode == "open":
            out += [f"-A CLAB_OUT -m set --match-set clab_private{v} dst -j CLAB_REJECT", "-A CLAB_OUT -j ACCEPT"]
        out.append("-A CLAB_OUT -j CLAB_REJECT")
        # Docker's embedded DNS forwards a query from inside this namespace, as root (uid 0): that
        # socket, and only to port 53, may pass. The agent's own user cannot use it directly.
        servers = [s for s in self.dns_servers if ipaddress.ip_address(s).version == v] or (
            [] if self.dns_servers else [None])
        for server in servers:
            dst = f"-d {server} " if server else ""
            out += [f"-A CLAB_DNS {dst}-p {proto} --dport 53 -m owner --uid-owner 0 -j ACCEPT"
                    for proto in ("udp", "tcp")]
        out += [
            "-A CLAB_HOSTDENY -j CLAB_REJECT",
            "-A CLAB_REJECT -p tcp -j REJECT --reject-with tcp-reset",
            f"-A CLAB_REJECT -j REJECT --reject-with {reject_other}",
            "COMMIT",
        ]
        return "\n".join(out) + "\n"

    def summary(self) -> dict[str, Any]:
        """The policy as data (a label-sized JSON for people and for `docker inspect`)."""
        return {"mode": self.mode, "allow": [str(e) for e in self.allow], "model": [str(e) for e in self.model],
                "own_subnets": list(self.own_subnets), "host_addresses": list(self.host_addresses),
                "services_subnets": list(self.services_subnets),
                "host_allow": [f"{a}:{p}" for a, p in self.host_allow], "refresh": self.refresh}

    def environment(self) -> dict[str, str]:
        env = {
            "NETGUARD_MODE": self.mode,
            "NETGUARD_SETS": self.ipset_restore(),
            "NETGUARD_RULES4": self.rules(4),
            "NETGUARD_RULES6": self.rules(6),
            "NETGUARD_NAMES": self.names(),
            "NETGUARD_REFRESH": str(self.refresh if self.mode != "none" else 0),
            "NETGUARD_TTL": str(self.ttl),
            "NETGUARD_POLICY": json.dumps(self.summary(), separators=(",", ":")),
        }
        if self.services:
            env["NETGUARD_SERVICES"] = "\n".join(self.services)
            env["NETGUARD_SERVICES_REFRESH"] = str(self.services_refresh)
        if self.check_blocked:
            env["NETGUARD_CHECK_BLOCKED"] = f"{self.check_blocked[0]} {self.check_blocked[1]}"
        if self.check_allowed:
            env["NETGUARD_CHECK_ALLOWED"] = f"{self.check_allowed[0]} {self.check_allowed[1]}"
            env["NETGUARD_CHECK_WAIT"] = str(self.check_wait)
        return env


def _nets(items: Iterable[str]) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    return [ipaddress.ip_network(i, strict=False) for i in dict.fromkeys(items)]


def _setnet(net: ipaddress.IPv4Network | ipaddress.IPv6Network) -> str:
    """ipset's hash:net refuses a /0 prefix; two halves cover the same."""
    if net.prefixlen == 0:
        raise ConfigError(f"egress_allow entry {net}: everything is mode 'open', not an allowlist entry")
    return str(net)




def endpoint_entries(url: str | None) -> tuple[list[AllowEntry], list[tuple[str, int]]]:
    """A model endpoint's URL as allowlist entries, or (an address, maybe on this host) as host exceptions.

    None (a ScriptedModel, or the recording proxy the lab starts later) adds nothing here: that
    endpoint is allowed per run (`sidecar.allow_endpoint`).
    """
    if not url:
        return [], []
    parts = urlsplit(url)
    if not parts.hostname:
        return [], []
    port = parts.port or (443 if parts.scheme == "https" else 80)
    host = parts.hostname.lower()
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return ([AllowEntry(host, (port,))] if _DOMAIN.match(host) else []), []
    return [AllowEntry(str(ipaddress.ip_network(ip)), (port,))], [(str(ip), port)]
