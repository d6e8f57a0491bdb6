"""The hostile suite's helpers: probes run from inside agents, our own listeners, and the report.

Every probe is recorded (`probes.record(...)`) with what was expected and what happened; at the end
of the session the rows are merged into `tests/security/last-run.json` and SECURITY.md's table is
regenerated from it (report.py), so the table always shows the suite's last run.

Network probes only ever target this machine: listeners this test opens on the host's own
addresses (bridge gateways, interfaces), the lab's own containers, and a test server container on
a network of the lab's own ("outside").
"""
from __future__ import annotations

import ipaddress
import json
import random
import socket
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import pytest

from claude_lab import Lab
from claude_lab import naming as n
from claude_lab.engine import ContainerSpec

HERE = Path(__file__).resolve().parent

# Run inside an agent: connect, print one word (answered/refused/timeout/unreachable/error).
PROBE = r"""
import socket, sys, errno
host, port = sys.argv[1], int(sys.argv[2])
fam = socket.AF_INET6 if ":" in host else socket.AF_INET
s = socket.socket(fam, socket.SOCK_STREAM)
s.settimeout(float(sys.argv[3]) if len(sys.argv) > 3 else 3)
try:
    s.connect((host, port) if fam == socket.AF_INET else (host, port, 0, 0))
    print("answered")
except ConnectionRefusedError:
    print("refused")
except socket.timeout:
    print("timeout")
except OSError as e:
    print("unreachable" if e.errno in (errno.ENETUNREACH, errno.EHOSTUNREACH, errno.EADDRNOTAVAIL,
                                        errno.EACCES, errno.EPERM) else f"error:{e.errno}")
"""


@dataclass
class Probes:
    rows: list[dict] = field(default_factory=list)

    def record(self, probe: str, expected: str, observed: str, *, area: str, where: str = "agent",
               note: str = "") -> bool:
        """Note one probe (`note`: figures of this run); returns whether it went as expected."""
        ok = observed == expected
        self.rows.append({"area": area, "probe": probe, "from": where, "expected": expected, "observed": observed,
                          "ok": ok, "note": note, "at": time.strftime("%Y-%m-%d %H:%M:%S")})
        return ok


_PROBES = Probes()


@pytest.fixture(scope="session")
def probes() -> Probes:
    return _PROBES


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if not _PROBES.rows:
        return
    from .report import write_all

    write_all(_PROBES.rows)


def connect(lab: Lab, agent: str, host: str, port: int, timeout: float = 3, user: str | None = None) -> str:
    """Try a TCP connection from inside the agent; one word back."""
    res = lab.exec(agent, ["python3", "-c", PROBE, host, str(port), str(timeout)], user=user, timeout=30)
    return res.stdout.strip() or f"error:{res.exit_code}:{res.stderr.strip()[-200:]}"


class Listener:
    """A TCP listener of the test on this host, counting the connections it accepts."""

    def __init__(self, host: str = "0.0.0.0", port: int = 0):
        fam = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.sock = socket.socket(fam, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if fam == socket.AF_INET6:
            self.sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        self.sock.bind((host, port))
        self.sock.listen(16)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.accepted = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except (socket.timeout, OSError):
                continue
            self.accepted += 1
            conn.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        self.sock.close()


@pytest.fixture
def listener() -> Iterator[type[Listener]]:
    made: list[Listener] = []

    def make(host: str = "0.0.0.0", port: int = 0) -> Listener:
        made.append(Listener(host, port))
        return made[-1]

    yield make  # type: ignore[misc]
    for item in made:
        item.close()


def host_addresses_v4(lab: Lab) -> list[str]:
    """This machine's own IPv4 addresses an agent could aim at (gateways, interfaces; not loopback)."""
    from claude_lab.netguard.sidecar import host_addresses

    return [a for a in host_addresses(lab.engine) if ":" not in a]


@dataclass
class Outside:
    """A test server of ours on a network of its own: what "outside the allowlist" looks like here."""

    network: str
    subnet4: str
    subnet6: str
    gateway6: str
    name: str
    ip4: str
    ip6: str
    port: int = 8080


def _free_subnets(lab: Lab) -> tuple[str, str]:
    used = set()
    for net in lab.engine.api.networks():
        for cfg in (lab.engine.api.inspect_network(net["Id"]).get("IPAM") or {}).get("Config") or []:
            if cfg.get("Subnet"):
                used.add(cfg["Subnet"])
    while True:
        # 198.18.0.0/15 (RFC 2544, benchmark testing): not a private range, so "open" mode allows it,
        # and a network of our own on this machine, so nothing leaves it.
        v4 = f"198.{random.choice((18, 19))}.{random.randrange(256)}.0/24"
        if v4 not in used:
            return v4, f"fd{random.randrange(256):02x}:{random.randrange(65536):04x}:{random.randrange(65536):04x}::/64"


@pytest.fixture
def outside(lab: Lab) -> Outside:
    """A dual-stack network `<lab>_outside` (labelled with the lab, so destroy() removes it) and an HTTP
    server on it; agents are not on it unless a test attaches their netguard to it."""
    engine = lab.engine
    net = f"{lab.name}_outside"
    sub4, sub6 = _free_subnets(lab)
    ipam = {"Driver": "default", "Config": [{"Subnet": sub4}, {"Subnet": sub6}]}
    engine.api.create_network(net, driver="bridge", enable_ipv6=True, ipam=ipam,
                              labels=n.labels(lab.name, "network", role="outside"))
    name = f"outside-{uuid.uuid4().hex[:6]}"
    engine.create_container(ContainerSpec(
        name=f"{lab.name}_{name}", image=lab.config.image("dev"),
        labels=n.labels(lab.name, "container", role="outside"), network=net, aliases=[name], hostname=name,
        command=["sh", "-c", "python3 -m http.server 8080 --bind :: & python3 -m http.server 8081 --bind :: & wait"],
        restart_policy=None,
        cap_drop=["ALL"], security_opt=["no-new-privileges:true"],
    ))
    engine.create_container(ContainerSpec(  # a client without a netguard: shows each path exists
        name=f"{lab.name}_{name}-control", image=lab.config.image("dev"),
        labels=n.labels(lab.name, "container", role="outside"), network=net, restart_policy=None,
        cap_drop=["ALL"], security_opt=["no-new-privileges:true"],
    ))
    info = lab.engine.api.inspect_container(f"{lab.name}_{name}")
    ep = info["NetworkSettings"]["Networks"][net]
    gw6 = str(next(ipaddress.ip_network(sub6).hosts()))
    out = Outside(net, sub4, sub6, gw6, name, ep["IPAddress"], ep["GlobalIPv6Address"])
    # The server answers from a container that has no netguard (the path exists: refusals are ours).
    deadline = time.monotonic() + 30
    while True:
        r = lab.engine.exec_output(f"{lab.name}_{name}", ["python3", "-c", PROBE, out.ip4, "8080", "1"])
        if r[1].strip() == b"answered":
            return out
        if time.monotonic() > deadline:
            raise AssertionError(f"the outside test server did not come up: {r}")
        time.sleep(0.2)


def attach_to_outside(lab: Lab, agent: str, outside: Outside) -> None:
    """Give the agent a route to the outside network (its netguard joins it); policy is unchanged."""
    from claude_lab.netguard.sidecar import sidecar_name

    lab.engine.connect(outside.network, sidecar_name(lab.name, agent))


def control_probe(lab: Lab, outside: Outside, host: str, port: int) -> str:
    """The same probe from a container without a netguard on the outside network."""
    r = lab.engine.exec_output(f"{lab.name}_{outside.name}-control", ["python3", "-c", PROBE, host, str(port), "3"])
    return r[1].decode().strip()


def lab_json(lab: Lab) -> str:
    return json.dumps([lab.engine.api.inspect_container(c.id) for c in lab.containers()])
