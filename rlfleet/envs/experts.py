"""Scripted experts for demonstrations: `fn(env, observations) -> {agent: action}` for Parallel envs.

Referenced as `scripted:rlfleet.envs.experts:<fn>` by `rlfleet demos record`.
"""
from __future__ import annotations

import itertools

import numpy as np


def gems(env, observations) -> dict:
    """Gems: collect own gems, then meet the other agent on the nearest purple gem."""
    from rlfleet.envs.games.gems_v0 import expert_actions

    return expert_actions(env.unwrapped if hasattr(env, "unwrapped") else env)


def simple_spread(env, observations) -> dict:
    """mpe2 simple_spread: every agent computes the same assignment of agents to landmarks (the
    permutation with the least total distance, from positions all observations agree on) and
    moves towards its landmark along the larger axis, braking against its own velocity."""
    agents = [a for a in env.possible_agents if a in observations]
    obs = {a: np.asarray(observations[a], np.float64) for a in agents}
    pos = {a: obs[a][2:4] for a in agents}
    first = agents[0]
    n_land = (len(obs[first]) - 4 - 4 * (len(env.possible_agents) - 1)) // 2
    landmarks = [pos[first] + obs[first][4 + 2 * j:6 + 2 * j] for j in range(n_land)]
    best = min(itertools.permutations(range(n_land), len(agents)),
               key=lambda perm: sum(np.linalg.norm(landmarks[j] - pos[a]) for a, j in zip(agents, perm)))
    actions = {}
    for a, j in zip(agents, best):
        delta = landmarks[j] - pos[a] - 0.5 * obs[a][0:2]  # aim short of the target by the current drift
        if np.abs(delta).max() < 0.02:
            actions[a] = 0
        elif abs(delta[0]) >= abs(delta[1]):
            actions[a] = 2 if delta[0] > 0 else 1  # right / left
        else:
            actions[a] = 4 if delta[1] > 0 else 3  # up / down
    return actions
