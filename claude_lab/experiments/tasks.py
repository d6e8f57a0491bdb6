"""What an experiment runs: its tasks and variants, checked and normalised, and read from TOML.

A `Task` has a name, a prompt and a scorer: a shell command run in the trial's workspace (exit 0
passes; a last output line that parses as a number is the score) or a callable `(agent, result)`
returning a bool or a float. A variant is a dict of overrides for the run: `prompt_prefix`,
`prompt_suffix`, `model` (a name, a ScriptedModel, or a callable `(task_name, trial)`), `max_turns`,
`allowed_tools`, `env` (the trial agent's environment), `max_budget_usd` (the CLI's own limit per run).
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Union

from .. import naming as n
from ..errors import ConfigError

try:  # Python 3.11+
    import tomllib
except ModuleNotFoundError:  # pragma: no cover - 3.10
    import tomli as tomllib  # type: ignore[no-redef]

__all__ = ["Task", "VARIANT_KEYS", "fingerprint", "load_toml", "normalize_tasks", "normalize_variants"]

Scorer = Union[str, Callable[..., Any]]
VARIANT_KEYS = ("prompt_prefix", "prompt_suffix", "model", "max_turns", "allowed_tools", "env", "max_budget_usd")


@dataclass(frozen=True)
class Task:
    """One task of an experiment: `Task("health", prompt="add a /health endpoint", score="python3 -m pytest -q")`."""

    name: str
    prompt: str
    score: Scorer | None = None  # None: a trial passes when its run succeeds
    pass_score: float = 1.0  # a numeric score at or above this passes
    timeout: float | None = None  # the run's timeout, seconds
    score_timeout: float = 600.0
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        n.validate_label(self.name, "task name")
        if not isinstance(self.prompt, str) or not self.prompt.strip():
            raise ConfigError(f"task {self.name}: give it a prompt, e.g. prompt='add a /health endpoint'")
        if self.score is not None and not (isinstance(self.score, str) or callable(self.score)):
            raise ConfigError(f"task {self.name}: score must be a shell command or a function (agent, result); "
                              f"got {self.score!r}")
        if isinstance(self.score, str) and not self.score.strip():
            raise ConfigError(f"task {self.name}: score is an empty command")

    def describe_score(self) -> str:
        if self.score is None:
            return "run succeeded"
        if isinstance(self.score, str):
            return self.score
        return f"{getattr(self.score, '__module__', '?')}.{getattr(self.score, '__qualname__', repr(self.score))}"


def _task(value: Any) -> Task:
    if isinstance(value, Task):
        return value
    if isinstance(value, Mapping):
        unknown = sorted(set(value) - {"name", "prompt", "score", "pass_score", "timeout", "score_timeout",
                                       "metadata"})
        if unknown:
            raise ConfigError(f"task {value.get('name', '?')}: unknown key(s) {', '.join(unknown)}; a task has name, "
                              f"prompt, score (and pass_score, timeout, score_timeout, metadata)")
        if "name" not in value or "prompt" not in value:
            raise ConfigError(f"a task needs a name and a prompt: {dict(value)!r}")
        return Task(**value)
    raise ConfigError(f"{value!r} is not a task: give Task(name, prompt=..., score=...) or a dict with those keys")


def normalize_tasks(tasks: Any) -> list[Task]:
    if isinstance(tasks, (Task, Mapping, str)) or not tasks:
        raise ConfigError("tasks: give a non-empty list of Task(...) or dicts")
    out = [_task(t) for t in tasks]
    names = [t.name for t in out]
    dup = sorted({x for x in names if names.count(x) > 1})
    if dup:
        raise ConfigError(f"task names must be unique; {', '.join(dup)} given more than once")
    return out


def normalize_variants(variants: Mapping[str, Mapping[str, Any]] | None) -> dict[str, dict[str, Any]]:
    if not variants:
        return {"default": {}}
    if not isinstance(variants, Mapping):
        raise ConfigError("variants: give a dict of name -> overrides, e.g. {'terse': {}, 'careful': "
                          "{'prompt_suffix': 'Run the tests.'}}")
    out: dict[str, dict[str, Any]] = {}
    for name, overrides in variants.items():
        n.validate_label(name, "variant name")
        if not isinstance(overrides, Mapping):
            raise ConfigError(f"variant {name}: give a dict of overrides ({', '.join(VARIANT_KEYS)})")
        unknown = sorted(set(overrides) - set(VARIANT_KEYS))
        if unknown:
            raise ConfigError(f"variant {name}: unknown key(s) {', '.join(unknown)}; use {', '.join(VARIANT_KEYS)}")
        out[name] = dict(overrides)
    return out


def _shown(value: Any) -> Any:
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    if isinstance(value, Mapping):
        return {str(k): _shown(v) for k, v in sorted(value.items())}
    if isinstance(value, (list, tuple)):
        return [_shown(v) for v in value]
    if callable(value) and not hasattr(value, "turns"):
        return f"callable {getattr(value, '__qualname__', type(value).__name__)}"
    return type(value).__name__  # a ScriptedModel: its kind, not its state


def spec(tasks: list[Task], variants: dict[str, dict[str, Any]], trials: int) -> dict[str, Any]:
    """What makes an experiment what it is (stored; a resume must match it)."""
    return {"tasks": [{"name": t.name, "prompt": t.prompt, "score": t.describe_score(), "pass_score": t.pass_score,
                       "score_kind": "none" if t.score is None else "shell" if isinstance(t.score, str) else "python"}
                      for t in tasks],
            "variants": {k: _shown(v) for k, v in variants.items()}, "trials": trials}


def fingerprint(value: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps({k: value[k] for k in ("tasks", "variants")}, sort_keys=True).encode()
                          ).hexdigest()[:16]


def load_toml(path: str | Path) -> dict[str, Any]:
    """An experiment file: name, trials, concurrency, model, source, max_turns, budget_usd, [[tasks]], [variants.X]."""
    p = Path(path).expanduser()
    try:
        data = tomllib.loads(p.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read the experiment file {str(p)!r}: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{p} is not valid TOML: {exc}") from None
    known = {"name", "tasks", "variants", "trials", "concurrency", "model", "source", "max_turns", "budget_usd",
             "keep", "scripted"}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(f"{p}: unknown key(s) {', '.join(unknown)}; an experiment file has {', '.join(sorted(known))}")
    if "tasks" not in data:
        raise ConfigError(f"{p}: no tasks; add [[tasks]] tables with name, prompt and score")
    data.setdefault("name", p.stem)
    return data
