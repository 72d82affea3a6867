"""Critic Qbar_i(s, .) -> |A| per agent: an MLP, one per agent group when the env maps agents
to groups (routed by the observation's one-hot agent index, as for R2D2). The IQL-MA baseline's
critic Q_i(s, a_-i, .) also takes the other agents' one-hot actions."""
from __future__ import annotations

import itertools
import math

import torch
import torch.nn.functional as F
from torch import nn


def mlp(inp: int, hidden: list[int], out: int) -> nn.Sequential:
    layers, d = [], inp
    for h in hidden:
        layers += [nn.Linear(d, h), nn.ReLU()]
        d = h
    return nn.Sequential(*layers, nn.Linear(d, out))


class Critic(nn.Module):
    def __init__(self, obs_dim: int, num_actions: int, hidden: list[int], groups: tuple | None = None,
                 num_agents: int = 1, sees_others: bool = False):
        super().__init__()
        self.num_groups = (max(groups) + 1) if groups else 1
        self.num_agents, self.num_actions = num_agents, num_actions
        self.others = num_agents - 1 if sees_others else 0
        self.register_buffer("groups", torch.as_tensor(groups or (0,) * num_agents, dtype=torch.long),
                             persistent=False)
        inp = obs_dim + self.others * num_actions
        self.nets = nn.ModuleList(mlp(inp, hidden, num_actions) for _ in range(self.num_groups))

    def agent_of(self, obs: torch.Tensor) -> torch.Tensor:
        return obs[:, -self.num_agents:].argmax(-1)

    def others_onehot(self, obs: torch.Tensor, joint: torch.Tensor) -> torch.Tensor:
        """The other agents' actions (joint [B, K] without the row's own agent) as one-hots [B, (K-1) A]."""
        own = self.agent_of(obs)
        keep = torch.arange(self.num_agents, device=obs.device).unsqueeze(0) != own.unsqueeze(1)
        others = joint[keep].reshape(len(obs), self.others)
        return F.one_hot(others.long(), self.num_actions).float().reshape(len(obs), -1)

    def forward(self, obs: torch.Tensor, joint: torch.Tensor | None = None) -> torch.Tensor:
        """obs [B, D] -> Q [B, A]. A critic that sees the others needs their actions `joint` [B, K],
        or, without them, averages over all of them (uniform marginal)."""
        obs = obs.reshape(obs.shape[0], -1).float()
        if self.others:
            if joint is None:
                return self.marginal(obs)
            return self._route(torch.cat([obs, self.others_onehot(obs, joint)], dim=-1), obs)
        return self._route(obs, obs)

    def marginal(self, obs: torch.Tensor) -> torch.Tensor:
        qs = []
        for combo in itertools.product(range(self.num_actions), repeat=self.others):
            others = torch.as_tensor(combo, device=obs.device).expand(len(obs), -1)
            onehot = F.one_hot(others, self.num_actions).float().reshape(len(obs), -1)
            qs.append(self._route(torch.cat([obs, onehot], dim=-1), obs))
        return torch.stack(qs).mean(0)

    def _route(self, x: torch.Tensor, obs: torch.Tensor) -> torch.Tensor:
        if self.num_groups == 1:
            return self.nets[0](x)
        group = self.groups[self.agent_of(obs)]
        q = None
        for g, net in enumerate(self.nets):
            rows = (group == g).nonzero().squeeze(-1)
            if rows.numel():
                q_g = net(x[rows])
                q = q if q is not None else q_g.new_empty((x.shape[0], q_g.shape[1]))
                q[rows] = q_g
        return q


def make_critic(cfg, env_spec) -> Critic:
    return Critic(int(math.prod(env_spec.obs_shape)), env_spec.num_actions, cfg.hidden, env_spec.agent_groups,
                  num_agents=env_spec.agents, sees_others=cfg.objective == "iql-ma" and env_spec.agents > 1)
