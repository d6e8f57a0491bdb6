"""claude-lab: Claude Code agents in isolated Docker containers, driven from Jupyter."""
from ._version import __version__
from .agents import Agent
from .config import LabConfig
from .engine import ContainerInfo
from .errors import (
    AlreadyExists,
    AuthenticationError,
    BuildError,
    ConfigError,
    EngineUnavailable,
    ExecError,
    InvalidName,
    LabError,
    LabTimeout,
    ModelError,
    ModelUnreachable,
    NotFound,
    PortInUse,
)
from .execution import ExecResult, ExecStream, OutputChunk
from .images import BuildEvent, BuildOutcome
from .lab import Lab
from .claude import Run
from .model import ScriptedModel
from .runs import RunResult, ToolCall

__all__ = [
    "__version__", "Lab", "LabConfig", "Agent", "ContainerInfo", "ExecResult", "ExecStream", "OutputChunk",
    "BuildEvent", "BuildOutcome", "LabError", "EngineUnavailable", "NotFound", "InvalidName", "ConfigError",
    "PortInUse", "BuildError", "LabTimeout", "ExecError", "AlreadyExists",
    "RunResult", "ToolCall", "Run", "ScriptedModel", "ModelError", "ModelUnreachable", "AuthenticationError",
]
