"""Losses and updates of the retrieval-augmented agents (Goyal et al. 2022, Sec. 3-4):

    loss = RL loss (through the Q-network, the retrieval process and the shared encoder)
         + beta * mean_t KL(p(z | g_t) || r(z | m_{t-1}))     (information bottleneck)

- `OfflineRDQN`: recurrent DQN over a fixed dataset of whole episodes (the paper's BabyAI
  baseline), with or without retrieval; each update attends over a fresh uniform retrieval batch
  that excludes the episodes being trained on.
- `R2D2RetrievalLearner`: R2D2 (its targets, priorities and update, imported) whose retrieval set
  is a uniform sample of its own replay: the previous update's batch, kept in the network's
  `bank_*` buffers so that it also reaches the runners with the weights.
"""
from __future__ import annotations

import copy

import numpy as np
import torch

from rlfleet.algorithms.r2d2.learner import R2D2Learner, n_step_double_q_targets
from rlfleet.algorithms.retrieval.config import R2D2RetrievalConfig, RDQNOfflineConfig
from rlfleet.algorithms.retrieval.networks import RetrievalAgentNetwork
from rlfleet.platform import batch as B


def make_offline_network(obs_shape, num_actions: int, cfg: RDQNOfflineConfig) -> RetrievalAgentNetwork:
    return RetrievalAgentNetwork(obs_shape, num_actions, mlp_hidden=cfg.mlp_hidden, embed_size=cfg.embed_size,
                                 lstm_size=cfg.lstm_size, dueling=cfg.dueling, dueling_hidden=cfg.dueling_hidden,
                                 retrieval=cfg.retrieval)


class OfflineRDQN:
    """Offline recurrent (double) DQN on episode batches; `update(batch, retrieval_set)`."""

    def __init__(self, cfg: RDQNOfflineConfig, obs_shape, num_actions: int, seed: int = 0):
        torch.manual_seed(seed)
        self.cfg = cfg
        self.online = make_offline_network(obs_shape, num_actions, cfg)
        self.target = copy.deepcopy(self.online).requires_grad_(False)
        self.optimizer = torch.optim.Adam(self.online.parameters(), lr=cfg.lr, eps=cfg.adam_eps)
        self.num_updates = 0

    @property
    def uses_retrieval(self) -> bool:
        return self.online.retrieval is not None

    def loss(self, batch: dict, retrieval_set: dict | None) -> tuple[torch.Tensor, dict]:
        cfg = self.cfg
        obs, prev_a, prev_r = batch[B.OBS], batch[B.PREV_ACTION], batch[B.PREV_REWARD]
        state = self.online.initial_state(prev_a.shape[0])
        self.online.set_memory(retrieval_set)
        q_on, _ = self.online.unroll(obs, prev_a, prev_r, state)
        with torch.no_grad():
            self.target.set_memory(retrieval_set)
            q_tgt, _ = self.target.unroll(obs, prev_a, prev_r, state)
            y = n_step_double_q_targets(q_on.detach() if cfg.double_q else q_tgt, q_tgt, batch[B.REWARD],
                                        batch[B.TERMINAL], batch[B.MASK], cfg.n_step, cfg.gamma, cfg.value_rescaling)
        mask = batch[B.MASK]
        q_taken = q_on[:, :-1].gather(-1, batch[B.ACTION].unsqueeze(-1)).squeeze(-1)
        td = (q_taken - y) * mask
        rl_loss = 0.5 * td.square().sum() / mask.sum().clamp(min=1.0)
        # CQL(H): push down every action's Q (soft maximum), push up the data's action. Offline data
        # never shows what unseen actions lead to; without this their Q-values stay where the
        # function approximator puts them and greedy acting picks them.
        cql = torch.zeros(())
        if cfg.cql_alpha > 0:
            gap = torch.logsumexp(q_on[:, :-1], dim=-1) - q_taken
            cql = (gap * mask).sum() / mask.sum().clamp(min=1.0)
        kl = torch.zeros(())
        if self.uses_retrieval and cfg.retrieval.bottleneck:
            kl = (self.online.kl[:, :-1] * mask).sum() / mask.sum().clamp(min=1.0)
        loss = rl_loss + cfg.cql_alpha * cql + cfg.retrieval.beta * kl
        return loss, {"loss": loss.item(), "rl_loss": rl_loss.item(), "cql": cql.item(), "kl": kl.item(),
                      "q_mean": ((q_taken * mask).sum() / mask.sum()).item()}

    def update(self, batch: dict, retrieval_set: dict | None = None) -> dict:
        self.online.train()
        loss, stats = self.loss(batch, retrieval_set if self.uses_retrieval else None)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.online.parameters(), self.cfg.max_grad_norm)
        self.optimizer.step()
        with torch.no_grad():  # Polyak target: theta' <- tau theta + (1 - tau) theta'
            torch._foreach_lerp_(list(self.target.parameters()), list(self.online.parameters()), self.cfg.target_tau)
        self.online.set_memory(None)
        self.target.set_memory(None)
        self.num_updates += 1
        return stats

    def acting_weights(self) -> dict:
        return {k: v.detach().clone() for k, v in self.online.state_dict().items()}


def train_offline(cfg: RDQNOfflineConfig, train: "TrajectoryDataset", retrieval_pool: "TrajectoryDataset | None",  # noqa: F821
                  seed: int = 0, log_every: int = 0, train_offset: int | None = None) -> OfflineRDQN:
    """`cfg.updates` updates on episodes of `train`; retrieval batches come from `retrieval_pool`
    (single-level: `train` itself; multi-level: every level's data). The episodes of the current
    batch are excluded from its retrieval batch (an agent must not retrieve its own future):
    `train_offset` is where `train`'s episodes start in the pool (0 when the pool is `train`
    itself, `TrajectoryDataset.concat`'s position of it for a multi-level pool; None: not in it)."""
    rng = np.random.default_rng(seed)
    learner = OfflineRDQN(cfg, train.obs_shape, train.num_actions, seed)
    if train_offset is None and retrieval_pool is train:
        train_offset = 0
    for u in range(cfg.updates):
        idx = rng.integers(0, len(train), cfg.batch_size)
        batch = train.sequence_batch(idx, cfg.max_episode_len, rng)
        rset = None
        if learner.uses_retrieval:
            rset = retrieval_pool.sample_retrieval(cfg.retrieval.retrieval_batch, rng, cfg.max_episode_len + 1,
                                                   exclude=None if train_offset is None else idx + train_offset)
        stats = learner.update(batch, rset)
        if log_every and (u + 1) % log_every == 0:
            print(f"update {u + 1}: " + " ".join(f"{k}={v:.4f}" for k, v in stats.items()), flush=True)
    return learner


class R2D2RetrievalLearner(R2D2Learner):
    """R2D2's loss and update with the retrieval network; the previous batch becomes the next
    update's retrieval set (uniform over replay, and never the sequences being trained on)."""

    def __init__(self, cfg: R2D2RetrievalConfig, env_spec, device="cpu"):
        self.cfg = cfg
        self.device = torch.device(device)
        self.online = make_online_network(env_spec, cfg).to(self.device)
        self.target = copy.deepcopy(self.online).requires_grad_(False)
        self.optimizer = torch.optim.Adam(self.online.parameters(), lr=cfg.lr, eps=cfg.adam_eps)
        self.num_updates = 0

    def loss(self, batch: dict):
        bank = self.online.bank()
        self.online.set_memory(bank)
        with torch.no_grad():
            self.target.set_memory(bank)
        loss, priorities, stats = super().loss(batch)
        if self.cfg.retrieval.bottleneck:
            mask = batch[B.MASK][:, self.cfg.burn_in:]
            kl = (self.online.kl[:, :-1] * mask).sum() / mask.sum().clamp(min=1.0)
            loss = loss + self.cfg.retrieval.beta * kl
            stats["kl"] = kl.detach()
        return loss, priorities, stats

    def update(self, batch: dict):
        priorities, stats = super().update(batch)
        self.online.set_memory(None)
        self.target.set_memory(None)
        self._bank_from(batch)
        return priorities, stats

    def _bank_from(self, batch: dict) -> None:
        """Keep the first `retrieval_batch` sequences of this batch as the next retrieval set."""
        n, l = self.online.bank_valid.shape
        k = min(n, batch[B.ACTION].shape[0])
        mask = batch[B.MASK][:k]
        valid = torch.zeros(n, l, dtype=torch.bool, device=self.device)
        valid[:k, 0] = True
        valid[:k, 1:] = mask[:, :l - 1] > 0  # x_0 plus the observation after each real step
        new = {"obs": torch.zeros_like(self.online.bank_obs), "prev_action": torch.zeros_like(self.online.bank_prev_action),
               "prev_reward": torch.zeros_like(self.online.bank_prev_reward), "valid": valid}
        new["obs"][:k] = batch[B.OBS][:k, :l].float()
        new["prev_action"][:k] = batch[B.PREV_ACTION][:k, :l].long()
        new["prev_reward"][:k] = batch[B.PREV_REWARD][:k, :l].float()
        self.online.set_bank(new)
        self.target.set_bank(new)


def make_online_network(env_spec, cfg: R2D2RetrievalConfig) -> RetrievalAgentNetwork:
    if getattr(env_spec, "agent_groups", None) and max(env_spec.agent_groups) > 0:
        from rlfleet.platform.errors import UserError

        raise UserError("algorithm r2d2-retrieval: env.policy_mapping with several groups is not supported yet")
    return RetrievalAgentNetwork(env_spec.obs_shape, env_spec.num_actions, mlp_hidden=cfg.mlp_hidden,
                                 embed_size=cfg.embed_size, lstm_size=cfg.lstm_size, dueling=cfg.dueling,
                                 dueling_hidden=cfg.dueling_hidden, retrieval=cfg.retrieval,
                                 bank_shape=(cfg.retrieval.retrieval_batch, cfg.burn_in + cfg.trace + 1))
