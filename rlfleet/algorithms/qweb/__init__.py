"""QWeb: deep Q-learning for web navigation (Gur et al., ICLR 2019) on MiniWoB++."""
from rlfleet.algorithms.qweb.config import QWebConfig
from rlfleet.algorithms.qweb.learner import QWebLearner
from rlfleet.algorithms.qweb.policy import QWebPolicy
from rlfleet.platform.batch import SequenceLayout
from rlfleet.platform.registry import AlgorithmSpec, register_algorithm

SPEC = AlgorithmSpec(
    name="qweb",
    config_cls=QWebConfig,
    make_policy=QWebPolicy,
    make_learner=QWebLearner,
    sequence_layout=lambda cfg: SequenceLayout(cfg.burn_in, cfg.trace, cfg.period),
    description="QWeb: Q-heads over DOM elements, click/type and instruction fields (MiniWoB envs)",
)
register_algorithm(SPEC)

__all__ = ["QWebConfig", "QWebLearner", "QWebPolicy", "SPEC"]
