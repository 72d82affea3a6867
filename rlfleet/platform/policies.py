"""Algorithm-free acting policies: baselines for benchmarks and for demonstration recording."""
from __future__ import annotations

import numpy as np


class RandomPolicy:
    """Uniformly random actions, no network and no recurrent state. Same interface as an
    algorithm's acting policy, so a runner or evaluator can host it unchanged."""

    def __init__(self, cfg=None, env_spec=None):
        self.num_actions = env_spec.num_actions

    def initial_state(self, batch_size: int) -> tuple:
        return ()

    def load_weights(self, weights) -> None:
        pass

    def act(self, obs, prev_action, prev_reward, state, epsilon, rng: np.random.Generator):
        return rng.integers(0, self.num_actions, len(obs)).astype(np.int64), state
