"""The engine layer: the only module that imports `docker`.

It turns docker-py's objects and exceptions into small dataclasses and `LabError`s, so the
core never sees a Docker type and another backend can stand behind the same face.
"""
from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Iterator

import docker
import docker.errors
import requests.exceptions
from docker.types import Healthcheck

from .errors import AlreadyExists, EngineUnavailable, LabError, NotFound

ENGINE_HINT = (
    "start one with `make setup` (installs docker.io and starts dockerd on Debian), "
    "`sudo dockerd &`, or point DOCKER_HOST at a running engine"
)


@dataclass(frozen=True)
class ContainerInfo:
    id: str
    name: str
    state: str  # created | running | paused | restarting | exited | dead
    health: str | None  # healthy | unhealthy | starting | None (no healthcheck)
    image: str
    image_id: str
    labels: dict[str, str]
    ports: dict[str, str]  # "5432/tcp" -> "127.0.0.1:5433"
    created: datetime | None
    exit_code: int | None = None
    oom_killed: bool = False
    networks: tuple[str, ...] = ()
    ip_addresses: dict[str, str] = field(default_factory=dict)  # network -> IPv4 address
    pid: int | None = None

    @property
    def running(self) -> bool:
        return self.state == "running"


@dataclass
class ContainerSpec:
    """What to create; the core fills it, the engine turns it into API calls."""

    name: str
    image: str
    labels: dict[str, str]
    network: str
    aliases: list[str] = field(default_factory=list)
    extra_networks: dict[str, list[str]] = field(default_factory=dict)  # network -> aliases
    command: list[str] | None = None
    user: str | None = None
    hostname: str | None = None
    working_dir: str | None = None
    environment: dict[str, str] = field(default_factory=dict)
    volumes: dict[str, dict[str, str]] = field(default_factory=dict)  # source -> {bind, mode}
    ports: dict[str, tuple[str, int]] = field(default_factory=dict)  # "5432/tcp" -> (ip, port)
    mem_limit: str | None = None
    nano_cpus: int | None = None
    pids_limit: int | None = None
    cap_drop: list[str] | None = None
    cap_add: list[str] | None = None
    security_opt: list[str] | None = None
    restart_policy: str | None = "unless-stopped"
    read_only: bool = False
    tmpfs: dict[str, str] | None = None
    init: bool = False
    healthcheck: dict[str, Any] | None = None


def _parse_time(value: str | None) -> datetime | None:
    if not value or value.startswith("0001-"):
        return None
    # Docker gives nanoseconds; fromisoformat takes at most microseconds.
    head, _, frac = value.rstrip("Z").partition(".")
    frac = (frac + "000000")[:6]
    try:
        return datetime.fromisoformat(f"{head}.{frac}+00:00")
    except ValueError:
        return None


def _info(attrs: dict[str, Any]) -> ContainerInfo:
    state = attrs.get("State", {}) or {}
    config = attrs.get("Config", {}) or {}
    health = (state.get("Health") or {}).get("Status")
    ports: dict[str, str] = {}
    for cport, bindings in ((attrs.get("NetworkSettings") or {}).get("Ports") or {}).items():
        for b in bindings or []:
            ports[cport] = f"{b.get('HostIp') or '0.0.0.0'}:{b.get('HostPort')}"
            break
    nets = (attrs.get("NetworkSettings") or {}).get("Networks") or {}
    networks = tuple(sorted(nets))
    return ContainerInfo(
        id=attrs["Id"],
        name=attrs["Name"].lstrip("/"),
        state=state.get("Status", "unknown"),
        health=health,
        image=config.get("Image", ""),
        image_id=attrs.get("Image", ""),
        labels=dict(config.get("Labels") or {}),
        ports=ports,
        created=_parse_time(attrs.get("Created")),
        exit_code=state.get("ExitCode"),
        oom_killed=bool(state.get("OOMKilled")),
        networks=networks,
        ip_addresses={k: v.get("IPAddress") for k, v in nets.items() if v.get("IPAddress")},
        pid=state.get("Pid") or None,
    )


def _filters(labels: dict[str, str | None]) -> dict[str, list[str]]:
    return {"label": [k if v is None else f"{k}={v}" for k, v in labels.items()]}


class Engine:
    """A connection to one Docker engine (the local socket, or DOCKER_HOST)."""

    def __init__(self, base_url: str | None = None, timeout: int = 120):
        try:
            if base_url:
                self._client = docker.DockerClient(base_url=base_url, timeout=timeout)
            else:
                self._client = docker.from_env(timeout=timeout)
            self._client.ping()
        except (docker.errors.DockerException, requests.exceptions.RequestException) as exc:
            where = base_url or os.environ.get("DOCKER_HOST") or "the local socket (/var/run/docker.sock)"
            raise EngineUnavailable(f"no Docker engine answers at {where}: {ENGINE_HINT}. ({exc})") from exc
        self.api = self._client.api
        self.base_url = self.api.base_url

    # -- engine ------------------------------------------------------------------------
    @property
    def is_local(self) -> bool:
        """True when containers run on this machine (their cgroup files can be read here)."""
        return self.base_url.startswith(("http+unix://", "http+docker://localunixsocket"))

    def version(self) -> dict[str, Any]:
        return self._call(self.api.version)

    def info(self) -> dict[str, Any]:
        return self._call(self.api.info)

    def close(self) -> None:
        self._client.close()

    def _call(self, fn, *args, what: str | None = None, **kwargs):
        try:
            return fn(*args, **kwargs)
        except docker.errors.NotFound as exc:
            raise NotFound(f"{what or 'object'} not found: {exc.explanation or exc}") from exc
        except docker.errors.APIError as exc:
            if exc.status_code == 409 and "already in use" in str(exc.explanation):
                raise AlreadyExists(f"{what or 'object'} already exists: {exc.explanation}") from exc
            raise LabError(f"Docker engine refused: {exc.explanation or exc}") from exc
        except requests.exceptions.ConnectionError as exc:
            raise EngineUnavailable(f"lost the Docker engine at {self.base_url}: {ENGINE_HINT}. ({exc})") from exc

    # -- containers --------------------------------------------------------------------
    def containers(self, labels: dict[str, str | None], all: bool = True) -> list[ContainerInfo]:
        found = self._call(self.api.containers, all=all, filters=_filters(labels))
        out = []
        for summary in found:
            try:
                out.append(_info(self.api.inspect_container(summary["Id"])))
            except docker.errors.NotFound:
                continue  # removed between list and inspect
        return out

    def container(self, name: str) -> ContainerInfo | None:
        try:
            return _info(self.api.inspect_container(name))
        except docker.errors.NotFound:
            return None
        except requests.exceptions.ConnectionError as exc:
            raise EngineUnavailable(f"lost the Docker engine at {self.base_url}: {ENGINE_HINT}. ({exc})") from exc

    def create_container(self, spec: ContainerSpec, start: bool = True) -> ContainerInfo:
        """Create (and start) a container on its networks; on any failure remove what was made."""
        hc = None
        if spec.healthcheck:
            hc = Healthcheck(**spec.healthcheck)
        host_config = self.api.create_host_config(
            binds={src: {"bind": v["bind"], "mode": v.get("mode", "rw")} for src, v in spec.volumes.items()},
            port_bindings={p: [(ip, port)] for p, (ip, port) in spec.ports.items()},
            mem_limit=spec.mem_limit,
            nano_cpus=spec.nano_cpus,
            pids_limit=spec.pids_limit,
            cap_drop=spec.cap_drop,
            cap_add=spec.cap_add,
            security_opt=spec.security_opt,
            restart_policy={"Name": spec.restart_policy} if spec.restart_policy else None,
            read_only=spec.read_only,
            tmpfs=spec.tmpfs,
            init=spec.init or None,
            network_mode=spec.network,
        )
        networking = self.api.create_networking_config(
            {spec.network: self.api.create_endpoint_config(aliases=spec.aliases or None)}
        )
        created = self._call(
            self.api.create_container,
            image=spec.image,
            command=spec.command,
            name=spec.name,
            user=spec.user or "",
            hostname=spec.hostname,
            working_dir=spec.working_dir,
            environment=spec.environment or None,
            labels=spec.labels,
            ports=list(spec.ports) or None,
            volumes=[v["bind"] for v in spec.volumes.values()] or None,
            host_config=host_config,
            networking_config=networking,
            healthcheck=hc,
            detach=True,
            what=f"container {spec.name} (image {spec.image})",
        )
        cid = created["Id"]
        try:
            for net, aliases in spec.extra_networks.items():
                self._call(self.api.connect_container_to_network, cid, net, aliases=aliases or None,
                           what=f"network {net}")
            if start:
                self._call(self.api.start, cid, what=f"container {spec.name}")
        except BaseException:
            self.remove(cid, force=True)
            raise
        return _info(self.api.inspect_container(cid))

    def start(self, name: str) -> None:
        self._call(self.api.start, name, what=f"container {name}")

    def stop(self, name: str, timeout: int = 10) -> None:
        self._call(self.api.stop, name, timeout=timeout, what=f"container {name}")

    def restart(self, name: str, timeout: int = 10) -> None:
        self._call(self.api.restart, name, timeout=timeout, what=f"container {name}")

    def remove(self, name: str, force: bool = False) -> None:
        try:
            self.api.remove_container(name, force=force, v=False)
        except docker.errors.NotFound:
            pass
        except docker.errors.APIError as exc:
            if "already in progress" not in str(exc):
                raise LabError(f"could not remove container {name}: {exc.explanation or exc}") from exc

    def connect(self, network: str, container: str, aliases: list[str] | None = None) -> None:
        try:
            self.api.connect_container_to_network(container, network, aliases=aliases or None)
        except docker.errors.APIError as exc:
            if "already exists" in str(exc) or "already attached" in str(exc):
                return
            raise LabError(f"could not connect {container} to {network}: {exc.explanation or exc}") from exc

    def logs(self, name: str, tail: int | None = None, follow: bool = False,
             timestamps: bool = False) -> Iterator[bytes] | bytes:
        return self._call(self.api.logs, name, stream=follow, follow=follow, tail=tail if tail is not None else "all",
                          timestamps=timestamps, what=f"container {name}")

    def put_archive(self, name: str, path: str, data: bytes) -> None:
        self._call(self.api.put_archive, name, path, data, what=f"container {name}")

    # -- exec --------------------------------------------------------------------------
    def exec_start(self, container: str, cmd: list[str], user: str | None = None, workdir: str | None = None,
                   env: dict[str, str] | None = None, stdin: bool = False, tty: bool = False
                   ) -> tuple[str, Iterator[tuple[bytes | None, bytes | None]]]:
        """Start a command; returns its exec id and a stream of (stdout, stderr) chunks."""
        exec_id = self._call(
            self.api.exec_create, container, cmd, stdout=True, stderr=True, stdin=stdin, tty=tty,
            user=user or "", workdir=workdir, environment=env or None, what=f"container {container}",
        )["Id"]
        stream = self._call(self.api.exec_start, exec_id, stream=True, demux=True, tty=tty)
        return exec_id, stream

    def exec_output(self, container: str, cmd: list[str], user: str | None = None, workdir: str | None = None,
                    env: dict[str, str] | None = None) -> tuple[str, bytes, bytes]:
        """Run a command to the end in one request (the fast path when nothing needs streaming)."""
        exec_id = self._call(
            self.api.exec_create, container, cmd, stdout=True, stderr=True,
            user=user or "", workdir=workdir, environment=env or None, what=f"container {container}",
        )["Id"]
        out, err = self._call(self.api.exec_start, exec_id, stream=False, demux=True)
        return exec_id, out or b"", err or b""

    def exec_exit_code(self, exec_id: str) -> int | None:
        return self._call(self.api.exec_inspect, exec_id).get("ExitCode")

    # -- networks and volumes ------------------------------------------------------------
    def network_exists(self, name: str) -> bool:
        return any(net["Name"] == name for net in self._call(self.api.networks, names=[name]))

    def create_network(self, name: str, labels: dict[str, str], internal: bool = False) -> None:
        self._call(self.api.create_network, name, driver="bridge", labels=labels, internal=internal,
                   check_duplicate=True)

    def ensure_network(self, name: str, labels: dict[str, str], internal: bool = False) -> bool:
        """Create the network unless it exists; True when it was created now."""
        if self.network_exists(name):
            return False
        self.create_network(name, labels, internal)
        return True

    def network_gateway(self, name: str) -> str | None:
        """The IPv4 gateway of a network: the host's own address on that bridge (None if it has none)."""
        attrs = self._call(self.api.inspect_network, name, what=f"network {name}")
        for cfg in (attrs.get("IPAM") or {}).get("Config") or []:
            gateway, subnet = cfg.get("Gateway"), cfg.get("Subnet")
            if gateway and ":" not in gateway:
                return gateway.split("/")[0]
            if subnet and ":" not in subnet:  # some engines leave Gateway empty: it is the first host
                return str(next(ipaddress.ip_network(subnet, strict=False).hosts()))
        return None

    def networks(self, labels: dict[str, str | None]) -> list[dict[str, Any]]:
        return self._call(self.api.networks, filters=_filters(labels))

    def remove_network(self, name: str) -> None:
        try:
            self.api.remove_network(name)
        except docker.errors.NotFound:
            pass
        except docker.errors.APIError as exc:
            raise LabError(f"could not remove network {name}: {exc.explanation or exc}") from exc

    def volume_exists(self, name: str) -> bool:
        try:
            self.api.inspect_volume(name)
            return True
        except docker.errors.NotFound:
            return False

    def create_volume(self, name: str, labels: dict[str, str]) -> None:
        self._call(self.api.create_volume, name, labels=labels)

    def volumes(self, labels: dict[str, str | None]) -> list[dict[str, Any]]:
        return self._call(self.api.volumes, filters=_filters(labels)).get("Volumes") or []

    def remove_volume(self, name: str) -> None:
        try:
            self.api.remove_volume(name)
        except docker.errors.NotFound:
            pass
        except docker.errors.APIError as exc:
            raise LabError(f"could not remove volume {name}: {exc.explanation or exc}") from exc

    # -- images ------------------------------------------------------------------------
    def image_labels(self, ref: str) -> dict[str, str] | None:
        """An image's labels, or None when the image is not on the engine."""
        try:
            attrs = self.api.inspect_image(ref)
        except docker.errors.ImageNotFound:
            return None
        return dict((attrs.get("Config") or {}).get("Labels") or {})

    def image_id(self, ref: str) -> str | None:
        try:
            return self.api.inspect_image(ref)["Id"]
        except docker.errors.ImageNotFound:
            return None

    def tag_image(self, ref: str, repository: str, tag: str) -> None:
        self._call(self.api.tag, ref, repository, tag, force=True)

    def build(self, context: Path, tag: str, buildargs: dict[str, str], labels: dict[str, str]) -> Iterator[dict]:
        """Stream the classic builder's JSON messages ({'stream': ...} / {'error': ...})."""
        gen = self._call(
            self.api.build, path=str(context), tag=tag, buildargs=buildargs, labels=labels,
            rm=True, forcerm=True, pull=False, decode=True,
        )
        try:
            yield from gen
        except docker.errors.APIError as exc:
            yield {"error": str(exc.explanation or exc)}

    def pull(self, ref: str) -> bool:
        try:
            self.api.pull(ref)
            return True
        except docker.errors.APIError:
            return False

    def interactive_argv(self, container: str, command: list[str], user: str | None = None,
                         workdir: str | None = None) -> list[str]:
        """The `docker exec -it` command line for a terminal session (the docker CLI owns the tty)."""
        argv = ["docker"]
        host = os.environ.get("DOCKER_HOST")
        if host:
            argv += ["-H", host]
        argv += ["exec", "-it"]
        if user:
            argv += ["-u", user]
        if workdir:
            argv += ["-w", workdir]
        return argv + [container, *command]

    # -- raw client, for benchmarks' baselines only ------------------------------------
    @property
    def raw(self) -> "docker.DockerClient":
        return self._client

