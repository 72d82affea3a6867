"""The retrieval process of Goyal et al. 2022 (Sec. 3, Fig. 2) and the agent network that mixes
its output u_t into the recurrent Q-network's input.

Per step t, for a batch of queries (agents) and a retrieval set of N dataset trajectories:

  s_t = f_enc(x_t, a_{t-1}, r_{t-1})                                 encoder (shared with the dataset side)
  h_ij, b_ij = forward GRU, backward GRU over f_enc of trajectory i    past / future summaries (once per set)
  kappa_ij = h_ij W_e,  v_ij = b_ij W_v                               keys, values
  for each slot k:
    mhat^k = GRU(s_t, m^k_{t-1});  q^k = f_query(mhat^k)
    alpha_ij = softmax_ij(q^k . kappa_ij / sqrt(d))
    keep the top-k1 trajectories by sum_j alpha_ij, then the top-k2 steps among them; renormalize
    g^k = sum alpha_ij v_ij
    z^k ~ N(mu(g^k), sigma(g^k)),  KL(N(mu, sigma) || r(z | m^k_{t-1}))   information bottleneck
    m^k = tanh(mhat^k + z^k + self-attention across slots)              (the tanh: ours, see below)
  u_t = sum_k gamma_k (z^k W'_v),  gamma = softmax_k((s_t W_q) . (z^k W'_e) / sqrt(d))

The agent's LSTM consumes s_t + u_t; a dueling head gives Q. The slot memories m are part of the
recurrent state (stored in replay like the LSTM's), so burn-in and stored state work unchanged.

Why the memory is bounded: m^k is the slot GRU's hidden state at the next step, and `mhat + z`
plus a residual self-attention has no bound. Without it the memory's size grew ~14 -> 500 -> 3e6
over 0 -> 10 -> 40 steps, the GRU passed it through (its update gate keeps the hidden state),
every row's query became the same vector after ~5 steps, and the prior r(z | m) conditioned on it
made the KL term explode. tanh keeps it in the GRU's own range (-1, 1); a LayerNorm there instead
stopped the constructed task-identification test from learning where to attend.

The KL is averaged over z's dimensions, so the loss's beta does not scale with slot_size (summed
over 64 dimensions, beta 0.3 outweighed the RL loss by ~100x). The prior starts at sigma ~1 (its
log-sigma bias at PyTorch's default init, near 0), the posterior at ~0.14 (-2), so z carries g at first.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from rlfleet.algorithms.r2d2.networks import ConvTorso, MLPTorso
from rlfleet.algorithms.retrieval.config import RetrievalConfig

NEG = -1e9  # finite "minus infinity": softmax over an all-masked row stays finite (no NaN gradients)


def gaussian_kl(mu_q, log_std_q, mu_p, log_std_p) -> torch.Tensor:
    """KL(N(mu_q, s_q^2) || N(mu_p, s_p^2)) per dimension:
    log(s_p / s_q) + (s_q^2 + (mu_q - mu_p)^2) / (2 s_p^2) - 1/2."""
    var_q, var_p = torch.exp(2 * log_std_q), torch.exp(2 * log_std_p)
    return log_std_p - log_std_q + (var_q + (mu_q - mu_p) ** 2) / (2 * var_p) - 0.5


def reverse_valid(x: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Reverse each row's valid prefix in time (x [N, L, D], valid [N, L] with valid steps first);
    padding stays in place. Applying it twice is the identity."""
    n, l = valid.shape
    length = valid.sum(1, keepdim=True)
    t = torch.arange(l, device=x.device).expand(n, l)
    idx = torch.where(t < length, length - 1 - t, t)
    return x.gather(1, idx.unsqueeze(-1).expand_as(x))


def top_k_attention(q: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, valid: torch.Tensor,
                    k_traj: int, k_steps: int):
    """Two-stage sparse attention (Sec. 3, "top-k trajectories, then top-k steps").

    q [B, K, d]; keys [R, N, L, d], values [R, N, L, dv], valid [R, N, L] with R = 1 (one retrieval
    set shared by all rows) or R = B (a set per row, e.g. index candidates).
    Returns g [B, K, dv] and (trajectory indices [B, K, k_traj], flat step indices into N*L
    [B, K, k_steps], their weights [B, K, k_steps]).
    """
    b, k, d = q.shape
    r, n, l, _ = keys.shape
    if r == 1:
        logits = torch.einsum("bkd,nld->bknl", q, keys[0])
    else:
        logits = torch.einsum("bkd,bnld->bknl", q, keys)
    logits = logits / math.sqrt(d)
    ok = valid.unsqueeze(1).expand(b, k, n, l) if r > 1 else valid[0].expand(b, k, n, l)
    logits = logits.masked_fill(~ok, NEG)
    alpha = torch.softmax(logits.reshape(b, k, n * l), -1).reshape(b, k, n, l) * ok
    # 1) trajectories with the most attention mass
    k1 = min(k_traj, n)
    traj = alpha.sum(-1).topk(k1, dim=-1).indices  # [B, K, k1]
    # 2) steps with the most attention among the chosen trajectories
    cand = logits.gather(2, traj.unsqueeze(-1).expand(b, k, k1, l)).reshape(b, k, k1 * l)
    cand_ok = ok.gather(2, traj.unsqueeze(-1).expand(b, k, k1, l)).reshape(b, k, k1 * l)
    k2 = min(k_steps, k1 * l)
    top = cand.topk(k2, dim=-1)
    sel_ok = cand_ok.gather(-1, top.indices)
    step = (traj.unsqueeze(-1) * l + torch.arange(l, device=q.device)).reshape(b, k, k1 * l).gather(-1, top.indices)
    w = torch.softmax(top.values, -1) * sel_ok  # renormalized over the kept steps
    w = w / w.sum(-1, keepdim=True).clamp(min=1e-9)
    flat_v = values.reshape(r, n * l, -1)
    if r == 1:
        v = flat_v[0][step]  # [B, K, k2, dv]
    else:
        v = flat_v[torch.arange(b, device=q.device).view(b, 1, 1), step]
    g = (w.unsqueeze(-1) * v).sum(2)
    return g, (traj, step, w)


class RetrievalProcess(nn.Module):
    """Slots, queries, summaries, two-stage attention, bottleneck, slot self-attention, u_t."""

    def __init__(self, embed_size: int, cfg: RetrievalConfig):
        super().__init__()
        self.cfg = cfg
        ks, ms, hs = cfg.key_size, cfg.slot_size, cfg.summary_size
        self.forward_gru = nn.GRU(embed_size, hs, batch_first=True)   # past summary h_ij
        self.backward_gru = nn.GRU(embed_size, hs, batch_first=True)  # future summary b_ij
        # keys and queries are layer-normalized so q . kappa / sqrt(d) starts at O(1): with raw GRU
        # outputs the logits start near 0, attention is uniform and its gradients vanish
        self.w_e = nn.Sequential(nn.Linear(hs, ks, bias=False), nn.LayerNorm(ks))
        self.w_v = nn.Sequential(nn.Linear(hs, ms, bias=False), nn.LayerNorm(ms))  # O(1) values for the same reason
        self.slot_bias = nn.Parameter(0.1 * torch.randn(cfg.num_slots, ms))  # tells slots apart; state starts at 0
        self.slot_gru = nn.GRUCell(embed_size, ms)
        self.f_query = nn.Sequential(nn.Linear(ms, ks), nn.LayerNorm(ks))
        if cfg.bottleneck:
            self.posterior = nn.Linear(ms, 2 * ms)  # g -> (mu, log sigma)
            self.prior = nn.Linear(ms, 2 * ms)      # m_{t-1} -> (mu, log sigma) of r(z | m_{t-1})
            with torch.no_grad():  # posterior sigma ~ 0.14, not 1: unit noise would drown g before anything is learnt
                self.posterior.bias[ms:].fill_(-2.0)
        else:
            self.to_z = nn.Linear(ms, ms)
        self.attn_qkv = nn.Linear(ms, 3 * ms)  # slot self-attention (one head, residual)
        self.u_query = nn.Linear(embed_size, ks, bias=False)  # s_t W_q
        self.u_key = nn.Linear(ms, ks, bias=False)            # z W'_e
        self.u_value = nn.Linear(ms, embed_size, bias=False)  # z W'_v

    def summarize(self, e: torch.Tensor, valid: torch.Tensor) -> dict:
        """Keys and values of a retrieval set: e [N, L, E] encoded steps, valid [N, L] (prefix)."""
        h, _ = self.forward_gru(e)
        b_rev, _ = self.backward_gru(reverse_valid(e, valid))
        b = reverse_valid(b_rev, valid)
        return {"keys": self.w_e(h).unsqueeze(0), "values": self.w_v(b).unsqueeze(0), "valid": valid.unsqueeze(0)}

    def step(self, s: torch.Tensor, m: torch.Tensor, memory: dict, sample: bool, with_kl: bool = True):
        """One step for a batch: s [B, E], m [B, K, M] slot memories -> (u [B, E], m [B, K, M], kl [B])
        (kl is zero when not `with_kl`: acting needs only the posterior mean)."""
        cfg = self.cfg
        b, k, ms = m.shape
        m_in = m + self.slot_bias
        mhat = self.slot_gru(s.unsqueeze(1).expand(b, k, -1).reshape(b * k, -1), m_in.reshape(b * k, ms)).view(b, k, ms)
        q = self.f_query(mhat)
        if "index" in memory:  # ANN candidates over the whole dataset, one retrieval set per row
            memory = memory["index"].candidates_for(q)
        g, self.last_selection = top_k_attention(q, memory["keys"], memory["values"], memory["valid"],
                                                 cfg.top_k_trajectories, cfg.top_k_steps)
        if cfg.bottleneck and not with_kl:  # acting: the posterior mean, no prior or KL to compute
            z = self.posterior(g)[..., :ms]
            kl = z.new_zeros(b)
        elif cfg.bottleneck:
            mu, log_std = self.posterior(g).chunk(2, -1)
            log_std = log_std.clamp(-5.0, 2.0)
            mu_p, log_std_p = self.prior(m_in).chunk(2, -1)
            log_std_p = log_std_p.clamp(-5.0, 2.0)
            z = mu + torch.exp(log_std) * torch.randn_like(mu) if sample else mu
            kl = gaussian_kl(mu, log_std, mu_p, log_std_p).mean((-2, -1))  # mean over dims and slots
        else:
            z = self.to_z(g)
            kl = z.new_zeros(b)
        m = mhat + z
        qs, ks_, vs = self.attn_qkv(m).chunk(3, -1)
        att = torch.softmax(qs @ ks_.transpose(1, 2) / math.sqrt(ms), -1)
        m = torch.tanh(m + att @ vs)  # bounded recurrent memory (module docstring)
        gamma = torch.softmax((self.u_key(z) @ self.u_query(s).unsqueeze(-1)).squeeze(-1) / math.sqrt(cfg.key_size), -1)
        u = (gamma.unsqueeze(-1) * self.u_value(z)).sum(1)
        return u, m, kl


class RetrievalAgentNetwork(nn.Module):
    """Recurrent dueling Q-network whose LSTM input is s_t + u_t (u_t = 0 without retrieval).

    State: (h, c) of the LSTM, plus the flattened slot memories [B, K*M] with retrieval.
    The retrieval set is given by `set_memory(trajectories)` (learners: a fresh uniform batch per
    update; policies: once per weight load) or, for the online agent, read from the `bank_*`
    buffers that the learner fills from its replay and that travel with the weights.
    """

    def __init__(self, obs_shape, num_actions: int, *, mlp_hidden, embed_size: int, lstm_size: int,
                 dueling: bool, dueling_hidden: int, retrieval: RetrievalConfig, bank_shape: tuple | None = None):
        super().__init__()
        self.num_actions = num_actions
        self.torso = ConvTorso(obs_shape) if len(obs_shape) == 3 else MLPTorso(obs_shape, mlp_hidden)
        # layer-normalized s_t: with raw MLP outputs, s_t (and so every slot's query) barely varies
        # between observations at initialization, and all rows attend to the same steps
        self.embed = nn.Sequential(nn.Linear(self.torso.out_dim + num_actions + 1, embed_size), nn.LayerNorm(embed_size),
                                   nn.ReLU())
        self.rcfg = retrieval
        self.retrieval = RetrievalProcess(embed_size, retrieval) if retrieval.enabled else None
        self.core = nn.LSTM(embed_size, lstm_size, batch_first=True)
        self.hidden = lstm_size
        self.dueling = dueling
        if dueling:
            self.value = nn.Sequential(nn.Linear(lstm_size, dueling_hidden), nn.ReLU(), nn.Linear(dueling_hidden, 1))
            self.advantage = nn.Sequential(nn.Linear(lstm_size, dueling_hidden), nn.ReLU(),
                                           nn.Linear(dueling_hidden, num_actions))
        else:
            self.q = nn.Sequential(nn.Linear(lstm_size, dueling_hidden), nn.ReLU(), nn.Linear(dueling_hidden, num_actions))
        if bank_shape is not None and self.retrieval is not None:  # online agent: retrieval set from replay
            n, l = bank_shape
            self.register_buffer("bank_obs", torch.zeros((n, l) + tuple(obs_shape)))
            self.register_buffer("bank_prev_action", torch.zeros(n, l, dtype=torch.long))
            self.register_buffer("bank_prev_reward", torch.zeros(n, l))
            self.register_buffer("bank_valid", torch.zeros(n, l, dtype=torch.bool))
        self.memory: dict | None = None
        self.sample_z = True  # reparameterized sampling (training); policies use the mean
        self.kl: torch.Tensor | None = None  # [B, T] KL terms of the last unroll

    # -- state ------------------------------------------------------------------------------------
    def initial_state(self, batch_size: int, device=None) -> tuple:
        z = torch.zeros(batch_size, self.hidden, device=device)
        if self.retrieval is None:
            return (z, z.clone())
        return (z, z.clone(), torch.zeros(batch_size, self.rcfg.num_slots * self.rcfg.slot_size, device=device))

    # -- retrieval set ----------------------------------------------------------------------------
    def encode(self, obs, prev_action, prev_reward) -> torch.Tensor:
        """s = f_enc(x, a_{t-1}, r_{t-1}) for [B, T, ...] inputs -> [B, T, E]."""
        b, t = prev_action.shape
        feats = self.torso(obs.reshape((b * t,) + obs.shape[2:])).reshape(b, t, -1)
        x = torch.cat([feats, F.one_hot(prev_action.long(), self.num_actions).float(),
                       prev_reward.float().unsqueeze(-1)], -1)
        return self.embed(x)

    def summarize(self, trajectories: dict) -> dict:
        """Keys/values of a retrieval set {obs [N, L, ...], prev_action, prev_reward, valid [N, L]},
        or of one set per batch row (every entry with a leading [B] dimension)."""
        pa = trajectories["prev_action"]
        if pa.dim() == 3:  # per-row sets [B, N, L]: summarize them all at once, then split by row
            b, n, l = pa.shape
            flat = {k: v.reshape((b * n,) + v.shape[2:]) for k, v in trajectories.items() if k != "index"}
            mem = self.summarize(flat)
            return {k: v.reshape((b, n) + v.shape[2:]) for k, v in mem.items()}
        e = self.encode(trajectories["obs"], pa, trajectories["prev_reward"])
        return self.retrieval.summarize(e, trajectories["valid"].bool())

    def set_memory(self, trajectories: dict | None) -> None:
        """Attend over these trajectories from now on (None: back to the bank, or nothing)."""
        self.memory = None if trajectories is None or self.retrieval is None else self.summarize(trajectories)

    def set_index(self, index) -> None:
        """Attend over ANN candidates from a `KeyIndex` (built with this network's embeddings)."""
        self.memory = {"index": index}

    def bank(self) -> dict | None:
        if not hasattr(self, "bank_obs"):
            return None
        return {"obs": self.bank_obs, "prev_action": self.bank_prev_action, "prev_reward": self.bank_prev_reward,
                "valid": self.bank_valid}

    def set_bank(self, trajectories: dict) -> None:
        with torch.no_grad():
            for k in ("obs", "prev_action", "prev_reward", "valid"):
                getattr(self, f"bank_{k}").copy_(trajectories[k])

    # -- unroll -----------------------------------------------------------------------------------
    def unroll(self, obs, prev_action, prev_reward, state: tuple):
        """obs [B, T, ...], prev_action [B, T], prev_reward [B, T] -> (Q [B, T, A], final state)."""
        s = self.encode(obs, prev_action, prev_reward)
        b, t, _ = s.shape
        if self.retrieval is not None:
            memory = self.memory if self.memory is not None else self.summarize(self.bank())
            m = state[2].view(b, self.rcfg.num_slots, self.rcfg.slot_size)
            us, kls = [], []
            for i in range(t):  # slot memories are recurrent: one step at a time
                u, m, kl = self.retrieval.step(s[:, i], m, memory, self.sample_z and self.training,
                                               with_kl=torch.is_grad_enabled())
                us.append(u)
                kls.append(kl)
            s = s + torch.stack(us, 1)
            self.kl = torch.stack(kls, 1)
        q, h, c = self.head(s, state[0], state[1])
        return q, (h, c) if self.retrieval is None else (h, c, m.reshape(b, -1))

    def head(self, x, h, c):
        """The LSTM over x [B, T, E] (= s + u) from (h, c) [B, H], then Q -> (Q [B, T, A], h, c)."""
        out, (h, c) = self.core(x, (h.unsqueeze(0).contiguous(), c.unsqueeze(0).contiguous()))
        if self.dueling:
            adv = self.advantage(out)
            q = self.value(out) + adv - adv.mean(-1, keepdim=True)
        else:
            q = self.q(out)
        return q, h.squeeze(0), c.squeeze(0)
