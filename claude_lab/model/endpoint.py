"""Which model endpoint a run's requests go to, and with which credential.

In order: a `ScriptedModel` given to `lab.claude(model=...)`, one given to `Lab(model=...)`, the
`model_base_url` setting, env `ANTHROPIC_BASE_URL`, else the Anthropic API. A scripted model gets a
dummy key (or its own `api_key`); any other endpoint needs a real one, from the `api_key_command`
setting, the `api_key_file` setting, env `ANTHROPIC_API_KEY` or env `ANTHROPIC_AUTH_TOKEN` (first
found wins), read on this machine.

The credential never leaves this process: the lab's model proxy (`gateway`, `proxy`) writes it into
the requests it forwards, as `x-api-key` (Anthropic API keys) or `Authorization: Bearer` (setting
`model_auth = "bearer"` for gateways; "auto", the default, picks bearer for OAuth-style `sk-ant-oat`
tokens and for ANTHROPIC_AUTH_TOKEN). The CLI in the agent holds a per-run token instead (`grants`).

A `ScriptedModel` that is not serving yet is started by the lab on this machine's loopback: only the
lab's model proxy talks to it, never a container.
"""
from __future__ import annotations

import os
import subprocess
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from .. import naming as n
from ..errors import AuthenticationError, ConfigError, LabError
from .grants import BEARER, X_API_KEY, Credential
from .scripted import ScriptedModel

if TYPE_CHECKING:
    from ..config import LabConfig
    from ..engine.face import EngineFace

ANTHROPIC_API = "https://api.anthropic.com"
DUMMY_KEY = "sk-ant-claude-lab-scripted-model-no-key"
AUTH_SCHEMES = ("auto", X_API_KEY, BEARER)
KEY_HINT = ("set ANTHROPIC_API_KEY in the environment, or `api_key_file` / `api_key_command` in "
            "claude-lab.toml (or Lab(api_key_file=...)); or run against a local ScriptedModel with "
            "Lab(model=ScriptedModel([...]))")

_lock = threading.Lock()


@dataclass
class Endpoint:
    """Where the proxy sends a run's requests, and the credential it writes into them (never in repr)."""

    base_url: str | None  # None: the Anthropic API
    credential: Credential | None = field(repr=False)  # None: nothing to write (a replay answers from its cassette)
    source: str  # "scripted model" | "model_base_url" | "ANTHROPIC_BASE_URL" | "Anthropic API" | "replay"
    scripted: ScriptedModel | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return self.base_url or ANTHROPIC_API

    @property
    def key(self) -> str | None:
        return self.credential.value if self.credential is not None else None

    @property
    def key_source(self) -> str:
        return self.credential.source if self.credential is not None else "none"

    @property
    def check_hint(self) -> str:
        """What to check when this endpoint cannot be reached (a configured one: its setting)."""
        setting = "ANTHROPIC_BASE_URL" if self.source == "ANTHROPIC_BASE_URL" else "model_base_url"
        return f"Check that it is running and the URL is right ({setting})"


def lab_gateway(engine: "EngineFace", lab: str) -> str:
    """The IPv4 gateway of the lab network (created if missing): where containers reach this host."""
    net = n.network_name(lab)
    engine.ensure_network(net, n.labels(lab, "network"))
    gateway = engine.network_gateway(net)
    if not gateway:
        raise LabError(f"network {net} has no IPv4 gateway, so its containers cannot reach a model on this "
                       f"host; remove it (`docker network rm {net}`) and run again")
    return gateway


def ensure_serving(model: ScriptedModel) -> str:
    """Start a scripted model on this machine's loopback unless it serves already; returns its URL."""
    with _lock:
        if not model.serving:
            model.host = "127.0.0.1"
            model.start()
        return model.url


def resolve_key(cfg: "LabConfig") -> tuple[str, str] | None:
    """The API key and where it came from, or None when none is configured."""
    if cfg.api_key_command:
        try:
            proc = subprocess.run(cfg.api_key_command, shell=True, capture_output=True, text=True, timeout=60,
                                  cwd=str(cfg.project_dir))
        except subprocess.TimeoutExpired:
            raise ConfigError(f"api_key_command {cfg.api_key_command!r} did not finish within 60s") from None
        if proc.returncode != 0:
            raise ConfigError(f"api_key_command {cfg.api_key_command!r} exited {proc.returncode}: "
                              f"{proc.stderr.strip()[-300:]}")
        return _checked(proc.stdout, "api_key_command"), "api_key_command"
    if cfg.api_key_file:
        path = Path(cfg.api_key_file).expanduser()
        if not path.is_absolute():
            path = cfg.project_dir / path
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"api_key_file {str(path)!r} cannot be read: {exc.strerror or exc}") from None
        return _checked(text, f"api_key_file {str(path)!r}"), "api_key_file"
    for var in ("ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN"):
        key = os.environ.get(var, "").strip()
        if key:
            return key, var
    return None


def credential(cfg: "LabConfig", key: str, source: str) -> Credential:
    """The key as the upstream takes it: `model_auth` ("auto": bearer for OAuth-style tokens and ANTHROPIC_AUTH_TOKEN)."""
    scheme = cfg.model_auth or "auto"
    if scheme not in AUTH_SCHEMES:
        raise ConfigError(f"model_auth={scheme!r}: use one of {', '.join(AUTH_SCHEMES)} (\"bearer\" sends "
                          f"Authorization: Bearer, as gateways and OAuth tokens want)")
    if scheme == "auto":
        scheme = BEARER if source == "ANTHROPIC_AUTH_TOKEN" or key.startswith("sk-ant-oat") else X_API_KEY
    return Credential(key, scheme, source)


def _checked(text: str, where: str) -> str:
    key = text.strip()
    if not key:
        raise ConfigError(f"{where} gave an empty API key; {KEY_HINT}")
    if any(c.isspace() for c in key):
        raise ConfigError(f"{where} must give the API key alone, on one line")
    return key


def base_url(cfg: "LabConfig") -> tuple[str | None, str]:
    """The configured endpoint's URL (None: the Anthropic API) and which setting gave it."""
    url, source = cfg.model_base_url, "model_base_url"
    if not url:
        url, source = os.environ.get("ANTHROPIC_BASE_URL") or None, "ANTHROPIC_BASE_URL"
    if not url:
        return None, "Anthropic API"
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"{source} {url!r} is not an http(s) URL; use e.g. https://api.anthropic.com")
    return url.rstrip("/"), source


def resolve(cfg: "LabConfig", scripted: ScriptedModel | None = None) -> Endpoint:
    """Pick the endpoint and credential for a run (starting a scripted model if needed)."""
    if scripted is not None:
        if not isinstance(scripted, ScriptedModel):
            raise ConfigError(f"model={scripted!r}: give a ScriptedModel, or a model name string to lab.claude")
        key = scripted.api_key or DUMMY_KEY
        return Endpoint(ensure_serving(scripted), Credential(key, X_API_KEY, "dummy"), "scripted model", scripted)
    url, source = base_url(cfg)
    found = resolve_key(cfg)
    if found is None:
        raise AuthenticationError(f"no API key for the model endpoint {url or ANTHROPIC_API}: {KEY_HINT}")
    return Endpoint(url, credential(cfg, *found), source)
