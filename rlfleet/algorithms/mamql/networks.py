"""Critic Qbar_i(s, .) -> |A| per agent: an MLP, one per agent group when the env maps agents
to groups (routed by the observation's one-hot agent index, as for R2D2)."""
from __future__ import annotations

import torch
from torch import nn


def mlp(inp: int, hidden: list[int], out: int) -> nn.Sequential:
    layers, d = [], inp
    for h in hidden:
        layers += [nn.Linear(d, h), nn.ReLU()]
        d = h
    return nn.Sequential(*layers, nn.Linear(d, out))


class Critic(nn.Module):
    def __init__(self, obs_dim: int, num_actions: int, hidden: list[int], groups: tuple | None = None):
        super().__init__()
        self.num_groups = (max(groups) + 1) if groups else 1
        self.num_agents = len(groups) if groups else 0
        self.register_buffer("groups", torch.as_tensor(groups or (0,), dtype=torch.long), persistent=False)
        self.nets = nn.ModuleList(mlp(obs_dim, hidden, num_actions) for _ in range(self.num_groups))

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        """obs [B, D] float -> Q [B, A]."""
        obs = obs.reshape(obs.shape[0], -1).float()
        if self.num_groups == 1:
            return self.nets[0](obs)
        group = self.groups[obs[:, -self.num_agents:].argmax(-1)]
        q = None
        for g, net in enumerate(self.nets):
            rows = (group == g).nonzero().squeeze(-1)
            if rows.numel():
                q_g = net(obs[rows])
                q = q if q is not None else q_g.new_empty((obs.shape[0], q_g.shape[1]))
                q[rows] = q_g
        return q
