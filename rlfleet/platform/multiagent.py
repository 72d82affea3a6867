"""Multi-agent envs as runner slots: N PettingZoo Parallel envs with K agents = N*K slots.

Each (env, agent) pair is one slot of the runner's batch, so acting stays one forward pass and
sequences, replay and learners stay unchanged; this is independent learning with parameter
sharing, and a one-hot agent index appended to each observation lets the shared network tell
agents apart. Agents that are absent (not yet spawned, or already done while their env goes on)
sit out: their slot is flagged `reset_step` (no transition) until their env resets. Agents with
fewer actions than the largest action space, and envs whose observations carry an
`action_mask`, get per-slot legal-action masks that acting and the Q-targets honour.
"""
from __future__ import annotations

import numpy as np

from rlfleet.platform.envs import EnvSpec, StepResult
from rlfleet.platform.errors import UserError


def _split_obs(space):
    """(observation space, has an action mask) for a Box or a Dict(observation, action_mask)."""
    import gymnasium as gym

    if isinstance(space, gym.spaces.Dict) and "observation" in space.spaces:
        return space["observation"], "action_mask" in space.spaces
    if isinstance(space, gym.spaces.Box):
        return space, False
    raise UserError(f"multi-agent observations must be a Box or a Dict with 'observation' (and 'action_mask'), "
                    f"got {space}")


class MultiAgentBatch:
    def __init__(self, envs: list, seed: int, agent_id: bool = True, policy_mapping="shared"):
        self.envs = envs
        self.seed = seed
        self._seeded = False
        env = envs[0]
        self.agents = list(env.possible_agents)
        self.K = len(self.agents)
        self._index = {a: k for k, a in enumerate(self.agents)}  # agent -> slot offset within its env
        self.n = len(envs) * self.K
        obs_spaces, masked = zip(*(_split_obs(env.observation_space(a)) for a in self.agents))
        self.obs_dims = [int(np.prod(s.shape)) for s in obs_spaces]
        n_actions = []
        for a in self.agents:
            space = env.action_space(a)
            if not hasattr(space, "n"):
                raise UserError(f"agent {a!r}: this algorithm needs Discrete actions, got {space}")
            n_actions.append(int(space.n))
        self.n_actions = n_actions
        self.dict_obs = any(masked)
        self.agent_id = agent_id
        dim = max(self.obs_dims) + (self.K if agent_id else 0)
        has_mask = any(masked) or len(set(n_actions)) > 1
        groups = agent_groups(self.agents, policy_mapping, agent_id)
        self.spec = EnvSpec((dim,), "float32", max(n_actions), action_mask=has_mask, agents=self.K,
                            agent_groups=groups, agent_names=tuple(self.agents), agent_id=agent_id)
        A = self.spec.num_actions
        # actions beyond an agent's own action count are never legal
        self._base_mask = np.zeros((self.K, A), bool)
        for k, na in enumerate(n_actions):
            self._base_mask[k, :na] = True
        self.action_mask = np.ones((self.n, A), bool) if has_mask else None
        self._live = np.zeros(self.n, bool)  # the slot's agent is in its env right now

    def __len__(self):
        return self.n

    # -- encoding ----------------------------------------------------------------------------
    def _write(self, e: int, observations: dict, obs: np.ndarray, mask: np.ndarray | None) -> None:
        """Fill env e's slots of `obs` (and `mask`) from a PettingZoo observation dict."""
        for k, a in enumerate(self.agents):
            self._write_slot(e * self.K + k, k, observations.get(a), obs, mask)

    def _write_slot(self, i: int, k: int, o, obs: np.ndarray, mask: np.ndarray | None) -> None:
        """Slot i (agent k) of `obs` (and `mask`) from the agent's observation `o` (None: absent)."""
        if o is None:
            obs[i] = 0.0
            if mask is not None:
                mask[i] = self._base_mask[k]
            return
        if self.dict_obs:
            m = o.get("action_mask")
            o = o["observation"]
            if mask is not None:
                mask[i] = self._base_mask[k]
                if m is not None:
                    mask[i, :len(m)] &= np.asarray(m, bool)
                    if not mask[i].any():  # nothing legal (e.g. waiting for its turn): keep argmax defined
                        mask[i] = self._base_mask[k]
        elif mask is not None:
            mask[i] = self._base_mask[k]
        flat = np.asarray(o, np.float32).reshape(-1)
        obs[i, :len(flat)] = flat
        obs[i, len(flat):] = 0.0
        if self.agent_id:
            obs[i, -self.K + k] = 1.0

    def _empty(self):
        obs = np.zeros((self.n,) + self.spec.obs_shape, np.float32)
        mask = np.ones((self.n, self.spec.num_actions), bool) if self.spec.action_mask else None
        return obs, mask

    def _reset_env(self, e: int, obs, mask) -> None:
        seed = None if self._seeded else self.seed + e
        observations, _ = self.envs[e].reset(seed=seed)
        self._write(e, observations, obs, mask)
        live = set(self.envs[e].agents)
        self._live[e * self.K:(e + 1) * self.K] = [a in live for a in self.agents]

    # -- batch API ---------------------------------------------------------------------------
    def reset(self) -> np.ndarray:
        obs, mask = self._empty()
        for e in range(len(self.envs)):
            self._reset_env(e, obs, mask)
        self._seeded = True
        self.action_mask = mask
        return obs

    def step(self, actions: np.ndarray) -> StepResult:
        K = self.K
        next_obs, next_mask = self._empty()
        obs, mask = self._empty()
        reward = np.zeros(self.n, np.float32)
        term = np.zeros(self.n, bool)
        trunc = np.zeros(self.n, bool)
        sat_out = ~self._live
        acts = actions.tolist()
        for e, env in enumerate(self.envs):
            live = env.agents
            action_dict = {a: acts[e * K + self._index[a]] for a in live}
            observations, rewards, terms, truncs, _ = env.step(action_dict)
            self._write(e, observations, next_obs, next_mask)
            for k, a in enumerate(self.agents):
                i = e * K + k
                if a in rewards and not sat_out[i]:
                    reward[i] = rewards[a]
                    term[i] = bool(terms.get(a, False))
                    trunc[i] = bool(truncs.get(a, False))
            if not env.agents:  # the whole episode is over: start the next one right away
                self._reset_env(e, obs, mask)
            else:
                still = set(env.agents)
                self._live[e * K:(e + 1) * K] = [a in still for a in self.agents]
                self._write(e, {a: o for a, o in observations.items() if a in still}, obs, mask)
        self.action_mask = mask
        return StepResult(next_obs, reward, term, trunc, sat_out, obs, action_mask=mask, next_action_mask=next_mask)

    def close(self):
        for e in self.envs:
            e.close()


def encode_agent_obs(spec: EnvSpec, agent: int, obs: np.ndarray) -> np.ndarray:
    """Agent `agent`'s raw observations [N, ...] as its runner slots see them: flattened, padded
    to the widest agent's size, one-hot agent index appended (as MultiAgentBatch does)."""
    flat = np.asarray(obs, np.float32).reshape(len(obs), -1)
    out = np.zeros((len(flat),) + spec.obs_shape, np.float32)
    out[:, :flat.shape[1]] = flat
    if spec.agent_id:
        out[:, spec.obs_shape[0] - spec.agents + agent] = 1.0
    return out


def agent_groups(agents: list[str], mapping, agent_id: bool) -> tuple | None:
    """Policy mapping -> the network index of each agent (None: one shared network)."""
    if mapping in (None, "shared"):
        return None
    if mapping == "per_agent":
        mapping = {a: a for a in agents}
    if not isinstance(mapping, dict):
        raise UserError(f"env.policy_mapping must be 'shared', 'per_agent' or a mapping agent -> group, got {mapping!r}")
    missing = [a for a in agents if a not in mapping]
    unknown = [a for a in mapping if a not in agents]
    if missing or unknown:
        raise UserError(f"env.policy_mapping: agents without a group: {missing}, unknown agents: {unknown} "
                        f"(the env's agents: {agents})")
    if not agent_id:
        raise UserError("env.policy_mapping other than 'shared' needs env.agent_id: true "
                        "(networks are chosen by the observation's agent index)")
    names = list(dict.fromkeys(str(mapping[a]) for a in agents))
    return tuple(names.index(str(mapping[a])) for a in agents)


def is_parallel_env(env) -> bool:
    from pettingzoo.utils.env import ParallelEnv

    return isinstance(env, ParallelEnv)


def is_aec_env(env) -> bool:
    from pettingzoo.utils.env import AECEnv

    return isinstance(env, AECEnv)
