"""Gems (Haynam et al. 2025, MAMQL), re-created from the paper's description.

A 15x15 grid, 2 agents, 5 actions (stay, up, down, left, right). Each agent has 3 gems of its own
(+1 to it when it steps on one) and there are 3 shared purple gems: when both agents stand on the
same purple gem at the same time, both get +6 and that gem is used up. Episodes last 45 steps.
Observation: a 5-channel one-hot map seen from the agent's side (self, other, own gems, other's
gems, purple gems), flattened (`map_shape` is its C x H x W shape, for convolutional torsos). Gem
and agent positions are drawn at reset from the env's seed.

Departure (opt-in, `time_feature=True`): one extra value after the map, the fraction of the
episode's steps left. The scripted expert stops collecting own gems when only just enough time is
left to meet on a purple gem; without the time the map cannot tell when, and a policy that ignores
it (own gems first, then purple) returns 13.3 instead of the expert's 15.2. With the time in the
observation the last step is a true terminal (`terminated`, nothing to bootstrap), not a truncation.

The paper does not say whether "standing on a purple gem at the same time" means the same gem; we
take the same gem, which makes the purple reward a coordination problem.
"""
from __future__ import annotations

import gymnasium as gym
import numpy as np
from pettingzoo import ParallelEnv

SIZE, STEPS, OWN_GEMS, PURPLE_GEMS, PURPLE_REWARD = 15, 45, 3, 3, 6.0
MOVES = np.array([[0, 0], [-1, 0], [1, 0], [0, -1], [0, 1]])  # stay, up, down, left, right (row, col)
AGENTS = ["agent_0", "agent_1"]


class GemsEnv(ParallelEnv):
    metadata = {"name": "gems_v0", "render_modes": []}

    def __init__(self, size: int = SIZE, max_steps: int = STEPS, egocentric: bool = False, time_feature: bool = False):
        """`egocentric`: the map is shifted so the agent sits at its centre ((2 size - 1)^2 cells, off-map
        cells empty; the self channel is then constant). Same information, but 'which way is the nearest
        gem' becomes a fixed function of the input, which small networks learn from far fewer samples."""
        self.size, self.max_steps, self.egocentric, self.time_feature = size, max_steps, egocentric, time_feature
        self.possible_agents = list(AGENTS)
        self.agents: list[str] = []
        self._rng = np.random.default_rng()
        side = 2 * size - 1 if egocentric else size
        self.map_shape = (5, side, side)  # the observation starts with this map, flattened
        self._obs_space = gym.spaces.Box(0.0, 1.0, (5 * side * side + int(time_feature),), np.float32)
        self._act_space = gym.spaces.Discrete(5)

    def observation_space(self, agent):
        return self._obs_space

    def action_space(self, agent):
        return self._act_space

    def reset(self, seed=None, options=None):
        if seed is not None:
            self._rng = np.random.default_rng(seed)
        n = self.size * self.size
        cells = self._rng.choice(n, 2 + 2 * OWN_GEMS + PURPLE_GEMS, replace=False)
        rc = np.stack(np.divmod(cells, self.size), axis=1)
        self.pos = rc[:2].copy()
        self.own = [rc[2:2 + OWN_GEMS].tolist(), rc[2 + OWN_GEMS:2 + 2 * OWN_GEMS].tolist()]
        self.purple = rc[2 + 2 * OWN_GEMS:].tolist()
        self.t = 0
        self.agents = list(self.possible_agents)
        return self._observations(), {a: {} for a in self.agents}

    def _observations(self) -> dict:
        s = self.size
        out = {}
        for i, agent in enumerate(self.possible_agents):
            grid = np.zeros((5, s, s), np.float32)
            grid[0][tuple(self.pos[i])] = 1.0
            grid[1][tuple(self.pos[1 - i])] = 1.0
            for ch, gems in ((2, self.own[i]), (3, self.own[1 - i]), (4, self.purple)):
                for r, c in gems:
                    grid[ch, r, c] = 1.0
            if self.egocentric:  # place the map so that the agent's cell lands on the centre
                r, c = self.pos[i]
                view = np.zeros((5, 2 * s - 1, 2 * s - 1), np.float32)
                view[:, s - 1 - r:2 * s - 1 - r, s - 1 - c:2 * s - 1 - c] = grid
                grid = view
            flat = grid.reshape(-1)
            if self.time_feature:
                flat = np.append(flat, np.float32((self.max_steps - self.t) / self.max_steps))
            out[agent] = flat
        return out

    def step(self, actions: dict):
        self.t += 1
        for i, agent in enumerate(self.possible_agents):
            self.pos[i] = np.clip(self.pos[i] + MOVES[int(actions[agent])], 0, self.size - 1)
        rewards = {a: 0.0 for a in self.possible_agents}
        for i, agent in enumerate(self.possible_agents):
            here = self.pos[i].tolist()
            if here in self.own[i]:
                self.own[i].remove(here)
                rewards[agent] += 1.0
        both = self.pos[0].tolist()
        if both == self.pos[1].tolist() and both in self.purple:
            self.purple.remove(both)
            for agent in self.possible_agents:
                rewards[agent] += PURPLE_REWARD
        done = self.t >= self.max_steps
        obs = self._observations()
        # with the time observed, the state at time-left 0 is terminal; without it the limit truncates
        terms = {a: done and self.time_feature for a in self.possible_agents}
        truncs = {a: done and not self.time_feature for a in self.possible_agents}
        if done:
            self.agents = []
        return obs, rewards, terms, truncs, {a: {} for a in self.possible_agents}


def parallel_env(**kwargs) -> GemsEnv:
    return GemsEnv(**kwargs)


def _symmetry_actions() -> np.ndarray:
    """[8, 5]: action a becomes SYM_ACTIONS[k, a] under symmetry k of the square grid: bit 0
    transposes (row <-> col), then bit 1 flips the rows, then bit 2 flips the columns."""
    out = np.zeros((8, len(MOVES)), np.int64)
    for k in range(8):
        for a, (dr, dc) in enumerate(MOVES):
            if k & 1:
                dr, dc = dc, dr
            dr, dc = (-dr if k & 2 else dr), (-dc if k & 4 else dc)
            out[k, a] = int(np.flatnonzero((MOVES == (dr, dc)).all(1))[0])
    return out


SYM_ACTIONS = _symmetry_actions()


def _cell_sources(h: int, w: int):
    """[8, H*W]: under symmetry k, cell j of the new map is cell [k, j] of the old one (bit 0
    transposes, then bit 1 flips the rows, then bit 2 the columns, as SYM_ACTIONS). One gather per
    batch instead of three full-batch selects."""
    import torch

    cells = torch.arange(h * w).reshape(1, 1, h, w)
    out = []
    for k in range(8):
        m = cells.transpose(2, 3) if k & 1 else cells
        m = m.flip(2) if k & 2 else m
        out.append((m.flip(3) if k & 4 else m).reshape(-1))
    return torch.stack(out)


def symmetry_augment(rows: dict, map_shape, generator):
    """Demonstration rows under a random symmetry of the grid each (8: transposes and flips; the
    rules and the reset distribution are invariant under them), for `algorithm.augment`: the leading
    C x H x W map of `obs` / `next_obs` is transformed, the agent's and the others' actions (`joint`)
    and the legal-action masks are mapped alike. 8x the distinct expert states for imitation."""
    import torch

    if not map_shape or map_shape[1] != map_shape[2]:
        from rlfleet.platform.errors import UserError

        raise UserError(f"gems symmetry_augment needs algorithm.map_shape of a square map, got {map_shape}")
    c, h, w = (int(x) for x in map_shape)
    n = len(rows["action"])
    device = rows["action"].device
    k = torch.randint(0, 8, (n,), generator=generator).to(device)
    src = _cell_sources(h, w).to(device)[k]  # [n, H*W]: the cell each cell of the new map comes from
    out = dict(rows)
    for key in ("obs", "next_obs"):
        x = rows[key]
        m = x[:, :c * h * w].reshape(n, c, h * w).gather(2, src[:, None, :].expand(n, c, h * w))
        out[key] = torch.cat([m.reshape(n, -1), x[:, c * h * w:]], 1)
    perm = torch.as_tensor(SYM_ACTIONS, device=device)[k]  # [n, 5]: old action -> new action
    out["action"] = perm.gather(1, rows["action"].long()[:, None])[:, 0]
    if "joint" in rows:
        out["joint"] = perm.gather(1, rows["joint"].long())
    for key in ("legal", "legal_next"):
        if key in rows:  # new[:, perm[a]] = old[:, a]
            out[key] = torch.zeros_like(rows[key]).scatter(1, perm, rows[key])
    return out


def expert_goals(env: GemsEnv) -> list:
    """Scripted expert: collect own gems nearest-first, then both walk to the purple gem closest to
    the pair and wait on it for the other (a coordinated, near-optimal plan).

    Ties between purple gems equally near the pair go to the one the pair reaches sooner, then to the
    one nearer agent_1: rules the grid's symmetries leave unchanged, so that demonstrations seen under
    a symmetry (`symmetry_augment`) are still this expert's. A tie broken by position instead deadlocks
    a policy imitating augmented demos: each agent waits on its own purple gem for the other. Only
    exact remaining ties, and ties between own gems (harmless: no one waits on those), go to the
    smallest (row, col), which the map shows (unlike the order gems were drawn).

    Returns each agent's (goal cell or None, "own" | "purple" | None)."""
    goals = []
    target_purple = None
    if env.purple:
        def key(g):
            d = [int(np.abs(np.array(g) - p).sum()) for p in env.pos]
            return sum(d), max(d), d[1], tuple(g)

        target_purple = min(env.purple, key=key)
    for i in range(len(env.possible_agents)):
        pos = env.pos[i]
        steps_left = env.max_steps - env.t
        goal, kind = None, None
        if env.own[i]:
            nearest = min(env.own[i], key=lambda g: (np.abs(np.array(g) - pos).sum(), tuple(g)))
            # go for an own gem unless that would leave too little time to meet on a purple gem
            to_gem = np.abs(np.array(nearest) - pos).sum()
            to_purple_after = (np.abs(np.array(target_purple) - np.array(nearest)).sum() if target_purple else 0)
            if target_purple is None or to_gem + to_purple_after < steps_left - 1:
                goal, kind = nearest, "own"
        if goal is None and target_purple is not None:
            goal, kind = target_purple, "purple"
        goals.append((goal, kind))
    return goals


def expert_actions(env: GemsEnv) -> dict:
    """The scripted expert's actions: a step towards each agent's goal (`expert_goals`), rows first."""
    return {agent: _step_towards(env.pos[i], goal) for i, (agent, (goal, _)) in
            enumerate(zip(env.possible_agents, expert_goals(env)))}


def _step_towards(pos, goal) -> int:
    if goal is None:
        return 0
    d = np.asarray(goal) - pos
    if d[0] != 0:
        return 2 if d[0] > 0 else 1
    if d[1] != 0:
        return 4 if d[1] > 0 else 3
    return 0
