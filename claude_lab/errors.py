"""The errors claude-lab raises: one root (`LabError`) and a few kinds a caller can act on."""
from __future__ import annotations


class LabError(Exception):
    """Root of every claude-lab error; the message says what went wrong and what to do."""


class EngineUnavailable(LabError):
    """No Docker engine answers where we looked."""


class NotFound(LabError):
    """A container, agent, image or run that does not exist."""


class NotRunning(LabError):
    """A container that exists but is not running (stopped, exited, lost with its node)."""

    def __init__(self, message: str, state: str | None = None):
        super().__init__(message)
        self.state = state


class InvalidName(LabError, ValueError):
    """A lab name or agent id that is not a DNS label."""


class ConfigError(LabError, ValueError):
    """A setting in claude-lab.toml, pyproject.toml, the environment or a keyword is wrong."""


class PortInUse(LabError):
    """A host port the lab wants to publish is held by something else."""

    def __init__(self, message: str, port: int):
        super().__init__(message)
        self.port = port


class BuildError(LabError):
    """An image build failed; carries the failing step and the tail of its log."""

    def __init__(self, message: str, image: str, step: str | None = None, log_tail: list[str] | None = None):
        super().__init__(message)
        self.image = image
        self.step = step
        self.log_tail = log_tail or []


class AlreadyExists(LabError):
    """An agent (or other named object) of that name is already there."""


class LabTimeout(LabError, TimeoutError):
    """Something did not finish, or become healthy, before its deadline; `result` holds what came."""

    def __init__(self, message: str, result: object | None = None):
        super().__init__(message)
        self.result = result


class ExecError(LabError):
    """A command in a container exited non-zero where success was required."""

    def __init__(self, message: str, exit_code: int | None, stdout: str = "", stderr: str = ""):
        super().__init__(message)
        self.exit_code = exit_code
        self.stdout = stdout
        self.stderr = stderr


class ModelError(LabError):
    """The model endpoint failed a run: unreachable, refused the key, or answered with an error.

    `result` holds the run's `RunResult` when the run got far enough to have one.
    """

    def __init__(self, message: str, result: object | None = None):
        super().__init__(message)
        self.result = result


class ModelUnreachable(ModelError):
    """The model endpoint cannot be reached from inside the agent's container."""


class AuthenticationError(ModelError):
    """The model endpoint rejected the API key (HTTP 401)."""


class MergeConflict(LabError):
    """Bringing an agent's work into the project would conflict, or would touch your uncommitted changes;
    nothing was changed. `files` names the files, `branch` the agent's branch (`git merge <branch>` by hand)."""

    def __init__(self, message: str, files: list[str] | None = None, branch: str | None = None):
        super().__init__(message)
        self.files = list(files or [])
        self.branch = branch


class ReplayDivergence(LabError):
    """A replay's CLI sent a request the recording does not have (another CLI, workspace or prompt).

    `divergence` says which request (`.request`, 1-based), where it differs (`.where`, a JSON path)
    and how (`.recorded` vs `.actual`); `result` is the stopped replay's `RunResult`.
    """

    def __init__(self, message: str, *, run_id: str | None = None, divergence: object | None = None,
                 result: object | None = None):
        super().__init__(message)
        self.run_id = run_id
        self.divergence = divergence
        self.result = result
