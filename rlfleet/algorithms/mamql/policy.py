"""MAMQL acting: each agent samples from its Boltzmann policy pi_i(a|s) ~ exp(Qbar_i(s, a) / alpha),
over legal actions. With epsilon 0 (greedy evaluation) it takes the argmax instead."""
from __future__ import annotations

import numpy as np
import torch

from rlfleet.algorithms.mamql.config import MAMQLConfig
from rlfleet.algorithms.mamql.networks import make_critic


class MAMQLPolicy:
    def __init__(self, cfg: MAMQLConfig, env_spec):
        self.net = make_critic(cfg, env_spec).eval()
        self.alpha = cfg.alpha

    def initial_state(self, batch_size: int) -> tuple:
        return ()

    def load_weights(self, weights: dict) -> None:
        self.net.load_state_dict(weights)

    @torch.inference_mode()
    def act(  # a critic that sees the others acts on its uniform marginal over their actions
self, obs, prev_action, prev_reward, state, epsilon, rng: np.random.Generator, action_mask=None):
        q = self.net(torch.from_numpy(np.asarray(obs, np.float32))).numpy().astype(np.float64)
        if action_mask is not None:
            q = np.where(action_mask, q, -np.inf)
        greedy = q.argmax(-1)
        logits = q / self.alpha
        p = np.exp(logits - logits.max(-1, keepdims=True))
        p /= p.sum(-1, keepdims=True)
        sampled = (p.cumsum(-1) < rng.random((len(p), 1))).sum(-1).clip(max=p.shape[1] - 1)
        actions = np.where(np.asarray(epsilon) > 0, sampled, greedy)
        return actions.astype(np.int64), state
