"""MAMQL loss and update (Haynam et al. 2025), in IQ-Learn's terms (Garg et al. 2021), per agent i:

    Qbar_i(s, .)   critic over agent i's own actions, marginalised over the others through the data
    V_i(s)       = alpha logsumexp(Qbar_i(s, .) / alpha)                       (soft value, legal actions)
    r_i          = Qbar_i(s, a_i^E) - gamma (1 - d) V_i(s')                    (implied reward, expert data)
    loss_i       = E_rho[ V_i(s) - gamma (1 - d) V_i(s') ] - E_expert[ r_i - r_i^2 / (4 alpha) ]
                   + weight decay                                              (chi^2-regularised IQ-Learn)

rho, the value term's data (`value_data`): online and expert rows alike (IQ-Learn's online "value"
objective; on expert rows V(s) - Q(s, a_E) = -alpha log pi(a_E|s), a direct likelihood signal), or
online rows only (the MAMQL authors' `mamql_online`, whose replay starts preloaded with the demos).

Agents share one update: each online or expert row belongs to one agent (its slot, or its demo
rows) and routes to that agent's critic. `objective: bc` replaces the loss by cross-entropy on the
expert actions (the behaviour-cloning baseline). The recovered reward is
rhat_i(s, a) = Qbar_i(s, a) - gamma (1 - d) V_i(s').
"""
from __future__ import annotations

import copy

import numpy as np
import torch
import torch.nn.functional as F

from rlfleet.algorithms.mamql.config import MAMQLConfig
from rlfleet.algorithms.mamql.networks import make_critic
from rlfleet.platform import batch as B
from rlfleet.platform.errors import UserError
from rlfleet.platform.registry import load_callable


def soft_value(q: torch.Tensor, alpha: float, legal: torch.Tensor | None = None) -> torch.Tensor:
    """V(s) = alpha logsumexp(Q(s, .) / alpha) over legal actions."""
    if legal is not None:
        q = q.masked_fill(~legal, float("-inf"))
    return alpha * torch.logsumexp(q / alpha, dim=-1)


def iq_chi2_loss(q_exp, a_exp, v_exp_next, done_exp, v_on, v_on_next, done_on, gamma: float, alpha: float,
                 v_exp=None):
    """-E_expert[r - r^2/(4 alpha)] + E_rho[V(s) - gamma (1-d) V(s')], rho = the online rows, plus the
    expert rows when `v_exp` (V at the expert states) is given; returns (loss, implied expert reward)."""
    r = q_exp.gather(-1, a_exp.unsqueeze(-1)).squeeze(-1) - gamma * (1.0 - done_exp) * v_exp_next
    expert_term = (r - r.square() / (4.0 * alpha)).mean()
    value = v_on - gamma * (1.0 - done_on) * v_on_next
    if v_exp is not None:
        value = torch.cat([value, v_exp - gamma * (1.0 - done_exp) * v_exp_next])
    return value.mean() - expert_term, r


class ExpertData:
    """Demonstrations as device tensors in the slots' encoding (agent index appended), sampled uniformly."""

    def __init__(self, path: str, env_spec, device, demo_steps: int | None, seed: int = 0):
        from rlfleet import demos
        from rlfleet.platform.multiagent import encode_agent_obs

        data, meta = demos.load(path)
        if meta.get("turn_based"):  # rows are single turns: there is no joint action of an env step
            raise UserError(f"demonstrations {path}: recorded from a turn-based game; mamql, iql-ma and bc "
                            f"learn from simultaneous-move (Parallel) envs only")
        names = list(env_spec.agent_names) if env_spec.agent_names else ["agent"]
        if sorted(data) != sorted(names):
            raise UserError(f"demonstrations {path}: agents {sorted(data)} do not match the env's {sorted(names)}")
        cols = {k: [] for k in ("obs", "next_obs", "action", "done", "legal", "legal_next", "joint")}
        step_actions = {}  # (episode, t) -> {agent index: action}: the joint actions of each env step
        for k, name in enumerate(names):
            d = data[name]
            for e, t, a in zip(d.episode.tolist(), d.t.tolist(), d.action.tolist()):
                step_actions.setdefault((e, t), {})[k] = a
        for k, name in enumerate(names):
            d = data[name]
            keep = np.arange(len(d)) if demo_steps is None else np.flatnonzero(
                _env_step_index(d.episode, d.t) < demo_steps)
            enc = (lambda x: encode_agent_obs(env_spec, k, x)) if env_spec.agent_names else (lambda x: x.astype(np.float32))
            cols["obs"].append(enc(d.obs[keep]))
            cols["next_obs"].append(enc(d.next_obs[keep]))
            cols["action"].append(d.action[keep])
            cols["done"].append(d.terminated[keep].astype(np.float32))
            legal = np.zeros((len(d), env_spec.num_actions), bool)  # padding beyond the agent's own actions: illegal
            legal[:, :d.action_mask.shape[1]] = d.action_mask
            cols["legal"].append(legal[keep])
            # legal actions at s' = those at the next row of the same episode (all legal at the end)
            nxt_mask = np.ones((len(d), env_spec.num_actions), bool)
            same = np.flatnonzero(d.episode[1:] == d.episode[:-1])
            nxt_mask[same, :d.action_mask.shape[1]] = d.action_mask[same + 1]
            cols["legal_next"].append(nxt_mask[keep])
            cols["joint"].append(np.array([[step_actions[(e, t)].get(j, 0) for j in range(len(names))]
                                           for e, t in zip(d.episode[keep].tolist(), d.t[keep].tolist())],
                                          np.int64).reshape(len(keep), len(names)))
        self.t = {k: torch.as_tensor(np.concatenate(v), device=device) for k, v in cols.items()}
        self.size = len(self.t["action"])
        if self.size == 0:
            raise UserError(f"demonstrations {path}: no expert steps (demo_steps={demo_steps})")
        self.gen = torch.Generator(device="cpu").manual_seed(seed)
        self.meta = meta

    def sample(self, n: int) -> dict:
        idx = torch.randint(0, self.size, (n,), generator=self.gen).to(self.t["action"].device)
        return {k: v[idx] for k, v in self.t.items()}


def _env_step_index(episode: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Global env-step index of each row (episodes in file order)."""
    lengths = {}
    for e, step in zip(episode.tolist(), t.tolist()):
        lengths[e] = max(lengths.get(e, 0), step + 1)
    offset, start = 0, {}
    for e in sorted(lengths):
        start[e] = offset
        offset += lengths[e]
    return np.array([start[e] for e in episode.tolist()]) + t


class MAMQLLearner:
    def __init__(self, cfg: MAMQLConfig, env_spec, device: torch.device | str = "cpu"):
        self.cfg = cfg
        self.device = torch.device(device)
        self.online = make_critic(cfg, env_spec).to(self.device)
        self.optimizer = torch.optim.Adam(self.online.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.expert = ExpertData(cfg.demos, env_spec, self.device, cfg.demo_steps)
        self.augment = load_callable(cfg.augment, "algorithm.augment") if cfg.augment else None
        self.average = None  # Polyak-averaged critic for acting (acting_polyak > 0)
        if cfg.acting_polyak > 0:
            self.average = copy.deepcopy(self.online).requires_grad_(False)
        self.num_updates = 0

    def loss(self, batch: dict) -> tuple[torch.Tensor, dict]:
        cfg = self.cfg
        e = self.expert.sample(cfg.batch_size)
        if self.augment is not None:
            e = self.augment(e, cfg.map_shape, self.expert.gen)
        q_exp = self.online(e["obs"], e["joint"])  # the others' actions matter only to iql-ma's critic
        if cfg.objective == "bc":
            loss = F.cross_entropy(q_exp / cfg.alpha, e["action"])
            return loss, {"loss": loss.detach()}
        obs, nxt = batch[B.OBS][:, 0], batch[B.OBS][:, 1]
        legal = batch[B.ACTION_MASK].bool() if B.ACTION_MASK in batch else None
        joint = batch[B.JOINT_ACTION][:, 0] if B.JOINT_ACTION in batch else None
        v_on = soft_value(self.online(obs, joint), cfg.alpha, None if legal is None else legal[:, 0])
        v_on_next = soft_value(self.online(nxt), cfg.alpha, None if legal is None else legal[:, 1])
        v_exp_next = soft_value(self.online(e["next_obs"]), cfg.alpha, e["legal_next"])
        v_exp = soft_value(q_exp, cfg.alpha, e["legal"]) if cfg.value_data == "expert_and_online" else None
        loss, r = iq_chi2_loss(q_exp, e["action"], v_exp_next, e["done"], v_on, v_on_next,
                               batch[B.TERMINAL][:, 0], cfg.gamma, cfg.alpha, v_exp)
        return loss, {"loss": loss.detach(), "expert_reward": r.detach().mean(), "v_online": v_on.detach().mean()}

    def update(self, batch: dict) -> tuple[torch.Tensor, dict]:
        loss, stats = self.loss(batch)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        stats["grad_norm"] = torch.nn.utils.clip_grad_norm_(self.online.parameters(), self.cfg.max_grad_norm)
        self.optimizer.step()
        if self.average is not None:
            with torch.no_grad():
                torch._foreach_lerp_(list(self.average.parameters()), list(self.online.parameters()),
                                     self.cfg.acting_polyak)
        self.num_updates += 1
        return torch.ones(batch[B.ACTION].shape[0], device=self.device), stats  # uniform replay

    @torch.no_grad()
    def recovered_reward(self, obs, action, next_obs, done, legal_next=None) -> torch.Tensor:
        """rhat(s, a) = Qbar(s, a) - gamma (1 - d) V(s')."""
        q = self.online(obs).gather(-1, action.long().unsqueeze(-1)).squeeze(-1)
        return q - self.cfg.gamma * (1.0 - done) * soft_value(self.online(next_obs), self.cfg.alpha, legal_next)

    def acting_weights(self) -> dict:
        net = self.online if self.average is None else self.average
        return {k: v.detach().to("cpu", copy=True) for k, v in net.state_dict().items()}

    def state_dict(self) -> dict:
        state = {"online": self.online.state_dict(), "optimizer": self.optimizer.state_dict(),
                 "num_updates": self.num_updates}
        if self.average is not None:
            state["average"] = self.average.state_dict()
        return state

    def load_state_dict(self, state: dict) -> None:
        self.online.load_state_dict(state["online"])
        if self.average is not None:  # a checkpoint from before averaging was on: start from the critic
            self.average.load_state_dict(state.get("average", state["online"]))
        self.optimizer.load_state_dict(state["optimizer"])
        self.num_updates = int(state["num_updates"])
