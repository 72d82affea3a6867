"""Critic Qbar_i(s, .) -> |A| per agent: an MLP, conv layers on the observation's leading map then
an MLP (`torso: conv`), or a transformer over the map's occupied cells (`torso: entities`), one per
agent group when the env maps agents to groups (routed by the observation's one-hot agent index, as
for R2D2). The IQL-MA baseline's critic Q_i(s, a_-i, .) also takes the other agents' one-hot actions."""
from __future__ import annotations

import itertools
import math

import torch
import torch.nn.functional as F
from torch import nn

MARGINAL_ROWS = 8192  # rows per critic call when averaging over the others' actions (bounds memory)


def mlp(inp: int, hidden: list[int], out: int) -> nn.Sequential:
    layers, d = [], inp
    for h in hidden:
        layers += [nn.Linear(d, h), nn.ReLU()]
        d = h
    return nn.Sequential(*layers, nn.Linear(d, out))


def _map_dims(map_shape, inp: int) -> tuple[tuple, int]:
    """(C, H, W) and C*H*W of the map the flattened observation starts with; a clear error if it cannot."""
    shape = tuple(int(x) for x in map_shape)
    if inp < math.prod(shape):
        from rlfleet.platform.errors import UserError

        raise UserError(f"algorithm.map_shape {list(shape)} needs {math.prod(shape)} inputs, the observation has {inp}")
    return shape, math.prod(shape)


class ConvQ(nn.Module):
    """x [B, C*H*W + E] -> [B, out]: 3x3 convs (default strides 1, 2, 2, ...; ReLU) on the leading
    C x H x W map, flattened, the E remaining inputs appended, then an MLP. Translation-equivariant
    features: 'a gem next to me' is the same filter wherever it happens."""

    def __init__(self, map_shape, inp: int, hidden: list[int], out: int, channels: list[int],
                 strides: list[int] | None = None):
        super().__init__()
        self.map_shape, self.map_dim = _map_dims(map_shape, inp)
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


class EntityQ(nn.Module):
    """x [B, C*H*W + E] -> [B, out]: the leading C x H x W map's nonzero cells as a set of tokens
    (value-scaled one-hot channel, row and column centred on the map), one more token for the E
    remaining inputs, a transformer encoder over them, an MLP on that last token. Why: on sparse maps
    (a few agents and items on a grid) the decision hinges on relations between far-apart objects
    (which gem is nearest to *both* agents), one attention step here but a deep stack for 3x3 convs;
    the cost grows with the number of objects, not with the map's area. The last `late` inputs (IQL-MA's
    other agents' actions) skip the encoder and join its output token at the head, so averaging over
    them (`Critic.marginal`) encodes each observation once."""

    def __init__(self, map_shape, inp: int, hidden: list[int], out: int, dim: int = 64, layers: int = 3,
                 heads: int = 4, max_entities: int = 16, late: int = 0):
        super().__init__()
        self.late = late
        self.map_shape, self.map_dim = _map_dims(map_shape, inp)
        self.max_entities = min(max_entities, self.map_dim)
        c, h, w = self.map_shape
        self.register_buffer("centre", torch.tensor([(h - 1) / 2, (w - 1) / 2]), persistent=False)
        self.cell = nn.Linear(c + 2, dim)
        self.rest = nn.Linear(max(inp - self.map_dim - late, 1), dim)
        layer = nn.TransformerEncoderLayer(dim, heads, dim_feedforward=2 * dim, dropout=0.0, batch_first=True,
                                           norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.head = mlp(dim + late, hidden, out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.late:
            return self.head(torch.cat([self.encode(x[:, :-self.late]), x[:, -self.late:]], -1))
        return self.head(self.encode(x))

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """x [B, C*H*W + E] without the late inputs -> the encoder's output token [B, dim]."""
        c, h, w = self.map_shape
        m = x[:, :self.map_dim]
        # as many token slots as this batch's most crowded map needs (padding is masked, so fewer slots
        # give the same output at a fraction of the cost: Gems maps hold 2-11 objects of 16 slots)
        most = int(m.ne(0).sum(1).max()) if len(x) else 0
        if most > self.max_entities:
            from rlfleet.platform.errors import UserError

            raise UserError(f"algorithm.max_entities {self.max_entities}: an observation's map has {most} nonzero "
                            f"cells; raise it")
        vals, idx = m.abs().topk(max(most, 1), dim=1)  # the occupied cells first
        ch, cell = idx // (h * w), idx % (h * w)
        rc = (torch.stack([cell // w, cell % w], -1).float() - self.centre) / self.centre.clamp(min=1)
        onehot = F.one_hot(ch, c).float() * m.gather(1, idx).unsqueeze(-1)
        tokens = self.cell(torch.cat([onehot, rc], -1))
        rest = x[:, self.map_dim:] if x.shape[1] > self.map_dim else x.new_zeros(len(x), 1)
        seq = torch.cat([self.rest(rest).unsqueeze(1), tokens], 1)
        pad = torch.cat([vals.new_zeros(len(x), 1, dtype=torch.bool), vals.eq(0)], 1)
        return self.encoder(seq, src_key_padding_mask=pad)[:, 0]


class Critic(nn.Module):
    def __init__(self, obs_dim: int, num_actions: int, hidden: list[int], groups: tuple | None = None,
                 num_agents: int = 1, sees_others: bool = False, map_shape=None, conv_channels=(16, 32, 32),
                 conv_strides=None, torso: str = "mlp", entity: dict | None = None):
        super().__init__()
        self.num_groups = (max(groups) + 1) if groups else 1
        self.num_agents, self.num_actions = num_agents, num_actions
        self.others = num_agents - 1 if sees_others else 0
        self.register_buffer("groups", torch.as_tensor(groups or (0,) * num_agents, dtype=torch.long),
                             persistent=False)
        inp = obs_dim + self.others * num_actions
        if torso == "entities":
            late = self.others * num_actions
            make = lambda: EntityQ(map_shape, inp, hidden, num_actions, **(entity or {}), late=late)  # noqa: E731
        elif torso == "conv":
            make = lambda: ConvQ(map_shape, inp, hidden, num_actions, list(conv_channels), conv_strides)  # noqa: E731
        else:
            make = lambda: mlp(inp, hidden, num_actions)  # noqa: E731
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
        """Mean of Q over every joint action of the others: each group's rows through its network
        once per chunk of stacked combinations (up to MARGINAL_ROWS rows per call), not one call per
        combination; the entity torso encodes each observation once and runs only its head per
        combination (the others' actions join after its encoder)."""
        combos = torch.tensor(list(itertools.product(range(self.num_actions), repeat=self.others)),
                              device=obs.device)  # [C, K-1]
        onehots = F.one_hot(combos, self.num_actions).float().reshape(len(combos), -1)  # [C, (K-1) A]

        def mean_over_others(net: nn.Module, rows: torch.Tensor) -> torch.Tensor:
            z, head = (net.encode(rows), net.head) if isinstance(net, EntityQ) else (rows, net)
            n, total = len(z), None
            for part in onehots.split(max(1, MARGINAL_ROWS // max(n, 1))):
                c = len(part)
                x = torch.cat([z.unsqueeze(0).expand(c, n, -1), part.unsqueeze(1).expand(c, n, -1)], -1)
                q = head(x.reshape(c * n, -1)).reshape(c, n, -1).sum(0)
                total = q if total is None else total + q
            return total / len(onehots)

        return self._route(obs, obs, mean_over_others)

    def _route(self, x: torch.Tensor, obs: torch.Tensor, apply=None) -> torch.Tensor:
        """Each row through its agent group's network: net(x), or apply(net, x)."""
        apply = apply or (lambda net, rows: net(rows))
        if self.num_groups == 1:
            return apply(self.nets[0], x)
        group = self.groups[self.agent_of(obs)]
        q = None
        for g, net in enumerate(self.nets):
            rows = (group == g).nonzero().squeeze(-1)
            if rows.numel():
                q_g = apply(net, x[rows])
                q = q if q is not None else q_g.new_empty((x.shape[0], q_g.shape[1]))
                q[rows] = q_g
        return q


def make_critic(cfg, env_spec) -> Critic:
    if cfg.torso in ("conv", "entities") and not cfg.map_shape:
        from rlfleet.platform.errors import UserError

        raise UserError(f"algorithm.torso: {cfg.torso} needs algorithm.map_shape: [C, H, W], the map the flattened "
                        "observation starts with (Gems: [5, 15, 15], egocentric [5, 29, 29])")
    return Critic(int(math.prod(env_spec.obs_shape)), env_spec.num_actions, cfg.hidden, env_spec.agent_groups,
                  num_agents=env_spec.agents, sees_others=cfg.objective == "iql-ma" and env_spec.agents > 1,
                  map_shape=cfg.map_shape, conv_channels=cfg.conv_channels, conv_strides=cfg.conv_strides,
                  torso=cfg.torso, entity={"dim": cfg.entity_dim, "layers": cfg.entity_layers,
                                           "heads": cfg.entity_heads, "max_entities": cfg.max_entities})
