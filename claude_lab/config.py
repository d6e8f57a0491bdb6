"""Lab settings: defaults < claude-lab.toml or [tool.claude-lab] < CLAUDE_LAB_* env < keywords."""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

try:  # Python 3.11+
    import tomllib
except ModuleNotFoundError:  # pragma: no cover - 3.10
    import tomli as tomllib  # type: ignore[no-redef]

from ._version import __version__
from .errors import ConfigError
from .naming import lab_name_from_folder, validate_label
from .netguard.policy import DEFAULT_ALLOW, DEFAULT_EGRESS, DEFAULT_REFRESH, check_settings

ENV_PREFIX = "CLAUDE_LAB_"
BACKENDS = ("local", "swarm")
SERVICES_NETWORK = ("auto", "shared", "per-group")
CONFIG_FILE = "claude-lab.toml"


@dataclass
class LabConfig:
    """Every knob of a lab. Field names are the keys of the config file and the keywords of `Lab`."""

    project_dir: Path = field(default_factory=Path.cwd)
    name: str | None = None
    # Dev services, published on the host (bind_address only: loopback by default).
    postgres_port: int = 5433  # 0: a free port (the one the lab's running service publishes, else a new one)
    redis_port: int = 6380
    bind_address: str = "127.0.0.1"
    postgres_user: str = "dev"
    postgres_password: str = "dev"
    postgres_db: str = "dev"
    # Images.
    image_prefix: str = "claude-lab"
    image_version: str = __version__
    base_image: str = "debian:bookworm-slim"
    images_dir: Path | None = None
    claude_code_version: str | None = None
    ca_certs: list[str] = field(default_factory=list)
    # Agents.
    agent_user: str = "developer"
    agent_memory: str = "2g"
    agent_cpus: float = 1.0
    agent_pids: int = 512
    agent_env: dict[str, str] = field(default_factory=dict)
    agent_source: str | None = None  # what a new agent's workspace is seeded from: "project" (the default in a git
    # project), "none" (an empty workspace; the default elsewhere), a folder or a git URL (cloned on the host)
    agent_pool: Any = 0  # warm pool (containers/pool.py): agents kept ready, e.g. 2, or per group {"" = 2, team-a = 1}
    mount_docker_socket: bool = False
    read_only: bool = False  # read-only root filesystem, tmpfs scratch (containers/hardening.py); workspace stays writable
    runtime: str | None = None  # an alternative OCI runtime the engine has, e.g. "runsc" (gVisor)
    # Network policy (netguard/, SECURITY.md): egress per agent, enforced by its netguard sidecar.
    egress: str = DEFAULT_EGRESS  # "open" | "allowlist" | "none"; the host stays unreachable in every mode
    egress_allow: list[str] = field(default_factory=lambda: list(DEFAULT_ALLOW))  # "domain[:ports]", CIDR[:ports]
    egress_refresh: float = DEFAULT_REFRESH  # seconds between re-resolutions of allowlisted names (0: never)
    groups: dict[str, Any] = field(default_factory=dict)  # per group: [groups.g1] egress = "none", egress_allow
    # How agents of a group reach the services: "shared" (one services network beside each group's, on which the
    # netguard lets through only the services' addresses: a new group costs the services nothing), "per-group"
    # (the services join each group's network), "auto" (shared on a swarm, where joining one restarts the service).
    services_network: str = "auto"
    # Dev container.
    dev_memory: str | None = None
    dev_cpus: float | None = None
    # Where the lab runs (engine/): "local" is one engine (the socket or DOCKER_HOST); "swarm" a Docker
    # Swarm through one of its managers (docs/scale-out.md). Unset swarm keys come from the manager
    # node's labels claude-lab.registry / claude-lab.model-host, as `claude-lab swarm-sim up` sets them.
    backend: str = "local"
    swarm_manager: str | None = None  # the manager's engine URL; else DOCKER_HOST, else the local socket
    registry: str | None = None  # host:port the nodes pull the lab's images from (lab.build() pushes there)
    model_host: str | None = None  # an address of this machine that containers on every node reach
    node_engines: dict[str, str] = field(default_factory=dict)  # node hostname or id -> engine URL
    swarm_constraints: list[str] = field(default_factory=list)  # placement of every service, e.g. node.labels.pool==agents
    # Waiting.
    health_timeout: float = 120.0
    # Model endpoint for `lab.claude` (a ScriptedModel is a `Lab(model=...)` keyword, not a setting).
    model_base_url: str | None = None  # any Messages-API-compatible URL; else env ANTHROPIC_BASE_URL
    api_key_file: str | None = None  # a file holding the API key; else env ANTHROPIC_API_KEY
    api_key_command: str | None = None  # a host command printing the API key (a password manager)
    model_auth: str = "auto"  # how the model proxy writes the key upstream: "x-api-key", "bearer" (gateways), "auto"
    # Secrets an agent's tools need (containers/agent_secrets.py): unlike the model key, these DO enter the agents'
    # environment. NAME = {command = "gh auth token"} | {env = "VAR"} | {file = "path"}, optional agents/groups = [...]
    secrets: dict[str, Any] = field(default_factory=dict)
    # Run store (runs/store.py): every run recorded in SQLite, its model traffic through a recording proxy.
    run_store: str = ".claude-lab/runs.sqlite"  # relative to project_dir unless absolute
    record_runs: bool = True  # lab.claude/lab.shell record by default (record=False per call)

    def __post_init__(self) -> None:
        self.project_dir = Path(self.project_dir).expanduser().resolve()
        if self.name is None:
            self.name = lab_name_from_folder(self.project_dir.name)
        validate_label(self.name, "lab name")
        for port_key in ("postgres_port", "redis_port"):
            port = getattr(self, port_key)
            if not isinstance(port, int) or not 0 <= port <= 65535:
                raise ConfigError(f"{port_key}={port!r} is not a TCP port; use a number from 1 to 65535, or 0 for "
                                  f"a free one")
        if self.images_dir is not None:
            self.images_dir = Path(self.images_dir).expanduser().resolve()
        if isinstance(self.ca_certs, (str, Path)):
            self.ca_certs = [str(self.ca_certs)]
        self.ca_certs = [str(Path(p).expanduser()) for p in self.ca_certs]
        if isinstance(self.egress_allow, str):
            self.egress_allow = self.egress_allow.split()
        if self.backend not in BACKENDS:
            raise ConfigError(f"backend={self.backend!r}: use one of {', '.join(BACKENDS)} "
                              f"(\"swarm\" runs agents on a Docker Swarm, docs/scale-out.md)")
        check_settings(self)
        if self.services_network not in SERVICES_NETWORK:
            raise ConfigError(f"services_network={self.services_network!r}: use one of "
                              f"{', '.join(repr(v) for v in SERVICES_NETWORK)} (see docs/scale-out.md)")
        self.pool_sizes()

    @property
    def shared_services(self) -> bool:
        """Do agents of a group reach the services over the shared services network (not their group's)?"""
        return self.services_network == "shared" or (self.services_network == "auto" and self.backend == "swarm")

    def pool_sizes(self) -> dict[str | None, int]:
        """`agent_pool` as {group (None: agents without one): how many ready agents to keep}."""
        value = self.agent_pool
        hint = "give a number of agents, e.g. agent_pool = 2, or one per group: agent_pool = {\"\" = 2, team-a = 1}"
        if value is None or isinstance(value, bool):
            raise ConfigError(f"agent_pool={value!r}: {hint}")
        raw = {"": value} if isinstance(value, int) else value
        if not isinstance(raw, dict):
            raise ConfigError(f"agent_pool={value!r}: {hint}")
        sizes: dict[str | None, int] = {}
        for group, count in raw.items():
            if not isinstance(count, int) or isinstance(count, bool) or not 0 <= count <= 64:
                raise ConfigError(f"agent_pool: {count!r} for group {group!r} is not a count from 0 to 64; {hint}")
            if group != "":
                validate_label(group, "group name in agent_pool")
            if count:
                sizes[group or None] = count
        return sizes

    @property
    def project_name(self) -> str:
        return self.project_dir.name

    def image(self, name: str) -> str:
        return f"{self.image_prefix}/{name}:{self.image_version}"

    @classmethod
    def load(cls, project_dir: str | os.PathLike = ".", name: str | None = None, **overrides: Any) -> "LabConfig":
        project = Path(project_dir).expanduser().resolve()
        if not project.is_dir():
            raise ConfigError(f"project_dir {str(project)!r} is not a folder; pass the folder of your project")
        values: dict[str, Any] = {}
        values.update(_from_files(project))
        values.update(_from_env(os.environ))
        values.update({k: v for k, v in overrides.items()})
        if name is not None:
            values["name"] = name
        values["project_dir"] = project
        _check_keys(values)
        try:
            return cls(**values)
        except TypeError as exc:  # pragma: no cover - guarded by _check_keys
            raise ConfigError(str(exc)) from exc


_FIELDS = {f.name: f for f in dataclasses.fields(LabConfig)}


def _check_keys(values: dict[str, Any]) -> None:
    unknown = sorted(set(values) - set(_FIELDS))
    if unknown:
        raise ConfigError(
            f"unknown setting(s) {', '.join(unknown)}; known settings: {', '.join(sorted(_FIELDS))}"
        )


def user_config_path() -> Path:
    """Per-user settings (machine facts such as the proxy's CA certificates), below the project's."""
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return Path(base) / "claude-lab" / "config.toml"


def user_cache_path() -> Path:
    """Per-user cache (seeds of agents' workspaces, by commit), never inside a project."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "claude-lab"


def _from_files(project: Path) -> dict[str, Any]:
    values: dict[str, Any] = {}
    user = user_config_path()
    if user.is_file():
        values.update(_read_toml(user, flat=True))
    own = project / CONFIG_FILE
    pyproject = project / "pyproject.toml"
    if own.is_file():
        values.update(_read_toml(own, flat=True))
    elif pyproject.is_file():
        tool = _read_toml(pyproject, flat=False).get("tool", {})
        values.update({k.replace("-", "_"): v for k, v in tool.get("claude-lab", {}).items()})
    return values


def _read_toml(path: Path, flat: bool) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            data = tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}") from exc
    return {k.replace("-", "_"): v for k, v in data.items()} if flat else data


def _from_env(environ: os._Environ | dict[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, raw in environ.items():
        if not key.startswith(ENV_PREFIX):
            continue
        name = key[len(ENV_PREFIX):].lower()
        if name not in _FIELDS or name == "project_dir":
            continue  # other CLAUDE_LAB_* variables belong to scripts and tests
        out[name] = _coerce(name, raw)
    return out


def _coerce(name: str, raw: str) -> Any:
    kind = str(_FIELDS[name].type)
    try:
        if kind.startswith("int"):
            return int(raw)
        if kind.startswith("float"):
            return float(raw)
        if kind.startswith("bool"):
            if raw.lower() not in {"1", "true", "yes", "on", "0", "false", "no", "off"}:
                raise ValueError(raw)
            return raw.lower() in {"1", "true", "yes", "on"}
        if name == "agent_pool":  # "2", or per group "=2,team-a=1"
            return int(raw) if raw.strip().isdigit() else {
                group.strip(): int(count) for group, count in (item.split("=", 1) for item in raw.split(",") if item)}
        if name == "egress_allow":  # entries hold ':' (ports): separated by spaces instead
            return raw.split()
        if kind.startswith("list"):
            return [p for p in raw.split(os.pathsep) if p]
        if kind.startswith("dict"):
            return dict(item.split("=", 1) for item in raw.split(",") if item)
    except ValueError as exc:
        raise ConfigError(f"{ENV_PREFIX}{name.upper()}={raw!r} is not a valid {kind}") from exc
    return raw
