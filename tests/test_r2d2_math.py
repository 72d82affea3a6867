"""Unit checks of the R2D2 math (spec: shared/specs/r2d2.md, "Checks that must hold").

- value rescaling h and its inverse;
- n-step double-Q targets against a brute-force loop written from the spec formula;
- sequence priorities p = eta max|d| + (1 - eta) mean|d| over valid steps;
- burn-in gets no gradient, the unroll starts from the stored state;
- Ape-X epsilon schedule.
No Ray is started here.
"""
from __future__ import annotations

import copy
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from rlfleet.algorithms.r2d2.config import R2D2Config
from rlfleet.algorithms.r2d2.learner import (R2D2Learner, inverse_value_rescale, n_step_double_q_targets,
                                             sequence_priorities, value_rescale)
from rlfleet.platform import batch as B
from rlfleet.platform.runner import apex_epsilons

EPS = 1e-3


# ------------------------------------------------------------------------------------------------
# Value rescaling
# ------------------------------------------------------------------------------------------------
def _h_ref(x: float, eps: float = EPS) -> float:
    s = math.copysign(1.0, x) if x != 0 else 0.0
    return s * (math.sqrt(abs(x) + 1.0) - 1.0) + eps * x


def _h_inv_ref(x: float, eps: float = EPS) -> float:
    s = math.copysign(1.0, x) if x != 0 else 0.0
    return s * (((math.sqrt(1.0 + 4.0 * eps * (abs(x) + 1.0 + eps)) - 1.0) / (2.0 * eps)) ** 2 - 1.0)


def _grid() -> torch.Tensor:
    lin = torch.linspace(-1e6, 1e6, 200_001, dtype=torch.float64)
    logs = torch.logspace(-9, 6, 3001, dtype=torch.float64)
    rng = np.random.default_rng(0)
    rand = torch.from_numpy(rng.uniform(-1e6, 1e6, 20_000))
    small = torch.from_numpy(rng.uniform(-10, 10, 20_000))
    special = torch.tensor([0.0, 1e6, -1e6, 1.0, -1.0, 1e-3, -1e-3, 999_999.5, -999_999.5], dtype=torch.float64)
    return torch.cat([lin, logs, -logs, rand, small, special])


def test_inverse_value_rescale_round_trip_relative_1e3():
    x = _grid()
    y = inverse_value_rescale(value_rescale(x))
    assert y.dtype == torch.float64
    assert torch.all(torch.isfinite(y))
    err = (y - x).abs()
    # relative 1e-3 (x = 0 must come back as 0 up to rounding)
    assert torch.all(err <= 1e-3 * x.abs() + 1e-12), float((err / x.abs().clamp(min=1e-300)).max())
    assert value_rescale(torch.zeros(1, dtype=torch.float64)).item() == 0.0
    assert inverse_value_rescale(torch.zeros(1, dtype=torch.float64)).item() == 0.0


def test_forward_round_trip_h_of_h_inv():
    y = value_rescale(_grid())  # the range of h over [-1e6, 1e6]
    back = value_rescale(inverse_value_rescale(y))
    assert torch.all((back - y).abs() <= 1e-3 * y.abs() + 1e-12)


def test_value_rescale_matches_spec_formula_pointwise():
    xs = [0.0, 3.0, -3.0, 8.0, -8.0, 0.5, -0.25, 123.456, -98765.4, 1e6, -1e6]
    x = torch.tensor(xs, dtype=torch.float64)
    h = value_rescale(x)
    hi = inverse_value_rescale(x)
    for i, v in enumerate(xs):
        assert h[i].item() == pytest.approx(_h_ref(v), rel=1e-12, abs=1e-12)
        assert hi[i].item() == pytest.approx(_h_inv_ref(v), rel=1e-12, abs=1e-12)
    # known values: h(3) = 1 + 3 eps, h(8) = 2 + 8 eps; odd function; strictly increasing
    assert h[1].item() == pytest.approx(1.003, abs=1e-12)
    assert h[3].item() == pytest.approx(2.008, abs=1e-12)
    assert torch.allclose(value_rescale(-x), -h)
    g = torch.sort(_grid()).values
    assert torch.all(torch.diff(value_rescale(g)) >= 0)


def test_value_rescale_eps_parameter_is_used():
    x = torch.tensor([10.0, -50.0, 1e4], dtype=torch.float64)
    for eps in (1e-2, 1e-4):
        h = value_rescale(x, eps)
        assert torch.allclose(h, torch.tensor([_h_ref(v, eps) for v in x.tolist()], dtype=torch.float64))
        assert torch.allclose(inverse_value_rescale(h, eps), x, rtol=1e-6)


# ------------------------------------------------------------------------------------------------
# n-step double-Q targets
# ------------------------------------------------------------------------------------------------
def brute_force_targets(q_on, q_tgt, reward, terminal, mask, n, gamma, rescale, eps=EPS):
    """Spec: y_t = h( sum_{k<n'} g^k r_{t+k} + [no terminal] g^n' h^-1(Q_tgt(s_{t+n'}, argmax Q_on(s_{t+n'}))) ).

    The sum stops after a terminal step (no bootstrap) and at the last valid (mask = 1) step of
    the sequence; the bootstrap input is then the one right after the last summed step (index T
    at most). Returns a dict {(b, t): y} for the valid steps only.
    """
    q_on, q_tgt = q_on.tolist(), q_tgt.tolist()
    reward, terminal, mask = reward.tolist(), terminal.tolist(), mask.tolist()
    nb, nt = len(reward), len(reward[0])
    out = {}
    for b in range(nb):
        for t in range(nt):
            if mask[b][t] == 0:
                continue
            g_sum, k, ended = 0.0, 0, False
            while k < n:
                j = t + k
                if j >= nt or mask[b][j] == 0:
                    break
                g_sum += gamma ** k * reward[b][j]
                k += 1
                if terminal[b][j] != 0:
                    ended = True
                    break
            if not ended:
                j = t + k  # <= nt: the bootstrap input
                row_on = q_on[b][j]
                a_star = max(range(len(row_on)), key=lambda a: row_on[a])
                q = q_tgt[b][j][a_star]
                g_sum += gamma ** k * (_h_inv_ref(q, eps) if rescale else q)
            out[(b, t)] = _h_ref(g_sum, eps) if rescale else g_sum
    return out


def _random_sequences(seed: int, nb: int = 24, nt: int = 12, na: int = 4):
    """Rows of several kinds: full no terminal; terminal mid-sequence then padding; time-limit end
    (padding without terminal); terminal on the last step; terminal in the middle with valid
    steps after it (the sum must still stop at it)."""
    g = torch.Generator().manual_seed(seed)
    q_on = torch.randn(nb, nt + 1, na, generator=g, dtype=torch.float64) * 5.0
    q_tgt = torch.randn(nb, nt + 1, na, generator=g, dtype=torch.float64) * 50.0
    reward = torch.randn(nb, nt, generator=g, dtype=torch.float64) * 3.0
    terminal = torch.zeros(nb, nt, dtype=torch.float64)
    mask = torch.ones(nb, nt, dtype=torch.float64)
    rng = np.random.default_rng(seed)
    for b in range(nb):
        kind = b % 5
        end = int(rng.integers(0, nt - 1))  # last valid index, < nt - 1
        if kind == 1:  # terminated mid-sequence, padded after
            terminal[b, end] = 1.0
            mask[b, end + 1:] = 0.0
        elif kind == 2:  # truncated (time limit): padding, no terminal
            mask[b, end + 1:] = 0.0
        elif kind == 3:  # terminal exactly on the last step
            terminal[b, nt - 1] = 1.0
        elif kind == 4:  # terminal in the middle, steps after still valid
            terminal[b, end] = 1.0
        # padded steps carry garbage that must not leak into targets
        reward[b] = torch.where(mask[b] > 0, reward[b], torch.full_like(reward[b], 1e4))
    return q_on, q_tgt, reward, terminal, mask


@pytest.mark.parametrize("rescale", [True, False])
@pytest.mark.parametrize("n", [1, 3, 5])
def test_n_step_double_q_targets_match_brute_force(n, rescale):
    gamma = 0.97
    for seed in range(3):
        q_on, q_tgt, reward, terminal, mask = _random_sequences(seed * 10 + n)
        y = n_step_double_q_targets(q_on, q_tgt, reward, terminal, mask, n, gamma, rescale, EPS)
        assert y.shape == reward.shape
        ref = brute_force_targets(q_on, q_tgt, reward, terminal, mask, n, gamma, rescale)
        assert len(ref) == int(mask.sum())
        for (b, t), v in ref.items():
            assert y[b, t].item() == pytest.approx(v, rel=1e-9, abs=1e-9), (b, t, n, rescale)


def test_n_step_targets_hand_computed_cases():
    """Small cases worked out by hand (no rescaling)."""
    gamma = 0.5
    # 1 row, T = 4, 2 actions. q_on picks action 1 at every bootstrap input; q_tgt[.,1] = 10 * (j+1)
    q_on = torch.tensor([[[0.0, 1.0]] * 5], dtype=torch.float64)
    q_tgt = torch.tensor([[[-99.0, 10.0 * (j + 1)] for j in range(5)]], dtype=torch.float64)
    reward = torch.tensor([[1.0, 2.0, 3.0, 4.0]], dtype=torch.float64)
    mask = torch.ones(1, 4, dtype=torch.float64)
    # no terminal, n = 2: y_0 = 1 + .5*2 + .25*Q(s_2)=.25*30; ... y_3 = 4 + .5*Q(s_4) (sequence end)
    y = n_step_double_q_targets(q_on, q_tgt, reward, torch.zeros(1, 4, dtype=torch.float64), mask, 2, gamma,
                                rescale=False)
    assert y[0].tolist() == pytest.approx([1 + 1 + 7.5, 2 + 1.5 + 10.0, 3 + 2 + 12.5, 4 + 25.0])
    # terminal at step 1, padding after: y_0 = 1 + .5*2 (no bootstrap), y_1 = 2
    term = torch.tensor([[0.0, 1.0, 0.0, 0.0]], dtype=torch.float64)
    pmask = torch.tensor([[1.0, 1.0, 0.0, 0.0]], dtype=torch.float64)
    y = n_step_double_q_targets(q_on, q_tgt, reward, term, pmask, 3, gamma, rescale=False)
    assert y[0, :2].tolist() == pytest.approx([2.0, 2.0])
    # same padding without terminal (time limit): bootstrap from s_2 (the obs after the last step)
    y = n_step_double_q_targets(q_on, q_tgt, reward, torch.zeros_like(term), pmask, 3, gamma, rescale=False)
    assert y[0, :2].tolist() == pytest.approx([1 + 1 + 0.25 * 30, 2 + 0.5 * 30])
    # double Q: argmax from q_on, value from q_tgt (q_tgt's own argmax is not used)
    q_on2 = torch.tensor([[[1.0, 0.0]] * 5], dtype=torch.float64)
    y = n_step_double_q_targets(q_on2, q_tgt, reward, torch.zeros(1, 4, dtype=torch.float64), mask, 1, gamma,
                                rescale=False)
    assert y[0].tolist() == pytest.approx([1 - 49.5, 2 - 49.5, 3 - 49.5, 4 - 49.5])


# ------------------------------------------------------------------------------------------------
# Priorities
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("eta", [0.9, 0.0, 1.0, 0.37])
def test_sequence_priorities_mix_over_valid_steps(eta):
    g = torch.Generator().manual_seed(1)
    nb, nt = 7, 9
    td = torch.randn(nb, nt, generator=g, dtype=torch.float64) * 3.0
    mask = torch.ones(nb, nt, dtype=torch.float64)
    lengths = [9, 1, 5, 3, 8, 2, 6]
    for b, L in enumerate(lengths):
        mask[b, L:] = 0.0
        td[b, L:] = 1e3 * (b + 1)  # huge garbage in the padding: must be ignored
    p = sequence_priorities(td, mask, eta)
    assert p.shape == (nb,)
    for b, L in enumerate(lengths):
        d = [abs(v) for v in td[b, :L].tolist()]
        ref = eta * max(d) + (1 - eta) * sum(d) / len(d)
        assert p[b].item() == pytest.approx(ref, rel=1e-12, abs=1e-12)


# ------------------------------------------------------------------------------------------------
# Learner loss: burn-in without gradient, stored state
# ------------------------------------------------------------------------------------------------
OBS_DIM, NUM_ACTIONS, BURN_IN, TRACE = 3, 3, 3, 4


def _cfg(**kw) -> R2D2Config:
    base = dict(burn_in=BURN_IN, trace=TRACE, period=2, lstm_size=8, mlp_hidden=[8], dueling_hidden=8,
                n_step=2, gamma=0.9, batch_size=4, target_update_period=1000)
    base.update(kw)
    return R2D2Config(**base)


def _learner(cfg: R2D2Config, seed: int = 0) -> R2D2Learner:
    torch.manual_seed(seed)
    spec = SimpleNamespace(obs_shape=(OBS_DIM,), obs_dtype="float32", num_actions=NUM_ACTIONS)
    learner = R2D2Learner(cfg, spec)
    # make the target net differ from the online net so double Q is not degenerate
    with torch.no_grad():
        for p in learner.target.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return learner


def _plain_batch(g, nb: int, T: int, lstm: int, state_scale: float = 1.0) -> dict:
    """Random inputs for T steps, no terminals, no padding."""
    return {
        B.OBS: torch.randn(nb, T + 1, OBS_DIM, generator=g),
        B.PREV_ACTION: torch.randint(0, NUM_ACTIONS, (nb, T + 1), generator=g),
        B.PREV_REWARD: torch.randn(nb, T + 1, generator=g),
        B.ACTION: torch.randint(0, NUM_ACTIONS, (nb, T), generator=g),
        B.REWARD: torch.randn(nb, T, generator=g),
        B.TERMINAL: torch.zeros(nb, T),
        B.MASK: torch.ones(nb, T),
        B.state_key(0): torch.randn(nb, lstm, generator=g) * state_scale,
        B.state_key(1): torch.randn(nb, lstm, generator=g) * state_scale,
    }


def _batch(seed: int = 0, nb: int = 4, lstm: int = 8) -> dict:
    g = torch.Generator().manual_seed(seed)
    T = BURN_IN + TRACE
    batch = _plain_batch(g, nb, T, lstm)
    batch[B.WEIGHT] = torch.rand(nb, generator=g) + 0.1
    # row 1 terminates inside the trace; row 2 is a short padded (truncated) sequence
    batch[B.TERMINAL][1, 5] = 1.0
    batch[B.MASK][1, 6:] = 0.0
    batch[B.MASK][2, 6:] = 0.0
    return batch


def test_burn_in_steps_get_no_gradient():
    learner = _learner(_cfg())
    batch = _batch()
    obs = batch[B.OBS].clone().requires_grad_(True)
    prev_r = batch[B.PREV_REWARD].clone().requires_grad_(True)
    s0 = batch[B.state_key(0)].clone().requires_grad_(True)
    s1 = batch[B.state_key(1)].clone().requires_grad_(True)
    batch.update({B.OBS: obs, B.PREV_REWARD: prev_r, B.state_key(0): s0, B.state_key(1): s1})
    loss, _, _ = learner.loss(batch)
    loss.backward()
    assert obs.grad is not None and prev_r.grad is not None
    # burn-in positions: exactly zero gradient
    assert torch.count_nonzero(obs.grad[:, :BURN_IN]) == 0
    assert torch.count_nonzero(prev_r.grad[:, :BURN_IN]) == 0
    # the stored state only warms the burn-in: no gradient into it either
    for s in (s0, s1):
        assert s.grad is None or torch.count_nonzero(s.grad) == 0
    # trace positions carry gradient (every sequence has valid trace steps)
    for b in range(obs.shape[0]):
        assert obs.grad[b, BURN_IN:BURN_IN + TRACE].abs().sum() > 0, b
        assert prev_r.grad[b, BURN_IN:BURN_IN + TRACE].abs().sum() > 0, b
    # the bootstrap input (index T) only feeds the (no-grad) target
    assert torch.count_nonzero(obs.grad[:, BURN_IN + TRACE]) == 0
    # network parameters do get gradient
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in learner.online.parameters())
    # the target net never gets gradient
    assert all(p.grad is None for p in learner.target.parameters())


def test_burn_in_influences_loss_through_state_only():
    """Changing a burn-in observation changes the loss (it warms the state) — burn-in is used."""
    learner = _learner(_cfg())
    batch = _batch()
    loss0, _, _ = learner.loss(batch)
    batch2 = {k: v.clone() for k, v in batch.items()}
    batch2[B.OBS][:, 0] += 3.0
    loss1, _, _ = learner.loss(batch2)
    assert not torch.isclose(loss0, loss1, rtol=0, atol=1e-7)


def _reference_loss(learner: R2D2Learner, batch: dict, state: tuple):
    """Loss and priorities computed independently: one full unroll of each net from `state`,
    brute-force targets on the trace, IS-weighted per-sequence mean of 0.5 td^2 over valid steps."""
    cfg, l = learner.cfg, learner.cfg.burn_in
    with torch.no_grad():
        q_on_full, _ = learner.online.unroll(batch[B.OBS], batch[B.PREV_ACTION], batch[B.PREV_REWARD], state)
        q_tg_full, _ = learner.target.unroll(batch[B.OBS], batch[B.PREV_ACTION], batch[B.PREV_REWARD], state)
    q_on, q_tg = q_on_full[:, l:].double(), q_tg_full[:, l:].double()
    reward, terminal = batch[B.REWARD][:, l:].double(), batch[B.TERMINAL][:, l:].double()
    mask, action = batch[B.MASK][:, l:].double(), batch[B.ACTION][:, l:]
    ys = brute_force_targets(q_on, q_tg, reward, terminal, mask, cfg.n_step, cfg.gamma, cfg.value_rescaling,
                             cfg.rescale_eps)
    nb, nt = reward.shape
    losses, prios = [], []
    for b in range(nb):
        tds = [q_on[b, t, int(action[b, t])].item() - ys[(b, t)] for t in range(nt) if mask[b, t] > 0]
        losses.append(float(batch[B.WEIGHT][b]) * 0.5 * sum(d * d for d in tds) / len(tds))
        a = [abs(d) for d in tds]
        prios.append(cfg.priority_eta * max(a) + (1 - cfg.priority_eta) * sum(a) / len(a))
    return sum(losses) / nb, prios


def test_first_sequences_train_their_burn_in_steps():
    """A sequence that starts its episode (FIRST) has no history to warm up on: its loss covers
    all its steps from the initial state, as with burn_in 0; the others keep R2D2's burn-in."""
    learner = _learner(_cfg())
    batch = _batch(seed=5)
    first = torch.tensor([1.0, 0.0, 1.0, 0.0])
    batch[B.FIRST] = first
    for k in (B.state_key(0), B.state_key(1)):
        batch[k][first > 0] = 0.0  # what a runner stores at an episode's start
    obs = batch[B.OBS].clone().requires_grad_(True)
    batch[B.OBS] = obs
    loss, prios, _ = learner.loss(batch)
    loss.backward()
    for b in range(4):  # gradient reaches the burn-in observations of FIRST rows only
        assert (obs.grad[b, :BURN_IN].abs().sum() > 0) == bool(first[b]), b
    cfg, state = learner.cfg, (batch[B.state_key(0)], batch[B.state_key(1)])
    with torch.no_grad():
        q_on_full, _ = learner.online.unroll(obs, batch[B.PREV_ACTION], batch[B.PREV_REWARD], state)
        q_tg_full, _ = learner.target.unroll(obs, batch[B.PREV_ACTION], batch[B.PREV_REWARD], state)
    ref_losses, ref_prios = [], []
    for b in range(4):
        l = 0 if first[b] else BURN_IN
        row = slice(b, b + 1)
        cols = [batch[k][row, l:].double() for k in (B.REWARD, B.TERMINAL, B.MASK)]
        ys = brute_force_targets(q_on_full[row, l:].double(), q_tg_full[row, l:].double(), *cols, cfg.n_step,
                                 cfg.gamma, cfg.value_rescaling, cfg.rescale_eps)
        tds = [q_on_full[b, l + t, int(batch[B.ACTION][b, l + t])].item() - ys[(0, t)]
               for t in range(cols[2].shape[1]) if cols[2][0, t] > 0]
        ref_losses.append(float(batch[B.WEIGHT][b]) * 0.5 * sum(d * d for d in tds) / len(tds))
        a = [abs(d) for d in tds]
        ref_prios.append(cfg.priority_eta * max(a) + (1 - cfg.priority_eta) * sum(a) / len(a))
    assert loss.item() == pytest.approx(sum(ref_losses) / 4, rel=1e-4, abs=1e-6)
    assert prios.tolist() == pytest.approx(ref_prios, rel=1e-4, abs=1e-6)
    batch[B.FIRST] = torch.zeros(4)  # unmarked: the burn-in steps are not trained (a different loss)
    assert abs(learner.loss(batch)[0].item() - loss.item()) > 1e-5


@pytest.mark.parametrize("rescale", [True, False])
def test_loss_and_priorities_match_reference_from_stored_state(rescale):
    learner = _learner(_cfg(value_rescaling=rescale))
    batch = _batch(seed=3)
    state = (batch[B.state_key(0)], batch[B.state_key(1)])
    loss, prios, _ = learner.loss(batch)
    ref_loss, ref_prios = _reference_loss(learner, batch, state)
    assert loss.item() == pytest.approx(ref_loss, rel=1e-4, abs=1e-6)
    assert prios.tolist() == pytest.approx(ref_prios, rel=1e-4, abs=1e-6)
    # starting instead from the zero state gives a different (wrong) answer: the check can fail
    zero = learner.online.initial_state(4)
    wrong_loss, _ = _reference_loss(learner, batch, zero)
    assert abs(wrong_loss - ref_loss) > 1e-5


def test_stored_state_switch():
    cfg_on, cfg_off = _cfg(stored_state=True), _cfg(stored_state=False)
    learner_on = _learner(cfg_on)
    learner_off = _learner(cfg_off)
    learner_off.online.load_state_dict(learner_on.online.state_dict())
    learner_off.target.load_state_dict(learner_on.target.state_dict())
    batch = _batch(seed=5)
    other = {k: v.clone() for k, v in batch.items()}
    other[B.state_key(0)] = torch.randn_like(batch[B.state_key(0)]) * 2.0
    other[B.state_key(1)] = torch.randn_like(batch[B.state_key(1)]) * 2.0
    zeros = {k: v.clone() for k, v in batch.items()}
    zeros[B.state_key(0)].zero_()
    zeros[B.state_key(1)].zero_()

    on_a, pa, _ = learner_on.loss(batch)
    on_b, pb, _ = learner_on.loss(other)
    on_z, pz, _ = learner_on.loss(zeros)
    # stored_state=True: the state columns matter
    assert not torch.isclose(on_a, on_b, rtol=0, atol=1e-7)
    assert not torch.allclose(pa, pb, rtol=0, atol=1e-7)
    off_a, qa, _ = learner_off.loss(batch)
    off_b, qb, _ = learner_off.loss(other)
    # stored_state=False: state columns ignored, identical to starting from zeros
    assert torch.equal(off_a, off_b) and torch.equal(qa, qb)
    assert off_a.item() == pytest.approx(on_z.item(), rel=1e-6, abs=1e-7)
    assert torch.allclose(qa, pz, rtol=1e-6, atol=1e-7)


def test_stored_state_without_burn_in_is_the_unroll_start():
    """burn_in = 0: Q on the trace is exactly the unroll of the online net from the stored state."""
    learner = _learner(_cfg(burn_in=0))
    # build a batch with T = trace only
    g = torch.Generator().manual_seed(11)
    nb, T = 3, TRACE
    batch = _plain_batch(g, nb, T, 8, state_scale=2.0)
    batch[B.WEIGHT] = torch.ones(nb)
    state = (batch[B.state_key(0)], batch[B.state_key(1)])
    loss, prios, stats = learner.loss(batch)
    ref_loss, ref_prios = _reference_loss(learner, batch, state)
    assert loss.item() == pytest.approx(ref_loss, rel=1e-4, abs=1e-6)
    assert prios.tolist() == pytest.approx(ref_prios, rel=1e-4, abs=1e-6)
    with torch.no_grad():
        q, _ = learner.online.unroll(batch[B.OBS], batch[B.PREV_ACTION], batch[B.PREV_REWARD], state)
    q_taken = q[:, :-1].gather(-1, batch[B.ACTION].unsqueeze(-1)).squeeze(-1)
    assert float(stats["q_mean"]) == pytest.approx(q_taken.mean().item(), rel=1e-5, abs=1e-6)


def test_is_weights_scale_per_sequence_loss():
    """loss = mean_i w_i L_i: with one-hot weights the loss isolates one sequence."""
    learner = _learner(_cfg())
    batch = _batch(seed=7)
    nb = batch[B.WEIGHT].shape[0]
    per_seq = []
    for i in range(nb):
        b = {k: v.clone() for k, v in batch.items()}
        b[B.WEIGHT] = torch.zeros(nb)
        b[B.WEIGHT][i] = float(nb)
        per_seq.append(learner.loss(b)[0].item())
    loss, _, _ = learner.loss(batch)
    expected = sum(float(batch[B.WEIGHT][i]) * per_seq[i] for i in range(nb)) / nb
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    assert min(per_seq) > 0


def test_update_changes_weights_and_returns_priorities():
    learner = _learner(_cfg())
    batch = _batch(seed=2)
    before = copy.deepcopy(learner.online.state_dict())
    prios, stats = learner.update(batch)
    prios = prios.numpy()
    assert prios.shape == (4,) and np.all(prios >= 0) and np.all(np.isfinite(prios))
    assert np.isfinite(float(stats["loss"])) and np.isfinite(float(stats["grad_norm"]))
    after = learner.online.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before)


# ------------------------------------------------------------------------------------------------
# Ape-X epsilons
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("n", [2, 3, 8, 16, 256])
def test_apex_epsilons_schedule(n):
    eps = np.asarray(apex_epsilons(n))
    assert eps.shape == (n,)
    assert eps[0] == pytest.approx(0.4, rel=1e-12)
    assert eps[-1] == pytest.approx(0.4 ** 8, rel=1e-12)
    assert np.all(np.diff(eps) < 0)
    for i in range(n):
        assert eps[i] == pytest.approx(0.4 ** (1 + 7 * i / (n - 1)), rel=1e-12)


def test_apex_epsilons_single_slot():
    eps = np.asarray(apex_epsilons(1))
    assert eps.shape == (1,)
    assert eps[0] == pytest.approx(0.4)
    assert np.all(np.isfinite(eps))
