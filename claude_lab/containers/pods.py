"""An agent's pod: its network (services attached for a new group), its workspace volume, its netguard
sidecar owning the network namespace, and the hardened agent container joining it -- all or nothing."""
from __future__ import annotations

import uuid
import warnings
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Callable, Iterable

from .. import naming as n
from ..engine.types import ContainerInfo
from ..errors import AlreadyExists, ConfigError
from ..netguard import sidecar as guard
from ..netguard.policy import group_settings
from ..util.undo import Undo
from . import hardening
from .agent_spec import Limits, agent_spec
from .lab_objects import attach_services, ensure_network, ensure_services_network, ensure_volume

if TYPE_CHECKING:
    from ..config import LabConfig
    from ..engine.face import EngineFace


@dataclass(frozen=True)
class AgentRequest:
    """What `create_agent` was asked for, resolved against the lab's settings (`of`)."""

    agent_id: str
    group: str | None
    limits: Limits
    image: str | None
    env: dict[str, str] | None
    socket: bool
    read_only: bool
    runtime: str | None
    egress: str | None
    egress_allow: Iterable[str] | None
    ports: tuple[int, ...] = ()

    @classmethod
    def of(cls, engine: "EngineFace", cfg: "LabConfig", agent_id: str, group: str | None, *,
           memory: str | int | None, cpus: float | None, pids: int | None, image: str | None,
           env: dict[str, str] | None, socket: bool | None, read_only: bool | None, runtime: str | None,
           egress: str | None, egress_allow: Iterable[str] | None, ports: Iterable[int] = ()) -> "AgentRequest":
        """Checked before anything is made: limits, the runtime (the engine must have it), warnings said."""
        rt = hardening.check_runtime(engine, runtime if runtime is not None else cfg.runtime)
        if rt and "runc" not in rt and (egress or group_settings(cfg, group).get("egress") or cfg.egress) != "open":
            warnings.warn(f"runtime={rt!r}: a sandbox with its own network stack (gVisor's runsc) may send "
                          f"packets past the netguard's iptables rules; see SECURITY.md", stacklevel=3)
        return cls(agent_id, group, Limits.of(cfg, memory, cpus, pids), image, env,
                   cfg.mount_docker_socket if socket is None else socket,
                   cfg.read_only if read_only is None else read_only, rt, egress, egress_allow,
                   _ports(engine, ports))


def _ports(engine: "EngineFace", ports: Iterable[int]) -> tuple[int, ...]:
    wanted = tuple(dict.fromkeys(ports or ()))
    for port in wanted:
        if not isinstance(port, int) or isinstance(port, bool) or not 1 <= port <= 65535:
            raise ConfigError(f"ports={list(wanted)!r}: give container ports as numbers from 1 to 65535, e.g. [8000]")
    if wanted and engine.backend != "local":
        raise ConfigError("ports= publishes an agent's ports on this machine, which the swarm backend cannot do "
                          "(the agent runs on another node); reach it from the dev container by its name instead")
    return wanted


def create_pod(engine: "EngineFace", cfg: "LabConfig", lab: str, req: AgentRequest, model_url: str | None, *,
               workspace_labels: dict[str, str] | None = None,
               then: Callable[[ContainerInfo], object] | None = None) -> ContainerInfo:
    """Make the agent's pod, then `then(info)` (seeding its workspace); on any failure remove what this call
    made. `AlreadyExists` when a racing creator won the name (its network and volume, shared by name, stay).
    `workspace_labels` (the seed: source, base, ...) go on a new workspace volume and on the agent."""
    undo = Undo()
    name = n.container_name(lab, n.AGENT_ROLE, req.agent_id)
    try:
        net = n.network_name(lab, req.group)
        shared = req.group is not None and cfg.shared_services
        made = ensure_network(engine, undo, lab, net, req.group)
        if made and req.group is not None and not shared:
            attach_services(engine, lab, net, cfg.health_timeout)
        services_net = _services_network(engine, undo, cfg, lab) if shared else None
        ensure_volume(engine, undo, lab, n.workspace_volume(lab, req.agent_id), role="workspace", agent=req.agent_id,
                      **(workspace_labels or {}))
        if req.socket:
            warnings.warn(f"agent {req.agent_id} gets the Docker socket: it can control the whole engine "
                          f"(and so the host). Only do this for trusted work.", stacklevel=3)
        policy = guard.policy_for(engine, cfg, lab, req.group, net, model_url, req.egress, req.egress_allow,
                                  services_network=services_net)
        sidecar = guard.sidecar_spec(lab, cfg.image("netguard"), req.agent_id, req.group, net, policy,
                                     services_network=services_net)
        if req.ports:  # the sidecar owns the network namespace, so it publishes the agent's ports
            sidecar = replace(sidecar, ports={f"{p}/tcp": (cfg.bind_address, 0) for p in req.ports})
        extra = {**(workspace_labels or {}), **({"ports": ",".join(map(str, req.ports))} if req.ports else {})}
        spec = agent_spec(cfg, lab, req.agent_id, req.group, sidecar.name, policy.mode, limits=req.limits,
                          image=req.image, env=req.env, socket=req.socket, read_only=req.read_only,
                          runtime=req.runtime, labels=extra)
        # Both containers carry this call's token, so undoing removes only what this call made: a racing
        # creator that won either name keeps it (Docker's names are unique: never a duplicate).
        token = uuid.uuid4().hex
        sidecar, spec = (replace(s, labels={**s.labels, n.CREATOR: token}) for s in (sidecar, spec))
        # The sidecar and the agent share one network namespace; its rules are checked before the
        # agent runs anything. Both noted before the call: an interrupted create is undone too.
        for container in (sidecar.name, name):
            undo.push(f"container {container}", lambda c=container: _remove_if_ours(engine, c, token))
        info = engine.create_pod(sidecar, spec, ready=lambda: guard.wait_applied(engine, sidecar.name,
                                                                                 policy.apply_timeout))
        if then is not None:
            then(info)
        return info
    except AlreadyExists:  # whoever raced us won the name
        undo.keep_only("container ")  # network and volume are shared by name with the winner: keep them
        undo.rollback()
        raise
    except BaseException:
        undo.rollback()
        raise


def _services_network(engine: "EngineFace", undo: Undo, cfg: "LabConfig", lab: str) -> str:
    """The shared services network, made (and the running services attached: once per lab, not per group)
    if `up` has not made it yet. Once the services are on it, it is the lab's, not this call's to undo."""
    net = n.services_network(lab)
    if ensure_services_network(engine, undo, lab) and attach_services(engine, lab, net, cfg.health_timeout):
        undo.drop(f"network {net}")
    return net


def _remove_if_ours(engine: "EngineFace", name: str, token: str) -> None:
    info = engine.container(name)
    if info is not None and info.labels.get(n.CREATOR) == token:
        engine.remove(name, force=True)
