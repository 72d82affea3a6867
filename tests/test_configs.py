"""Every shipped experiment config validates and names a resolvable env and algorithm."""
from pathlib import Path

import pytest

from rlfleet.platform.config import load_config
from rlfleet.platform.envs import EnvMaker

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_shipped_config_loads_and_its_env_builds(path):
    cfg, algo_cfg, resolved = load_config(path)
    if cfg.env.id.startswith("sc2:"):  # no game on CI: the config's kwargs checked against pysc2's SC2TestEnv
        from rlfleet.envs.sc2.env import game_dir

        if not (game_dir() / "Versions").is_dir():
            cfg.env.kwargs["test_env"] = True
    spec = EnvMaker.from_config(cfg.env).spec()
    assert spec.num_actions > 0 and resolved["algorithm"]["name"] == cfg.algorithm_name


def test_there_is_a_quickstart():
    assert any(p.name == "quickstart.yaml" for p in CONFIGS)
