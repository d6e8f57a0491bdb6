"""Docker's JSON into the engine's records: one reader per kind of answer, shared by both backends."""
from __future__ import annotations

import ipaddress
from datetime import datetime
from pathlib import Path
from typing import Any

from ..naming import identity
from .types import ContainerInfo, NetworkInfo, NodeInfo, StatsReading, VersionInfo, VolumeInfo


def parse_time(value: str | None) -> datetime | None:
    if not value or value.startswith("0001-"):
        return None
    # Docker gives nanoseconds; fromisoformat takes at most microseconds.
    head, _, frac = value.rstrip("Z").partition(".")
    frac = (frac + "000000")[:6]
    try:
        return datetime.fromisoformat(f"{head}.{frac}+00:00")
    except ValueError:
        return None


def container_info(attrs: dict[str, Any], owner: dict[str, Any] | None = None) -> ContainerInfo:
    """`owner`: the container whose network namespace this one joined; its networks are this one's."""
    state = attrs.get("State", {}) or {}
    config = attrs.get("Config", {}) or {}
    limits = attrs.get("HostConfig") or {}
    health = (state.get("Health") or {}).get("Status")
    ports: dict[str, str] = {}
    for cport, bindings in ((attrs.get("NetworkSettings") or {}).get("Ports") or {}).items():
        for b in bindings or []:
            ports[cport] = f"{b.get('HostIp') or '0.0.0.0'}:{b.get('HostPort')}"
            break
    nets = ((owner or attrs).get("NetworkSettings") or {}).get("Networks") or {}
    networks = tuple(sorted(nets))
    return ContainerInfo(
        id=attrs["Id"],
        name=attrs["Name"].lstrip("/"),
        state=state.get("Status", "unknown"),
        health=health,
        image=config.get("Image", ""),
        image_id=attrs.get("Image", ""),
        labels=identity(attrs["Name"].lstrip("/"), dict(config.get("Labels") or {})),  # a pool-born one's by name
        ports=ports,
        created=parse_time(attrs.get("Created")),
        exit_code=state.get("ExitCode"),
        oom_killed=bool(state.get("OOMKilled")),
        networks=networks,
        ip_addresses={k: v.get("IPAddress") for k, v in nets.items() if v.get("IPAddress")},
        pid=state.get("Pid") or None,
        memory=limits.get("Memory") or None,
        nano_cpus=limits.get("NanoCpus") or None,
        pids_limit=limits.get("PidsLimit") if (limits.get("PidsLimit") or 0) > 0 else None,  # 0/-1: unlimited
        started_at=parse_time(state.get("StartedAt")),
        network_mode=str(limits.get("NetworkMode") or ""),
    )


def ipam(attrs: dict[str, Any]) -> tuple[list[str], list[str]]:
    """A network's (subnets, gateways); a missing gateway is the subnet's first host, as Docker assigns."""
    subnets: list[str] = []
    gateways: list[str] = []
    for cfg in (attrs.get("IPAM") or {}).get("Config") or []:
        subnet, gateway = cfg.get("Subnet"), cfg.get("Gateway")
        if not subnet:
            continue
        net = ipaddress.ip_network(subnet, strict=False)
        subnets.append(str(net))
        gateways.append(gateway.split("/")[0] if gateway else str(next(net.hosts())))
    return subnets, gateways


def netns_owner(attrs: dict[str, Any]) -> str | None:
    """The container whose network namespace this one joined (network_mode=container:<id>), if any."""
    mode = str((attrs.get("HostConfig") or {}).get("NetworkMode") or "")
    return mode.split(":", 1)[1] if mode.startswith("container:") else None


def label_filters(labels: dict[str, str | None]) -> dict[str, list[str]]:
    return {"label": [k if v is None else f"{k}={v}" for k, v in labels.items()]}


def host_nameservers(path: str = "/etc/resolv.conf") -> list[str]:
    """This machine's resolvers, loopback ones left out (they are dialled from the host's namespace,
    so no container can use them)."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except OSError:
        return []
    out = []
    for line in lines:
        parts = line.split()
        if len(parts) >= 2 and parts[0] == "nameserver":
            try:
                ip = ipaddress.ip_address(parts[1].split("%")[0])
            except ValueError:
                continue
            if not ip.is_loopback:
                out.append(str(ip))
    return out


def stats_reading(raw: dict[str, Any]) -> StatsReading:
    cpu, pre = raw.get("cpu_stats") or {}, raw.get("precpu_stats") or {}
    mem = raw.get("memory_stats") or {}
    mstats = mem.get("stats") or {}
    inactive = mstats["total_inactive_file"] if "total_inactive_file" in mstats else mstats.get("inactive_file", 0)
    rx = tx = 0
    for net in (raw.get("networks") or {}).values():
        rx += int(net.get("rx_bytes") or 0)
        tx += int(net.get("tx_bytes") or 0)
    blk_read = blk_write = 0
    for entry in (raw.get("blkio_stats") or {}).get("io_service_bytes_recursive") or []:
        op = (entry.get("op") or " ")[0].lower()
        if op == "r":
            blk_read += int(entry.get("value") or 0)
        elif op == "w":
            blk_write += int(entry.get("value") or 0)
    usage = cpu.get("cpu_usage") or {}
    return StatsReading(
        cpu_ns=int(usage.get("total_usage") or 0),
        system_ns=int(cpu.get("system_cpu_usage") or 0),
        pre_cpu_ns=int((pre.get("cpu_usage") or {}).get("total_usage") or 0),
        pre_system_ns=int(pre.get("system_cpu_usage") or 0),
        online_cpus=int(cpu.get("online_cpus") or len(usage.get("percpu_usage") or []) or 0),
        mem_usage=int(mem.get("usage") or 0),
        mem_inactive_file=int(inactive or 0),
        mem_limit=int(mem.get("limit") or 0),
        net_rx=rx, net_tx=tx, blk_read=blk_read, blk_write=blk_write,
        pids=int((raw.get("pids_stats") or {}).get("current") or 0),
    )




def network_info(attrs: dict[str, Any]) -> NetworkInfo:
    return NetworkInfo(id=attrs.get("Id", ""), name=attrs.get("Name", ""), labels=dict(attrs.get("Labels") or {}),
                       created=str(attrs.get("Created") or ""), driver=attrs.get("Driver", ""),
                       scope=attrs.get("Scope", ""))


def volume_info(attrs: dict[str, Any], node: str | None = None) -> VolumeInfo:
    return VolumeInfo(name=attrs.get("Name", ""), labels=dict(attrs.get("Labels") or {}), node=node)


def version_info(attrs: dict[str, Any]) -> VersionInfo:
    return VersionInfo(version=str(attrs.get("Version", "")), api_version=str(attrs.get("ApiVersion", "")),
                       os=str(attrs.get("Os", "")), arch=str(attrs.get("Arch", "")), raw=dict(attrs))


def node_info(node: dict[str, Any], engine: str = "") -> NodeInfo:
    """A swarm node as the manager lists it."""
    spec, desc, status = node.get("Spec") or {}, node.get("Description") or {}, node.get("Status") or {}
    return NodeInfo(id=node["ID"], hostname=desc.get("Hostname", ""), role=spec.get("Role", ""),
                    state=status.get("State", "unknown"), availability=spec.get("Availability", ""),
                    address=status.get("Addr", ""), engine=engine, labels=dict(spec.get("Labels") or {}))
