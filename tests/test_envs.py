"""Batched env adapters."""
import gymnasium as gym
import numpy as np

from rlfleet.platform.envs import EnvList, mask_observation, scale_observation


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


def test_scale_observation_maps_finite_bounds_to_unit_range_and_passes_unbounded_dims():
    env = scale_observation(gym.make("CartPole-v1"))  # bounds: x +-4.8, theta +-0.418; velocities unbounded
    raw = gym.make("CartPole-v1")
    o, _ = env.reset(seed=3)
    r, _ = raw.reset(seed=3)
    high = raw.observation_space.high
    np.testing.assert_allclose(o[[0, 2]], r[[0, 2]] / high[[0, 2]], rtol=1e-5)
    np.testing.assert_allclose(o[[1, 3]], r[[1, 3]], rtol=1e-6)
    assert env.observation_space.dtype == np.float32
    np.testing.assert_array_equal(env.observation_space.low[[0, 2]], [-1.0, -1.0])
    assert np.isinf(env.observation_space.high[1])
    for _ in range(20):
        o, *_ = env.step(1)
        r, *_ = raw.step(1)
        np.testing.assert_allclose(o[[0, 2]], r[[0, 2]] / high[[0, 2]], rtol=1e-5, atol=1e-7)
