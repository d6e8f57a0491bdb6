"""Secrets an agent's tools need as environment (a `GITHUB_TOKEN` for `gh`, a registry token).

Unlike the model key (which never enters a container: the lab's model proxy writes it into requests
on the host), these DO enter the agent: every process the agent runs can read them. So they are
explicit -- each has a name, a source and a scope (every agent, or named agents or groups) -- and
listed by name in `lab.status()` / `lab.secrets()`; their values are read on this machine when first
used, kept in this process only, put in the environment of each command the lab runs in an agent in
scope (Claude runs, shell runs, `exec`, `%%in_container`), and redacted from everything the lab
stores (transcripts, cassettes, the run store, exports). They are never in an image or a container's
configuration (`docker inspect` does not show them).

Sources: `value=` (Python only), `command=` (a host command printing it, e.g. `gh auth token`),
`env=` (a variable of this machine's environment) or `file=` (a file on this machine).
"""
from __future__ import annotations

import os
import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

from ..errors import ConfigError

__all__ = ["Secret", "SecretBook", "parse_settings"]

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
NEVER_INSIDE = frozenset({"ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN", "ANTHROPIC_BASE_URL", "CLAUDE_CODE_OAUTH_TOKEN"})
_SOURCES = ("value", "command", "env", "file")


@dataclass(frozen=True)
class Secret:
    """One named secret: where its value comes from and which agents get it (values never in repr)."""

    name: str
    source: str  # value | command | env | file
    spec: str = field(repr=False)  # the value itself, the command, the variable's name or the file's path
    agents: tuple[str, ...] | None = None  # None: not limited by agent
    groups: tuple[str, ...] | None = None  # None: not limited by group

    def applies(self, agent_id: str, group: str | None) -> bool:
        if self.agents is None and self.groups is None:
            return True
        return (self.agents is not None and agent_id in self.agents) or \
            (self.groups is not None and group is not None and group in self.groups)

    @property
    def scope(self) -> str:
        parts = []
        if self.agents is not None:
            parts.append("agents " + ", ".join(self.agents))
        if self.groups is not None:
            parts.append("groups " + ", ".join(self.groups))
        return " or ".join(parts) or "every agent"

    @property
    def where(self) -> str:
        """Where the value comes from, for listings: never the value."""
        return {"value": "given in Python", "command": f"command {self.spec!r}", "env": f"env {self.spec}",
                "file": f"file {self.spec}"}[self.source]


def _names(value: Any, what: str, secret: str) -> tuple[str, ...] | None:
    if value is None:
        return None
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) and v for v in value):
        raise ConfigError(f"secret {secret}: {what} must be a list of names, e.g. {what}=['web']")
    return tuple(value)


def make_secret(name: str, *, value: str | None = None, command: str | None = None, env: str | None = None,
                file: str | os.PathLike | None = None, agents: Iterable[str] | str | None = None,
                groups: Iterable[str] | str | None = None) -> Secret:
    if not isinstance(name, str) or not _NAME.match(name):
        raise ConfigError(f"secret name {name!r}: give an environment variable name such as GITHUB_TOKEN")
    if name in NEVER_INSIDE:
        raise ConfigError(f"{name} is the model's credential, which never enters a container: the lab's model "
                          f"proxy adds it on this machine. Configure it with ANTHROPIC_API_KEY, api_key_file or "
                          f"api_key_command instead")
    given = {k: v for k, v in (("value", value), ("command", command), ("env", env), ("file", file)) if v is not None}
    if len(given) != 1:
        raise ConfigError(f"secret {name}: give exactly one of value=, command=, env= or file= "
                          f"(got {', '.join(given) or 'none'})")
    (source, spec), = given.items()
    if not isinstance(spec, (str, os.PathLike)) or not str(spec):
        raise ConfigError(f"secret {name}: {source} must be a non-empty string")
    return Secret(name, source, str(spec), _names(agents, "agents", name), _names(groups, "groups", name))


def parse_settings(table: Mapping[str, Any]) -> list[Secret]:
    """The `secrets` setting: NAME = {command|env|file = ..., agents = [...], groups = [...]}."""
    if not isinstance(table, Mapping):
        raise ConfigError("secrets must be a table: [secrets.GITHUB_TOKEN] command = \"gh auth token\"")
    out = []
    for name, entry in table.items():
        if not isinstance(entry, Mapping):
            raise ConfigError(f"secrets.{name} must be a table such as {{command = \"gh auth token\"}} or "
                              f"{{env = \"{name}\"}}; a value written in the file would be a secret in plain text")
        unknown = sorted(set(entry) - {"command", "env", "file", "agents", "groups"})
        if unknown:
            raise ConfigError(f"secrets.{name}: unknown key(s) {', '.join(unknown)}; use command, env or file, "
                              f"and agents / groups for the scope")
        out.append(make_secret(name, command=entry.get("command"), env=entry.get("env"), file=entry.get("file"),
                               agents=entry.get("agents"), groups=entry.get("groups")))
    return out


def _read(secret: Secret, project_dir: Path) -> str:
    if secret.source == "value":
        value = secret.spec
    elif secret.source == "env":
        value = os.environ.get(secret.spec, "")
        if not value:
            raise ConfigError(f"secret {secret.name}: the environment variable {secret.spec} is not set on this "
                              f"machine; set it, or give the secret another source")
    elif secret.source == "file":
        path = Path(secret.spec).expanduser()
        path = path if path.is_absolute() else project_dir / path
        try:
            value = path.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigError(f"secret {secret.name}: file {str(path)!r} cannot be read: "
                              f"{exc.strerror or exc}") from None
    else:
        try:
            proc = subprocess.run(secret.spec, shell=True, capture_output=True, text=True, timeout=60,
                                  cwd=str(project_dir))
        except subprocess.TimeoutExpired:
            raise ConfigError(f"secret {secret.name}: command {secret.spec!r} did not finish within 60s") from None
        if proc.returncode != 0:
            raise ConfigError(f"secret {secret.name}: command {secret.spec!r} exited {proc.returncode}: "
                              f"{proc.stderr.strip()[-300:]}")
        value = proc.stdout.strip()
    if not value:
        raise ConfigError(f"secret {secret.name}: its {secret.source} gave an empty value")
    return value


class SecretBook:
    """A lab's secrets: the settings' ones, then `add`ed ones (same name: replaced); values read once, kept here."""

    def __init__(self, project_dir: Path, settings: Mapping[str, Any] | None = None):
        self.project_dir = project_dir
        self._secrets: dict[str, Secret] = {s.name: s for s in parse_settings(settings or {})}
        self._values: dict[str, str] = {}

    def add(self, secret: Secret) -> None:
        self._secrets[secret.name] = secret
        self._values.pop(secret.name, None)

    def remove(self, name: str) -> None:
        if name not in self._secrets:
            known = ", ".join(sorted(self._secrets)) or "none"
            raise ConfigError(f"no secret {name!r} in this lab (secrets: {known})")
        del self._secrets[name]
        self._values.pop(name, None)

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(sorted(self._secrets.values(), key=lambda s: s.name))

    def __len__(self) -> int:
        return len(self._secrets)

    def names_for(self, agent_id: str, group: str | None) -> list[str]:
        return [s.name for s in self if s.applies(agent_id, group)]

    def env_for(self, agent_id: str, group: str | None) -> dict[str, str]:
        """The variables of an agent's commands (values read on first use)."""
        out = {}
        for secret in self:
            if secret.applies(agent_id, group):
                if secret.name not in self._values:
                    self._values[secret.name] = _read(secret, self.project_dir)
                out[secret.name] = self._values[secret.name]
        return out

    def known_values(self) -> list[str]:
        """Every value read so far: redacted from whatever is stored, whichever agent it came from."""
        return list(self._values.values())
