"""The lab's networks and volumes, made idempotently and noted for undo before each create."""
from __future__ import annotations

from typing import TYPE_CHECKING

from .. import naming as n
from ..util.undo import Undo

if TYPE_CHECKING:
    from ..engine.face import EngineFace


def ensure_network(engine: "EngineFace", undo: Undo, lab: str, name: str, group: str | None) -> bool:
    """Create a network unless it exists, noted for undo *before* the call (Ctrl-C safe); True if made now.

    Concurrent first creators end up sharing one network (the engine keeps one winner)."""
    if engine.network_exists(name):
        return False
    what = f"network {name}"
    undo.push(what, lambda: engine.remove_network(name))
    if not engine.create_network(name, n.labels(lab, "network", group=group)):
        undo.drop(what)  # another creator won the race: the network is theirs
        return False
    return True


def ensure_volume(engine: "EngineFace", undo: Undo, lab: str, name: str, **labels: str) -> None:
    if not engine.volume_exists(name):
        undo.push(f"volume {name}", lambda: engine.remove_volume(name))
        engine.create_volume(name, n.labels(lab, "volume", **labels))


def attach_services(engine: "EngineFace", lab: str, network: str) -> None:
    """Services are reachable by name from every group's network."""
    for role in n.SERVICE_ROLES:
        name = n.container_name(lab, role)
        if engine.container(name) is not None:
            engine.connect(network, name, aliases=[role])
