"""R2D2 acting: one batched forward step over all env slots of a runner, eps-greedy per slot."""
from __future__ import annotations

import numpy as np
import torch

from rlfleet.algorithms.r2d2.config import R2D2Config
from rlfleet.algorithms.r2d2.networks import R2D2Network


class R2D2Policy:
    """CPU copy of the online network used by runners. State: tuple of [N, H] numpy arrays."""

    def __init__(self, cfg: R2D2Config, env_spec):
        self.net = R2D2Network(env_spec.obs_shape, env_spec.num_actions, cfg).eval()
        self.num_actions = env_spec.num_actions

    def initial_state(self, batch_size: int) -> tuple:
        return tuple(s.numpy() for s in self.net.initial_state(batch_size))

    def load_weights(self, weights: dict) -> None:
        self.net.load_state_dict(weights)

    @torch.inference_mode()
    def q_values(self, obs, prev_action, prev_reward, state):
        st = tuple(torch.from_numpy(s) for s in state)
        q, st = self.net.unroll(torch.from_numpy(obs).unsqueeze(1), torch.from_numpy(prev_action).unsqueeze(1),
                                torch.from_numpy(prev_reward).unsqueeze(1), st)
        return q[:, 0].numpy(), tuple(s.numpy() for s in st)

    def act(self, obs, prev_action, prev_reward, state, epsilon: np.ndarray, rng: np.random.Generator):
        """Returns (actions [N], next state). Slot i explores with probability epsilon[i]."""
        q, state = self.q_values(obs, prev_action, prev_reward, state)
        actions = q.argmax(-1)
        explore = rng.random(len(actions)) < epsilon
        if explore.any():
            actions = np.where(explore, rng.integers(0, self.num_actions, len(actions)), actions)
        return actions.astype(np.int64), state
