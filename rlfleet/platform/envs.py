"""Batched environments as the runner sees them: N slots stepped together.

Two adapters over the Gymnasium API:
- `EnvList`: N single envs; a finished slot is reset immediately (the runner gets both the final
  observation of the transition and the first observation of the next episode).
- `VectorEnvBatch`: a gymnasium VectorEnv in NEXT_STEP autoreset mode (Gymnasium >= 1.0 default):
  the step after a done is a reset step whose action is ignored; it is flagged `reset_step` and
  must not be stored as a transition.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class EnvSpec:
    obs_shape: tuple
    obs_dtype: str
    num_actions: int
    action_mask: bool = False  # the env reports legal actions per step (StepResult.action_mask)
    agents: int = 1  # runner slots per env (multi-agent envs: one per agent)
    agent_groups: tuple | None = None  # multi-agent policy mapping: network index of each agent
    agent_names: tuple | None = None  # multi-agent envs: possible agents, in slot order
    agent_id: bool = False  # multi-agent envs: observations end with a one-hot agent index
    turn_based: bool = False  # AEC envs: one agent of each env acts per step (StepResult.acting)

    @staticmethod
    def from_spaces(observation_space, action_space) -> "EnvSpec":
        if not hasattr(action_space, "n"):
            from rlfleet.platform.errors import UserError

            raise UserError(f"this algorithm needs a Discrete action space, got {action_space}")
        return EnvSpec(tuple(observation_space.shape), str(observation_space.dtype), int(action_space.n))


@dataclass
class StepResult:
    next_obs: np.ndarray  # the transition's next observation (the final one at an episode end)
    reward: np.ndarray
    terminated: np.ndarray
    truncated: np.ndarray
    reset_step: np.ndarray  # True: this slot's step only reset its env; no transition happened
    obs: np.ndarray  # what to act on next (first obs of a new episode where a slot just reset)
    action_mask: np.ndarray | None = None  # [N, A] legal actions for `obs` (envs with masks only)
    next_action_mask: np.ndarray | None = None  # [N, A] legal actions for `next_obs`
    dropped: np.ndarray | None = None  # [N] the slot's episode broke (e.g. its browser crashed): truncated, not counted
    acting: np.ndarray | None = None  # [N] turn-based envs: the slots whose turn it is on `obs` (the others wait)


class EnvList:
    def __init__(self, envs: list, seed: int):
        self.envs = envs
        self.seed = seed
        self._seeded = False
        self.spec = EnvSpec.from_spaces(envs[0].observation_space, envs[0].action_space)

    def __len__(self):
        return len(self.envs)

    def reset(self) -> np.ndarray:
        """Seeds each env on the first reset only, so repeated evaluations see new start states."""
        seeded, self._seeded = self._seeded, True
        return np.stack([e.reset(seed=None if seeded else self.seed + i)[0] for i, e in enumerate(self.envs)])

    def step(self, actions: np.ndarray) -> StepResult:
        n = len(self.envs)
        next_obs = np.empty((n,) + self.spec.obs_shape, self.spec.obs_dtype)
        reward = np.empty(n, np.float32)
        term = np.empty(n, bool)
        trunc = np.empty(n, bool)
        resets = []
        # Python ints: Gymnasium's action-space check is several times slower on numpy scalars
        for i, (env, a) in enumerate(zip(self.envs, actions.tolist())):
            next_obs[i], reward[i], term[i], trunc[i], _ = env.step(a)
            if term[i] or trunc[i]:
                resets.append(i)
        obs = next_obs
        if resets:
            obs = next_obs.copy()
            for i in resets:
                obs[i] = self.envs[i].reset()[0]
        return StepResult(next_obs, reward, term, trunc, np.zeros(n, bool), obs)

    def close(self):
        for e in self.envs:
            e.close()


class VectorEnvBatch:
    def __init__(self, vec_env, seed: int):
        import gymnasium as gym

        mode = vec_env.metadata.get("autoreset_mode", gym.vector.AutoresetMode.NEXT_STEP)
        if mode != gym.vector.AutoresetMode.NEXT_STEP:
            raise ValueError(f"VectorEnvBatch expects NEXT_STEP autoreset, got {mode}")
        self.vec = vec_env
        self.seed = seed
        self._seeded = False
        self.spec = EnvSpec.from_spaces(vec_env.single_observation_space, vec_env.single_action_space)
        self._done = np.zeros(vec_env.num_envs, bool)

    def __len__(self):
        return self.vec.num_envs

    def reset(self) -> np.ndarray:
        self._done[:] = False
        seeded, self._seeded = self._seeded, True
        return self.vec.reset(seed=None if seeded else self.seed)[0]

    def step(self, actions: np.ndarray) -> StepResult:
        obs, reward, term, trunc, _ = self.vec.step(actions)
        reset_step = self._done.copy()
        self._done = np.logical_or(term, trunc)
        return StepResult(obs, reward.astype(np.float32), term, trunc, reset_step, obs)

    def close(self):
        self.vec.close()


def mask_observation(env, keep: list[int]):
    """Keep only observation indices `keep`, e.g. stateless CartPole = position and angle [0, 2]:
    without velocities the task needs memory (R2D2 paper's POMDP setting)."""
    import gymnasium as gym

    space = env.observation_space
    if not isinstance(space, gym.spaces.Box) or len(space.shape) != 1:
        raise ValueError(f"observation_mask needs a 1-D Box observation space, got {space}")
    bad = [i for i in keep if not 0 <= i < space.shape[0]]
    if bad:
        raise ValueError(f"observation_mask indices {bad} out of range for shape {space.shape}")
    idx = np.asarray(keep, dtype=np.int64)
    new_space = gym.spaces.Box(space.low[idx], space.high[idx], dtype=space.dtype)
    return gym.wrappers.TransformObservation(env, lambda o: o[idx], new_space)


def scale_observation(env):
    """Map each Box observation dim with finite bounds linearly onto [-1, 1]; unbounded dims pass
    through. Why: inputs on very different scales (CartPole: cart position ~1, pole angle ~0.05)
    slow learning; unlike a running mean/std filter, a fixed map keeps stored replay consistent."""
    import gymnasium as gym

    space = env.observation_space
    if not isinstance(space, gym.spaces.Box):
        raise ValueError(f"normalize_observations needs a Box observation space, got {space}")
    low, high = space.low.astype(np.float64), space.high.astype(np.float64)
    finite = np.isfinite(low) & np.isfinite(high) & (high > low)
    lo, hi = np.where(finite, low, -1.0), np.where(finite, high, 1.0)  # unbounded dims: identity map
    center = ((hi + lo) / 2).astype(np.float32)
    scale = (2.0 / (hi - lo)).astype(np.float32)
    new_space = gym.spaces.Box(np.where(finite, -1.0, low).astype(np.float32),
                               np.where(finite, 1.0, high).astype(np.float32), dtype=np.float32)
    return gym.wrappers.TransformObservation(env, lambda o: ((o - center) * scale).astype(np.float32), new_space)


class EnvMaker:
    """Picklable recipe for one env: the registered factory, its kwargs and generic wrappers.
    Shipped to runner actors so the registry lookup happens once, in the driver."""

    def __init__(self, factory, kwargs: dict, observation_mask: list[int] | None = None,
                 vectorization: str = "none", normalize_observations: bool = False, agent_id: bool = True,
                 policy_mapping="shared"):
        self.factory, self.kwargs = factory, dict(kwargs)
        self.observation_mask, self.vectorization = observation_mask, vectorization
        self.normalize_observations, self.agent_id = normalize_observations, agent_id
        self.policy_mapping = policy_mapping

    @classmethod
    def from_config(cls, env_cfg) -> "EnvMaker":
        from rlfleet.platform.registry import resolve_env

        return cls(resolve_env(env_cfg.id), env_cfg.kwargs, env_cfg.observation_mask, env_cfg.vectorization,
                   env_cfg.normalize_observations, env_cfg.agent_id, env_cfg.policy_mapping)

    def __call__(self):
        from rlfleet.platform.multiagent import is_aec_env, is_parallel_env

        env = self.factory(**self.kwargs)
        if is_parallel_env(env) or is_aec_env(env):
            if self.observation_mask is not None or self.normalize_observations:
                from rlfleet.platform.errors import UserError

                raise UserError("env.observation_mask and env.normalize_observations apply to single-agent "
                                "Gymnasium envs only")
            return env
        if self.observation_mask is not None:
            env = mask_observation(env, self.observation_mask)
        if self.normalize_observations:
            env = scale_observation(env)
        return env

    def batch(self, n: int, seed: int):
        make_batch = getattr(self.factory, "make_batch", None)
        if make_batch is not None:  # envs vectorized natively (e.g. JAX vmap): one object, n envs
            return make_batch(n, seed, **{"agent_id": self.agent_id, "policy_mapping": self.policy_mapping,
                                          **self.kwargs})
        if self.vectorization == "sync":
            import gymnasium as gym

            return VectorEnvBatch(gym.vector.SyncVectorEnv([self] * n), seed)
        envs = [self() for _ in range(n)]
        return self._wrap(envs, seed)

    def _wrap(self, envs: list, seed: int):
        from rlfleet.platform.multiagent import MultiAgentBatch, is_aec_env, is_parallel_env

        if is_aec_env(envs[0]):
            from rlfleet.platform.turnbased import AECBatch

            return AECBatch(envs, seed, agent_id=self.agent_id, policy_mapping=self.policy_mapping)
        if is_parallel_env(envs[0]):
            return MultiAgentBatch(envs, seed, agent_id=self.agent_id, policy_mapping=self.policy_mapping)
        return EnvList(envs, seed)

    def agents_per_env(self) -> int:
        if not hasattr(self, "_agents"):
            self._agents = self.spec().agents
        return self._agents

    def spec(self) -> EnvSpec:
        batch = self.batch(1, 0) if hasattr(self.factory, "make_batch") else self._wrap([self()], 0)
        try:
            return batch.spec
        finally:
            batch.close()
