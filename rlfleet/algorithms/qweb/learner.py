"""QWeb's learner is R2D2's update (n-step double-Q over stored sequences, prioritized replay,
Polyak or hard target copies) on the QWeb network; QWeb itself trains a DQN with replay."""
from __future__ import annotations

import copy

import torch

from rlfleet.algorithms.qweb.config import QWebConfig
from rlfleet.algorithms.qweb.networks import QWebNetwork
from rlfleet.algorithms.r2d2.learner import R2D2Learner


class QWebLearner(R2D2Learner):
    def __init__(self, cfg: QWebConfig, env_spec, device: torch.device | str = "cpu"):
        self.cfg = cfg
        self.device = torch.device(device)
        self.online = QWebNetwork(env_spec.obs_shape, env_spec.num_actions, cfg).to(self.device)
        self.target = copy.deepcopy(self.online).requires_grad_(False)
        self.optimizer = torch.optim.Adam(self.online.parameters(), lr=cfg.lr, eps=cfg.adam_eps)
        self.num_updates = 0
