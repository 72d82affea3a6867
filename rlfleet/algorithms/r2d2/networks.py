"""R2D2 network: torso -> LSTM over [features, one-hot prev action, prev reward] -> dueling head.

Kapturowski et al. 2019, Sec. 2-3; dueling head from Wang et al. 2016 (Q = V + A - mean A).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from rlfleet.algorithms.r2d2.config import R2D2Config


class ConvTorso(nn.Module):
    """Nature-DQN convolutions for (C, H, W) image observations scaled to [0, 1]."""

    def __init__(self, obs_shape):
        super().__init__()
        c, h, w = obs_shape
        self.net = nn.Sequential(
            nn.Conv2d(c, 32, 8, 4), nn.ReLU(), nn.Conv2d(32, 64, 4, 2), nn.ReLU(),
            nn.Conv2d(64, 64, 3, 1), nn.ReLU(), nn.Flatten())
        with torch.no_grad():
            self.out_dim = self.net(torch.zeros(1, c, h, w)).shape[1]

    def forward(self, x):
        return self.net(x.float() / 255.0 if x.dtype == torch.uint8 else x.float())


class MLPTorso(nn.Module):
    def __init__(self, obs_shape, hidden: list[int]):
        super().__init__()
        layers, d = [], int(math.prod(obs_shape))
        for h in hidden:
            layers += [nn.Linear(d, h), nn.ReLU()]
            d = h
        self.net = nn.Sequential(nn.Flatten(), *layers)
        self.out_dim = d

    def forward(self, x):
        return self.net(x.float())


class R2D2Network(nn.Module):
    """Recurrent dueling Q-network. `unroll` runs a [B, T] sequence from a given state.

    The state is a tuple (h, c) of [B, H] tensors; the feed-forward ablation has an empty state.
    """

    def __init__(self, obs_shape, num_actions: int, cfg: R2D2Config):
        super().__init__()
        self.num_actions = num_actions
        self.torso = ConvTorso(obs_shape) if len(obs_shape) == 3 else MLPTorso(obs_shape, cfg.mlp_hidden)
        core_in = self.torso.out_dim + num_actions + 1
        self.use_lstm = cfg.use_lstm
        if cfg.use_lstm:
            self.core = nn.LSTM(core_in, cfg.lstm_size, batch_first=True)
        else:
            self.core = nn.Sequential(nn.Linear(core_in, cfg.lstm_size), nn.ReLU())
        self.hidden = cfg.lstm_size
        self.dueling = cfg.dueling
        if cfg.dueling:
            self.value = nn.Sequential(nn.Linear(cfg.lstm_size, cfg.dueling_hidden), nn.ReLU(), nn.Linear(cfg.dueling_hidden, 1))
            self.advantage = nn.Sequential(nn.Linear(cfg.lstm_size, cfg.dueling_hidden), nn.ReLU(),
                                           nn.Linear(cfg.dueling_hidden, num_actions))
        else:
            self.q = nn.Sequential(nn.Linear(cfg.lstm_size, cfg.dueling_hidden), nn.ReLU(), nn.Linear(cfg.dueling_hidden, num_actions))

    def initial_state(self, batch_size: int, device=None) -> tuple:
        if not self.use_lstm:
            return ()
        z = torch.zeros(batch_size, self.hidden, device=device)
        return (z, z.clone())

    def unroll(self, obs, prev_action, prev_reward, state: tuple):
        """obs [B, T, ...], prev_action [B, T] (int), prev_reward [B, T] -> (Q [B, T, A], final state)."""
        b, t = prev_action.shape
        feats = self.torso(obs.reshape((b * t,) + obs.shape[2:])).reshape(b, t, -1)
        x = torch.cat([feats, F.one_hot(prev_action.long(), self.num_actions).float(),
                       prev_reward.float().unsqueeze(-1)], dim=-1)
        if self.use_lstm:
            if x.is_cuda:  # cuDNN wants one weight chunk; deepcopy/load_state_dict break it
                self.core.flatten_parameters()
            h, c = state
            out, (h, c) = self.core(x, (h.unsqueeze(0).contiguous(), c.unsqueeze(0).contiguous()))
            state = (h.squeeze(0), c.squeeze(0))
        else:
            out = self.core(x)
        if self.dueling:
            adv = self.advantage(out)
            q = self.value(out) + adv - adv.mean(dim=-1, keepdim=True)
        else:
            q = self.q(out)
        return q, state


class GroupedR2D2Network(nn.Module):
    """One R2D2Network per agent group (multi-agent policy mapping), behind the same `unroll` API.

    Each sequence or slot belongs to one agent, read from the one-hot agent index the multi-agent
    env appends to the observation (its last `num_agents` entries), so runners, replay and the
    loss need no extra column; `groups[k]` is agent k's network.
    """

    def __init__(self, obs_shape, num_actions: int, cfg: R2D2Config, groups: tuple[int, ...]):
        super().__init__()
        self.num_agents = len(groups)
        self.register_buffer("groups", torch.as_tensor(groups, dtype=torch.long), persistent=False)
        self.nets = nn.ModuleList(R2D2Network(obs_shape, num_actions, cfg) for _ in range(max(groups) + 1))
        self.num_actions, self.use_lstm, self.hidden = num_actions, cfg.use_lstm, cfg.lstm_size

    def initial_state(self, batch_size: int, device=None) -> tuple:
        return self.nets[0].initial_state(batch_size, device)

    def group_of(self, obs: torch.Tensor) -> torch.Tensor:
        """[B] group index from obs [B, T, ...]: the agent one-hot of the first (always valid) step."""
        agent = obs[:, 0].reshape(obs.shape[0], -1)[:, -self.num_agents:].argmax(-1)
        return self.groups[agent]

    def unroll(self, obs, prev_action, prev_reward, state: tuple):
        group = self.group_of(obs)
        q = None
        new_state = tuple(torch.empty_like(s) for s in state)
        for g, net in enumerate(self.nets):
            rows = (group == g).nonzero().squeeze(-1)
            if rows.numel() == 0:
                continue
            q_g, s_g = net.unroll(obs[rows], prev_action[rows], prev_reward[rows], tuple(s[rows] for s in state))
            if q is None:
                q = q_g.new_empty(obs.shape[:2] + (self.num_actions,))
            q[rows] = q_g
            for out, s in zip(new_state, s_g):
                out[rows] = s
        return q, new_state


def make_network(env_spec, cfg: R2D2Config) -> nn.Module:
    """A single shared network, or one per agent group when the env maps agents to groups; envs
    whose spec names a network of their own (sc2: composite actions) get that one."""
    if getattr(env_spec, "network", None) == "sc2_fullyconv":
        from rlfleet.algorithms.r2d2.sc2_networks import FullyConvR2D2Network

        return FullyConvR2D2Network(env_spec, cfg)
    groups = getattr(env_spec, "agent_groups", None)
    if groups and max(groups) > 0:
        return GroupedR2D2Network(env_spec.obs_shape, env_spec.num_actions, cfg, tuple(groups))
    return R2D2Network(env_spec.obs_shape, env_spec.num_actions, cfg)
