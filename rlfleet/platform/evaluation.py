"""Greedy (or low-epsilon) evaluation episodes with the current weights."""
from __future__ import annotations

import numpy as np
import ray

from rlfleet.platform.runner import reset_state_rows


def run_episodes(policy, envs, episodes: int, epsilon: float, rng: np.random.Generator,
                 slots: list | None = None, random_agents: tuple = ()) -> list[tuple[float, int]]:
    """Each slot plays a fixed quota of episodes so short episodes are not over-represented.
    `slots`, if given, gets the slot index of each episode (multi-agent envs: slot % agents is
    the agent). Agents (indices) in `random_agents` act uniformly at random among their legal
    actions instead of the policy. Turn-based envs: only the slots whose turn it is act."""
    from rlfleet.platform.policies import random_legal_actions
    from rlfleet.platform.turnbased import act_on_turns

    n = len(envs)
    quota = np.array([episodes // n + (i < episodes % n) for i in range(n)])
    obs = envs.reset()
    legal = envs.action_mask if envs.spec.action_mask else None
    acting = envs.acting if envs.spec.turn_based else None
    init = policy.initial_state(1)
    state = policy.initial_state(n)
    prev_a, prev_r = np.zeros(n, np.int64), np.zeros(n, np.float32)
    eps = np.full(n, epsilon)
    ret, length = np.zeros(n), np.zeros(n, np.int64)
    randomly = np.isin(np.arange(n) % envs.spec.agents, random_agents)
    out: list[tuple[float, int]] = []
    while (quota > 0).any():
        if acting is None:
            actions, state = policy.act(obs, prev_a, prev_r, state, eps, rng, action_mask=legal)
        else:  # the waiting slots keep their state, previous action and reward
            actions, idx, _ = act_on_turns(policy, acting, obs, prev_a, prev_r, state, eps, rng, legal)
        if randomly.any():
            actions = np.where(randomly, random_legal_actions(rng, n, envs.spec.num_actions, legal), actions)
        if acting is None:
            prev_a = actions.copy()
        else:
            prev_a[idx] = actions[idx]
        res = envs.step(actions)
        legal, acting = res.action_mask, res.acting
        for i in range(n):
            if res.reset_step[i]:  # no transition: a reset step, an absent agent, or a waiting one
                if acting is None:
                    prev_a[i], prev_r[i] = 0, 0.0
                    reset_state_rows(state, init, [i])
                continue
            prev_r[i] = res.reward[i]
            ret[i] += res.reward[i]
            length[i] += 1
            if res.terminated[i] or res.truncated[i]:
                if quota[i] > 0:
                    out.append((float(ret[i]), int(length[i])))
                    if slots is not None:
                        slots.append(i)
                    quota[i] -= 1
                ret[i], length[i] = 0.0, 0
                prev_a[i], prev_r[i] = 0, 0.0
                reset_state_rows(state, init, [i])
        obs = res.obs
    return out


def episode_report(policy, envs, episodes: int, epsilon: float, rng: np.random.Generator) -> tuple[dict, np.ndarray]:
    """Play `episodes` episodes: ({return_mean, return_std, length_mean, episodes, and for
    multi-agent envs each agent's mean return `agent_returns`; for turn-based games also each
    agent's mean return against uniformly random opponents `agent_returns_vs_random`}, returns)."""
    names = envs.spec.agent_names

    def play(random_agents: tuple = ()):
        slots: list[int] = []
        results = run_episodes(policy, envs, episodes, epsilon, rng, slots, random_agents)
        return (np.array([r for r, _ in results]), np.array([length for _, length in results]),
                np.array(slots) % envs.spec.agents)

    returns, lengths, agent = play()
    out = {"return_mean": float(returns.mean()), "return_std": float(returns.std()),
           "length_mean": float(lengths.mean()), "episodes": len(returns)}
    if names:  # multi-agent envs: the mean return of each agent
        out["agent_returns"] = {a: float(returns[agent == k].mean()) for k, a in enumerate(names)
                                if (agent == k).any()}
    if envs.spec.turn_based:  # games: each agent against uniformly random opponents
        out["agent_returns_vs_random"] = {}
        for k, a in enumerate(names):
            r, _, ag = play(tuple(j for j in range(len(names)) if j != k))
            out["agent_returns_vs_random"][a] = float(r[ag == k].mean())
    return out, returns


class Evaluator:
    """Ray actor that evaluates published weights without disturbing the training runners."""

    def __init__(self, env_maker, make_policy, algo_cfg, num_envs: int, seed: int):
        import torch

        torch.set_num_threads(1)
        torch.set_flush_denormal(True)  # denormal weights take slow paths (see Learner._guard)
        self.envs = env_maker.batch(num_envs, seed)
        self.policy = make_policy(algo_cfg, self.envs.spec)
        self.rng = np.random.default_rng(seed)

    def evaluate(self, weights_ref: list, episodes: int, epsilon: float) -> dict:
        self.policy.load_weights(ray.get(weights_ref[0]))
        return episode_report(self.policy, self.envs, episodes, epsilon, self.rng)[0]
