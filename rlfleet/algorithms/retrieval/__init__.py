"""Retrieval-augmented agents (Goyal et al., ICML 2022): a retrieval process over a dataset of
trajectories, mixed into a recurrent Q-network. `r2d2-retrieval` retrieves from its own replay
(online); offline recurrent DQN with or without retrieval is `learner.train_offline`."""
from rlfleet.algorithms.retrieval.config import R2D2RetrievalConfig, RDQNOfflineConfig, RetrievalConfig
from rlfleet.algorithms.retrieval.dataset import KeyIndex, TrajectoryDataset
from rlfleet.algorithms.retrieval.learner import OfflineRDQN, R2D2RetrievalLearner, train_offline
from rlfleet.algorithms.retrieval.networks import RetrievalAgentNetwork, RetrievalProcess, top_k_attention
from rlfleet.algorithms.retrieval.policy import RetrievalPolicy
from rlfleet.platform.batch import SequenceLayout
from rlfleet.platform.registry import AlgorithmSpec, register_algorithm

SPEC = AlgorithmSpec(
    name="r2d2-retrieval",
    config_cls=R2D2RetrievalConfig,
    make_policy=RetrievalPolicy.for_online,
    make_learner=R2D2RetrievalLearner,
    sequence_layout=lambda cfg: SequenceLayout(cfg.burn_in, cfg.trace, cfg.period),
    description="R2D2 + retrieval process over its own replay (slots, top-k attention, information bottleneck)",
)
register_algorithm(SPEC)

__all__ = ["KeyIndex", "OfflineRDQN", "R2D2RetrievalConfig", "R2D2RetrievalLearner", "RDQNOfflineConfig",
           "RetrievalAgentNetwork", "RetrievalConfig", "RetrievalPolicy", "RetrievalProcess", "SPEC",
           "TrajectoryDataset", "top_k_attention", "train_offline"]
