"""A corridor: start at cell 0, reach the last cell. Any Gymnasium env works the same way."""
import gymnasium as gym
import numpy as np


class Corridor(gym.Env):
    """Observation: one-hot position. Actions: 0 = left, 1 = right. Reward 1 at the goal, -0.01 per
    step otherwise; the episode is truncated after `max_steps`."""

    def __init__(self, length: int = 6, max_steps: int = 30):
        self.length, self.max_steps = length, max_steps
        self.observation_space = gym.spaces.Box(0.0, 1.0, (length,), np.float32)
        self.action_space = gym.spaces.Discrete(2)

    def _obs(self):
        obs = np.zeros(self.length, np.float32)
        obs[self.pos] = 1.0
        return obs

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.pos, self.t = 0, 0
        return self._obs(), {}

    def step(self, action):
        self.pos = min(self.length - 1, self.pos + 1) if action == 1 else max(0, self.pos - 1)
        self.t += 1
        done = self.pos == self.length - 1
        reward = 1.0 if done else -0.01
        return self._obs(), reward, done, self.t >= self.max_steps and not done, {}


def make_corridor(length: int = 6, max_steps: int = 30) -> Corridor:
    """The factory rlfleet calls with the YAML's `env.kwargs`."""
    return Corridor(length, max_steps)
