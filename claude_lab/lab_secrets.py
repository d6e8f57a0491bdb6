"""The facade's secrets for agents' tools: `lab.secret`, `lab.secrets()`, and the environment and redaction list
of an agent's commands. Part of `Lab` (a mixin), wiring `containers/agent_secrets.py` to the lab's agents.

These enter the agents in scope (SECURITY.md, "Where each credential lives"); the model key never does."""
from __future__ import annotations

import os
from typing import TYPE_CHECKING, Iterable


from . import naming as n
from .containers.agent_secrets import SecretBook, make_secret
from .util.lazy import lazy

pd = lazy("pandas")  # loaded when a DataFrame is made (the CLI starts without it)

if TYPE_CHECKING:
    from .config import LabConfig
    from .engine.types import ContainerInfo


class SecretsRoom:
    """Lab methods for secrets (see the module docstring)."""

    config: "LabConfig"
    _secret_book: SecretBook | None = None

    @property
    def _book(self) -> SecretBook:
        if self._secret_book is None:
            self._secret_book = SecretBook(self.config.project_dir, self.config.secrets)
        return self._secret_book

    def secret(self, name: str, value: str | None = None, command: str | None = None, *, env: str | None = None,
               file: str | os.PathLike | None = None, agents: Iterable[str] | str | None = None,
               groups: Iterable[str] | str | None = None) -> None:
        """Give agents' tools a secret as the environment variable `name` -- it enters those agents.

        Exactly one source: `value`, `command` (a command on this machine printing it, e.g. "gh auth token"),
        `env` (a variable of this machine) or `file`. `agents` / `groups` limit it (default: every agent).
        The value is read on first use, kept in this process, redacted from everything stored. The model
        key is not a secret of this kind: it never enters a container (`api_key_file`, ANTHROPIC_API_KEY).
        """
        self._book.add(make_secret(name, value=value, command=command, env=env, file=file, agents=agents,
                                   groups=groups))

    def remove_secret(self, name: str) -> None:
        """Stop giving `name` to agents (commands started from now on)."""
        self._book.remove(name)

    def secrets(self) -> pd.DataFrame:
        """The lab's secrets by name: where each comes from and which agents get it (never the values)."""
        rows = [{"name": s.name, "source": s.where, "scope": s.scope} for s in self._book]
        return pd.DataFrame(rows, columns=["name", "source", "scope"])

    def _secret_names(self, agent_id: str | None, group: str | None) -> list[str]:
        return self._book.names_for(agent_id, group) if agent_id and len(self._book) else []

    def _secret_env(self, info: "ContainerInfo") -> dict[str, str]:
        """The secrets of the agent a container belongs to (none for the dev container and services)."""
        if not len(self._book) or info.labels.get(n.ROLE) != n.AGENT_ROLE:
            return {}
        return self._book.env_for(info.labels.get(n.AGENT) or "", info.labels.get(n.GROUP))

    def _redacted(self) -> list[str]:
        """Every secret value read in this process: out of whatever the lab stores."""
        return self._book.known_values() if self._secret_book is not None else []
