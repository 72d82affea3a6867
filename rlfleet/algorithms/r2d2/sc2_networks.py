"""SC2LE FullyConv (Vinyals et al. 2017, Sec. 4.3) as an R2D2 recurrent Q-network over SC2's
composite action (rlfleet/envs/sc2/env.py: index a = (f * V + v) * P + p).

Screen and minimap layers each go through conv 5x5/16 -> conv 3x3/32 ("same" padding, so the
spatial resolution is kept); non-spatial features are log-scaled by the env and broadcast over
the map. The state goes to an FC layer and R2D2's LSTM (fed the previous action's function and
the previous reward). Heads, one per part of the composite action, as in SC2LE:
- function id: Q_f [F] from the LSTM output,
- non-spatial argument: Q_v [V] from the LSTM output,
- spatial argument: Q_p [P] from a 1x1 conv over the spatial state with the LSTM output
  broadcast onto it (so the point depends on memory too), resampled to the action grid R x R.
They are combined like action branching (Tavakoli et al. 2018): Q(f, v, p) = Val + A_f + A_v + A_p,
each advantage centred, so the flat [F*V*P] Q-vector R2D2's learner and masks use is a sum of
small heads rather than F*V*P outputs.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from rlfleet.algorithms.r2d2.config import R2D2Config
from rlfleet.algorithms.r2d2.networks import R2D2Network


def _encoder(channels: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(channels, 16, 5, padding=2), nn.ReLU(), nn.Conv2d(16, 32, 3, padding=1), nn.ReLU())


class FullyConvTorso(nn.Module):
    """Flat observation -> (spatial state [B, 64 + n, S, S], flat features [B, hidden])."""

    def __init__(self, spec, hidden: int):
        super().__init__()
        self.screen_shape, self.minimap_shape = tuple(spec.screen_shape), tuple(spec.minimap_shape)
        self.n_screen = int(torch.Size(self.screen_shape).numel())
        self.n_minimap = int(torch.Size(self.minimap_shape).numel())
        self.nonspatial = spec.nonspatial_dim
        self.screen = _encoder(self.screen_shape[0])
        self.minimap = _encoder(self.minimap_shape[0])
        s = self.screen_shape[1]
        self.channels = 64 + self.nonspatial
        self.fc = nn.Sequential(nn.Flatten(), nn.Linear(self.channels * s * s, hidden), nn.ReLU())
        self.out_dim = hidden

    def forward(self, x):
        x = x.float()
        b = x.shape[0]
        screen = x[:, :self.n_screen].reshape((b,) + self.screen_shape)
        minimap = x[:, self.n_screen:self.n_screen + self.n_minimap].reshape((b,) + self.minimap_shape)
        player = x[:, self.n_screen + self.n_minimap:]
        s = self.screen_shape[1:]
        mm = self.minimap(minimap)
        if mm.shape[-2:] != s:  # FullyConv stacks both maps: bring the minimap to screen resolution
            mm = F.interpolate(mm, size=s, mode="nearest")
        spatial = torch.cat([self.screen(screen), mm, player[:, :, None, None].expand(-1, -1, *s)], dim=1)
        return spatial, self.fc(spatial)


class FullyConvR2D2Network(nn.Module):
    """Same `initial_state` / `unroll` API as R2D2Network; Q over the flat composite action."""

    def __init__(self, spec, cfg: R2D2Config):
        super().__init__()
        self.num_actions = spec.num_actions
        self.F, self.V, self.R = spec.num_functions, spec.num_values, spec.resolution
        assert self.F * self.V * self.R * self.R == self.num_actions, "Sc2Spec and num_actions disagree"
        self.torso = FullyConvTorso(spec, cfg.dueling_hidden)
        self.use_lstm = cfg.use_lstm
        self.hidden = cfg.lstm_size
        core_in = self.torso.out_dim + self.F + 1  # previous function (one-hot) and previous reward
        self.core = nn.LSTM(core_in, cfg.lstm_size, batch_first=True) if cfg.use_lstm else \
            nn.Sequential(nn.Linear(core_in, cfg.lstm_size), nn.ReLU())
        self.value = nn.Linear(cfg.lstm_size, 1)
        self.fn_head = nn.Linear(cfg.lstm_size, self.F)
        self.arg_head = nn.Linear(cfg.lstm_size, self.V)
        self.to_map = nn.Linear(cfg.lstm_size, 16)
        self.point_head = nn.Conv2d(self.torso.channels + 16, 1, 1)

    initial_state = R2D2Network.initial_state  # same LSTM core state (use_lstm, hidden)

    def unroll(self, obs, prev_action, prev_reward, state: tuple):
        """obs [B, T, D], prev_action [B, T], prev_reward [B, T] -> (Q [B, T, F*V*P], final state)."""
        b, t = prev_action.shape
        spatial, feats = self.torso(obs.reshape((b * t,) + obs.shape[2:]))
        prev_fn = torch.div(prev_action.long(), self.V * self.R * self.R, rounding_mode="floor")
        x = torch.cat([feats.reshape(b, t, -1), F.one_hot(prev_fn, self.F).float(),
                       prev_reward.float().unsqueeze(-1)], dim=-1)
        if self.use_lstm:
            if x.is_cuda:  # cuDNN wants one weight chunk (as in R2D2Network)
                self.core.flatten_parameters()
            h, c = state
            out, (h, c) = self.core(x, (h.unsqueeze(0).contiguous(), c.unsqueeze(0).contiguous()))
            state = (h.squeeze(0), c.squeeze(0))
        else:
            out = self.core(x)
        flat = out.reshape(b * t, -1)
        mem = self.to_map(flat)[:, :, None, None].expand(-1, -1, *spatial.shape[-2:])
        point = self.point_head(torch.cat([spatial, mem], dim=1))
        if point.shape[-1] != self.R:
            point = F.interpolate(point, size=(self.R, self.R), mode="bilinear", align_corners=False)
        a_p = point.reshape(b * t, -1)
        a_f, a_v = self.fn_head(flat), self.arg_head(flat)
        centre = lambda a: a - a.mean(-1, keepdim=True)  # noqa: E731
        q = (self.value(flat)[:, :, None, None] + centre(a_f)[:, :, None, None] + centre(a_v)[:, None, :, None]
             + centre(a_p)[:, None, None, :])
        return q.reshape(b, t, self.num_actions), state
