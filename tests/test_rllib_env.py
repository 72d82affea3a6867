"""`rllib:` family: RLlib MultiAgentEnv classes run unchanged (here RLlib's own MultiAgentCartPole,
whose agents finish at different times)."""
import gymnasium as gym
import numpy as np
import pytest
from ray.rllib.env.multi_agent_env import MultiAgentEnv

import rlfleet
from rlfleet.platform.envs import EnvMaker
from rlfleet.platform.errors import UserError
from rlfleet.platform.registry import resolve_env

CARTPOLE = "rllib:ray.rllib.examples.envs.classes.multi_agent:MultiAgentCartPole"


class TakeTurns(MultiAgentEnv):
    """Turn-based: only the agent to move gets an observation."""

    def __init__(self, config=None):
        super().__init__()
        self.possible_agents = self.agents = ["a", "b"]
        self.observation_spaces = {a: gym.spaces.Box(0, 1, (1,), np.float32) for a in self.agents}
        self.action_spaces = {a: gym.spaces.Discrete(2) for a in self.agents}

    def reset(self, *, seed=None, options=None):
        return {"a": np.zeros(1, np.float32)}, {}

    def step(self, actions):
        return {"b": np.zeros(1, np.float32)}, {"a": 0.0}, {"__all__": False}, {"__all__": False}, {}


def test_agents_that_finish_early_sit_out_until_the_episode_ends():
    maker = EnvMaker(resolve_env(CARTPOLE), {"num_agents": 2})
    batch = maker.batch(1, seed=3)
    assert batch.spec.agents == 2 and batch.spec.obs_shape == (4 + 2,)
    batch.reset()
    first_done, sat_out = None, 0
    for t in range(600):
        res = batch.step(np.array([t % 2, (t // 3) % 2]))
        done = res.terminated | res.truncated
        if first_done is None and done.any() and not done.all():
            first_done = int(np.flatnonzero(done)[0])
            continue
        if first_done is not None:
            # the finished agent sits out (no transition) while the other one plays on
            assert res.reset_step[first_done] and not res.reset_step[1 - first_done]
            sat_out += 1
            if done[1 - first_done]:
                break
    assert first_done is not None and sat_out > 0, "both poles never fell at different times"


def test_r2d2_trains_on_an_rllib_multi_agent_env_through_ray(ray_session, tiny_config):
    tiny_config["env"] = {"id": CARTPOLE, "kwargs": {"num_agents": 2}}
    tiny_config["stop"] = {"env_steps": 1500}
    summary = rlfleet.train(tiny_config)
    assert summary["stop_reason"] == "env_steps" and summary["updates"] > 0 and summary["episodes"] > 4


def test_rllib_names_and_turn_based_envs_fail_clearly():
    with pytest.raises(UserError, match="not an RLlib MultiAgentEnv.*MultiAgentCartPole"):
        resolve_env("rllib:ray.rllib.examples.envs.classes.multi_agent:StatelessCartPole")
    with pytest.raises(UserError, match="expected rllib:<module>:<MultiAgentEnv class>"):
        resolve_env("rllib:MultiAgentCartPole")
    env = resolve_env(f"rllib:{__name__}:TakeTurns")()
    env.reset()
    with pytest.raises(UserError, match=r"agents \['a'\] got no observation.*turn-based"):
        env.step({"a": 0})
