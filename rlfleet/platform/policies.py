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

    def act(self, obs, prev_action, prev_reward, state, epsilon, rng: np.random.Generator, action_mask=None):
        return random_legal_actions(rng, len(obs), self.num_actions, action_mask), state


def random_legal_actions(rng: np.random.Generator, n: int, num_actions: int, action_mask=None) -> np.ndarray:
    """Uniform over all actions, or over each row's legal ones where a mask is given."""
    if action_mask is None:
        return rng.integers(0, num_actions, n).astype(np.int64)
    scores = rng.random((n, num_actions)) + action_mask  # any legal action beats every illegal one
    return scores.argmax(-1).astype(np.int64)


def epsilon_greedy(q: np.ndarray, epsilon, rng: np.random.Generator, action_mask=None) -> np.ndarray:
    """Per-slot epsilon-greedy over Q [N, A] (Ape-X: slot i explores with probability epsilon[i]);
    with a mask, both the greedy and the random choice are among the legal actions only."""
    if action_mask is not None:
        q = np.where(action_mask, q, -np.inf)
    actions = q.argmax(-1)
    explore = rng.random(len(actions)) < epsilon
    if explore.any():
        actions = np.where(explore, random_legal_actions(rng, len(actions), q.shape[-1], action_mask), actions)
    return actions.astype(np.int64)
