"""`claude-lab doctor`: the set-up checks, each with the fix for when it fails."""
from __future__ import annotations

import glob
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .containers.services import PORT_KEYS, published_ports
from .errors import LabError
from .images import BY_NAME, ImageBuilder
from .util.ports import port_free, port_holder

if TYPE_CHECKING:
    from .lab import Lab

MIN_API = (1, 41)
HOST_CA_GLOB = "/usr/local/share/ca-certificates/*.crt"


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str
    fix: str = ""


def run_checks(lab: "Lab") -> list[Check]:
    checks: list[Check] = []
    try:
        engine = lab.engine
        version = engine.version()
    except LabError as exc:
        checks.append(Check("engine", False, str(exc).split(":")[0], "run `make setup`, or start dockerd, "
                            "or set DOCKER_HOST"))
        return checks
    checks.append(Check("engine", True, f"Docker {version.version} at {engine.base_url}"))
    api = version.api
    checks.append(Check("api version", api >= MIN_API, f"API {version.api_version}",
                        "" if api >= MIN_API else f"upgrade Docker to API {MIN_API[0]}.{MIN_API[1]} or newer"))
    base = lab.config.base_image
    has_base = engine.image_id(base) is not None
    checks.append(Check("base image", has_base, base if has_base else f"{base} missing",
                        "" if has_base else "run `make setup` (pulls it, or builds it offline with debootstrap)"))
    if has_base:
        builder = ImageBuilder(engine, lab.config)
        try:
            stale = [name for name, spec in BY_NAME.items() if not spec.optional and not builder.up_to_date(spec)]
            checks.append(Check("images", not stale,
                                "all built and up to date" if not stale else f"to build: {', '.join(stale)}",
                                "" if not stale else "run `claude-lab build` (or `claude-lab start`, which builds)"))
        except LabError as exc:
            checks.append(Check("images", False, str(exc), "fix the setting named above"))
    ours = published_ports(lab.containers())
    for key in PORT_KEYS:
        port = getattr(lab.config, key)
        free = str(port) in ours or port_free(port, lab.config.bind_address)
        holder = None if free else port_holder(port)
        checks.append(Check(f"port {port}", free,
                            ("free" if str(port) not in ours else f"published by lab {lab.name}") if free
                            else f"in use{' by ' + holder if holder else ''}",
                            "" if free else f"stop what holds it, or set {key} in claude-lab.toml"))
    host_certs = sorted(glob.glob(HOST_CA_GLOB))
    configured = lab.config.ca_certs
    if host_certs and not configured:
        checks.append(Check("ca certs", False, f"host trusts extra CAs ({', '.join(host_certs)}) "
                            "that images will not", "set ca_certs = [\"/usr/local/share/ca-certificates\"] in "
                            "claude-lab.toml or ~/.config/claude-lab/config.toml (make setup does this)"))
    else:
        checks.append(Check("ca certs", True, f"extra CAs baked into images: {', '.join(configured)}"
                            if configured else "none needed"))
    return checks
