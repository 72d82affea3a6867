"""Acting with a retrieval-augmented network: one batched forward step for all slots of a runner.

The retrieval set's keys and values (encoder + forward/backward GRUs over every retrieved
trajectory) are computed once per weight load, not per step: per step the policy only runs the
slot GRU, the query, the two-stage top-k attention over the cached keys, the bottleneck mean and
the slot self-attention. The bottleneck uses its mean when acting (no sampling noise).
"""
from __future__ import annotations

import numpy as np
import torch

from rlfleet.platform.policies import epsilon_greedy


class RetrievalPolicy:
    """CPU acting copy of a `RetrievalAgentNetwork`. State: tuple of [N, H] numpy arrays."""

    def __init__(self, net, num_actions: int):
        self.net = net.eval()
        self.num_actions = num_actions
        self._trajectories = None  # a fixed retrieval set (offline agents); None = the weights' bank
        self._index = None

    @classmethod
    def for_online(cls, cfg, env_spec) -> "RetrievalPolicy":
        from rlfleet.algorithms.retrieval.learner import make_online_network

        return cls(make_online_network(env_spec, cfg), env_spec.num_actions)

    def initial_state(self, batch_size: int) -> tuple:
        return tuple(s.numpy() for s in self.net.initial_state(batch_size))

    @torch.inference_mode()
    def _refresh_memory(self) -> None:
        if self.net.retrieval is None:
            return
        if self._index is not None:
            self._index.refresh(self.net)
            self.net.set_index(self._index)
        else:
            self.net.set_memory(self._trajectories if self._trajectories is not None else self.net.bank())

    def load_weights(self, weights: dict) -> None:
        self.net.load_state_dict(weights)
        self._refresh_memory()

    def set_retrieval_set(self, trajectories: dict | None = None, index=None) -> None:
        """Offline agents: attend over these trajectories (a uniform batch of the dataset), or over
        ANN candidates from `index` (a KeyIndex, re-embedded with these weights now)."""
        self._trajectories, self._index = trajectories, index
        self._refresh_memory()

    @torch.inference_mode()
    def q_values(self, obs, prev_action, prev_reward, state):
        st = tuple(torch.from_numpy(s) for s in state)
        q, st = self.net.unroll(torch.from_numpy(np.asarray(obs, np.float32)).unsqueeze(1),
                                torch.from_numpy(prev_action).unsqueeze(1), torch.from_numpy(prev_reward).unsqueeze(1), st)
        return q[:, 0].numpy(), tuple(s.numpy() for s in st)

    def act(self, obs, prev_action, prev_reward, state, epsilon: np.ndarray, rng: np.random.Generator,
            action_mask: np.ndarray | None = None):
        q, state = self.q_values(obs, prev_action, prev_reward, state)
        return epsilon_greedy(q, epsilon, rng, action_mask), state
