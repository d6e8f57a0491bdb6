"""Images to a swarm's nodes: pushed from the manager to the lab's registry, pulled by every node."""
from __future__ import annotations

import docker.errors
import requests.exceptions

from ...errors import LabError
from ...naming import REGISTRY_LABEL
from ..local import Engine


class Publisher:
    """Pushes local images to `registry` (host:port) once per image id; remembers where each went."""

    def __init__(self, manager: Engine, registry: str | None):
        self.manager = manager
        self.registry = registry
        self._published: dict[str, str] = {}  # local ref @ image id -> registry ref

    def ref(self, ref: str, force: bool = False) -> str:
        """The registry reference of a local image, pushed first when needed (`force`: push again)."""
        image_id = self.manager.image_id(ref)
        if image_id is None:
            return ref  # not ours to push (a registry reference already, or absent: Swarm says which)
        if not self.registry:
            raise LabError("the swarm backend needs a registry to bring images to its nodes: set `registry` "
                           "(host:port) in claude-lab.toml or CLAUDE_LAB_REGISTRY, or label the manager node "
                           f"{REGISTRY_LABEL}=host:port; docs/scale-out.md shows how to run one")
        key = ref + "@" + image_id
        if not force and key in self._published:
            return self._published[key]
        if ref.startswith("sha256:"):
            repository, tag = "claude-lab/by-id", image_id.split(":", 1)[1][:12]
        else:
            repository, _, tag = ref.rpartition(":") if ":" in ref.rsplit("/", 1)[-1] else (ref, "", "latest")
        remote = f"{self.registry}/{repository}"
        self.manager.tag_image(image_id, remote, tag)
        try:
            for line in self.manager.api.push(remote, tag=tag, stream=True, decode=True):
                if line.get("error"):
                    raise LabError(f"pushing {ref} to {self.registry} failed: {line['error']}")
        except (docker.errors.APIError, requests.exceptions.ConnectionError) as exc:
            raise LabError(f"pushing {ref} to {self.registry} failed: {exc}; is the registry running "
                           f"(`claude-lab swarm-sim status`)?") from exc
        self._published[key] = f"{remote}:{tag}"
        return f"{remote}:{tag}"
