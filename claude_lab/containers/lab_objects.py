"""The lab's networks and volumes, made idempotently and noted for undo before each create."""
from __future__ import annotations

from typing import TYPE_CHECKING

from .. import naming as n
from ..errors import LabError
from ..util.parallel import parallel
from ..util.undo import Undo
from ..util.waiting import wait_until

if TYPE_CHECKING:
    from ..engine.face import EngineFace


def ensure_network(engine: "EngineFace", undo: Undo, lab: str, name: str, group: str | None,
                   internal: bool = False) -> bool:
    """Create a network unless it exists, noted for undo *before* the call (Ctrl-C safe); True if made now.

    Concurrent first creators end up sharing one network (the engine keeps one winner)."""
    if engine.network_exists(name):
        return False
    what = f"network {name}"
    undo.push(what, lambda: engine.remove_network(name))
    if not engine.create_network(name, n.labels(lab, "network", group=group), internal=internal):
        undo.drop(what)  # another creator won the race: the network is theirs
        return False
    return True


def ensure_volume(engine: "EngineFace", undo: Undo, lab: str, name: str, **labels: str) -> None:
    if not engine.volume_exists(name):
        undo.push(f"volume {name}", lambda: engine.remove_volume(name))
        engine.create_volume(name, n.labels(lab, "volume", **labels))


def ensure_services_network(engine: "EngineFace", undo: Undo, lab: str) -> bool:
    """The shared services network: internal (no way out through it, no gateway: a container's default route
    and its DNS answers come from its other network first), True if made now."""
    return ensure_network(engine, undo, lab, n.services_network(lab), None, internal=True)


def attach_services(engine: "EngineFace", lab: str, network: str, timeout: float = 120.0) -> bool:
    """Services are reachable by name from every group's network. On a swarm attaching replaces a service's
    task: wait until each one that was healthy is healthy again (an agent's firewall checks PostgreSQL).
    False if the lab has no services (yet)."""
    found = [(role, engine.container(n.container_name(lab, role))) for role in n.SERVICE_ROLES]
    found = [(role, info) for role, info in found if info is not None]
    # all at once: on a swarm each is a service update waiting for its new task
    parallel(lambda item: engine.connect(network, item[1].name, aliases=[item[0]]), found)
    attached = [info.name for _, info in found if info.running and info.health == "healthy"]

    def healthy() -> bool:
        for name in attached:
            info = engine.container(name)
            if info is None or info.state in ("exited", "dead"):
                raise LabError(f"{name} stopped while joining network {network}; see `docker logs {name}`")
            if info.health != "healthy":
                return False
        return True

    if attached:
        wait_until(healthy, timeout, f"the lab's services were not healthy again {timeout:.0f}s after joining "
                                     f"network {network}; see `claude-lab status`", interval=0.2)
    return bool(found)
