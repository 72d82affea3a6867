"""rlfleet: a Ray-based distributed actor-learner platform for deep RL."""
from rlfleet.platform.registry import (AlgorithmSpec, register_algorithm, register_env, register_env_family,
                                       resolve_algorithm, resolve_env)

__version__ = "0.1.0"
__all__ = ["AlgorithmSpec", "register_algorithm", "register_env", "register_env_family", "resolve_algorithm",
           "resolve_env", "train"]


def train(config, overrides=None, resume=None) -> dict:
    """Run an experiment from a YAML path (or a dict) in this process; returns the summary."""
    from rlfleet.platform.config import build_config, load_config, resolved_dict
    from rlfleet.platform.driver import train as _train

    if isinstance(config, dict):
        cfg, algo_cfg = build_config(config)
        resolved = resolved_dict(cfg, algo_cfg)
    else:
        cfg, algo_cfg, resolved = load_config(config, overrides)
    return _train(cfg, algo_cfg, resolved, resume)
