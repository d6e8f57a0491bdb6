"""An agent's container: hardened by default (no capabilities, no-new-privileges, limits, non-root, no
socket, no ports), in the network namespace of its netguard sidecar, with its own workspace volume."""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from .. import naming as n
from ..engine.types import ContainerSpec, memory_bytes
from ..errors import LabError
from . import hardening
from .services import WORKSPACE, service_env

if TYPE_CHECKING:
    from ..config import LabConfig

DOCKER_SOCKET = "/var/run/docker.sock"


@dataclass(frozen=True)
class Limits:
    memory: str | int | None
    cpus: float | None
    pids: int | None

    @classmethod
    def of(cls, cfg: "LabConfig", memory: str | int | None, cpus: float | None, pids: int | None) -> "Limits":
        """Keywords over the lab's settings; a bad size or CPU count fails here, before anything is made."""
        limits = cls(memory if memory is not None else cfg.agent_memory, cpus if cpus is not None else cfg.agent_cpus,
                     pids if pids is not None else cfg.agent_pids)
        memory_bytes(limits.memory)
        if limits.cpus is not None and limits.cpus <= 0:
            raise LabError(f"cpus={limits.cpus!r}: give a positive number of CPUs, for example 1 or 0.5")
        return limits


def agent_spec(cfg: "LabConfig", lab: str, agent_id: str, group: str | None, guard: str, egress: str, *,
               limits: Limits, image: str | None = None, env: dict[str, str] | None = None, socket: bool = False,
               read_only: bool = False, runtime: str | None = None,
               labels: dict[str, str] | None = None) -> ContainerSpec:
    volumes = {n.workspace_volume(lab, agent_id): {"bind": WORKSPACE, "mode": "rw"}}
    if socket:
        volumes[DOCKER_SOCKET] = {"bind": DOCKER_SOCKET, "mode": "rw"}
    return ContainerSpec(
        name=n.container_name(lab, n.AGENT_ROLE, agent_id), image=image or cfg.image("agent"),
        labels=n.labels(lab, "container", role=n.AGENT_ROLE, agent=agent_id, group=group,
                        docker_socket="1" if socket else None, egress=egress, netguard=guard, **(labels or {})),
        network=f"container:{guard}",  # no network, hostname or capability of its own
        user=cfg.agent_user, working_dir=WORKSPACE,
        environment={**service_env(cfg), **cfg.agent_env, **(env or {}),
                     **(hardening.read_only_env(cfg.agent_user) if read_only else {})},
        read_only=read_only, tmpfs=hardening.read_only_tmpfs(cfg.agent_user) if read_only else None,
        runtime=runtime, volumes=volumes,
        mem_limit=str(limits.memory) if limits.memory is not None else None,
        nano_cpus=int(limits.cpus * 1e9) if limits.cpus else None,
        pids_limit=limits.pids,
        cap_drop=["ALL"],
        security_opt=["no-new-privileges:true"],
    )
