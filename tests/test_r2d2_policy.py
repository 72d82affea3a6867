"""The runner's numpy acting step computes exactly what the torch network computes."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from rlfleet.algorithms.r2d2.config import R2D2Config
from rlfleet.algorithms.r2d2.networks import R2D2Network
from rlfleet.algorithms.r2d2.policy import R2D2Policy
from rlfleet.platform.envs import EnvSpec


@pytest.mark.parametrize("use_lstm", [True, False])
@pytest.mark.parametrize("dueling", [True, False])
@pytest.mark.parametrize("mlp_hidden", [[16], [16, 8]])
def test_numpy_acting_step_matches_torch_unroll(use_lstm, dueling, mlp_hidden):
    cfg = R2D2Config(lstm_size=12, mlp_hidden=mlp_hidden, dueling_hidden=10, use_lstm=use_lstm, dueling=dueling)
    spec = EnvSpec((3,), "float32", 4)
    torch.manual_seed(0)
    other = R2D2Network(spec.obs_shape, spec.num_actions, cfg)  # weights different from the policy's init
    policy = R2D2Policy(cfg, spec)
    policy.load_weights(other.state_dict())
    assert policy._fast is not None
    rng = np.random.default_rng(0)
    n, steps = 5, 6
    obs = rng.normal(size=(n, steps, 3)).astype(np.float32)
    prev_a = rng.integers(0, 4, (n, steps))
    prev_r = rng.normal(size=(n, steps)).astype(np.float32)
    with torch.no_grad():
        q_ref, _ = other.unroll(torch.from_numpy(obs), torch.from_numpy(prev_a), torch.from_numpy(prev_r),
                                other.initial_state(n))
    state = policy.initial_state(n)
    for t in range(steps):
        q, state = policy.q_values(obs[:, t], prev_a[:, t], prev_r[:, t], state)
        assert q.dtype == np.float32
        np.testing.assert_allclose(q, q_ref[:, t].numpy(), rtol=1e-4, atol=1e-5)


def test_conv_networks_act_through_torch():
    policy = R2D2Policy(R2D2Config(lstm_size=8, dueling_hidden=8), EnvSpec((4, 36, 36), "uint8", 3))
    assert policy._fast is None
    state = policy.initial_state(2)
    actions, state = policy.act(np.zeros((2, 4, 36, 36), np.uint8), np.zeros(2, np.int64), np.zeros(2, np.float32),
                                state, np.zeros(2), np.random.default_rng(0))
    assert actions.shape == (2,) and state[0].shape == (2, 8)
