"""R2D2: recurrent replay distributed DQN (Kapturowski et al., ICLR 2019)."""
from rlfleet.algorithms.r2d2.config import R2D2Config
from rlfleet.algorithms.r2d2.learner import R2D2Learner
from rlfleet.algorithms.r2d2.policy import R2D2Policy
from rlfleet.platform.batch import SequenceLayout
from rlfleet.platform.registry import AlgorithmSpec, register_algorithm

SPEC = AlgorithmSpec(
    name="r2d2",
    config_cls=R2D2Config,
    make_policy=R2D2Policy,
    make_learner=R2D2Learner,
    sequence_layout=lambda cfg: SequenceLayout(cfg.burn_in, cfg.trace, cfg.period),
    description="Recurrent Replay Distributed DQN (LSTM, stored state + burn-in, n-step double Q)",
)
register_algorithm(SPEC)

__all__ = ["R2D2Config", "R2D2Learner", "R2D2Policy", "SPEC"]
