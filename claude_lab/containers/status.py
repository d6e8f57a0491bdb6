"""`lab.status()`: one row per container, each agent's netguard folded into its row's `egress` column."""
from __future__ import annotations

from typing import TYPE_CHECKING, Callable


from .. import naming as n
from ..engine.types import ContainerInfo
from ..netguard import sidecar as guard
from ..util.lazy import lazy

pd = lazy("pandas")  # loaded when a DataFrame is made (the CLI starts without it)

if TYPE_CHECKING:
    from ..engine.face import EngineFace

STATUS_COLUMNS = ["name", "role", "state", "health", "image", "ports", "created", "agent", "group", "egress",
                  "node", "secrets"]


def status_frame(engine: "EngineFace", containers: list[ContainerInfo],
                 secrets_of: Callable[[str | None, str | None], list[str]] | None = None) -> pd.DataFrame:
    """`secrets_of(agent, group)` names the secrets an agent's commands get (they enter the agent)."""
    guards = {c.labels.get(n.AGENT): c for c in containers if c.labels.get(n.ROLE) == guard.NETGUARD_ROLE}
    def ports(c: ContainerInfo) -> str:
        sidecar = guards.get(c.labels.get(n.AGENT)) if c.labels.get(n.ROLE) == n.AGENT_ROLE else None
        published = {**c.ports, **(sidecar.ports if sidecar is not None else {})}  # an agent's: its sidecar's
        return ", ".join(f"{host}->{cport}" for cport, host in sorted(published.items()))

    rows = [{
        "name": c.name, "role": c.labels.get(n.ROLE), "state": c.state, "health": c.health, "image": c.image,
        "ports": ports(c),
        "created": pd.Timestamp(c.created) if c.created else pd.NaT,
        "agent": c.labels.get(n.AGENT), "group": c.labels.get(n.GROUP),
        "egress": guard.state_of(engine, c, guards.get(c.labels.get(n.AGENT))).text
        if c.labels.get(n.ROLE) == n.AGENT_ROLE else None,
        "node": c.labels.get(n.NODE),  # the swarm node running it (None on one engine)
        "secrets": ", ".join(secrets_of(c.labels.get(n.AGENT), c.labels.get(n.GROUP))) or None
        if secrets_of is not None and c.labels.get(n.ROLE) == n.AGENT_ROLE else None,
    } for c in containers if c.labels.get(n.ROLE) != guard.NETGUARD_ROLE]
    return pd.DataFrame(rows, columns=STATUS_COLUMNS)
