"""Exploration schedule of runners: Ape-X epsilons after an optional warm-up from eps = 1."""
from types import SimpleNamespace

import numpy as np

from rlfleet.platform.runner import EnvRunner, apex_epsilons


def _eps(steps, warmup, base, done_before=0):
    runner = SimpleNamespace(env_steps=steps, epsilon_warmup_steps=warmup, epsilons=base,
                             epsilon_warmup_done=done_before)
    return EnvRunner.current_epsilons(runner)


def test_warmup_decays_linearly_from_one_to_apex():
    base = apex_epsilons(4)
    np.testing.assert_allclose(_eps(0, 100, base), np.ones(4))
    np.testing.assert_allclose(_eps(50, 100, base), base + 0.5 * (1 - base))
    np.testing.assert_allclose(_eps(100, 100, base), base)
    np.testing.assert_allclose(_eps(10_000, 100, base), base)


def test_no_warmup_is_plain_apex():
    base = apex_epsilons(8)
    np.testing.assert_allclose(_eps(0, 0, base), base)


def test_replacement_runner_continues_the_warmup():
    base = apex_epsilons(4)
    np.testing.assert_allclose(_eps(10, 100, base, done_before=40), base + 0.5 * (1 - base))
    np.testing.assert_allclose(_eps(0, 100, base, done_before=100), base)
