"""The one place Docker's exceptions become `LabError`s (like docker-py's own
`create_api_error_from_http_exception`): every engine call goes through `call()`."""
from __future__ import annotations

from typing import Any, Callable, TypeVar

import docker.errors
import requests.exceptions

from ..errors import AlreadyExists, EngineUnavailable, LabError, NotFound

ENGINE_HINT = (
    "start one with `make setup` (installs docker.io and starts dockerd on Debian), "
    "`sudo dockerd &`, or point DOCKER_HOST at a running engine"
)
DOCKER_ERRORS = (docker.errors.DockerException, requests.exceptions.RequestException)

T = TypeVar("T")


def conflict(exc: BaseException) -> bool:
    """The name is taken: a 409, or Swarm's raft store saying so with a 500 ("name conflicts")."""
    text = str(getattr(exc, "explanation", None) or exc)
    return isinstance(exc, docker.errors.APIError) and (
        exc.status_code == 409 and ("already in use" in text or "already exists" in text)
        or "name conflicts" in text or "already exists" in text)


def translate(exc: BaseException, what: str | None = None, where: str = "") -> LabError:
    """A LabError that says what failed, for a docker-py or requests exception."""
    subject = what or "object"
    if isinstance(exc, LabError):
        return exc
    if isinstance(exc, docker.errors.NotFound):
        return NotFound(f"{subject} not found: {exc.explanation or exc}")
    if isinstance(exc, docker.errors.APIError):
        if conflict(exc):
            return AlreadyExists(f"{subject} already exists: {exc.explanation}")
        return LabError(f"Docker engine refused{' ' + what if what else ''}: {exc.explanation or exc}")
    if isinstance(exc, (requests.exceptions.ConnectionError, docker.errors.DockerException)):
        return EngineUnavailable(f"lost the Docker engine{' at ' + where if where else ''}: {ENGINE_HINT}. ({exc})")
    return LabError(f"{subject}: {exc}")


def call(fn: Callable[..., T], *args: Any, what: str | None = None, where: str = "", **kwargs: Any) -> T:
    """`fn(*args, **kwargs)`, with Docker's exceptions translated."""
    try:
        return fn(*args, **kwargs)
    except DOCKER_ERRORS as exc:
        raise translate(exc, what, where) from exc


def quietly(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
    """Best-effort cleanup: a missing object is already what we wanted."""
    try:
        fn(*args, **kwargs)
    except DOCKER_ERRORS:
        pass
