"""The warm pool: agents made ahead of `create_agent`, fully ready -- running, firewall applied and self-checked,
workspace volume made and seeded -- and claimed in a few engine calls.

Everything is in the engine, so every process sees the same pool (naming.identity reads it back):
- a pod is made as agent `pool.<token>`: containers `<lab>_pool.<token>` and `<lab>_pool.<token>_netguard`,
  volume `<lab>_pool.<token>_workspace`, hostname `pool.<token>`;
- once it is ready its agent container is renamed `<lab>_pool.<token>.ready`: only those are claimed;
- a claim first takes the pod's lock: it creates a container `<lab>_pool.<token>.lock` (never started).
  Creating is the engine's one atomic test-and-set on names -- a rename is not: two renames of one container
  that both looked it up before either ran both succeed -- so of two claimers exactly one gets the lock, the
  other tries the next pod or starts a cold agent. The holder renames the pod's agent container to
  `<lab>_<agent>` and drops the lock (a later claimer holding it finds the old name gone); then the sidecar
  takes the agent's name, its network alias becomes the agent's id, and the workspace's branch is renamed
  `claude-lab/<agent>`;
- draining takes the same lock, so a pod is never both claimed and removed.
What a pod can serve is in its labels: the group and the seed (source and base commit), and its image; a
request for anything else (other limits, image, env, egress, ports, a ref, a kept workspace) starts cold.
"""
from __future__ import annotations

import uuid
from datetime import datetime, timezone
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Mapping

from .. import naming as n
from ..engine.types import ContainerSpec
from ..errors import AlreadyExists, NotFound
from ..netguard import sidecar as guard
from ..util.parallel import parallel
from .pods import AgentRequest, create_pod

if TYPE_CHECKING:
    from ..config import LabConfig
    from ..engine.face import EngineFace
    from ..engine.types import ContainerInfo

READY, DRAIN, LOCK = ".ready", ".drain", ".lock"
LOCK_ROLE = "pool-lock"
STALE_LOCK = 60.0  # seconds: a claim holds its lock for one rename


@dataclass(frozen=True)
class PoolKey:
    """What a pod serves: agents of `group`, seeded as `seed` says ({} = an empty workspace), on `image_id`."""

    group: str | None
    seed: tuple[tuple[str, str], ...]
    image_id: str

    @classmethod
    def of(cls, group: str | None, seed: Mapping[str, str], image_id: str) -> "PoolKey":
        return cls(group, tuple(sorted((k, v) for k, v in seed.items() if k in n.SEED_LABELS)), image_id)


def key_of(info: "ContainerInfo") -> PoolKey:
    seed = {key: info.labels[label] for key, label in n.SEED_LABELS.items() if label in info.labels}
    return PoolKey.of(info.labels.get(n.GROUP), seed, info.image_id)


def default_request(engine: "EngineFace", cfg: "LabConfig", agent_id: str, group: str | None) -> AgentRequest:
    """The request of `create_agent(agent_id, group)` with nothing else given: the only kind the pool serves."""
    return AgentRequest.of(engine, cfg, agent_id, group, memory=None, cpus=None, pids=None, image=None, env=None,
                           socket=None, read_only=None, runtime=None, egress=None, egress_allow=None)


def servable(engine: "EngineFace", cfg: "LabConfig", req: AgentRequest) -> bool:
    """A pooled pod can be this agent: the lab's defaults for its group (limits, image, env, egress, no ports)."""
    return engine.backend == "local" and req.group in cfg.pool_sizes() and req == default_request(
        engine, cfg, req.agent_id, req.group)


def pods(engine: "EngineFace", lab: str) -> list["ContainerInfo"]:
    """The pool's unclaimed pods (their agent containers), oldest first: filling, ready or draining."""
    found = engine.containers({n.LAB: lab, n.ROLE: n.AGENT_ROLE})
    return sorted((c for c in found if c.labels.get(n.ROLE) == n.POOL_ROLE), key=lambda c: (c.created is None,
                                                                                             c.created, c.name))


def is_ready(info: "ContainerInfo") -> bool:
    return info.running and info.name.endswith(READY)


def make(engine: "EngineFace", cfg: "LabConfig", lab: str, group: str | None, seed: Mapping[str, str],
         install: Callable[["ContainerInfo", str], object] | None) -> "ContainerInfo":
    """One pod, made as a cold agent is (`install(info, pool_id)` seeds its workspace), then marked ready."""
    born = n.pool_id(uuid.uuid4().hex[:12])
    req = default_request(engine, cfg, born, group)
    info = create_pod(engine, cfg, lab, req, None, workspace_labels=dict(seed),
                      then=(lambda i: install(i, born)) if install is not None else None)
    try:
        engine.rename(info.name, info.name + READY)
    except BaseException:
        _remove_pod(engine, lab, born, info.name)
        raise
    return engine.container(info.name + READY) or info


def _locked(engine: "EngineFace", lab: str, born: str, image: str, stale_after: float | None = None) -> bool:
    """Take pod `born`'s lock (see the module docstring); False if another caller holds it. A lock older than
    `stale_after` seconds was left by a process that died while holding it: it is taken over."""
    spec = ContainerSpec(name=n.container_name(lab, n.AGENT_ROLE, born) + LOCK, image=image, network="none",
                         labels=n.labels(lab, "container", role=LOCK_ROLE), command=["true"], restart_policy=None)
    for _ in range(2):
        try:
            engine.create_container(spec, start=False)
            return True
        except AlreadyExists:
            held = engine.container(spec.name)
            age = (datetime.now(timezone.utc) - held.created).total_seconds() if held and held.created else 0.0
            if stale_after is None or age < stale_after:
                return False
            engine.remove(spec.name, force=True)
    return False


def _unlock(engine: "EngineFace", lab: str, born: str) -> None:
    engine.remove(n.container_name(lab, n.AGENT_ROLE, born) + LOCK, force=True)


def claim(engine: "EngineFace", lab: str, key: PoolKey, agent_id: str, lock_image: str,
          rename_branch: Callable[[str, str, str], object] | None = None) -> "ContainerInfo | None":
    """Turn a ready pod of `key` into agent `agent_id`, or None if none is left (the caller starts a cold one).
    `lock_image`: any local image (the lock container is never started). `rename_branch(container, pool_id,
    agent_id)` gives the seeded workspace the agent's branch. AlreadyExists if the agent's name is taken."""
    target = n.container_name(lab, n.AGENT_ROLE, agent_id)
    for pod in pods(engine, lab):
        if not is_ready(pod) or key_of(pod) != key:
            continue
        born = pod.labels[n.POOL]
        if not _locked(engine, lab, born, lock_image):
            continue  # another creator is claiming it
        try:
            engine.rename(pod.name, target)
        except NotFound:
            continue  # claimed (or drained) before we held the lock
        finally:
            _unlock(engine, lab, born)
        try:  # ours now; a failure from here removes it (nothing of the user's is in it yet)
            sidecar = guard.sidecar_name(lab, agent_id)
            engine.rename(guard.sidecar_name(lab, born), sidecar)
            net = n.network_name(lab, key.group)
            engine.disconnect(net, sidecar)
            engine.connect(net, sidecar, aliases=[agent_id])
            shared = n.services_network(lab)
            on = engine.container(sidecar)
            if on is not None and shared in on.ip_addresses:  # known there by the agent's container name
                engine.disconnect(shared, sidecar)
                engine.connect(shared, sidecar, aliases=[target])
            if rename_branch is not None and dict(key.seed):
                rename_branch(target, born, agent_id)
            info = engine.container(target)
            if info is None:
                raise NotFound(f"agent {agent_id} vanished while it was claimed from the pool")
            return info
        except AlreadyExists:
            _remove_pod(engine, lab, born, target)
            raise
        except Exception:
            _remove_pod(engine, lab, born, target, agent_id)
            return None  # the caller starts a cold agent
        except BaseException:
            _remove_pod(engine, lab, born, target, agent_id)
            raise
    return None


def _remove_pod(engine: "EngineFace", lab: str, born: str, agent_name: str, agent_id: str | None = None) -> None:
    engine.remove(agent_name, force=True)
    if agent_id is not None:
        engine.remove(guard.sidecar_name(lab, agent_id), force=True)
    engine.remove(guard.sidecar_name(lab, born), force=True)  # after the agent: it held the netns
    engine.remove_volume(n.workspace_volume(lab, born))


def drain(engine: "EngineFace", lab: str, lock_image: str,
          which: Callable[["ContainerInfo"], bool] = lambda _: True) -> list[str]:
    """Remove the unclaimed pods `which` picks (under each one's lock: a claimer never gets one half removed);
    returns their pool names."""
    def one(pod: "ContainerInfo") -> str | None:
        born = pod.labels[n.POOL]
        gone = f"{n.container_name(lab, n.AGENT_ROLE, born)}{DRAIN}"
        if pod.name != gone:
            if not _locked(engine, lab, born, lock_image, stale_after=STALE_LOCK):
                return None  # being claimed
            try:
                engine.rename(pod.name, gone)
            except (NotFound, AlreadyExists):
                return None  # claimed (or being drained) meanwhile
            finally:
                _unlock(engine, lab, born)
        _remove_pod(engine, lab, born, gone)
        return born

    return [b for b in parallel(one, [p for p in pods(engine, lab) if which(p)]) if b]


def fill(engine: "EngineFace", cfg: "LabConfig", lab: str, key_for: Callable[[str | None], PoolKey | None],
         make_one: Callable[[str | None], object], threads: int = 2) -> int:
    """Top the pool up to `cfg.agent_pool`: pods that no longer match (another base commit, image or group) are
    drained, the missing ones made (`make_one(group)`, `threads` at a time). Returns how many were made."""
    sizes = cfg.pool_sizes()
    keys = {group: key_for(group) for group in sizes}
    drain(engine, lab, cfg.image("netguard"), lambda p: p.name.endswith(DRAIN) or (p.name.endswith(READY) and (
        not p.running or keys.get(p.labels.get(n.GROUP)) != key_of(p))))
    have: dict[str | None, int] = {}
    for pod in pods(engine, lab):
        if not pod.name.endswith(DRAIN) and pod.state not in ("exited", "dead"):
            have[pod.labels.get(n.GROUP)] = have.get(pod.labels.get(n.GROUP), 0) + 1
    missing = [g for g, want in sizes.items() if keys[g] is not None for _ in range(want - have.get(g, 0))]
    parallel(make_one, missing, threads=threads)
    return len(missing)


__all__ = ["PoolKey", "claim", "default_request", "drain", "fill", "is_ready", "key_of", "make", "pods",
           "servable"]
