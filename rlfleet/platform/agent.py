"""A trained agent from a run directory or one of its checkpoints: config, env recipe and an
acting policy with the checkpoint's weights (for demonstrations, evaluation, inspection)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from rlfleet.platform import checkpoint as ckpt
from rlfleet.platform.errors import UserError


@dataclass
class Agent:
    cfg: object  # ExperimentConfig
    algo_cfg: object
    env_maker: object  # EnvMaker
    env_spec: object
    policy: object
    checkpoint: Path
    core: object  # the algorithm's learner core with the checkpoint's state (e.g. for a recovered reward)


def load_agent(path: str | Path) -> Agent:
    """`path`: a run directory (its newest checkpoint is used) or a `checkpoints/ckpt-*` directory."""
    import torch

    from rlfleet.platform.config import load_config
    from rlfleet.platform.envs import EnvMaker
    from rlfleet.platform.registry import resolve_algorithm

    path = Path(path)
    if path.name.startswith(ckpt.PREFIX):
        checkpoint, run_dir = path, path.parent.parent
    else:
        found = ckpt.list_checkpoints(path / "checkpoints")
        if not found:
            raise UserError(f"{path}: no checkpoint found (expected a run directory with checkpoints/ckpt-*)")
        checkpoint, run_dir = found[-1], path
    if not (run_dir / "config.yaml").is_file() or not (checkpoint / "learner.pt").is_file():
        raise UserError(f"{path}: not an rlfleet run or checkpoint (config.yaml or learner.pt missing)")
    cfg, algo_cfg, _ = load_config(run_dir / "config.yaml")
    spec = resolve_algorithm(cfg.algorithm_name)
    env_maker = EnvMaker.from_config(cfg.env)
    env_spec = env_maker.spec()
    state = torch.load(checkpoint / "learner.pt", map_location="cpu", weights_only=True)
    core = spec.make_learner(algo_cfg, env_spec, "cpu")
    core.load_state_dict(state["core"])
    policy = spec.make_policy(algo_cfg, env_spec)
    policy.load_weights(core.acting_weights())
    return Agent(cfg, algo_cfg, env_maker, env_spec, policy, checkpoint, core)
