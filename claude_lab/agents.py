"""`Agent`: a friendly handle on one agent container (like docker-py's models over its API)."""
from __future__ import annotations

import html
from typing import Any, Iterable, Protocol

from . import naming as n
from .containers.execution import ExecResult, ExecStream
from .engine.types import ContainerInfo


class AgentHost(Protocol):
    """What an `Agent` handle asks of its lab (`Lab` is one)."""

    name: str

    def exec(self, target: str, command: str | Iterable[str], **kwargs: Any) -> ExecResult: ...
    def exec_stream(self, target: str, command: str | Iterable[str], **kwargs: Any) -> ExecStream: ...
    def logs(self, target: str, tail: int | None = None, follow: bool = False) -> Any: ...
    def start(self, target: str) -> None: ...
    def stop(self, target: str) -> None: ...
    def remove_agent(self, agent_id: str, volumes: bool = False) -> None: ...


class Agent:
    """One agent of a lab; `info` is its container as the engine last reported it."""

    def __init__(self, lab: AgentHost, info: ContainerInfo):
        self.lab = lab
        self.info = info

    @property
    def id(self) -> str:
        return self.info.labels[n.AGENT]

    @property
    def group(self) -> str | None:
        return self.info.labels.get(n.GROUP)

    @property
    def name(self) -> str:
        return self.info.name

    @property
    def state(self) -> str:
        return self.info.state

    @property
    def workspace_volume(self) -> str:
        return n.agent_volume(self.lab.name, self.id, self.info.labels)

    def exec(self, command: str | Iterable[str], **kwargs: Any) -> ExecResult:
        return self.lab.exec(self.id, command, **kwargs)

    def exec_stream(self, command: str | Iterable[str], **kwargs: Any) -> ExecStream:
        return self.lab.exec_stream(self.id, command, **kwargs)

    def logs(self, tail: int | None = None) -> str:
        return self.lab.logs(self.id, tail=tail)  # type: ignore[return-value]

    def start(self) -> None:
        self.lab.start(self.id)

    def stop(self) -> None:
        self.lab.stop(self.id)

    def remove(self, volumes: bool = False) -> None:
        self.lab.remove_agent(self.id, volumes=volumes)

    def __repr__(self) -> str:
        group = f", group={self.group!r}" if self.group else ""
        return f"Agent({self.id!r}{group}, state={self.state!r}, lab={self.lab.name!r})"

    def _repr_html_(self) -> str:
        colour = "#2e7d32" if self.state == "running" else "#757575"
        return (f"<div><b>agent</b> <code>{html.escape(self.id)}</code> "
                f"<span style='color:{colour}'>&#9679; {html.escape(self.state)}</span> "
                f"&middot; lab <code>{html.escape(self.lab.name)}</code>"
                + (f" &middot; group <code>{html.escape(self.group)}</code>" if self.group else "")
                + f" &middot; workspace volume <code>{html.escape(self.workspace_volume)}</code></div>")
