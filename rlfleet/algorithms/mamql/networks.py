"""Critic Qbar_i(s, .) -> |A| per agent: an MLP, or conv layers on the observation's leading map
then an MLP (`torso: conv`), one per agent group when the env maps agents to groups (routed by the
observation's one-hot agent index, as for R2D2). The IQL-MA baseline's critic Q_i(s, a_-i, .) also
takes the other agents' one-hot actions."""
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


class ConvQ(nn.Module):
    """x [B, C*H*W + E] -> [B, out]: 3x3 convs (default strides 1, 2, 2, ...; ReLU) on the leading
    C x H x W map, flattened, the E remaining inputs appended, then an MLP. Translation-equivariant
    features: 'a gem next to me' is the same filter wherever it happens."""

    def __init__(self, map_shape, inp: int, hidden: list[int], out: int, channels: list[int],
                 strides: list[int] | None = None):
        super().__init__()
        self.map_shape = tuple(int(x) for x in map_shape)
        self.map_dim = math.prod(self.map_shape)
        if inp < self.map_dim:
            from rlfleet.platform.errors import UserError

            raise UserError(f"algorithm.map_shape {list(self.map_shape)} needs {self.map_dim} inputs, the "
                            f"observation has {inp}")
        strides = strides or [1] + [2] * (len(channels) - 1)
        if len(strides) != len(channels):
            from rlfleet.platform.errors import UserError

            raise UserError(f"algorithm.conv_strides {strides}: one per conv layer ({len(channels)})")
        layers, c, (h, w) = [], self.map_shape[0], self.map_shape[1:]
        for ch, stride in zip(channels, strides):
            layers += [nn.Conv2d(c, ch, 3, stride=stride, padding=1), nn.ReLU()]
            c, h, w = ch, (h - 1) // stride + 1, (w - 1) // stride + 1
        self.conv = nn.Sequential(*layers, nn.Flatten())
        self.head = mlp(c * h * w + inp - self.map_dim, hidden, out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.conv(x[:, :self.map_dim].reshape((len(x),) + self.map_shape))
        return self.head(torch.cat([z, x[:, self.map_dim:]], dim=-1))


class Critic(nn.Module):
    def __init__(self, obs_dim: int, num_actions: int, hidden: list[int], groups: tuple | None = None,
                 num_agents: int = 1, sees_others: bool = False, map_shape=None, conv_channels=(16, 32, 32),
                 conv_strides=None):
        super().__init__()
        self.num_groups = (max(groups) + 1) if groups else 1
        self.num_agents, self.num_actions = num_agents, num_actions
        self.others = num_agents - 1 if sees_others else 0
        self.register_buffer("groups", torch.as_tensor(groups or (0,) * num_agents, dtype=torch.long),
                             persistent=False)
        inp = obs_dim + self.others * num_actions
        make = (lambda: ConvQ(map_shape, inp, hidden, num_actions, list(conv_channels), conv_strides)) if map_shape else (
            lambda: mlp(inp, hidden, num_actions))
        self.nets = nn.ModuleList(make() for _ in range(self.num_groups))

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
    if cfg.torso == "conv" and not cfg.map_shape:
        from rlfleet.platform.errors import UserError

        raise UserError("algorithm.torso: conv needs algorithm.map_shape: [C, H, W], the map the flattened "
                        "observation starts with (Gems: [5, 15, 15], egocentric [5, 29, 29])")
    return Critic(int(math.prod(env_spec.obs_shape)), env_spec.num_actions, cfg.hidden, env_spec.agent_groups,
                  num_agents=env_spec.agents, sees_others=cfg.objective == "iql-ma" and env_spec.agents > 1,
                  map_shape=cfg.map_shape if cfg.torso == "conv" else None, conv_channels=cfg.conv_channels,
                  conv_strides=cfg.conv_strides)
