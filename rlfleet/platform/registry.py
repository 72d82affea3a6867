"""Name -> factory registries for environments and algorithms.

Registrations live in the driver process. Workers never look names up themselves: the driver
resolves a name to its factory and ships the (cloudpickled) factory to the actors, so a name
registered in a user's script resolves inside Ray workers on any node.
Env names are family-prefixed (`gym:CartPole-v1`); a family resolver handles a whole prefix.

Other packages plug in without rlfleet importing them up front: entry points in the groups
`rlfleet.envs` (name -> env factory) and `rlfleet.algorithms` (name -> AlgorithmSpec) are listed
at startup and loaded only when their name is used, so one broken plugin cannot break the rest.
Factories from modules that are not installed packages (a dotted path into the user's project, a
plugin on sys.path) are remembered in `plugin_modules()` so the driver can ship them to Ray workers
on other nodes through the actors' runtime_env (`py_modules`).
"""
from __future__ import annotations

import importlib
import importlib.metadata
import sys
import sysconfig
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from rlfleet.platform.errors import EXTRAS, UserError, did_you_mean, missing_extra

ENV_ENTRY_POINTS = "rlfleet.envs"
ALGORITHM_ENTRY_POINTS = "rlfleet.algorithms"

EnvFactory = Callable[..., Any]

_ENVS: dict[str, EnvFactory] = {}
_ENV_FAMILIES: dict[str, Callable[[str], EnvFactory]] = {}
_ALGORITHMS: dict[str, "AlgorithmSpec"] = {}
_BUILTINS_LOADED = False
_ENV_PLUGINS: dict[str, importlib.metadata.EntryPoint] = {}  # not loaded yet
_ALGORITHM_PLUGINS: dict[str, importlib.metadata.EntryPoint] = {}
_PLUGIN_MODULES: dict[str, Any] = {}  # top-level module name -> module, for runtime_env py_modules


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
    for module, extra in (requires or {}).items():
        EXTRAS.setdefault(module.split(".")[0], extra)


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
    for name, ep in sorted(_ENV_PLUGINS.items()):
        if name not in _ENVS:
            rows.append(_plugin_row(name, ep, "env"))
    for prefix, resolver in sorted(_ENV_FAMILIES.items()):
        info = _FAMILY_INFO.get(prefix, {"description": "", "requires": {}})
        missing, extras = _missing(info["requires"])
        rows.append({"name": f"{prefix}:<id>", "source": resolver.__module__, "description": info["description"],
                     "available": not missing, "missing": ", ".join(missing), "extra": ",".join(extras)})
    return rows


def describe_algorithms() -> list[dict]:
    _load_builtins()
    rows = [{"name": name, "source": spec.make_learner.__module__, "description": spec.description,
             "available": True, "missing": "", "extra": ""} for name, spec in sorted(_ALGORITHMS.items())]
    rows += [_plugin_row(name, ep, "algorithm") for name, ep in sorted(_ALGORITHM_PLUGINS.items())
             if name not in _ALGORITHMS]
    return sorted(rows, key=lambda r: r["name"])


def _plugin_row(name: str, ep, what: str) -> dict:
    import importlib.util

    top = ep.module.split(".")[0]
    dist = f" from {ep.dist.name}" if getattr(ep, "dist", None) is not None else ""
    available = importlib.util.find_spec(top) is not None
    return {"name": name, "source": f"{ep.value} (entry point{dist})", "description": f"plugin {what}",
            "available": available, "missing": "" if available else top, "extra": ""}


def register_algorithm(spec: AlgorithmSpec) -> None:
    _ALGORITHMS[spec.name] = spec


def _load_builtins() -> None:
    global _BUILTINS_LOADED
    if _BUILTINS_LOADED:
        return
    _BUILTINS_LOADED = True
    import rlfleet.algorithms  # noqa: F401  (registers built-in algorithms)
    import rlfleet.envs  # noqa: F401  (registers built-in env families)
    discover_plugins()


def discover_plugins() -> None:
    """List the entry points of installed packages (cheap: nothing is imported here)."""
    eps = importlib.metadata.entry_points()
    for group, table in ((ENV_ENTRY_POINTS, _ENV_PLUGINS), (ALGORITHM_ENTRY_POINTS, _ALGORITHM_PLUGINS)):
        for ep in eps.select(group=group):
            table.setdefault(ep.name, ep)


def _load_plugin(ep, what: str):
    try:
        obj = ep.load()
    except Exception as e:  # the plugin's own import error, one line
        raise UserError(f"{what} {ep.name!r} (entry point {ep.value}) failed to load: {type(e).__name__}: {e}") from None
    _note_plugin_module(ep.module)
    return obj


def _note_plugin_module(module_name: str) -> None:
    """Remember `module_name`'s top-level module if it is not part of an installed environment:
    Ray workers on other nodes can only import it if the driver ships it (runtime_env py_modules)."""
    top = module_name.split(".")[0]
    module = sys.modules.get(top)
    path = getattr(module, "__file__", None) or next(iter(getattr(module, "__path__", [])), None)
    if module is None or path is None or top == "rlfleet":
        return
    installed = {Path(sysconfig.get_paths()[k]).resolve() for k in ("purelib", "platlib", "stdlib")}
    resolved = Path(path).resolve()
    if "runtime_resources" in resolved.parts:  # already shipped to this job by Ray's runtime_env
        return
    if not any(root == resolved or root in resolved.parents for root in installed):
        _PLUGIN_MODULES[top] = module


def plugin_modules() -> list:
    """Modules of plugins resolved in this process that live outside installed packages."""
    return list(_PLUGIN_MODULES.values())


def env_names() -> list[str]:
    _load_builtins()
    return sorted(set(_ENVS) | set(_ENV_PLUGINS)) + [f"{p}:<id>" for p in sorted(_ENV_FAMILIES)]


def algorithm_names() -> list[str]:
    _load_builtins()
    return sorted(set(_ALGORITHMS) | set(_ALGORITHM_PLUGINS))


def _known_env_ids() -> list[str]:
    names = sorted(set(_ENVS) | set(_ENV_PLUGINS))
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
    if name in _ENV_PLUGINS:
        factory = _load_plugin(_ENV_PLUGINS[name], "env")
        if not callable(factory):
            raise UserError(f"env {name!r}: entry point {_ENV_PLUGINS[name].value} is not callable")
        _ENVS[name] = factory
        return factory
    prefix, sep, rest = name.partition(":")
    if sep and prefix in _ENV_FAMILIES:
        try:
            return _ENV_FAMILIES[prefix](rest)
        except ImportError as e:
            raise missing_extra(f"env {name!r}", e) or e from None
    if sep and prefix and prefix not in _ENV_FAMILIES:  # dotted path `pkg.module:factory`
        module = _import_dotted(name, prefix)
        if module is not None:
            if not callable(getattr(module, rest, None)):
                raise UserError(f"env {name!r}: module {prefix!r} has no callable {rest!r}")
            _note_plugin_module(prefix)
            return getattr(module, rest)
    raise UserError(f"unknown env {name!r}{did_you_mean(name, _known_env_ids())}")


def load_callable(spec: str, what: str):
    """'module:function' (a user hook named in a config or on the command line) -> the function; a
    one-line UserError naming `what` when it cannot be loaded."""
    import importlib

    module, _, fn = spec.rpartition(":")
    try:
        return getattr(importlib.import_module(module), fn)
    except (ImportError, AttributeError, ValueError) as e:
        raise UserError(f"{what} {spec!r}: cannot load {fn!r} from module {module!r} ({e})") from None


def _import_dotted(name: str, module_name: str, what: str = "env"):
    """The module of a dotted path, None if no such module; its own import errors are the user's."""
    import importlib.util

    try:
        if importlib.util.find_spec(module_name) is None:
            return None
    except (ImportError, ValueError):  # a parent package is missing
        return None
    try:
        return importlib.import_module(module_name)
    except Exception as e:
        raise UserError(f"{what} {name!r}: importing {module_name!r} failed: {type(e).__name__}: {e}") from None


def resolve_algorithm(name: str) -> AlgorithmSpec:
    _load_builtins()
    if name not in _ALGORITHMS and name in _ALGORITHM_PLUGINS:
        spec = _load_plugin(_ALGORITHM_PLUGINS[name], "algorithm")
        spec = spec() if callable(spec) and not isinstance(spec, AlgorithmSpec) else spec
        if not isinstance(spec, AlgorithmSpec):
            raise UserError(f"algorithm {name!r}: entry point {_ALGORITHM_PLUGINS[name].value} is not an "
                            f"rlfleet.AlgorithmSpec (got {type(spec).__name__})")
        _ALGORITHMS[name] = spec
    module_name, sep, attr = name.partition(":")
    if name not in _ALGORITHMS and sep:  # dotted path `pkg.module:SPEC`
        module = _import_dotted(name, module_name, "algorithm")
        spec = getattr(module, attr, None) if module is not None else None
        if not isinstance(spec, AlgorithmSpec):
            raise UserError(f"algorithm {name!r}: expected an rlfleet.AlgorithmSpec at {name}, "
                            f"got {type(spec).__name__ if module is not None else 'no such module'}")
        _note_plugin_module(module_name)
        _ALGORITHMS[name] = spec
    if name not in _ALGORITHMS:
        raise UserError(f"unknown algorithm {name!r}{did_you_mean(name, algorithm_names())}")
    return _ALGORITHMS[name]
