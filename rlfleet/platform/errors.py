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
