"""MAMQL: multi-agent marginal Q-learning from demonstrations (Haynam et al. 2025), and the
behaviour-cloning baseline (`objective: bc`)."""
from rlfleet.algorithms.mamql.config import MAMQLConfig
from rlfleet.algorithms.mamql.learner import MAMQLLearner
from rlfleet.algorithms.mamql.policy import MAMQLPolicy
from rlfleet.platform.batch import SequenceLayout
from rlfleet.platform.registry import AlgorithmSpec, register_algorithm

SPEC = AlgorithmSpec(
    name="mamql",
    config_cls=MAMQLConfig,
    make_policy=MAMQLPolicy,
    make_learner=MAMQLLearner,
    sequence_layout=lambda cfg: SequenceLayout(0, 1, 1),  # single transitions (s, a, r, s')
    description="Multi-agent inverse soft-Q learning from demonstrations (IQ-Learn chi^2 per agent); bc baseline",
)
register_algorithm(SPEC)

__all__ = ["MAMQLConfig", "MAMQLLearner", "MAMQLPolicy", "SPEC"]
