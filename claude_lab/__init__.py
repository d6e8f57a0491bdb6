"""claude-lab: Claude Code agents in isolated Docker containers, driven from Jupyter.

The package in layers (each may import only those below it; tests/test_architecture.py holds it to that):

    front ends   cli, magics, service, doctor, swarmsim, progress, widgets/
    facade       lab (Lab: wires the features together; its rooms lab_runs, lab_workspace), agents
    features     config, images/, containers/, netguard/, model/, runs/, stats/, workspace/
    engine       engine/ (the only code that imports docker)
    foundation   errors, naming, util/

Public names load on first use (a table, as IPython's own magics package does), so `import claude_lab`
stays light and never imports IPython, ipywidgets, pandas or docker until something needs them.
"""
from __future__ import annotations

import importlib
import typing

from ._version import __version__
from .util import views as _views

# public name -> the module that defines it
_EXPORTS: dict[str, str] = {
    "Agent": "agents",
    "AgentRunStream": "service",
    "AlreadyExists": "errors",
    "AuthenticationError": "errors",
    "BuildError": "errors",
    "BuildEvent": "images",
    "BuildOutcome": "images",
    "ClaudeCodeDockerService": "service",
    "ConfigError": "errors",
    "ContainerInfo": "engine.types",
    "EgressPolicy": "netguard.policy",
    "EgressState": "netguard.sidecar",
    "EngineUnavailable": "errors",
    "ExecError": "errors",
    "ExecResult": "containers.execution",
    "ExecStream": "containers.execution",
    "ExecutionResult": "service",
    "Experiment": "experiments.runner",
    "InvalidName": "errors",
    "Lab": "lab",
    "LabConfig": "config",
    "LabError": "errors",
    "LabTimeout": "errors",
    "MergeConflict": "errors",
    "MergeResult": "workspace.roundtrip",
    "ModelError": "errors",
    "ModelUnreachable": "errors",
    "NotFound": "errors",
    "NotRunning": "errors",
    "OutputChunk": "containers.execution",
    "PortInUse": "errors",
    "ReplayDivergence": "errors",
    "Run": "runs.runner",
    "RunResult": "runs.results",
    "RunStore": "runs.store",
    "ScriptedModel": "model.scripted",
    "StatsSampler": "stats.sampler",
    "Task": "experiments.tasks",
    "ToolCall": "runs.results",
    "plot_stats": "stats.plotting",
}
_SUBMODULES = ("magics", "widgets")  # `claude_lab.magics` / `claude_lab.widgets` without importing them up front

__all__ = sorted(["__version__", "load_ipython_extension", "unload_ipython_extension", *_EXPORTS])

if typing.TYPE_CHECKING:  # for type checkers and IDEs; at run time __getattr__ below imports on first use
    from .agents import Agent
    from .config import LabConfig
    from .containers.execution import ExecResult, ExecStream, OutputChunk
    from .engine.types import ContainerInfo
    from .errors import (AlreadyExists, AuthenticationError, BuildError, ConfigError, EngineUnavailable, ExecError,
                         InvalidName, LabError, LabTimeout, MergeConflict, ModelError, ModelUnreachable, NotFound,
                         NotRunning, PortInUse, ReplayDivergence)
    from .experiments.runner import Experiment
    from .experiments.tasks import Task
    from .images import BuildEvent, BuildOutcome
    from .lab import Lab
    from .model.scripted import ScriptedModel
    from .netguard.policy import EgressPolicy
    from .netguard.sidecar import EgressState
    from .runs.results import RunResult, ToolCall
    from .runs.runner import Run
    from .runs.store import RunStore
    from .service import AgentRunStream, ClaudeCodeDockerService, ExecutionResult
    from .stats.plotting import plot_stats
    from .stats.sampler import StatsSampler
    from .workspace.roundtrip import MergeResult


def __getattr__(name: str) -> typing.Any:
    module = _EXPORTS.get(name)
    if module is not None:
        value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
        globals()[name] = value  # once loaded, a plain attribute
        return value
    if name in _SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__) | set(_SUBMODULES))


def _panel(lab: typing.Any, **options: typing.Any) -> typing.Any:
    """`lab.panel()`: the notebook front's LabPanel, imported only when a panel is made."""
    from .widgets import LabPanel

    return LabPanel(lab, **options)


def _build_progress() -> typing.Any:
    """`progress=True` of `lab.build()` / `lab.up()`: tqdm bars, imported only when a build reports."""
    from .progress import TqdmProgress

    return TqdmProgress()


def _experiment_view(exp: typing.Any) -> typing.Any:
    """`exp.view()`: the notebook front's live experiment table, imported only when one is made."""
    from .widgets import ExperimentView

    return ExperimentView(exp)


_views.provide("panel", _panel)
_views.provide("experiment", _experiment_view)
_views.provide("build_progress", _build_progress)


# -- notebook front (magics, widgets): imported only when used, so `import claude_lab` never imports IPython --
def load_ipython_extension(ipython: typing.Any) -> None:
    """`%load_ext claude_lab`: register %claude_exec, %%in_container and %lab."""
    from .magics import load_ipython_extension as load

    load(ipython)


def unload_ipython_extension(ipython: typing.Any) -> None:
    from .magics import unload_ipython_extension as unload

    unload(ipython)
