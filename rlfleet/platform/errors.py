"""User-facing errors: the CLI prints them as one line and exits 2, with no traceback."""
from __future__ import annotations

import difflib
from typing import Iterable


class UserError(Exception):
    """Bad input from the user (config, names, files). Printed as one line by the CLI."""


def closest(name: str, candidates: Iterable[str], n: int = 3) -> list[str]:
    """Closest valid names to `name`, for 'did you mean' hints."""
    candidates = list(candidates)
    found = difflib.get_close_matches(name, candidates, n=n, cutoff=0.5)
    if not found:  # prefix/family match, e.g. 'gym:CartPol' -> gym:* names
        found = [c for c in candidates if c.split(":")[0] == name.split(":")[0]][:n]
    return found


def did_you_mean(name: str, candidates: Iterable[str]) -> str:
    found = closest(name, candidates)
    return f" (did you mean: {', '.join(found)}?)" if found else ""


# optional dependency (top-level module) -> the rlfleet extra that installs it; env families add
# theirs through register_env_family(requires=...)
EXTRAS: dict[str, str] = {"mpe2": "multiagent", "PIL": "render", "matplotlib": "plot", "optuna": "sweep",
                          "dm_tree": "rllib", "tree": "rllib", "lz4": "rllib", "ormsgpack": "rllib"}


def missing_extra(what: str, error: ImportError) -> UserError | None:
    """A one-line error naming the extra to install when `error` is a known optional dependency."""
    import importlib.util

    module = (getattr(error, "name", None) or "").split(".")[0]
    if module not in EXTRAS or importlib.util.find_spec(module) is not None:  # installed: another problem
        return None
    return UserError(f"{what} needs the optional package {module!r}: pip install 'rlfleet[{EXTRAS[module]}]'")
