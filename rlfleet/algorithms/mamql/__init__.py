"""MAMQL: multi-agent marginal Q-learning from demonstrations (Haynam et al. 2025), and its two
baselines under the same registry: `iql-ma` (critic sees the others' actions) and `bc`."""
from rlfleet.algorithms.mamql.config import BCConfig, IQLMAConfig, MAMQLConfig
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
for _name, _cfg, _what in (("iql-ma", IQLMAConfig, "per-agent IQ-Learn, critic sees the others' actions (baseline)"),
                           ("bc", BCConfig, "behaviour cloning from demonstrations (baseline)")):
    register_algorithm(AlgorithmSpec(name=_name, config_cls=_cfg, make_policy=MAMQLPolicy, make_learner=MAMQLLearner,
                                     sequence_layout=SPEC.sequence_layout, description=_what))

__all__ = ["MAMQLConfig", "MAMQLLearner", "MAMQLPolicy", "SPEC"]
