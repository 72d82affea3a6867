"""`miniwob:<task>`: MiniWoB++ tasks (miniwob 1.1.0) in headless Chromium, QWeb's encoding.

`miniwob:click-button` etc. for every task of the `miniwob` package (its html/miniwob/*.html);
env kwargs go to `MiniWoBEnv` (max_elements, max_fields, max_steps, shaping, warm_start_episodes,
subgoal_episodes, ...). Runners get a `MiniWoBBatch`: one browser per env, stepped concurrently,
with legal-action masks. Browsers start lazily, inside the actor that hosts the env.
"""
from __future__ import annotations

import functools
import os
import sys
from pathlib import Path


def _unshadow_miniwob() -> None:
    """A file named miniwob.py on sys.path (benchmarks/miniwob.py, whose folder Python and Ray put
    first on the path of the script's process and its workers) would hide the miniwob package:
    move such folders behind the package's own, so `import miniwob` finds the package."""
    mod = sys.modules.get("miniwob")
    if mod is not None and not hasattr(mod, "__path__"):
        del sys.modules["miniwob"]
    shadowing = [p for p in sys.path if os.path.isfile(os.path.join(p or ".", "miniwob.py"))
                 and not os.path.isdir(os.path.join(p or ".", "miniwob"))]
    for p in shadowing:
        sys.path.remove(p)
        sys.path.append(p)


_unshadow_miniwob()

from rlfleet.platform.errors import UserError, did_you_mean
from rlfleet.platform.registry import register_env_family


def task_names() -> list[str]:
    """All MiniWoB++ tasks the installed miniwob package ships (FlightWoB tasks excluded: they
    need a local HTTP server)."""
    import importlib.util

    spec = importlib.util.find_spec("miniwob")
    if spec is None:
        return []
    html = Path(spec.origin).parent / "html" / "miniwob"
    return sorted(p.stem for p in html.glob("*.html"))


class MiniWoBFactory:
    """Picklable factory for one task: `factory(**kwargs)` makes one env (raw stepping, tests),
    `factory.make_batch(n, seed, **kwargs)` the runner's concurrent batch."""

    def __init__(self, task: str):
        self.task = task

    def __call__(self, **kwargs):
        from rlfleet.envs.miniwob.env import MiniWoBEnv

        try:
            return MiniWoBEnv(self.task, **kwargs)
        except TypeError as e:
            raise UserError(f"miniwob:{self.task}: bad env kwargs ({e})") from None

    def make_batch(self, n: int, seed: int, agent_id=None, policy_mapping=None, **kwargs):
        """`agent_id`, `policy_mapping`: multi-agent settings the platform passes; one agent here."""
        from rlfleet.envs.miniwob.batch import MiniWoBBatch

        return MiniWoBBatch([self(**kwargs) for _ in range(n)], seed)


@functools.lru_cache(maxsize=None)
def resolve(task: str) -> MiniWoBFactory:
    names = task_names()
    if not names:
        raise UserError("miniwob: envs need the miniwob package (pip install 'rlfleet[web]') and Debian's "
                        "chromium + chromium-driver")
    task = task.removeprefix("miniwob/").removesuffix("-v1")
    if task not in names:
        raise UserError(f"unknown env 'miniwob:{task}'{did_you_mean('miniwob:' + task, ['miniwob:' + t for t in names])}")
    return MiniWoBFactory(task)


register_env_family("miniwob", resolve, "MiniWoB++ web task in headless Chromium, e.g. miniwob:click-button "
                    "(needs the web extra and Debian's chromium, chromium-driver)", requires={"miniwob": "web"})
