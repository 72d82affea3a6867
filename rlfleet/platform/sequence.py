"""Cuts each env slot's trajectory into fixed-length sequences with stored recurrent state.

R2D2 Sec. 3: sequences of burn_in + trace steps, a new one every `period` steps, never crossing
an episode boundary. The final sequence of an episode is the episode's last T steps (padded and
masked only when the episode is shorter than T), so every step is in some sequence's trace.
"""
from __future__ import annotations

import numpy as np

from rlfleet.platform import batch as B
from rlfleet.platform.batch import SequenceLayout


class SlotSequenceBuilder:
    def __init__(self, layout: SequenceLayout, obs_shape, obs_dtype):
        if layout.period > layout.trace:
            raise ValueError("sequence period must be <= trace so every step gets a loss")
        self.T = layout.length
        self.period = layout.period
        self.obs_shape, self.obs_dtype = tuple(obs_shape), np.dtype(obs_dtype)
        self.hist: list[tuple] = []
        self.since_start = 0  # steps since the current sequence's start
        self.new_steps = 0  # steps not yet in any emitted sequence
        self.obs = None

    def begin(self, obs) -> None:
        """A new episode starts with observation `obs`."""
        self.hist.clear()
        self.obs, self.prev_action, self.prev_reward = obs, 0, 0.0
        self.since_start = self.new_steps = 0

    def step(self, state: tuple, action: int, reward: float, terminated: bool, truncated: bool,
             next_obs) -> dict | None:
        """Record a transition; `state` is the recurrent state the actor had before acting.

        Returns a finished sequence (dict of arrays) or None. At an episode end the caller calls
        `begin` with the next episode's first observation.
        """
        self.hist.append((self.obs, self.prev_action, self.prev_reward, state, action, reward, terminated))
        if len(self.hist) > self.T:
            del self.hist[0]
        self.obs, self.prev_action, self.prev_reward = next_obs, action, reward
        self.since_start += 1
        self.new_steps += 1
        if self.since_start == self.T:
            self.since_start -= self.period
            self.new_steps = 0
            out = self._emit(next_obs)
            if terminated or truncated:
                self.hist.clear()
            return out
        if (terminated or truncated) and self.new_steps > 0:
            out = self._emit(next_obs)
            self.hist.clear()
            return out
        return None

    def _emit(self, bootstrap_obs) -> dict:
        n, T = len(self.hist), self.T
        obs = np.zeros((T + 1,) + self.obs_shape, self.obs_dtype)
        prev_a = np.zeros(T + 1, np.int64)
        prev_r = np.zeros(T + 1, np.float32)
        cols = list(zip(*self.hist))
        obs[:n] = np.stack(cols[0])
        obs[n] = bootstrap_obs
        prev_a[:n], prev_r[:n] = cols[1], cols[2]
        prev_a[n], prev_r[n] = self.hist[-1][4], self.hist[-1][5]
        action = np.zeros(T, np.int64)
        reward = np.zeros(T, np.float32)
        terminal = np.zeros(T, np.float32)
        mask = np.zeros(T, np.float32)
        action[:n], reward[:n], terminal[:n], mask[:n] = cols[4], cols[5], cols[6], 1.0
        out = {B.OBS: obs, B.PREV_ACTION: prev_a, B.PREV_REWARD: prev_r, B.ACTION: action,
               B.REWARD: reward, B.TERMINAL: terminal, B.MASK: mask}
        for i, s in enumerate(self.hist[0][3]):
            out[B.state_key(i)] = np.asarray(s, np.float32)
        return out


def stack_sequences(seqs: list[dict]) -> dict[str, np.ndarray]:
    return {k: np.stack([s[k] for s in seqs]) for k in seqs[0]}
