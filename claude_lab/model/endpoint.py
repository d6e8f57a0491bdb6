"""Which model endpoint a run talks to, and with which key.

In order: a `ScriptedModel` given to `lab.claude(model=...)`, one given to `Lab(model=...)`, the
`model_base_url` setting, env `ANTHROPIC_BASE_URL`, else the Anthropic API. A scripted model gets a
dummy key; any other endpoint needs a real one, from the `api_key_command` setting, the
`api_key_file` setting, or env `ANTHROPIC_API_KEY` (first found wins).

The key travels only in the environment of the one `docker exec` that runs the CLI: never in an
image, a container's config, a log, an event or a result (the runner also redacts it from
everything the CLI prints, since the agent's own tools can read their environment).

A `ScriptedModel` that is not serving yet is started by the lab on the lab network's gateway:
the host's own address on that bridge, which every container of the lab reaches, group networks
included (traffic to a host address goes through the host's INPUT path, not the bridge-to-bridge
forwarding that isolates groups). It keeps serving (a daemon thread) until `model.stop()`; if the
lab network is re-created on another subnet, the next run moves the model to the new gateway.
"""
from __future__ import annotations

import os
import subprocess
import threading
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from .. import naming as n
from ..errors import AuthenticationError, ConfigError, LabError
from .scripted import ScriptedModel

if TYPE_CHECKING:
    from ..config import LabConfig
    from ..engine.face import EngineFace

ANTHROPIC_API = "https://api.anthropic.com"
DUMMY_KEY = "sk-ant-claude-lab-scripted-model-no-key"
KEY_HINT = ("set ANTHROPIC_API_KEY in the environment, or `api_key_file` / `api_key_command` in "
            "claude-lab.toml (or Lab(api_key_file=...)); or run against a local ScriptedModel with "
            "Lab(model=ScriptedModel([...]))")

_lock = threading.Lock()
_bound: "weakref.WeakKeyDictionary[ScriptedModel, str]" = weakref.WeakKeyDictionary()  # models we started -> host


@dataclass
class Endpoint:
    """Where the CLI sends its requests; `key` never shows in repr."""

    base_url: str | None  # None: the CLI's default, the Anthropic API
    key: str = field(repr=False)
    source: str  # "scripted model" | "model_base_url" | "ANTHROPIC_BASE_URL" | "Anthropic API"
    key_source: str  # "dummy" | "api_key_command" | "api_key_file" | "ANTHROPIC_API_KEY"
    scripted: ScriptedModel | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return self.base_url or ANTHROPIC_API

    @property
    def check_hint(self) -> str:
        """What to check when this endpoint cannot be reached (a configured one: its setting)."""
        setting = "ANTHROPIC_BASE_URL" if self.source == "ANTHROPIC_BASE_URL" else "model_base_url"
        return f"Check that it is running and the URL is right ({setting})"

    def env(self) -> dict[str, str]:
        """The variables for the CLI's exec (and only that exec)."""
        out = {"ANTHROPIC_API_KEY": self.key}
        if self.base_url:
            out["ANTHROPIC_BASE_URL"] = self.base_url
        return out


def lab_gateway(engine: "EngineFace", lab: str) -> str:
    """The IPv4 gateway of the lab network (created if missing): where containers reach this host."""
    net = n.network_name(lab)
    engine.ensure_network(net, n.labels(lab, "network"))
    gateway = engine.network_gateway(net)
    if not gateway:
        raise LabError(f"network {net} has no IPv4 gateway, so its containers cannot reach a model on this "
                       f"host; remove it (`docker network rm {net}`) and run again")
    return gateway


def ensure_serving(engine: "EngineFace", lab: str, model: ScriptedModel) -> str:
    """Start a scripted model on the lab network's gateway unless it serves already; returns its URL."""
    with _lock:
        if model.serving:
            bound = _bound.get(model)
            if bound is None:
                return model.url  # started by the caller, on an address of their choosing
            gateway = lab_gateway(engine, lab)
            if bound == gateway:
                return model.url
            model.stop()  # the lab network was re-created on another subnet: follow it
        else:
            gateway = lab_gateway(engine, lab)
        model.host = gateway
        model.start()
        _bound[model] = gateway
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
    key = os.environ.get("ANTHROPIC_API_KEY", "").strip()
    return (key, "ANTHROPIC_API_KEY") if key else None


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


def resolve(engine: "EngineFace", lab: str, cfg: "LabConfig", scripted: ScriptedModel | None = None) -> Endpoint:
    """Pick the endpoint and key for a run (starting a scripted model if needed)."""
    if scripted is not None:
        if not isinstance(scripted, ScriptedModel):
            raise ConfigError(f"model={scripted!r}: give a ScriptedModel, or a model name string to lab.claude")
        return Endpoint(ensure_serving(engine, lab, scripted), DUMMY_KEY, "scripted model", "dummy", scripted)
    url, source = base_url(cfg)
    found = resolve_key(cfg)
    if found is None:
        raise AuthenticationError(f"no API key for the model endpoint {url or ANTHROPIC_API}: {KEY_HINT}")
    return Endpoint(url, found[0], source, found[1])


def policy_url(cfg: "LabConfig", scripted: ScriptedModel | None) -> str | None:
    """The endpoint an agent's egress policy lets through in every mode: the configured one (or the API);
    None for a scripted model, which the lab serves on its gateway and allows per run."""
    return None if scripted is not None else (base_url(cfg)[0] or ANTHROPIC_API)
