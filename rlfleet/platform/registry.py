"""Name -> factory registries for environments and algorithms.

Registrations live in the driver process. Workers never look names up themselves: the driver
resolves a name to its factory and ships the (cloudpickled) factory to the actors, so a name
registered in a user's script resolves inside Ray workers on any node.
Env names are family-prefixed (`gym:CartPole-v1`); a family resolver handles a whole prefix.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, Callable

from rlfleet.platform.errors import UserError, did_you_mean

EnvFactory = Callable[..., Any]

_ENVS: dict[str, EnvFactory] = {}
_ENV_FAMILIES: dict[str, Callable[[str], EnvFactory]] = {}
_ALGORITHMS: dict[str, "AlgorithmSpec"] = {}
_BUILTINS_LOADED = False


@dataclass(frozen=True)
class AlgorithmSpec:
    """What the runtime needs from an algorithm (see rlfleet/algorithms/r2d2 for the model).

    config_cls: pydantic model of the algorithm's YAML section (without `name`).
    make_policy(cfg, env_spec) -> acting policy (CPU, used inside EnvRunner actors).
    make_learner(cfg, env_spec, device) -> learner core (loss + optimizer + target net).
    sequence_layout(cfg) -> SequenceLayout (burn-in, trace, period) the runners must build.
    """

    name: str
    config_cls: type
    make_policy: Callable
    make_learner: Callable
    sequence_layout: Callable
    description: str = ""


def register_env(name: str, factory: EnvFactory) -> None:
    """Register `factory(**kwargs) -> env` under `name` (a Gymnasium env or a PettingZoo ParallelEnv)."""
    if not callable(factory):
        raise TypeError(f"register_env({name!r}): factory must be callable")
    _ENVS[name] = factory


_FAMILY_INFO: dict[str, dict] = {}


def register_env_family(prefix: str, resolver: Callable[[str], EnvFactory], description: str = "",
                        requires: dict[str, str] | None = None) -> None:
    """Register a resolver for every name `prefix:<rest>` (e.g. `gym:` -> gymnasium.make).
    `requires`: importable module -> the rlfleet extra that installs it (shown by `rlfleet envs`)."""
    _ENV_FAMILIES[prefix] = resolver
    _FAMILY_INFO[prefix] = {"description": description, "requires": dict(requires or {})}


def _missing(requires: dict[str, str]) -> tuple[list[str], list[str]]:
    import importlib.util

    missing = [m for m in requires if importlib.util.find_spec(m) is None]
    return missing, sorted({requires[m] for m in missing})


def describe_envs() -> list[dict]:
    """One row per registered env name and env family: name, source module, description, and
    whether the modules it needs are importable (else the extra to install)."""
    _load_builtins()
    rows = []
    for name, factory in sorted(_ENVS.items()):
        rows.append({"name": name, "source": getattr(factory, "__module__", "?"), "description": "registered env",
                     "available": True, "missing": "", "extra": ""})
    for prefix, resolver in sorted(_ENV_FAMILIES.items()):
        info = _FAMILY_INFO.get(prefix, {"description": "", "requires": {}})
        missing, extras = _missing(info["requires"])
        rows.append({"name": f"{prefix}:<id>", "source": resolver.__module__, "description": info["description"],
                     "available": not missing, "missing": ", ".join(missing), "extra": ",".join(extras)})
    return rows


def describe_algorithms() -> list[dict]:
    _load_builtins()
    return [{"name": name, "source": spec.make_learner.__module__, "description": spec.description,
             "available": True, "missing": "", "extra": ""} for name, spec in sorted(_ALGORITHMS.items())]


def register_algorithm(spec: AlgorithmSpec) -> None:
    _ALGORITHMS[spec.name] = spec


def _load_builtins() -> None:
    global _BUILTINS_LOADED
    if _BUILTINS_LOADED:
        return
    _BUILTINS_LOADED = True
    import rlfleet.algorithms  # noqa: F401  (registers built-in algorithms)
    import rlfleet.envs  # noqa: F401  (registers built-in env families)


def env_names() -> list[str]:
    _load_builtins()
    return sorted(_ENVS) + [f"{p}:<id>" for p in sorted(_ENV_FAMILIES)]


def algorithm_names() -> list[str]:
    _load_builtins()
    return sorted(_ALGORITHMS)


def _known_env_ids() -> list[str]:
    names = sorted(_ENVS)
    if "gym" in _ENV_FAMILIES:
        try:
            import gymnasium

            names += [f"gym:{k}" for k in gymnasium.registry.keys()]
        except ImportError:
            pass
    return names


def resolve_env(name: str) -> EnvFactory:
    """Name -> factory. Accepts registered names, `family:rest`, and dotted `pkg.mod:callable`."""
    _load_builtins()
    if name in _ENVS:
        return _ENVS[name]
    prefix, sep, rest = name.partition(":")
    if sep and prefix in _ENV_FAMILIES:
        return _ENV_FAMILIES[prefix](rest)
    if sep and prefix and prefix not in _ENV_FAMILIES:  # dotted path `pkg.module:factory`
        try:
            module = importlib.import_module(prefix)
        except ImportError:
            module = None
        if module is not None:
            if not hasattr(module, rest):
                raise UserError(f"env {name!r}: module {prefix!r} has no attribute {rest!r}")
            return getattr(module, rest)
    raise UserError(f"unknown env {name!r}{did_you_mean(name, _known_env_ids())}")


def resolve_algorithm(name: str) -> AlgorithmSpec:
    _load_builtins()
    if name not in _ALGORITHMS:
        raise UserError(f"unknown algorithm {name!r}{did_you_mean(name, sorted(_ALGORITHMS))}")
    return _ALGORITHMS[name]
