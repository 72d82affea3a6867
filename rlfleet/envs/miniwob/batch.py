"""N MiniWoB envs of one runner stepped concurrently, with their legal-action masks.

A browser step is mostly waiting on chromedriver and Chromium (other processes), so one thread
per env overlaps them; the runner still sees one batched `step` (no remote call per env step).
A finished or broken episode is reset in the same thread right away (EnvList semantics: `obs`
holds the new episode's first observation). Slots whose episode was dropped after a browser
failure are flagged in `StepResult.dropped` and counted in `dropped_episodes`.
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np

from rlfleet.platform.envs import EnvSpec, StepResult


class MiniWoBBatch:
    def __init__(self, envs: list, seed: int):
        self.envs = envs
        self.seed = seed
        self._seeded = False
        e = envs[0]
        self.spec = EnvSpec(e.layout.shape, "float32", e.layout.num_actions, action_mask=True)
        self.action_mask = np.ones((len(envs), self.spec.num_actions), bool)
        self.pool = ThreadPoolExecutor(max_workers=len(envs), thread_name_prefix="miniwob")

    def __len__(self):
        return len(self.envs)

    @property
    def dropped_episodes(self) -> int:
        return sum(e.dropped_episodes for e in self.envs)

    def reset(self) -> np.ndarray:
        seeded, self._seeded = self._seeded, True
        seeds = [None if seeded else self.seed + i for i in range(len(self.envs))]
        results = list(self.pool.map(lambda es: es[0].reset(seed=es[1])[0], zip(self.envs, seeds)))
        self.action_mask = np.stack([e.action_mask() for e in self.envs])
        return np.stack(results)

    @staticmethod
    def _step_one(env, action):
        next_obs, reward, term, trunc, info = env.step(action)
        next_mask = env.action_mask()
        obs, mask = next_obs, next_mask
        if term or trunc:
            obs = env.reset()[0]
            mask = env.action_mask()
        return next_obs, reward, term, trunc, info["dropped"], obs, mask, next_mask

    def step(self, actions: np.ndarray) -> StepResult:
        out = list(self.pool.map(self._step_one, self.envs, actions.tolist()))
        next_obs, reward, term, trunc, dropped, obs, mask, next_mask = zip(*out)
        self.action_mask = np.stack(mask)
        return StepResult(np.stack(next_obs), np.asarray(reward, np.float32), np.asarray(term, bool),
                          np.asarray(trunc, bool), np.zeros(len(self.envs), bool), np.stack(obs),
                          action_mask=self.action_mask, next_action_mask=np.stack(next_mask),
                          dropped=np.asarray(dropped, bool))

    def close(self):
        if self.pool is None:
            return
        try:
            list(self.pool.map(lambda e: e.close(), self.envs))
        finally:
            self.pool.shutdown(wait=False)
            self.pool = None
