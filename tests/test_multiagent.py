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
    spec = EnvMaker(resolve_env("pz:pettingzoo.classic.connect_four_v3"), {}).spec()  # AEC: tests/test_turn_based.py
    assert spec.turn_based and spec.agents == 2 and spec.action_mask and spec.obs_shape == (6 * 7 * 2 + 2,)
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
    # `rlfleet eval --render` on a PettingZoo env: a GIF frame per env step of one episode
    from PIL import Image

    from rlfleet.evaluate import evaluate

    report = evaluate(summary["run_dir"], episodes=2, render=True)
    assert report["episodes"] == 2
    gif = Image.open(report["video"])
    assert 10 <= gif.n_frames <= 25 and gif.size[0] >= 100  # (identical consecutive frames are merged)


def test_policy_mapping_gives_each_group_its_own_network_in_acting_and_learning():
    import torch

    from rlfleet.algorithms.r2d2.config import R2D2Config
    from rlfleet.algorithms.r2d2.learner import R2D2Learner
    from rlfleet.algorithms.r2d2.networks import GroupedR2D2Network
    from rlfleet.algorithms.r2d2.policy import R2D2Policy

    maker = EnvMaker(resolve_env("pz:mpe2.simple_spread_v3"), {"max_cycles": 5},
                     policy_mapping={"agent_0": "a", "agent_1": "b", "agent_2": "a"})
    batch = maker.batch(2, 0)
    assert batch.spec.agent_groups == (0, 1, 0)
    cfg = R2D2Config(burn_in=1, trace=3, lstm_size=8, mlp_hidden=[8], dueling_hidden=8)
    policy = R2D2Policy(cfg, batch.spec)
    assert isinstance(policy.net, GroupedR2D2Network) and len(policy.net.nets) == 2
    obs = batch.reset()
    n = len(batch)
    args = (np.zeros(n, np.int64), np.zeros(n, np.float32), policy.initial_state(n))
    q_fast, _ = policy.q_values(obs, *args)
    with torch.no_grad():  # the torch route and each group's own network agree with the numpy route
        q_t, _ = policy.net.unroll(torch.from_numpy(obs)[:, None], torch.zeros(n, 1, dtype=torch.long),
                                   torch.zeros(n, 1), tuple(torch.from_numpy(s) for s in args[2]))
        q_b, _ = policy.net.nets[1].unroll(torch.from_numpy(obs[1:2])[:, None], torch.zeros(1, 1, dtype=torch.long),
                                           torch.zeros(1, 1), (torch.zeros(1, 8), torch.zeros(1, 8)))
    np.testing.assert_allclose(q_fast, q_t[:, 0].numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(q_fast[1], q_b[0, 0].numpy(), rtol=1e-4, atol=1e-5)
    # a learner update on sequences of group-b agents only changes network b
    learner = R2D2Learner(cfg, batch.spec)
    before = [copy_params(net) for net in learner.online.nets]
    seq_obs = np.repeat(obs[[1, 4]][:, None], cfg.burn_in + cfg.trace + 1, axis=1)  # agent_1 of both envs
    b, t = 2, cfg.burn_in + cfg.trace
    from rlfleet.platform import batch as B

    learner.update({B.OBS: torch.from_numpy(seq_obs), B.PREV_ACTION: torch.zeros(b, t + 1, dtype=torch.long),
                    B.PREV_REWARD: torch.zeros(b, t + 1), B.ACTION: torch.ones(b, t, dtype=torch.long),
                    B.REWARD: torch.ones(b, t), B.TERMINAL: torch.zeros(b, t), B.MASK: torch.ones(b, t),
                    B.WEIGHT: torch.ones(b), B.state_key(0): torch.zeros(b, 8), B.state_key(1): torch.zeros(b, 8)})
    after = [copy_params(net) for net in learner.online.nets]
    assert all(torch.equal(x, y) for x, y in zip(before[0], after[0]))
    assert any(not torch.equal(x, y) for x, y in zip(before[1], after[1]))


def copy_params(net):
    return [p.detach().clone() for p in net.parameters()]


def test_policy_mapping_errors_name_the_agents():
    with pytest.raises(UserError, match="agents without a group: \\['agent_2'\\]"):
        EnvMaker(resolve_env("pz:mpe2.simple_spread_v3"), {}, policy_mapping={"agent_0": "a", "agent_1": "a"}).spec()
    with pytest.raises(UserError, match="agent_id"):
        EnvMaker(resolve_env("pz:mpe2.simple_spread_v3"), {}, agent_id=False, policy_mapping="per_agent").spec()
