import copy
import os

import pytest

os.environ.setdefault("RAY_DEDUP_LOGS", "0")

TINY = {
    "name": "tiny",
    "seed": 0,
    "env": {"id": "gym:CartPole-v1", "observation_mask": [0, 2]},
    "algorithm": {"name": "r2d2", "burn_in": 2, "trace": 6, "period": 3, "n_step": 2, "gamma": 0.99,
                  "batch_size": 8, "lr": 1e-3, "target_update_period": 20, "lstm_size": 16,
                  "mlp_hidden": [16], "dueling_hidden": 16},
    "runners": {"num_runners": 2, "envs_per_runner": 2, "num_cpus": 0.25, "ship_interval": 16,
                "weight_sync_interval": 20},
    "replay": {"num_shards": 2, "capacity": 2000, "min_size": 8, "num_cpus": 0.25},
    "learner": {"publish_interval": 2, "num_cpus": 0.5},
    "stop": {"updates": 60},
    "eval": {"interval_env_steps": 300, "episodes": 2, "num_cpus": 0.25},
    "checkpoint": {"interval_s": 1.0},
    "logging": {"interval_s": 0.5, "progress": False},
}


@pytest.fixture
def tiny_config(tmp_path):
    cfg = copy.deepcopy(TINY)
    cfg["logging"]["root"] = str(tmp_path / "runs")
    return cfg


@pytest.fixture(scope="session")
def ray_session():
    """One local Ray instance for the whole test session (starting one takes ~5 s)."""
    import ray

    ray.init(num_cpus=4, include_dashboard=False, logging_level="warning", log_to_driver=False)
    yield ray
    ray.shutdown()
