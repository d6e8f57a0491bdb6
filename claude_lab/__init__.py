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
    ReplayDivergence,
)
from .execution import ExecResult, ExecStream, OutputChunk
from .images import BuildEvent, BuildOutcome
from .lab import Lab
from .claude import Run
from .model import ScriptedModel
from .netpolicy import EgressPolicy, EgressState
from .runs import RunResult, ToolCall
from .service import AgentRunStream, ClaudeCodeDockerService, ExecutionResult
from .store import RunStore
from .stats import StatsSampler
from .plotting import plot_stats

__all__ = [
    "StatsSampler", "plot_stats",
    "__version__", "Lab", "LabConfig", "Agent", "ContainerInfo", "ExecResult", "ExecStream", "OutputChunk",
    "BuildEvent", "BuildOutcome", "LabError", "EngineUnavailable", "NotFound", "InvalidName", "ConfigError",
    "PortInUse", "BuildError", "LabTimeout", "ExecError", "AlreadyExists",
    "RunResult", "ToolCall", "Run", "ScriptedModel", "ModelError", "ModelUnreachable", "AuthenticationError",
    "RunStore", "ReplayDivergence",
    "ClaudeCodeDockerService", "ExecutionResult", "AgentRunStream",
    "EgressPolicy", "EgressState",
]


# -- notebook front (magics, widgets): imported only when used, so `import claude_lab` never imports IPython --
def load_ipython_extension(ipython):  # type: ignore[no-untyped-def]
    """`%load_ext claude_lab`: register %claude_exec, %%in_container and %lab."""
    from .magics import load_ipython_extension as load

    load(ipython)


def unload_ipython_extension(ipython):  # type: ignore[no-untyped-def]
    from .magics import unload_ipython_extension as unload

    unload(ipython)


def __getattr__(name: str):  # type: ignore[no-untyped-def]
    """`claude_lab.magics` / `claude_lab.widgets` without importing them up front."""
    if name in ("magics", "widgets"):
        import importlib

        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
