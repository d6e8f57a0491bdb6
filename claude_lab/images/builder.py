"""The lab's images: build contexts, content hashes, and builds in dependency order.

Each image is tagged `<prefix>/<name>:<version>` and labelled with a hash of everything that
goes into it (its folder, the extra CA certificates, its build args and its parent's hash), so
an unchanged image is never rebuilt and a changed parent rebuilds its children.
"""
from __future__ import annotations

import hashlib
import re
import shutil
import tempfile
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterable

from ..errors import BuildError, ConfigError, NotFound
from ..naming import CONTENT_HASH, IMAGE_NAME, VERSION

if TYPE_CHECKING:
    from ..config import LabConfig
    from ..engine.face import EngineFace

# The Dockerfiles: `images/` at the top of the repository, linked into the package as `dockerfiles`.
PACKAGE_IMAGES = Path(__file__).resolve().parent.parent / "dockerfiles"


@dataclass(frozen=True)
class ImageSpec:
    name: str
    parent: str | None  # another lab image, or None for the configured base image
    purpose: str
    optional: bool = False  # built only when named (e.g. by `claude-lab swarm-sim up`), never by default


IMAGES: tuple[ImageSpec, ...] = (
    ImageSpec("base", None, "Debian plus trusted CA certificates"),
    ImageSpec("dev", "base", "main dev container: developer user, venv, git, build tools"),
    ImageSpec("agent", "dev", "dev plus Node.js and the Claude Code CLI"),
    ImageSpec("postgres", "base", "Debian's PostgreSQL"),
    ImageSpec("redis", "base", "Debian's redis-server"),
    ImageSpec("netguard", "base", "per-agent egress firewall sidecar: iptables, ip6tables, ipset"),
    ImageSpec("swarm-worker", "base", "swarm sim node: Docker-in-Docker engine joining the host's swarm", True),
    ImageSpec("registry", "base", "Debian's docker-registry, no auth: the swarm sim's image registry", True),
)
BY_NAME = {spec.name: spec for spec in IMAGES}
DEFAULT_IMAGES = tuple(spec.name for spec in IMAGES if not spec.optional)  # what a build without names builds


@dataclass(frozen=True)
class BuildEvent:
    """One thing that happened during `build()`; handed to the progress callback."""

    image: str
    kind: str  # plan | start | step | output | done | skipped
    text: str = ""
    step: int = 0
    total: int = 0


@dataclass(frozen=True)
class BuildOutcome:
    image: str
    tag: str
    content_hash: str
    built: bool  # False when the existing image already matched


def ca_cert_files(paths: Iterable[str]) -> list[Path]:
    """Expand the `ca_certs` setting (files and folders) into PEM files, with clear errors."""
    files: list[Path] = []
    for raw in paths:
        p = Path(raw).expanduser()
        if p.is_dir():
            files.extend(sorted(f for f in p.rglob("*") if f.is_file() and f.suffix in {".crt", ".pem"}))
        elif p.is_file():
            files.append(p)
        else:
            raise ConfigError(f"ca_certs entry {raw!r} does not exist; give PEM files or a folder of *.crt/*.pem")
    for f in files:
        if b"-----BEGIN CERTIFICATE-----" not in f.read_bytes():
            raise ConfigError(f"ca_certs file {f} holds no PEM certificate (-----BEGIN CERTIFICATE-----)")
    return files


def order(names: Iterable[str]) -> list[ImageSpec]:
    """The named images and their lab parents, parents first."""
    wanted: set[str] = set()
    todo = deque(names)
    while todo:
        name = todo.popleft()
        if name not in BY_NAME:
            raise NotFound(f"no image named {name!r}; the lab's images are {', '.join(BY_NAME)}")
        if name not in wanted:
            wanted.add(name)
            if BY_NAME[name].parent:
                todo.append(BY_NAME[name].parent)
    return [spec for spec in IMAGES if spec.name in wanted]


class ImageBuilder:
    def __init__(self, engine: "EngineFace", config: "LabConfig"):
        self.engine = engine
        self.config = config
        self.images_dir = config.images_dir or PACKAGE_IMAGES
        self._hashes: dict[str, str] = {}

    def tag(self, name: str) -> str:
        return self.config.image(name)

    def buildargs(self, spec: ImageSpec) -> dict[str, str]:
        args = {"BASE_IMAGE": self.tag(spec.parent) if spec.parent else self.config.base_image}
        if spec.name == "agent" and self.config.claude_code_version:
            args["CLAUDE_CODE_VERSION"] = self.config.claude_code_version
        return args

    def content_hash(self, spec: ImageSpec) -> str:
        if spec.name in self._hashes:
            return self._hashes[spec.name]
        h = hashlib.sha256()
        folder = self.images_dir / spec.name
        if not (folder / "Dockerfile").is_file():
            raise NotFound(f"no Dockerfile for image {spec.name!r} in {folder}; set images_dir or reinstall claude-lab")
        for f in sorted(p for p in folder.rglob("*") if p.is_file()):
            h.update(str(f.relative_to(folder)).encode() + b"\0" + f.read_bytes() + b"\0")
            h.update(oct(f.stat().st_mode & 0o111).encode())
        if spec.name == "base":
            for f in ca_cert_files(self.config.ca_certs):
                h.update(b"cert\0" + f.read_bytes())
            base_id = self.engine.image_id(self.config.base_image)
            if base_id is None:
                raise NotFound(
                    f"base image {self.config.base_image} is not on the engine; run `make setup` "
                    f"(pulls it, or builds it offline with debootstrap) or `docker pull {self.config.base_image}`"
                )
            h.update(base_id.encode())
        else:
            h.update(self.content_hash(BY_NAME[spec.parent]).encode())  # type: ignore[index]
        for k, v in sorted(self.buildargs(spec).items()):
            h.update(f"{k}={v}".encode())
        self._hashes[spec.name] = h.hexdigest()[:16]
        return self._hashes[spec.name]

    def up_to_date(self, spec: ImageSpec) -> bool:
        labels = self.engine.image_labels(self.tag(spec.name))
        return labels is not None and labels.get(CONTENT_HASH) == self.content_hash(spec)

    def build(self, names: Iterable[str] | None = None, force: bool = False,
              progress: Callable[[BuildEvent], None] | None = None) -> list[BuildOutcome]:
        emit = progress or (lambda event: None)
        specs = order(names or DEFAULT_IMAGES)
        outcomes = []
        for spec in specs:
            tag, digest = self.tag(spec.name), self.content_hash(spec)
            if not force and self.up_to_date(spec):
                emit(BuildEvent(spec.name, "skipped", f"{tag} is up to date ({digest})"))
                outcomes.append(BuildOutcome(spec.name, tag, digest, built=False))
                continue
            self._build_one(spec, tag, digest, emit)
            outcomes.append(BuildOutcome(spec.name, tag, digest, built=True))
        return outcomes

    def _build_one(self, spec: ImageSpec, tag: str, digest: str, emit: Callable[[BuildEvent], None]) -> None:
        labels = {CONTENT_HASH: digest, IMAGE_NAME: spec.name, VERSION: self.config.image_version}
        emit(BuildEvent(spec.name, "start", f"building {tag}"))
        step_re = re.compile(r"^Step (\d+)/(\d+) : (.*)")
        step_text, tail = None, deque(maxlen=30)
        with tempfile.TemporaryDirectory(prefix=f"claude-lab-{spec.name}-") as tmp:
            context = Path(tmp) / spec.name
            shutil.copytree(self.images_dir / spec.name, context, symlinks=False)
            if spec.name == "base":
                certs = context / "certs"
                certs.mkdir(exist_ok=True)
                for i, f in enumerate(ca_cert_files(self.config.ca_certs)):
                    shutil.copyfile(f, certs / f"extra-{i:02d}-{f.stem}.crt")
            for message in self.engine.build(context, tag, self.buildargs(spec), labels):
                if "error" in message or "errorDetail" in message:
                    error = message.get("error") or message["errorDetail"].get("message", "")
                    tail.append(error)
                    raise BuildError(
                        f"building {tag} failed at {step_text or 'the start'}: {error.strip()}\n"
                        f"last lines of the build log:\n" + "\n".join(f"  {line}" for line in tail),
                        image=spec.name, step=step_text, log_tail=list(tail),
                    )
                text = message.get("stream", "")
                for line in text.splitlines():
                    if not line.strip():
                        continue
                    tail.append(line)
                    m = step_re.match(line)
                    if m:
                        step_text = line
                        emit(BuildEvent(spec.name, "step", m.group(3), int(m.group(1)), int(m.group(2))))
                    else:
                        emit(BuildEvent(spec.name, "output", line))
        if (self.engine.image_labels(tag) or {}).get(CONTENT_HASH) != digest:
            raise BuildError(f"building {tag} ended without a new image; last lines:\n" + "\n".join(tail),
                             image=spec.name, step=step_text, log_tail=list(tail))
        emit(BuildEvent(spec.name, "done", f"built {tag} ({digest})"))
