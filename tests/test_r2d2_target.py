"""Target-network updates: hard copies every period (paper) or Polyak averaging (option)."""
import torch

from rlfleet.algorithms.r2d2 import R2D2Config, R2D2Learner
from rlfleet.platform import batch as B
from rlfleet.platform.envs import EnvSpec


def _batch(cfg, spec, b=4):
    t = cfg.burn_in + cfg.trace
    g = torch.Generator().manual_seed(0)
    return {B.OBS: torch.randn(b, t + 1, *spec.obs_shape, generator=g),
            B.PREV_ACTION: torch.randint(0, spec.num_actions, (b, t + 1), generator=g),
            B.PREV_REWARD: torch.randn(b, t + 1, generator=g), B.ACTION: torch.randint(0, spec.num_actions, (b, t), generator=g),
            B.REWARD: torch.randn(b, t, generator=g), B.TERMINAL: torch.zeros(b, t), B.MASK: torch.ones(b, t),
            B.WEIGHT: torch.ones(b), B.state_key(0): torch.zeros(b, cfg.lstm_size), B.state_key(1): torch.zeros(b, cfg.lstm_size)}


def _params(net):
    return torch.cat([p.detach().flatten() for p in net.parameters()])


def test_hard_copy_only_at_period():
    cfg = R2D2Config(burn_in=2, trace=3, lstm_size=8, mlp_hidden=[8], dueling_hidden=8, target_update_period=3, lr=1e-2)
    spec = EnvSpec((3,), "float32", 2)
    learner = R2D2Learner(cfg, spec)
    batch = _batch(cfg, spec)
    start = _params(learner.target)
    learner.update(batch)
    learner.update(batch)
    assert torch.equal(_params(learner.target), start)
    learner.update(batch)
    assert torch.equal(_params(learner.target), _params(learner.online))


def test_polyak_moves_target_by_tau():
    cfg = R2D2Config(burn_in=2, trace=3, lstm_size=8, mlp_hidden=[8], dueling_hidden=8, target_tau=0.25, lr=1e-2)
    spec = EnvSpec((3,), "float32", 2)
    learner = R2D2Learner(cfg, spec)
    before = _params(learner.target)
    learner.update(_batch(cfg, spec))
    expected = before + 0.25 * (_params(learner.online) - before)
    assert torch.allclose(_params(learner.target), expected, atol=1e-6)
    assert not torch.equal(_params(learner.target), before)


def test_linear_lr_decay():
    cfg = R2D2Config(burn_in=2, trace=3, lstm_size=8, mlp_hidden=[8], dueling_hidden=8, lr=1e-3, lr_final=1e-4,
                     lr_decay_updates=4)
    spec = EnvSpec((3,), "float32", 2)
    learner = R2D2Learner(cfg, spec)
    batch = _batch(cfg, spec)
    seen = [learner.update(batch)[1]["lr"] for _ in range(6)]
    expected = [1e-3, 7.75e-4, 5.5e-4, 3.25e-4, 1e-4, 1e-4]
    assert all(abs(a - b) < 1e-9 for a, b in zip(seen, expected)), seen
