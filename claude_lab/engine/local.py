"""One Docker engine (the local socket or DOCKER_HOST) behind the engine face (`face.EngineFace`).

docker-py's low-level `APIClient` does the talking; `parse` turns its JSON into records and `errors`
its exceptions into `LabError`s, so nothing of Docker's leaves this package.
"""
from __future__ import annotations

import ipaddress
import os
import threading
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import docker
import docker.errors
from docker.types import Healthcheck

from ..errors import EngineUnavailable, LabError
from ..naming import identity
from ..util.parallel import parallel, together
from .errors import DOCKER_ERRORS, ENGINE_HINT, call, translate
from .parse import (container_info, host_nameservers, ipam, label_filters, netns_owner, network_info, stats_reading,
                    version_info, volume_info)
from .types import (CgroupLayout, ContainerBrief, ContainerInfo, ContainerSpec, NetworkInfo, NodeInfo, StatsReading,
                    VersionInfo, VolumeInfo)


class Engine:
    """A connection to one Docker engine (the local socket, or DOCKER_HOST)."""

    backend = "local"
    pods_anchor_first = True  # create_pod: the anchor owns the network namespace, the member joins it

    def __init__(self, base_url: str | None = None, timeout: int = 120):
        try:
            if base_url:
                self._client = docker.DockerClient(base_url=base_url, timeout=timeout)
            else:
                self._client = docker.from_env(timeout=timeout)
            self._client.ping()
        except DOCKER_ERRORS as exc:
            where = base_url or os.environ.get("DOCKER_HOST") or "the local socket (/var/run/docker.sock)"
            raise EngineUnavailable(f"no Docker engine answers at {where}: {ENGINE_HINT}. ({exc})") from exc
        self.api = self._client.api
        self.base_url = self.api.base_url
        self._network_lock = threading.Lock()

    # -- engine ------------------------------------------------------------------------
    @property
    def is_local(self) -> bool:
        """True when the engine is on this machine: a unix socket, or TCP to a loopback address.

        docker-py names a unix-socket connection `http+docker://localhost`. Local is necessary, not
        sufficient, for reading containers' cgroup files here (Docker Desktop runs them in a VM):
        readers still check that the files exist.
        """
        if self.base_url.startswith(("http+unix://", "http+docker://localhost", "http+docker://localunixsocket")):
            return True
        host = self.base_url.split("://", 1)[-1].split("/", 1)[0].rsplit(":", 1)[0].strip("[]")
        return host in ("localhost", "127.0.0.1", "::1")

    def version(self) -> VersionInfo:
        return version_info(self._call(self.api.version))

    def info(self) -> dict[str, Any]:
        """`docker info` as the engine says it (engine-internal: the core reads typed answers)."""
        return self._call(self.api.info)

    def close(self) -> None:
        self._client.close()

    def _call(self, fn, *args, what: str | None = None, **kwargs):
        return call(fn, *args, what=what, where=self.base_url, **kwargs)

    # -- containers --------------------------------------------------------------------
    def containers(self, labels: dict[str, str | None], all: bool = True) -> list[ContainerInfo]:
        found = self._call(self.api.containers, all=all, filters=label_filters(labels))
        attrs = []
        for summary in found:
            try:
                attrs.append(self.api.inspect_container(summary["Id"]))
            except docker.errors.NotFound:
                continue  # removed between list and inspect
        by_id = {a["Id"]: a for a in attrs}
        return [container_info(a, self._owner(a, by_id)) for a in attrs]

    def _owner(self, attrs: dict[str, Any], known: dict[str, Any] | None = None) -> dict[str, Any] | None:
        """The attrs of the container whose network namespace `attrs`' container joined (None if none)."""
        owner = netns_owner(attrs)
        if owner is None:
            return None
        if known and owner in known:
            return known[owner]
        try:
            return self.api.inspect_container(owner)
        except docker.errors.NotFound:
            return None

    def container(self, name: str) -> ContainerInfo | None:
        try:
            attrs = self.api.inspect_container(name)
            return container_info(attrs, self._owner(attrs))
        except docker.errors.NotFound:
            return None
        except DOCKER_ERRORS as exc:
            raise translate(exc, f"container {name}", self.base_url) from exc

    def create_container(self, spec: ContainerSpec, start: bool = True) -> ContainerInfo:
        """Create (and start) a container; retried when a racing creator briefly doubled a network."""
        networks = [net for net in [spec.network, *spec.extra_networks] if not net.startswith("container:")]
        for attempt in range(4):
            try:
                return self._create_container(spec, start)
            except LabError as exc:
                # Docker names the network when it is ambiguous (two of one name) or was just removed under
                # us (a racing creator's duplicate, resolved by name a moment before dedupe removed it).
                if attempt == 3 or not any(net in str(exc) for net in networks):
                    raise
                for net in networks:
                    self.dedupe_network(net)
        raise AssertionError("unreachable")

    def _create_container(self, spec: ContainerSpec, start: bool = True) -> ContainerInfo:
        """Create (and start) a container on its networks; on any failure remove what was made."""
        hc = None
        if spec.healthcheck:
            hc = Healthcheck(**spec.healthcheck)
        host_config = self.api.create_host_config(
            binds={src: {"bind": v["bind"], "mode": v.get("mode", "rw")} for src, v in spec.volumes.items()},
            port_bindings={p: [(ip, port or None)] for p, (ip, port) in spec.ports.items()},  # 0: a free port
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
            runtime=spec.runtime,
        )
        shared_netns = spec.network.startswith("container:")  # no endpoint, hostname or aliases of its own
        networking = None if shared_netns else self.api.create_networking_config(
            {spec.network: self.api.create_endpoint_config(aliases=spec.aliases or None)}
        )
        created = self._call(
            self.api.create_container,
            image=spec.image,
            command=spec.command,
            name=spec.name,
            user=spec.user or "",
            hostname=None if shared_netns else spec.hostname,
            working_dir=spec.working_dir,
            environment=spec.environment or None,
            labels=spec.labels,
            ports=[(int(p.split("/")[0]), p.partition("/")[2] or "tcp") for p in spec.ports] or None,
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
        attrs = self.api.inspect_container(cid)
        return container_info(attrs, self._owner(attrs))

    def create_pod(self, anchor: ContainerSpec, member: ContainerSpec, ready: Callable[[], Any]) -> ContainerInfo:
        """Two containers in one network namespace: the anchor first, `ready()`, then the member joining it.

        The caller notes both names for undo before calling (an interrupted call is undone too).
        """
        self.create_container(anchor)
        ready()
        return self.create_container(member)

    def publish(self, refs: list[str]) -> dict[str, str]:
        """Nothing to do: this engine's containers use its own images."""
        return {ref: ref for ref in refs}

    def preload(self, refs: list[str]) -> dict[str, float]:
        """Nothing to do: the images are on this engine (a swarm pulls them onto its nodes here)."""
        return {}

    def nodes(self) -> list[NodeInfo]:
        """This engine as the only node (the swarm backend lists its nodes the same way)."""
        info = self.info()
        return [NodeInfo(id=info.get("ID", ""), hostname=info.get("Name", ""), role="engine", state="ready",
                         engine=self.base_url)]

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

    def teardown(self, containers: Iterable[str], networks: Iterable[str] = (), volumes: Iterable[str] = ()) -> None:
        """Force-remove containers concurrently (the engine does each on its own: a lab's teardown waits for the
        slowest, not the sum), then the networks and volumes they used. Every item is tried; the first error
        is raised after."""
        parallel(self.remove, containers, True)
        together(*(lambda net=net: self.remove_network(net) for net in networks),
                 *(lambda vol=vol: self.remove_volume(vol) for vol in volumes))

    def rename(self, name: str, new_name: str) -> None:
        """Rename atomically: the engine's names are unique, so of two callers renaming one container (or to
        one name) exactly one succeeds, the other gets NotFound or AlreadyExists."""
        self._call(self.api.rename, name, new_name, what=f"container {name}")

    def connect(self, network: str, container: str, aliases: list[str] | None = None) -> None:
        try:
            self.api.connect_container_to_network(container, network, aliases=aliases or None)
        except docker.errors.APIError as exc:
            if "already exists" in str(exc) or "already attached" in str(exc):
                return
            raise LabError(f"could not connect {container} to {network}: {exc.explanation or exc}") from exc

    def disconnect(self, network: str, container: str) -> None:
        self._call(self.api.disconnect_container_from_network, container, network, what=f"container {container}")

    def logs(self, name: str, tail: int | None = None, follow: bool = False,
             timestamps: bool = False) -> Iterator[bytes] | bytes:
        return self._call(self.api.logs, name, stream=follow, follow=follow, tail=tail if tail is not None else "all",
                          timestamps=timestamps, what=f"container {name}")

    def put_archive(self, name: str, path: str, data: bytes | Iterable[bytes]) -> None:
        """Unpack a tar (bytes, or chunks as they come: streamed, not held whole) at `path` in the container."""
        if not self._call(self.api.put_archive, name, path, data, what=f"container {name} (path {path})"):
            raise LabError(f"the engine did not unpack the archive at {path} in {name}")

    def get_archive(self, name: str, path: str) -> tuple[Iterator[bytes], dict[str, Any]]:
        """A file or folder of the container as a tar stream, and the engine's stat of it (name, size, mode)."""
        return self._call(self.api.get_archive, name, path, chunk_size=1 << 20,
                          what=f"{path} in container {name}")

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

    def oom_events(self, container: str, since: float, until: float) -> int:
        """How often the kernel's OOM killer struck inside the container between two Unix times.

        The engine's "oom" event covers any process in the container's cgroup (an exec too), where
        State.OOMKilled only tells about the main process.
        """
        events = self._call(self.api.events, since=since - 1, until=until, decode=True,
                            filters={"type": "container", "container": container, "event": "oom"})
        try:  # the API's `since` counts whole seconds: keep only what happened from `since` on
            return sum(1 for e in events if int(e.get("timeNano") or 0) >= since * 1e9)
        finally:
            events.close()

    # -- networks and volumes ------------------------------------------------------------
    def network_exists(self, name: str) -> bool:
        return any(net["Name"] == name for net in self._call(self.api.networks, names=[name]))

    def create_network(self, name: str, labels: dict[str, str], internal: bool = False) -> bool:
        """Create a network; True if this call made the one that stays.

        Concurrent creators (threads or processes) end up sharing one network: Docker's duplicate
        check is best effort, so when two creates both succeed every creator keeps the same winner
        (oldest, then lowest id) and removes its own loser.
        """
        with self._network_lock:
            try:
                created = self.api.create_network(name, driver="bridge", labels=labels, internal=internal,
                                                  check_duplicate=True)
            except docker.errors.APIError as exc:
                if exc.status_code == 409 or "already exists" in str(exc):
                    return False
                raise LabError(f"could not create network {name}: {exc.explanation or exc}") from exc
            return self.dedupe_network(name) == created.get("Id")

    def dedupe_network(self, name: str) -> str | None:
        """Keep one network of that name (oldest, then lowest id: every caller picks the same) and
        remove the others, which racing creators have not used yet. Returns the survivor's id."""
        same = [n for n in self.api.networks(names=[name]) if n["Name"] == name]
        if not same:
            return None
        winner = min(same, key=lambda n: (n.get("Created", ""), n["Id"]))
        for net in same:
            if net["Id"] != winner["Id"]:
                try:
                    self.api.remove_network(net["Id"])
                except docker.errors.APIError:
                    pass  # already gone, or its creator is removing it
        return winner["Id"]

    def ensure_network(self, name: str, labels: dict[str, str], internal: bool = False) -> bool:
        """Create the network unless it exists; True when it was created now."""
        if self.network_exists(name):
            return False
        return self.create_network(name, labels, internal)

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

    def network_addresses(self, name: str) -> tuple[list[str], list[str]]:
        """A network's subnets and gateways, IPv4 and IPv6 (the gateways are the host's own addresses)."""
        attrs = self._call(self.api.inspect_network, name, what=f"network {name}")
        return ipam(attrs)

    def gateways(self) -> list[str]:
        """Every network's gateway on this engine, all labs' and not: each is an address of the host."""
        found: list[str] = []
        for summary in self._call(self.api.networks):
            try:
                found += ipam(self.api.inspect_network(summary["Id"]))[1]
            except docker.errors.NotFound:
                continue
        return list(dict.fromkeys(found))

    def dns_servers(self) -> list[str]:
        """Where Docker's embedded DNS forwards: the engine host's resolv.conf (empty when not this machine)."""
        return host_nameservers() if self.is_local else []

    def runtimes(self) -> list[str]:
        """The OCI runtimes this engine can run containers with (runc, and e.g. runsc once registered)."""
        return sorted((self.info().get("Runtimes") or {}).keys())

    def networks(self, labels: dict[str, str | None]) -> list[NetworkInfo]:
        return [network_info(n) for n in self._call(self.api.networks, filters=label_filters(labels))]

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

    def volumes(self, labels: dict[str, str | None]) -> list[VolumeInfo]:
        found = self._call(self.api.volumes, filters=label_filters(labels)).get("Volumes") or []
        return [volume_info(v) for v in found]

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

    # -- resource stats ----------------------------------------------------------------------
    def container_briefs(self, labels: dict[str, str | None], all: bool = True) -> list[ContainerBrief]:
        """The matching containers from one list request (no inspect: cheap enough to call every second)."""
        found = self._call(self.api.containers, all=all, filters=label_filters(labels))
        briefs = []
        for c in found:
            name = (c.get("Names") or ["/" + c["Id"][:12]])[0].lstrip("/")
            briefs.append(ContainerBrief(id=c["Id"], name=name, state=c.get("State") or "unknown",
                                         labels=identity(name, dict(c.get("Labels") or {}))))
        return briefs

    def cgroup_layout(self) -> CgroupLayout:
        """How this engine lays out cgroups (asked once per Engine: it does not change while it runs)."""
        cached = self.__dict__.get("_cgroup_layout")
        if cached is None:
            info = self.info()
            try:
                version = int(info.get("CgroupVersion") or 1)  # engines before 20.10 only knew v1
            except (TypeError, ValueError):
                version = 1
            cached = CgroupLayout(version=version, driver=str(info.get("CgroupDriver") or "cgroupfs"),
                                  mem_total=int(info.get("MemTotal") or 0), ncpu=int(info.get("NCPU") or 0))
            self.__dict__["_cgroup_layout"] = cached
        return cached

    def container_stats(self, container: str) -> StatsReading:
        """The stats API's reading (the engine waits about 1 s for its second CPU sample)."""
        return stats_reading(self._call(self.api.stats, container, stream=False, what=f"container {container}"))

    # -- raw client, for benchmarks' baselines only ------------------------------------
    @property
    def raw(self) -> "docker.DockerClient":
        return self._client

