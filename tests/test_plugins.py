"""Plugins from outside the rlfleet package: an env and an algorithm through entry points (an
installed-package layout in a temp dir: the package + its dist-info with entry_points.txt, as pip
writes them), an env through a dotted path, both trained from YAML on the session's Ray, whose
workers never had the temp dir on their path (so the factories must travel in the actors'
runtime_env)."""
import importlib
import shutil
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

import rlfleet
from rlfleet.platform import registry
from rlfleet.platform.errors import UserError

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "plugin"

DOTTED_MODULE = '''
"""A user's env module that is not a package and not installed: used as `my_lab_envs:make_env`."""
import gymnasium as gym
import numpy as np


class Signal(gym.Env):
    """Observation says which action pays: one step per episode (a contextual bandit)."""

    observation_space = gym.spaces.Box(0.0, 1.0, (2,), np.float32)
    action_space = gym.spaces.Discrete(2)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.good = int(self.np_random.integers(2))
        return np.eye(2, dtype=np.float32)[self.good], {}

    def step(self, action):
        return np.zeros(2, np.float32), float(action == self.good), True, False, {}


def make_env():
    return Signal()
'''


@pytest.fixture
def plugin_path(tmp_path, monkeypatch):
    site = tmp_path / "site"
    shutil.copytree(EXAMPLE / "rlfleet_example", site / "rlfleet_example",
                    ignore=shutil.ignore_patterns("__pycache__"))
    dist = site / "rlfleet_example-0.1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: rlfleet-example\nVersion: 0.1.0\n")
    entry_points = textwrap.dedent("""\
        [rlfleet.envs]
        corridor-v0 = rlfleet_example.envs:make_corridor
        broken-v0 = rlfleet_example.no_such_module:make

        [rlfleet.algorithms]
        dqn-example = rlfleet_example.dqn:SPEC
        """)
    (dist / "entry_points.txt").write_text(entry_points)
    (site / "my_lab_envs.py").write_text(DOTTED_MODULE)
    monkeypatch.syspath_prepend(str(site))
    importlib.invalidate_caches()
    registry.discover_plugins()
    yield site
    for name in ("corridor-v0", "broken-v0"):
        registry._ENV_PLUGINS.pop(name, None)
        registry._ENVS.pop(name, None)
    registry._ALGORITHM_PLUGINS.pop("dqn-example", None)
    registry._ALGORITHMS.pop("dqn-example", None)
    registry._PLUGIN_MODULES.clear()


def _yaml(tmp_path, tiny_config, env: dict, algorithm: dict | None = None, **sections) -> str:
    cfg = {**tiny_config, "env": env, **sections}
    if algorithm is not None:
        cfg["algorithm"] = algorithm
    path = tmp_path / f"{cfg['name']}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return str(path)


def test_plugins_are_listed_without_being_imported(plugin_path):
    envs = {r["name"]: r for r in registry.describe_envs()}
    assert "corridor-v0" in envs and "entry point from rlfleet-example" in envs["corridor-v0"]["source"]
    assert "rlfleet_example.envs" not in sys.modules  # listed from metadata only
    assert "dqn-example" in {r["name"] for r in registry.describe_algorithms()}
    with pytest.raises(UserError, match="broken-v0.*failed to load.*ModuleNotFoundError"):
        registry.resolve_env("broken-v0")
    with pytest.raises(UserError, match="did you mean: corridor-v0"):
        registry.resolve_env("corridor-v1")


def test_r2d2_trains_on_entry_point_and_dotted_path_envs(ray_session, tiny_config, plugin_path, tmp_path):
    from rlfleet.platform.config import load_config
    from rlfleet.platform.placement import actor_runtime_env

    tiny_config["eval"]["interval_env_steps"] = 0
    tiny_config["stop"] = {"env_steps": 1500}
    for name, env in (("ep", {"id": "corridor-v0", "kwargs": {"length": 4}}), ("dotted", {"id": "my_lab_envs:make_env"})):
        tiny_config["name"] = name
        path = _yaml(tmp_path, tiny_config, env)
        cfg, _, _ = load_config(path)
        shipped = actor_runtime_env(cfg)["py_modules"]  # uploaded; the workers import the plugin from there
        assert shipped and all(uri.startswith("gcs://") for uri in shipped), shipped
        assert {"rlfleet_example", "my_lab_envs"} & {m.__name__ for m in registry.plugin_modules()}
        summary = rlfleet.train(path)
        assert summary["env_steps"] >= 1500 and summary["updates"] > 0, summary
        assert summary["episodes"] > 10


def test_entry_point_algorithm_learns_on_dotted_path_env(ray_session, tiny_config, plugin_path, tmp_path):
    tiny_config["name"] = "dqn-plugin"
    tiny_config["stop"] = {"env_steps": 3000}
    tiny_config["eval"] = {"interval_env_steps": 1000, "episodes": 40, "num_cpus": 0.25}
    path = _yaml(tmp_path, tiny_config, {"id": "my_lab_envs:make_env"},
                 {"name": "dqn-example", "hidden": 16, "batch_size": 32, "lr": 3e-3, "gamma": 0.9,
                  "target_update_period": 20})
    summary = rlfleet.train(path)
    assert summary["updates"] > 50
    assert summary["evals"][-1]["return_mean"] >= 0.9, summary["evals"]  # random play: 0.5


def test_submitted_job_carries_plugin_modules(plugin_path, tmp_path, tiny_config):
    """`rlfleet submit` ships plugin modules that are not installed packages with the job."""
    from rlfleet.cluster.submit import job_runtime_env

    resolved = {**tiny_config, "env": {"id": "my_lab_envs:make_env"}, "runtime_env": {"env_vars": {"A": "1"}}}
    env = job_runtime_env(resolved, str(tmp_path))
    assert env["working_dir"] == str(tmp_path) and env["env_vars"] == {"A": "1"}
    assert Path(env["py_modules"][0]).name == "rlfleet" and len(env["py_modules"]) == 2, env
