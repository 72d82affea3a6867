"""QWeb's deep Q-network (Gur et al. 2019, Sec. 3, Fig. 2) over rlfleet's MiniWoB encoding.

Encoders: instruction fields (key and value word embeddings) and DOM elements (tag, text, value,
id/classes words, geometry, flags); each (element, field) pair is encoded from their product and
the explicit DOM-vs-instruction match features. A core (feed-forward or LSTM, fed the page
summary - instruction, elements and how they match - and the previous action and reward) conditions three Q-heads as in QWeb:
Q_elem(e) picks the element, Q_type(e) in {click, type}, Q_field(e, f) which field to type.
They add up into the flat composite action the env exposes (a = e * (1 + F) + k):
  Q(e, click)   = Q_elem(e) + Q_type(e, click)
  Q(e, type f)  = Q_elem(e) + Q_type(e, type) + Q_field(e, f)
so the platform's masked argmax, double-Q targets and replay work unchanged.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from rlfleet.algorithms.qweb.config import QWebConfig
from rlfleet.envs.miniwob import encoding as enc


def _mlp(*sizes: int) -> nn.Sequential:
    layers = []
    for i in range(len(sizes) - 1):
        layers.append(nn.Linear(sizes[i], sizes[i + 1]))
        if i < len(sizes) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


class QWebNetwork(nn.Module):
    def __init__(self, obs_shape, num_actions: int, cfg: QWebConfig):
        super().__init__()
        self.L = L = enc.DomLayout.from_spec(obs_shape, num_actions)
        self.num_actions = num_actions
        d, h = cfg.embed_dim, cfg.hidden
        self.embed = nn.Embedding(enc.VOCAB, d, padding_idx=0)
        self.field_enc = _mlp(2 * d, h, h)
        self.elem_enc = _mlp(4 * d + enc.GEOMETRY + enc.FLAGS, h, h)
        self.pair_enc = _mlp(h + enc.MATCHES, h, h)
        self.use_lstm, self.hidden = cfg.use_lstm, cfg.lstm_size
        core_in = 3 * h + num_actions + 1
        self.core = nn.LSTM(core_in, cfg.lstm_size, batch_first=True) if cfg.use_lstm else _mlp(core_in, cfg.lstm_size)
        self.q_elem = _mlp(2 * h + cfg.lstm_size, h, 1)
        self.q_type = _mlp(2 * h + cfg.lstm_size, h, 2)
        self.q_field = _mlp(h + cfg.lstm_size, h, 1)

    def initial_state(self, batch_size: int, device=None) -> tuple:
        if not self.use_lstm:
            return ()
        z = torch.zeros(batch_size, self.hidden, device=device)
        return (z, z.clone())

    def _bow(self, ids: torch.Tensor) -> torch.Tensor:
        """Mean word embedding over the non-padding tokens of the last axis."""
        ids = ids.long()
        count = (ids > 0).sum(-1, keepdim=True).clamp(min=1)
        return self.embed(ids).sum(-2) / count

    def encode(self, obs: torch.Tensor):
        """obs [N, F + E, W] -> element h [N, E, H], element-to-instruction context [N, E, H],
        pairs z [N, E, F, H], page summary [N, 3H] (instruction, elements, their links)."""
        L = self.L
        nf = L.max_fields
        fields, elems = obs[:, :nf], obs[:, nf:]
        f_mask = fields[..., 0] > 0  # [N, F]
        e_mask = elems[..., L.PRESENT] > 0  # [N, E]
        f = self.field_enc(torch.cat([self._bow(fields[..., L.KEY:L.FVALUE]),
                                      self._bow(fields[..., L.FVALUE:L.FVALUE + enc.VALUE_TOKENS])], -1))
        e = self.elem_enc(torch.cat([
            self._bow(elems[..., L.TAG:L.TEXT]), self._bow(elems[..., L.TEXT:L.VALUE]),
            self._bow(elems[..., L.VALUE:L.ATTRS]), self._bow(elems[..., L.ATTRS:L.GEOM]),
            elems[..., L.GEOM:L.MATCH]], -1))
        match = elems[..., L.MATCH:L.MATCH + enc.MATCHES * nf].reshape(elems.shape[0], L.max_elements, nf, enc.MATCHES)
        z = self.pair_enc(torch.cat([e.unsqueeze(2) * f.unsqueeze(1), match], -1))  # [N, E, F, H]
        z = z * f_mask[:, None, :, None]
        ctx = z.amax(2)  # the element's strongest link to any field
        e = e * e_mask.unsqueeze(-1)
        instr = (f * f_mask.unsqueeze(-1)).sum(1) / f_mask.sum(1, keepdim=True).clamp(min=1)
        count = e_mask.sum(1, keepdim=True).clamp(min=1)
        page = (e * e_mask.unsqueeze(-1)).sum(1) / count
        # how the page as a whole matches the instruction (e.g. "the text is typed"): every element's
        # Q-heads see it through the core, not only the element that holds the match
        links = (ctx * e_mask.unsqueeze(-1)).sum(1) / count
        return e, ctx, z, torch.cat([instr, page, links], -1)

    def unroll(self, obs, prev_action, prev_reward, state: tuple):
        """obs [B, T, F + E, W], prev_action [B, T], prev_reward [B, T] -> (Q [B, T, A], state)."""
        b, t = prev_action.shape
        e, ctx, z, summary = self.encode(obs.reshape((b * t,) + obs.shape[2:]).float())
        x = torch.cat([summary.reshape(b, t, -1), F.one_hot(prev_action.long(), self.num_actions).float(),
                       prev_reward.float().unsqueeze(-1)], -1)
        if self.use_lstm:
            h, c = state
            s, (h, c) = self.core(x, (h.unsqueeze(0).contiguous(), c.unsqueeze(0).contiguous()))
            state = (h.squeeze(0), c.squeeze(0))
        else:
            s = torch.relu(self.core(x))
        s = s.reshape(b * t, 1, -1)
        E, nf = self.L.max_elements, self.L.max_fields
        es = torch.cat([e, ctx, s.expand(-1, E, -1)], -1)
        q_elem = self.q_elem(es)  # [N, E, 1]
        q_type = self.q_type(es)  # [N, E, 2]
        q_field = self.q_field(torch.cat([z, s.unsqueeze(2).expand(-1, E, nf, -1)], -1)).squeeze(-1)  # [N, E, F]
        q = torch.cat([q_elem + q_type[..., :1], q_elem + q_type[..., 1:] + q_field], -1)  # [N, E, 1 + F]
        return q.reshape(b, t, self.num_actions), state
