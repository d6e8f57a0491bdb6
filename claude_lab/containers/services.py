"""The dev services (PostgreSQL, Redis, the dev container): their specs, their ports, waiting until healthy."""
from __future__ import annotations

from typing import TYPE_CHECKING, Callable

from .. import naming as n
from ..engine.types import ContainerInfo, ContainerSpec
from ..errors import LabError, NotFound, PortInUse
from ..util.ports import free_port, port_free, port_holder
from ..util.undo import Undo
from ..util.waiting import wait_until
from .lab_objects import attach_services, ensure_network, ensure_services_network, ensure_volume

if TYPE_CHECKING:
    from ..config import LabConfig
    from ..engine.face import EngineFace

WORKSPACE = "/workspace"  # an agent's workspace volume; the dev container mounts the project below it
SERVICE_IMAGES = ("dev", "postgres", "redis", "agent", "netguard")  # what `up()` builds: ready for create too
PORT_KEYS = ("postgres_port", "redis_port")


def service_env(cfg: "LabConfig") -> dict[str, str]:
    """How the dev container and agents reach the services, by name on the lab's networks."""
    return {
        "DATABASE_URL": f"postgresql://{cfg.postgres_user}:{cfg.postgres_password}@postgres:5432/{cfg.postgres_db}",
        "REDIS_URL": "redis://redis:6379/0",
        "PGHOST": "postgres", "PGPORT": "5432", "PGUSER": cfg.postgres_user, "PGDATABASE": cfg.postgres_db,
    }


def service_spec(cfg: "LabConfig", lab: str, role: str) -> ContainerSpec:
    """The container of one service; PostgreSQL's data lives on the volume `naming.postgres_volume(lab)`."""
    common = dict(
        name=n.container_name(lab, role),
        labels=n.labels(lab, "container", role=role),
        network=n.network_name(lab),
        aliases=[role],
        extra_networks={n.services_network(lab): [role]} if cfg.shared_services else {},
        hostname=role,
    )
    if role == n.POSTGRES:
        return ContainerSpec(
            image=cfg.image("postgres"), **common,
            environment={"POSTGRES_USER": cfg.postgres_user, "POSTGRES_PASSWORD": cfg.postgres_password,
                         "POSTGRES_DB": cfg.postgres_db},
            volumes={n.postgres_volume(lab): {"bind": "/var/lib/postgresql/data", "mode": "rw"}},
            ports={"5432/tcp": (cfg.bind_address, cfg.postgres_port)},
        )
    if role == n.REDIS:
        return ContainerSpec(image=cfg.image("redis"), **common,
                             ports={"6379/tcp": (cfg.bind_address, cfg.redis_port)})
    workdir = f"{WORKSPACE}/{cfg.project_name}"
    return ContainerSpec(
        image=cfg.image("dev"), **common,
        working_dir=workdir,
        volumes={str(cfg.project_dir): {"bind": workdir, "mode": "rw"}},
        environment=service_env(cfg),
        mem_limit=cfg.dev_memory,
        nano_cpus=int(cfg.dev_cpus * 1e9) if cfg.dev_cpus else None,
    )


def published_ports(containers: list[ContainerInfo]) -> set[str]:
    """The host ports the lab's own containers publish (those are ours, not taken)."""
    return {c.ports.get(p, "").rpartition(":")[2] for c in containers for p in c.ports}


SERVICE_PORT = {"postgres_port": (n.POSTGRES, "5432/tcp"), "redis_port": (n.REDIS, "6379/tcp")}


def settle_ports(engine: "EngineFace | None", cfg: "LabConfig", lab: str) -> None:
    """Port settings of 0 become real ports: the one the lab's running service publishes, else a free one."""
    for key in PORT_KEYS:
        if getattr(cfg, key) != 0:
            continue
        role, container_port = SERVICE_PORT[key]
        try:
            info = engine.container(n.container_name(lab, role)) if engine is not None else None
        except LabError:  # no engine to ask: a free port now; `up` will say if the engine is missing
            info = None
        published = (info.ports.get(container_port) or "").rpartition(":")[2] if info is not None else ""
        setattr(cfg, key, int(published) if published.isdigit() else free_port(cfg.bind_address))


def check_ports(cfg: "LabConfig", ours: set[str], hint: str) -> None:
    """PortInUse, naming the holder, for a service port that something else holds; `hint` says how to
    choose another port in the words of the front end that asks."""
    for key in PORT_KEYS:
        port = getattr(cfg, key)
        if str(port) in ours or port_free(port, cfg.bind_address):
            continue
        holder = port_holder(port)
        raise PortInUse(f"host port {port} ({key}) is already in use" + (f" by {holder}" if holder else "")
                        + f"; stop that or choose another port: {hint.format(key=key, KEY=key.upper())}", port=port)


def wait_healthy(engine: "EngineFace", lab: str, timeout: float, logs: Callable[[str], str]) -> None:
    """Poll until every service with a healthcheck is healthy; a crashed one fails at once (with its log)."""
    names = [n.container_name(lab, role) for role in n.SERVICE_ROLES]
    pending: list[str] = []

    def healthy() -> bool:
        pending.clear()
        for name in names:
            info = engine.container(name)
            if info is None:
                raise NotFound(f"service container {name} is gone; start the lab again")
            if info.state in ("exited", "dead"):
                raise LabError(f"{name} stopped (exit {info.exit_code}); its last log lines:\n" + logs(name))
            if info.health not in (None, "healthy") or not info.running:
                pending.append(f"{name} ({info.health or info.state})")
        return not pending

    wait_until(healthy, timeout, lambda: f"not healthy in time: {', '.join(pending)}; see `claude-lab logs <name>`",
               interval=0.2)


def start_services(engine: "EngineFace", cfg: "LabConfig", lab: str, existing: dict[str, ContainerInfo],
                   undo: Undo) -> None:
    """Create what is missing (a service whose image was rebuilt is made again: its data lives in volumes),
    start what is stopped, and attach the services to every group's network (and the shared services network)."""
    ensure_network(engine, undo, lab, n.network_name(lab), None)
    if cfg.shared_services:
        ensure_services_network(engine, undo, lab)
    for role in n.SERVICE_ROLES:
        name = n.container_name(lab, role)
        info = existing.get(name)
        current = engine.image_id(cfg.image(role)) if info is not None else None
        if info is not None and current is not None and info.image_id != current:
            engine.remove(name, force=True)
            info = None
        if info is None:
            if role == n.POSTGRES:
                ensure_volume(engine, undo, lab, n.postgres_volume(lab), role=role)
            undo.push(f"container {name}", lambda name=name: engine.remove(name, force=True))
            engine.create_container(service_spec(cfg, lab, role))
        elif not info.running:
            engine.start(name)
    for net in engine.networks({n.LAB: lab, n.KIND: "network"}):
        if net.labels.get(n.GROUP) or net.name == n.services_network(lab):  # no-ops where attached already
            attach_services(engine, lab, net.name)
