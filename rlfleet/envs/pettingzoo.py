"""`pz:<module>`: PettingZoo envs by module path, e.g. `pz:mpe2.simple_spread_v3`,
`pz:pettingzoo.butterfly.pistonball_v6` or `pz:pettingzoo.classic.connect_four_v3`. The module's
`parallel_env` is used where it has one (all agents act together); modules with only the
turn-based `env` (AEC: board and card games) are stepped one agent's turn at a time
(rlfleet.platform.turnbased). Env kwargs go to either."""
from __future__ import annotations

import functools
import importlib
import pkgutil

from rlfleet.platform.errors import UserError, did_you_mean, missing_extra
from rlfleet.platform.registry import register_env_family

PACKAGES = ("mpe2", "pettingzoo.classic", "pettingzoo.butterfly", "pettingzoo.sisl", "pettingzoo.atari",
            "rlfleet.envs.games")


def known_modules() -> list[str]:
    out = []
    for pkg in PACKAGES:
        try:
            mod = importlib.import_module(pkg)
        except Exception:  # an optional family whose extra is not installed
            continue
        out += [f"{pkg}.{m.name}" for m in pkgutil.iter_modules(mod.__path__) if m.name[-3:-1] == "_v"]
    return out


def _make(module: str, **kwargs):
    return importlib.import_module(module).parallel_env(**kwargs)


def _make_aec(module: str, **kwargs):
    return importlib.import_module(module).env(**kwargs)


def resolve(name: str):
    try:
        module = importlib.import_module(name)
    except ImportError as e:
        if missing_extra(f"env 'pz:{name}'", e):
            raise missing_extra(f"env 'pz:{name}'", e) from None
        candidates = ["pz:" + m for m in known_modules()]
        raise UserError(f"unknown env 'pz:{name}' ({e}){did_you_mean('pz:' + name, candidates)}") from None
    if hasattr(module, "parallel_env"):
        return functools.partial(_make, name)
    if hasattr(module, "env"):
        return functools.partial(_make_aec, name)
    raise UserError(f"'pz:{name}': module has neither parallel_env nor env")


register_env_family("pz", resolve, "PettingZoo env by module: Parallel (e.g. pz:mpe2.simple_spread_v3) or "
                    "turn-based AEC (e.g. pz:pettingzoo.classic.tictactoe_v3); mpe2.* needs the multiagent extra",
                    requires={"mpe2": "multiagent"})
