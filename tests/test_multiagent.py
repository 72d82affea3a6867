"""Multi-agent envs as runner slots: PettingZoo Parallel envs, absent agents, action masks."""
from __future__ import annotations

import functools

import gymnasium as gym
import numpy as np
import pytest
from pettingzoo import ParallelEnv

from rlfleet.platform.envs import EnvMaker
from rlfleet.platform.errors import UserError
from rlfleet.platform.registry import resolve_env


class Dwindling(ParallelEnv):
    """Three agents; 'c' has 2 actions, the others 3; 'a' must not repeat its last action
    (observation action_mask); 'b' leaves after 2 steps while the episode goes on to 4."""

    metadata = {"name": "dwindling_v0"}

    def __init__(self):
        self.possible_agents = ["a", "b", "c"]
        self._n = {"a": 3, "b": 3, "c": 2}

    def observation_space(self, agent):
        return gym.spaces.Dict({"observation": gym.spaces.Box(-10, 10, (2,), np.float32),
                                "action_mask": gym.spaces.Box(0, 1, (self._n[agent],), np.int8)})

    def action_space(self, agent):
        return gym.spaces.Discrete(self._n[agent])

    def _obs(self, agent):
        mask = np.ones(self._n[agent], np.int8)
        if agent == "a" and self.last_a is not None:
            mask[self.last_a] = 0
        return {"observation": np.array([self.t, self.possible_agents.index(agent)], np.float32), "action_mask": mask}

    def reset(self, seed=None, options=None):
        self.t, self.last_a = 0, None
        self.agents = list(self.possible_agents)
        return {a: self._obs(a) for a in self.agents}, {a: {} for a in self.agents}

    def step(self, actions):
        assert set(actions) == set(self.agents), (actions, self.agents)
        for a, act in actions.items():
            assert 0 <= act < self._n[a], (a, act)
        if "a" in actions:
            assert actions["a"] != self.last_a, "masked action sent"
            self.last_a = actions["a"]
        self.t += 1
        rewards = {a: float(self.t) for a in self.agents}
        terms = {a: (a == "b" and self.t == 2) or self.t == 4 for a in self.agents}
        truncs = {a: False for a in self.agents}
        obs = {a: self._obs(a) for a in self.agents}
        self.agents = [a for a in self.agents if not terms[a]]
        return obs, rewards, terms, truncs, {a: {} for a in obs}


def test_slots_masks_and_absent_agents():
    batch = EnvMaker(Dwindling, {}).batch(2, seed=0)
    spec = batch.spec
    assert len(batch) == 6 and spec.num_actions == 3 and spec.action_mask
    assert spec.obs_shape == (2 + 3,)  # observation + one-hot agent index
    obs = batch.reset()
    np.testing.assert_array_equal(obs[1], [0, 1, 0, 1, 0])  # env 0, agent b
    np.testing.assert_array_equal(batch.action_mask[2], [True, True, False])  # c has 2 actions
    rng = np.random.default_rng(0)
    from rlfleet.platform.policies import random_legal_actions

    sat_out_b = []
    for t in range(1, 9):
        legal = batch.action_mask
        actions = random_legal_actions(rng, len(batch), spec.num_actions, legal)
        assert legal[np.arange(6), actions].all()
        res = batch.step(actions)  # Dwindling asserts that only legal actions of present agents arrive
        sat_out_b.append(bool(res.reset_step[1]))
        step_in_episode = (t - 1) % 4 + 1
        if step_in_episode == 2:
            assert res.terminated[1] and not res.terminated[0]
        if step_in_episode == 4:  # the episode ends for everyone; the env resets at once
            assert res.terminated[[0, 2]].all() and not res.terminated[1]
            assert res.obs[0, 0] == 0 and res.next_obs[0, 0] == 4
        np.testing.assert_array_equal(res.reward[[0, 2]], [step_in_episode] * 2)
    assert sat_out_b == [False, False, True, True, False, False, True, True]


def test_pz_family_resolves_parallel_envs_and_explains_bad_names():
    spec = EnvMaker(resolve_env("pz:mpe2.simple_spread_v3"), {"max_cycles": 5}).spec()
    assert spec.num_actions == 5 and spec.obs_shape == (18 + 3,) and not spec.action_mask
    with pytest.raises(UserError, match="did you mean: pz:mpe2.simple_spread_v3"):
        resolve_env("pz:mpe2.simple_sprad_v3")
    with pytest.raises(UserError, match="turn-based"):
        EnvMaker(resolve_env("pz:pettingzoo.classic.connect_four_v3"), {}).spec()
    with pytest.raises(UserError, match="single-agent"):
        EnvMaker(resolve_env("pz:mpe2.simple_spread_v3"), {}, observation_mask=[0]).spec()


def test_masked_double_q_target_never_bootstraps_from_an_illegal_action():
    import torch

    from rlfleet.algorithms.r2d2.learner import n_step_double_q_targets

    q_on = torch.tensor([[[0.0, 5.0], [0.0, 5.0]]])  # online prefers action 1 ...
    q_tgt = torch.tensor([[[1.0, 100.0], [1.0, 100.0]]])
    legal = torch.tensor([[[True, False], [True, False]]])  # ... which is illegal
    r, term, mask = torch.zeros(1, 1), torch.zeros(1, 1), torch.ones(1, 1)
    y = n_step_double_q_targets(q_on, q_tgt, r, term, mask, 1, 0.5, rescale=False, action_mask=legal)
    assert y.item() == pytest.approx(0.5)
    y = n_step_double_q_targets(q_on, q_tgt, r, term, mask, 1, 0.5, rescale=False)
    assert y.item() == pytest.approx(50.0)


def test_r2d2_with_parameter_sharing_trains_on_simple_spread_through_ray(ray_session, tiny_config):
    import rlfleet

    tiny_config["env"] = {"id": "pz:mpe2.simple_spread_v3", "kwargs": {"max_cycles": 25}}
    tiny_config["stop"] = {"env_steps": 2500}
    summary = rlfleet.train(tiny_config)
    assert summary["stop_reason"] == "env_steps"
    assert summary["updates"] > 0 and summary["episodes"] > 0
    assert min(summary["runner_weights_versions"]) >= 1
    # per-agent episodes of 25 steps: every slot's episode ends at the env's max_cycles
    assert summary["evals"] and summary["evals"][-1]["length_mean"] == pytest.approx(25)
