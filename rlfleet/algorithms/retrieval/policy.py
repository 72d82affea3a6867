"""Acting with a retrieval-augmented network: one batched forward step for all slots of a runner.

The retrieval set's keys and values (encoder + forward/backward GRUs over every retrieved
trajectory) are computed once per weight load, not per step. Per step the policy only runs the
slot GRU, the query, the two-stage top-k attention over the cached keys, the bottleneck mean and
the slot self-attention, and it runs them in plain numpy (`NumpyRetrievalStep`, the same math as
`RetrievalProcess.step`, checked by a test): at acting sizes torch's per-op dispatch, not
arithmetic, is what retrieval costs. The bottleneck uses its mean when acting (no sampling noise).
"""
from __future__ import annotations

import math

import numpy as np
import torch

from rlfleet.algorithms.retrieval import kernels
from rlfleet.platform.policies import epsilon_greedy


def _np(t: torch.Tensor) -> np.ndarray:
    return np.ascontiguousarray(t.detach().float().numpy())


class NumpyRetrievalStep:
    """`RetrievalProcess.step` for acting (bottleneck mean, no KL) over one cached retrieval set
    shared by all rows, in numpy; built once per (weights, retrieval set).

    The same math as the torch step (a test checks Q-values, actions and state to 1e-5), with
    everything that does not depend on the step folded into cached tables (at acting sizes the
    per-op overhead, not arithmetic, is what retrieval costs):
    - only the valid steps' keys are kept, pre-multiplied by the query LayerNorm's gain and
      1/sqrt(d); its bias becomes a per-step logit offset;
    - z = mu(g) = sum_j alpha_j (v_j W_mu + b_mu) (the kept weights sum to 1), so each step's row
      of `table` holds z_j and the products that only z feeds: z_j A and z_j W_v of the slot
      self-attention and z_j W'_v of u;
    - the slot self-attention's logits (m_i W_q + b_q) . (m_j W_k + b_k) / sqrt(M) keep only the
      terms that vary with j: (m_i A + c) . m_j with A = W_q W_k^T / sqrt(M), c = b_q W_k^T / sqrt(M);
      gamma's (s W_q) . (z W'_e) / sqrt(d) is z . (s W_gamma);
    - the slot GRU's r/z gates are pre-halved (sigmoid(x) = (tanh(x/2) + 1)/2) and its input
      projection runs once per row, not once per (row, slot).
    The top-k trajectories are ranked by unnormalized attention mass (the same order), and the
    kept steps' weights are their exp(logit) renormalized, which is their softmax. The new memory
    is bounded by tanh, as in the torch step."""

    use_kernel = True  # compiled loops when numba is installed (kernels.py); False: numpy only

    def __init__(self, proc, memory: dict):
        cfg = proc.cfg
        self.k, self.ms, self.d = k, ms, d = cfg.num_slots, cfg.slot_size, cfg.key_size
        _, self.n, l, _ = memory["keys"].shape
        self.k1 = min(cfg.top_k_trajectories, self.n)
        valid = memory["valid"][0].reshape(-1)
        steps = torch.nonzero(valid)[:, 0]  # the valid steps, flat over [N, L]
        self.k2 = min(cfg.top_k_steps, self.k1 * l, len(steps))
        self.owner = (steps // l).numpy().astype(np.int64)
        self.starts = np.searchsorted(self.owner, np.arange(self.n + 1))  # trajectory i: steps starts[i]:starts[i+1]
        self.member = np.zeros((len(steps), self.n), np.float32)  # step -> its trajectory
        self.member[np.arange(len(steps)), self.owner] = 1.0
        with torch.no_grad():
            dd = lambda t: t.detach().double()  # noqa: E731  (fold in float64, store float32)
            gru, (lin_q, ln) = proc.slot_gru, proc.f_query
            half = torch.ones(3 * ms, dtype=torch.float64)
            half[:2 * ms] = 0.5
            w_ih, w_hh, b_ih, b_hh = dd(gru.weight_ih).T, dd(gru.weight_hh).T, dd(gru.bias_ih), dd(gru.bias_hh)
            b_in = b_ih + torch.cat([b_hh[:2 * ms], torch.zeros(ms, dtype=torch.float64)])
            gamma = dd(proc.u_query.weight).T @ dd(proc.u_key.weight) / math.sqrt(d)  # [E, M]
            self.w_s = _np(torch.cat([w_ih * half, gamma], 1))                       # s -> GRU input gates, gamma query
            self.b_s = _np(torch.cat([b_in * half, torch.zeros(ms, dtype=torch.float64)]))
            self.w_hh = _np(w_hh * 0.5)  # all three hidden gates halved: r * n_h = (t_r + 1) * n_h / 2
            bias_h = torch.cat([torch.zeros(2 * ms, dtype=torch.float64), b_hh[2 * ms:]])
            self.c_hh = _np((dd(proc.slot_bias) @ w_hh + bias_h) * 0.5)               # [K, 3M]: slot bias, b_hn
            self.slot_bias = _np(proc.slot_bias)
            w_qkv, b_qkv = dd(proc.attn_qkv.weight), dd(proc.attn_qkv.bias)
            a = w_qkv[:ms].T @ w_qkv[ms:2 * ms] / math.sqrt(ms)
            c = b_qkv[:ms] @ w_qkv[ms:2 * ms] / math.sqrt(ms)
            w_v, b_v = w_qkv[2 * ms:].T, b_qkv[2 * ms:]
            w_q, b_q = dd(lin_q.weight).T, dd(lin_q.bias)  # centered: LayerNorm's x - mean(x) for free
            self.w_p = _np(torch.cat([w_q - w_q.mean(1, keepdim=True), a, w_v], 1))  # mhat -> query, A, W_v
            self.b_p = _np(torch.cat([b_q - b_q.mean(), c, b_v]))
            self.mean_sq = np.full((d, 1), 1.0 / d, np.float32)
            self.ln_eps = np.float32(ln.eps)
            keys = dd(memory["keys"][0].reshape(-1, d)[steps])
            self.keys_t = _np((keys * dd(ln.weight)).T / math.sqrt(d))               # [d, valid steps]
            self.offset = _np(keys @ dd(ln.bias) / math.sqrt(d))
            # |logit| <= ||LayerNorm(x)|| ||key|| + |offset| with ||LayerNorm(x)|| <= sqrt(d): exp cannot
            # overflow or underflow without subtracting the row maximum when this bound is small
            bound = math.sqrt(d) * float(np.sqrt((self.keys_t.astype(np.float64) ** 2).sum(0)).max(initial=0.0)) \
                + float(np.abs(self.offset).max(initial=0.0))
            self.shift = bound > 40.0
            head = proc.posterior if cfg.bottleneck else proc.to_z
            w_z, b_z = dd(head.weight)[:ms].T, dd(head.bias)[:ms]
            z = dd(memory["values"][0].reshape(-1, ms)[steps]) @ w_z + b_z
            tab = lambda z: torch.cat([z, z @ a, z @ w_v, z @ dd(proc.u_value.weight).T], -1)  # noqa: E731
            self.table = _np(tab(z))                                                  # [valid steps, 3M + E]
            self.empty_row = _np(tab(b_z))  # no valid step at all (e.g. an empty bank): g = 0, z = b_mu
        self._rows = np.zeros((0, 1), np.int64)

    def __call__(self, s: np.ndarray, m: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """s [B, E], m [B, K*M] -> (u [B, E], m [B, K*M])."""
        if kernels.ENABLED and self.use_kernel and len(self.table):
            return self._compiled(s, m)
        b, k, ms, d = len(s), self.k, self.ms, self.d
        bk = b * k
        sa, mhat = self._slot_gru(s, m)
        p = mhat @ self.w_p + self.b_p
        zt = self._read(p[:, :d], bk) if len(self.table) else np.broadcast_to(self.empty_row, (bk, len(self.empty_row)))
        z = zt[:, :ms]
        m_pre = (mhat + z).reshape(b, k, ms)
        # slot self-attention logits (row i, column j) and gamma's logits, one softmax over the slots
        logits = np.concatenate([np.einsum("bim,bjm->bij", (p[:, d:d + ms] + zt[:, ms:2 * ms]).reshape(b, k, ms), m_pre),
                                 np.einsum("bjm,bm->bj", z.reshape(b, k, ms), sa[:, 3 * ms:])[:, None]], axis=1)
        att = np.exp(logits - np.maximum.reduce(logits, axis=-1, keepdims=True))
        att /= np.add.reduce(att, axis=-1, keepdims=True)
        m = m_pre + att[:, :k] @ (p[:, d + ms:] + zt[:, 2 * ms:3 * ms]).reshape(b, k, ms)
        np.tanh(m, out=m)  # the memory's bound
        u = (att[:, k:] @ zt[:, 3 * ms:].reshape(b, k, -1))[:, 0]
        return u, m.reshape(b, k * ms)

    def _compiled(self, s: np.ndarray, m: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The same step with the top-k read and the slot attention in compiled loops
        (kernels.py), matrix products, exp and tanh in numpy: ~20 calls instead of ~40."""
        b, k, ms, d = len(s), self.k, self.ms, self.d
        bk = b * k
        sa, mhat = self._slot_gru(s, m)
        p = mhat @ self.w_p
        p += self.b_p
        e = self._logits(p[:, :d])
        np.exp(e, out=e)
        zt = np.empty((bk, self.table.shape[1]), np.float32)
        kernels.top_k_read(e, self.starts, self.k1, self.k2, self.table, zt)
        m_out, u = np.empty((b, k * ms), np.float32), np.empty((b, self.table.shape[1] - 3 * ms), np.float32)
        kernels.slot_attention(p, zt, mhat, sa, k, d, m_out, u)
        np.tanh(m_out, out=m_out)
        return u, m_out

    def _slot_gru(self, s: np.ndarray, m: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """PyTorch gate order r, z, n: r = (t_r + 1)/2, z = (t_z + 1)/2 with t = tanh(half pre-activation).
        -> (s's projections [B, 4M], mhat [B*K, M])."""
        b, k, ms = len(s), self.k, self.ms
        sa = s @ self.w_s + self.b_s
        gh = (m.reshape(b * k, ms) @ self.w_hh).reshape(b, k, 3 * ms) + self.c_hh
        t = np.tanh(gh[..., :2 * ms] + sa[:, None, :2 * ms])
        n = np.tanh(sa[:, None, 2 * ms:3 * ms] + (t[..., :ms] + 1.0) * gh[..., 2 * ms:])
        h = m.reshape(b, k, ms) + self.slot_bias
        return sa, (n + (t[..., ms:] + 1.0) * 0.5 * (h - n)).reshape(b * k, ms)

    def _logits(self, x: np.ndarray) -> np.ndarray:
        """Attention logits of the (centred) queries over every valid step: LayerNorm folded into keys/offset."""
        logits = (x / np.sqrt((x * x) @ self.mean_sq + self.ln_eps)) @ self.keys_t
        logits += self.offset
        if self.shift:
            logits -= np.maximum.reduce(logits, axis=1, keepdims=True)
        return logits

    def _read(self, x: np.ndarray, bk: int) -> np.ndarray:
        """Query LayerNorm, two-stage top-k attention over the valid steps -> sum_j alpha_j table_j."""
        e = np.exp(self._logits(x))                                                           # [B*K, valid steps]
        if self._rows.shape[0] != bk:
            self._rows = np.arange(bk)[:, None]
        rows = self._rows
        if self.k1 < self.n:  # keep the steps of the k1 trajectories with the most attention mass
            traj = np.argpartition(e @ self.member, self.n - self.k1, axis=1)[:, self.n - self.k1:]
            keep = np.zeros((bk, self.n), np.float32)
            keep[rows, traj] = 1.0
            e *= keep[:, self.owner]
        # then the k2 best of those steps (exactly k2, as torch.topk), as dense weights over all valid steps
        v = e.shape[1]
        best = np.argpartition(e, v - self.k2, axis=1)[:, v - self.k2:] if self.k2 < v else slice(None)
        w = np.zeros_like(e)
        w[rows, best] = e[rows, best]
        w /= np.add.reduce(w, axis=1, keepdims=True)
        return w @ self.table


class RetrievalPolicy:
    """CPU acting copy of a `RetrievalAgentNetwork`. State: tuple of [N, H] numpy arrays."""

    def __init__(self, net, num_actions: int):
        self.net = net.eval()
        self.num_actions = num_actions
        self._trajectories = None  # a fixed retrieval set (offline agents); None = the weights' bank
        self._index = None
        self._fast: NumpyRetrievalStep | None = None  # per (weights, retrieval set); None: the torch step

    @classmethod
    def for_online(cls, cfg, env_spec) -> "RetrievalPolicy":
        from rlfleet.algorithms.retrieval.learner import make_online_network

        return cls(make_online_network(env_spec, cfg), env_spec.num_actions)

    def initial_state(self, batch_size: int) -> tuple:
        return tuple(s.numpy() for s in self.net.initial_state(batch_size))

    @torch.inference_mode()
    def _refresh_memory(self) -> None:
        self._fast = None
        if self.net.retrieval is None:
            return
        if self._index is not None:  # per-row ANN candidates: the torch step
            self._index.refresh(self.net)
            self.net.set_index(self._index)
        else:
            self.net.set_memory(self._trajectories if self._trajectories is not None else self.net.bank())
            self._fast = NumpyRetrievalStep(self.net.retrieval, self.net.memory)

    def load_weights(self, weights: dict) -> None:
        self.net.load_state_dict(weights)
        self._refresh_memory()

    def set_retrieval_set(self, trajectories: dict | None = None, index=None) -> None:
        """Offline agents: attend over these trajectories (a uniform batch of the dataset), or over
        ANN candidates from `index` (a KeyIndex, re-embedded with these weights now)."""
        self._trajectories, self._index = trajectories, index
        self._refresh_memory()

    @torch.inference_mode()
    def q_values(self, obs, prev_action, prev_reward, state, fast: bool = True):
        """Q [N, A] and the next state for one step; `fast=False`: the network's own torch unroll."""
        st = tuple(torch.from_numpy(s) for s in state)
        args = (torch.from_numpy(np.asarray(obs, np.float32)).unsqueeze(1), torch.from_numpy(prev_action).unsqueeze(1),
                torch.from_numpy(prev_reward).unsqueeze(1))
        if not fast or self._fast is None:
            q, st = self.net.unroll(*args, st)
            return q[:, 0].numpy(), tuple(s.numpy() for s in st)
        s = self.net.encode(*args)
        u, m = self._fast(s[:, 0].numpy(), state[2])
        q, h, c = self.net.head(s + torch.from_numpy(u).unsqueeze(1), st[0], st[1])
        return q[:, 0].numpy(), (h.numpy(), c.numpy(), m)

    def act(self, obs, prev_action, prev_reward, state, epsilon: np.ndarray, rng: np.random.Generator,
            action_mask: np.ndarray | None = None):
        q, state = self.q_values(obs, prev_action, prev_reward, state)
        return epsilon_greedy(q, epsilon, rng, action_mask), state
