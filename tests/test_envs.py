"""Batched env adapters."""
import gymnasium as gym
import numpy as np

from rlfleet.platform.envs import EnvList, mask_observation


def test_envlist_seeds_once_so_repeated_resets_see_new_starts():
    a = EnvList([gym.make("CartPole-v1") for _ in range(3)], seed=7)
    b = EnvList([gym.make("CartPole-v1") for _ in range(3)], seed=7)
    first_a, first_b = a.reset(), b.reset()
    np.testing.assert_array_equal(first_a, first_b)  # reproducible from the seed
    assert not np.array_equal(a.reset(), first_a)  # but a second evaluation is not the same 3 starts


def test_observation_mask_keeps_position_and_angle():
    env = mask_observation(gym.make("CartPole-v1"), [0, 2])
    full = gym.make("CartPole-v1")
    obs, _ = env.reset(seed=3)
    ref, _ = full.reset(seed=3)
    assert env.observation_space.shape == (2,)
    np.testing.assert_array_equal(obs, ref[[0, 2]])
