"""The learner core: one gradient step per `update`, on a prioritized batch from replay.

A batch holds B sequences of T = 1 step (see SPEC.sequence_layout): obs [B, 2, D] (the step's
observation and the next one), action/reward/terminal/mask [B, 1], is_weight [B].
"""
import copy

import numpy as np

import torch

from rlfleet.platform import batch as B
from rlfleet_example.dqn.networks import QNetwork


class DQNLearner:
    def __init__(self, cfg, env_spec, device="cpu"):
        self.cfg, self.device = cfg, torch.device(device)
        self.online = QNetwork(int(np.prod(env_spec.obs_shape)), env_spec.num_actions, cfg.hidden).to(self.device)
        self.target = copy.deepcopy(self.online).requires_grad_(False)
        self.optimizer = torch.optim.Adam(self.online.parameters(), lr=cfg.lr)
        self.num_updates = 0

    def update(self, batch: dict):
        """Returns (new priorities [B], stats): tensors, so a GPU learner never waits here."""
        obs, next_obs = batch[B.OBS][:, 0], batch[B.OBS][:, 1]
        action, reward = batch[B.ACTION][:, 0].long(), batch[B.REWARD][:, 0]
        not_done, mask = 1.0 - batch[B.TERMINAL][:, 0], batch[B.MASK][:, 0]
        with torch.no_grad():  # double DQN: the online net picks a', the target net values it
            a_next = self.online(next_obs).argmax(-1, keepdim=True)
            y = reward + self.cfg.gamma * not_done * self.target(next_obs).gather(-1, a_next).squeeze(-1)
        q = self.online(obs).gather(-1, action.unsqueeze(-1)).squeeze(-1)
        td = (q - y) * mask
        loss = (batch[B.WEIGHT] * torch.nn.functional.smooth_l1_loss(q * mask, y * mask, reduction="none")).mean()
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.num_updates += 1
        if self.num_updates % self.cfg.target_update_period == 0:
            self.target.load_state_dict(self.online.state_dict())
        return td.detach().abs(), {"loss": loss.detach(), "q_mean": q.detach().mean()}

    # what the platform needs besides `update`: weights for the runners, and checkpoint state
    def acting_weights(self) -> dict:
        return {k: v.detach().to("cpu", copy=True) for k, v in self.online.state_dict().items()}

    def state_dict(self) -> dict:
        return {"online": self.online.state_dict(), "target": self.target.state_dict(),
                "optimizer": self.optimizer.state_dict(), "num_updates": self.num_updates}

    def load_state_dict(self, state: dict) -> None:
        self.online.load_state_dict(state["online"])
        self.target.load_state_dict(state["target"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.num_updates = int(state["num_updates"])
