"""Unit checks of SlotSequenceBuilder (R2D2 Sec. 3 sequences: burn-in + trace, overlap, stored
state, never crossing an episode boundary, last sequence = the episode's last T steps)."""
from __future__ import annotations

import numpy as np
import pytest

from rlfleet.platform import batch as B
from rlfleet.platform.batch import SequenceLayout
from rlfleet.platform.sequence import SequenceBuilder, SlotSequenceBuilder, stack_sequences

BURN_IN, TRACE, PERIOD = 2, 4, 2
T = BURN_IN + TRACE
LAYOUT = SequenceLayout(BURN_IN, TRACE, PERIOD)
LSTM = 3


# A synthetic episode whose every quantity encodes its step index (episode id `e` as an offset):
#   obs_i = [i, 1000 e], action a_i = (i + e) % 5, reward r_i = 0.5 i + 100 e,
#   state before acting at step i = (h = i + 1000 e, c = -(i + 1000 e)).
def obs_of(i: int, e: int = 0) -> np.ndarray:
    return np.array([i, 1000 * e], np.float32)


def action_of(i: int, e: int = 0) -> int:
    return (i + e) % 5


def reward_of(i: int, e: int = 0) -> float:
    return 0.5 * i + 100 * e


def state_of(i: int, e: int = 0) -> tuple:
    v = float(i + 1000 * e)
    return (np.full(LSTM, v, np.float32), np.full(LSTM, -v, np.float32))


def run_episode(builder: SlotSequenceBuilder, length: int, e: int = 0, terminated: bool = True) -> list[tuple]:
    """Feeds one episode; returns [(step index after which it was emitted, sequence), ...]."""
    builder.begin(obs_of(0, e))
    out = []
    for i in range(length):
        last = i == length - 1
        seq = builder.step(state_of(i, e), action_of(i, e), reward_of(i, e), terminated and last,
                           (not terminated) and last, obs_of(i + 1, e))
        if seq is not None:
            out.append((i, seq))
    return out


def check_sequence(seq: dict, start: int, n_valid: int, length: int, e: int = 0, terminated: bool = True) -> None:
    """`seq` holds episode steps start .. start + n_valid - 1 of an episode of `length` steps."""
    assert seq[B.OBS].shape == (T + 1, 2)
    assert seq[B.PREV_ACTION].shape == (T + 1,) and seq[B.PREV_REWARD].shape == (T + 1,)
    for k in (B.ACTION, B.REWARD, B.TERMINAL, B.MASK):
        assert seq[k].shape == (T,), k
    for j in range(n_valid):
        i = start + j
        np.testing.assert_array_equal(seq[B.OBS][j], obs_of(i, e))
        assert seq[B.ACTION][j] == action_of(i, e)
        assert seq[B.REWARD][j] == pytest.approx(reward_of(i, e))
        assert seq[B.PREV_ACTION][j] == (action_of(i - 1, e) if i > 0 else 0)
        assert seq[B.PREV_REWARD][j] == pytest.approx(reward_of(i - 1, e) if i > 0 else 0.0)
        assert seq[B.MASK][j] == 1.0
        is_term = terminated and i == length - 1
        assert seq[B.TERMINAL][j] == (1.0 if is_term else 0.0), (start, j)
    # bootstrap input right after the last valid step: the next observation, prev = last step
    last = start + n_valid - 1
    np.testing.assert_array_equal(seq[B.OBS][n_valid], obs_of(last + 1, e))
    assert seq[B.PREV_ACTION][n_valid] == action_of(last, e)
    assert seq[B.PREV_REWARD][n_valid] == pytest.approx(reward_of(last, e))
    # padding
    assert np.all(seq[B.MASK][n_valid:] == 0.0)
    assert np.all(seq[B.TERMINAL][n_valid:] == 0.0)
    assert np.all(seq[B.REWARD][n_valid:] == 0.0)
    # stored state = the actor's state before acting at the sequence's first step
    h, c = state_of(start, e)
    np.testing.assert_array_equal(seq[B.state_key(0)], h)
    np.testing.assert_array_equal(seq[B.state_key(1)], c)
    assert B.state_keys(seq) == [B.state_key(0), B.state_key(1)]


def _starts(seqs) -> list[int]:
    return [int(s[B.OBS][0, 0]) for _, s in seqs]


def test_long_episode_sequences_every_period():
    length = 15
    b = SlotSequenceBuilder(LAYOUT, (2,), np.float32)
    seqs = run_episode(b, length)
    # full sequences start at 0, 2, 4, ... while T steps fit; the last one is the final T steps
    assert _starts(seqs) == [0, 2, 4, 6, 8, 9]
    assert [i for i, _ in seqs] == [5, 7, 9, 11, 13, 14]  # emitted as soon as complete
    for (_, seq), s in zip(seqs, [0, 2, 4, 6, 8]):
        check_sequence(seq, s, T, length)
    check_sequence(seqs[-1][1], length - T, T, length)
    # terminal only on the terminating step, which is the last sequence's last step
    assert sum(float(s[B.TERMINAL].sum()) for _, s in seqs) == 1.0
    assert seqs[-1][1][B.TERMINAL][T - 1] == 1.0


@pytest.mark.parametrize("length", [T, T + 1, T + PERIOD, T + 2 * PERIOD, T + 2 * PERIOD + 1])
def test_episode_ends_on_or_after_a_sequence_boundary(length):
    b = SlotSequenceBuilder(LAYOUT, (2,), np.float32)
    seqs = run_episode(b, length)
    starts = _starts(seqs)
    full = list(range(0, length - T + 1, PERIOD))
    expected = full if full[-1] == length - T else full + [length - T]
    assert starts == expected
    for (_, seq), s in zip(seqs, starts):
        check_sequence(seq, s, T, length)
    # exactly one terminal flag, on the last sequence, and no duplicate of the final sequence
    assert len(set(starts)) == len(starts)
    assert [float(s[B.TERMINAL].sum()) for _, s in seqs] == [0.0] * (len(seqs) - 1) + [1.0]


@pytest.mark.parametrize("length", [1, 2, 3, T - 1])
def test_short_episode_emitted_once_padded(length):
    b = SlotSequenceBuilder(LAYOUT, (2,), np.float32)
    seqs = run_episode(b, length)
    assert len(seqs) == 1
    i, seq = seqs[0]
    assert i == length - 1
    check_sequence(seq, 0, length, length)
    assert seq[B.MASK].tolist() == [1.0] * length + [0.0] * (T - length)
    # nothing beyond the bootstrap input
    assert np.all(seq[B.OBS][length + 1:] == 0)


@pytest.mark.parametrize("length", [3, T, T + 1, 11])
def test_truncation_gives_no_terminal(length):
    b = SlotSequenceBuilder(LAYOUT, (2,), np.float32)
    seqs = run_episode(b, length, terminated=False)
    assert len(seqs) >= 1
    for _, seq in seqs:
        assert np.all(seq[B.TERMINAL] == 0.0)
    last = seqs[-1][1]
    n_valid = int(last[B.MASK].sum())
    assert n_valid == min(length, T)
    check_sequence(last, length - n_valid, n_valid, length, terminated=False)
    # the bootstrap input is the observation the time limit cut the episode at
    np.testing.assert_array_equal(last[B.OBS][n_valid], obs_of(length))


def test_sequences_never_cross_episode_boundaries():
    b = SlotSequenceBuilder(LAYOUT, (2,), np.float32)
    lengths = [7, 3, 12, 1, 6, 9]
    for e, L in enumerate(lengths):
        term = e % 2 == 0
        seqs = run_episode(b, L, e=e, terminated=term)
        for _, seq in seqs:
            valid = seq[B.MASK] > 0
            n_valid = int(valid.sum())
            # every valid step and the bootstrap input belong to episode e
            assert np.all(seq[B.OBS][: n_valid + 1, 1] == 1000 * e)
            start = int(seq[B.OBS][0, 0])
            check_sequence(seq, start, n_valid, L, e=e, terminated=term)
        # the episode's first sequence starts from the episode start with zeroed prev action/reward
        first = seqs[0][1]
        assert first[B.OBS][0, 0] == 0
        assert first[B.PREV_ACTION][0] == 0 and first[B.PREV_REWARD][0] == 0.0


@pytest.mark.parametrize("burn_in,trace,period", [(2, 4, 2), (2, 4, 4), (3, 5, 1), (0, 3, 2), (4, 6, 3)])
def test_every_step_is_in_some_trace(burn_in, trace, period):
    layout = SequenceLayout(burn_in, trace, period)
    TT = layout.length
    b = SlotSequenceBuilder(layout, (2,), np.float32)
    for length in range(1, 4 * TT + 3):
        b.begin(obs_of(0))
        covered: set[int] = set()
        emitted = 0
        for i in range(length):
            last = i == length - 1
            seq = b.step(state_of(i), action_of(i), reward_of(i), last, False, obs_of(i + 1))
            if seq is None:
                continue
            emitted += 1
            assert seq[B.OBS].shape[0] == TT + 1
            idx = seq[B.OBS][:TT, 0].astype(int)
            # FIRST: the sequence starts the episode, and the learner trains its burn-in steps too
            assert seq[B.FIRST] == float(idx[0] == 0)
            for pos in range(0 if seq[B.FIRST] else burn_in, TT):
                if seq[B.MASK][pos] == 1.0:
                    covered.add(int(idx[pos]))
            # stored state matches the first step
            assert seq[B.state_key(0)][0] == idx[0]
        assert emitted >= 1
        missing = set(range(length)) - covered  # the opening steps included (they used to be burn-in only)
        assert not missing, (length, sorted(missing))


def test_period_larger_than_trace_is_rejected():
    with pytest.raises(ValueError):
        SlotSequenceBuilder(SequenceLayout(2, 4, 5), (2,), np.float32)


def test_uint8_image_observations_and_stack():
    layout = SequenceLayout(1, 2, 1)
    b = SlotSequenceBuilder(layout, (2, 3, 3), np.uint8)
    b.begin(np.full((2, 3, 3), 7, np.uint8))
    seqs = []
    for i in range(5):
        s = b.step((np.zeros(4, np.float32), np.ones(4, np.float32)), 1, 1.0, i == 4, False,
                   np.full((2, 3, 3), 8 + i, np.uint8))
        if s is not None:
            seqs.append(s)
    assert len(seqs) == 3  # starts 0, 1, 2
    for s in seqs:
        assert s[B.OBS].dtype == np.uint8 and s[B.OBS].shape == (4, 2, 3, 3)
    stacked = stack_sequences(seqs)
    assert stacked[B.OBS].shape == (3, 4, 2, 3, 3)
    assert stacked[B.state_key(1)].shape == (3, 4)
    assert [int(x) for x in stacked[B.OBS][:, 0, 0, 0, 0]] == [7, 8, 9]


@pytest.mark.parametrize("next_step_reset", [False, True])
@pytest.mark.parametrize("layout", [LAYOUT, SequenceLayout(0, 5, 5), SequenceLayout(3, 5, 1)])
def test_batched_builder_matches_per_slot_reference(layout, next_step_reset):
    """SequenceBuilder (all slots at once, ring buffers) emits exactly the reference builder's
    sequences, for random episode lengths, truncations, both autoreset styles, and takes at
    random moments."""
    rng = np.random.default_rng(3)
    n, steps = 5, 400
    ref = [SlotSequenceBuilder(layout, (2,), np.float32) for _ in range(n)]
    vec = SequenceBuilder(layout, n, {B.OBS: ((2,), np.float32)}, [(LSTM,), (LSTM,)], max_steps_between_takes=7)
    obs = rng.normal(size=(n, 2)).astype(np.float32)
    for i in range(n):
        ref[i].begin(obs[i])
    prev_a, prev_r = np.zeros(n, np.int64), np.zeros(n, np.float32)
    expected: list[dict] = []
    got: list[dict] = []
    reset_next = np.zeros(n, bool)  # NEXT_STEP style: the slot's next step only resets
    for t in range(steps):
        state = (rng.normal(size=(n, LSTM)).astype(np.float32), rng.normal(size=(n, LSTM)).astype(np.float32))
        action = rng.integers(0, 4, n)
        reward = rng.normal(size=n).astype(np.float32)
        term = rng.random(n) < 0.05
        trunc = ~term & (rng.random(n) < 0.03)
        next_obs = rng.normal(size=(n, 2)).astype(np.float32)
        first_obs = rng.normal(size=(n, 2)).astype(np.float32)
        stepped = np.flatnonzero(~reset_next)
        for i in stepped:
            seq = ref[i].step(tuple(s[i] for s in state), int(action[i]), float(reward[i]), bool(term[i]),
                              bool(trunc[i]), next_obs[i])
            if seq is not None:
                expected.append(seq)
        vec.step(~reset_next if reset_next.any() else None, {B.OBS: obs}, prev_a, prev_r, state, action, reward,
                 term, trunc, {B.OBS: next_obs})
        done = np.zeros(n, bool)
        done[stepped] = (term | trunc)[stepped]
        obs, prev_a, prev_r = next_obs.copy(), action.copy(), reward.copy()
        begin = reset_next if next_step_reset else done
        for i in np.flatnonzero(begin):
            ref[i].begin(first_obs[i])
        obs[begin], prev_a[begin], prev_r[begin] = first_obs[begin], 0, 0.0
        if next_step_reset:
            reset_next = done
        if vec.must_take() or rng.random() < 0.2:
            out = vec.take()
            if out is not None:
                got.extend({k: v[j] for k, v in out.items()} for j in range(len(out[B.MASK])))
    out = vec.take()
    if out is not None:
        got.extend({k: v[j] for k, v in out.items()} for j in range(len(out[B.MASK])))

    def key(seq):  # order within one step differs (slot order vs emission order): compare as sets
        return (seq[B.OBS].tobytes(), seq[B.MASK].tobytes())

    assert len(got) == len(expected) > 50
    expected.sort(key=key)
    got.sort(key=key)
    for e, g in zip(expected, got):
        assert set(e) == set(g)
        for k in e:
            np.testing.assert_array_equal(e[k], g[k], err_msg=k)
            assert e[k].dtype == g[k].dtype, k


def test_joint_actions_of_sibling_agent_slots():
    """Slots 0-2 are the agents of env 0, 3-5 of env 1: each sequence carries its env's joint actions."""
    layout = SequenceLayout(0, 2, 2)
    vec = SequenceBuilder(layout, 6, {B.OBS: ((1,), np.float32)}, agents_per_env=3)
    z = np.zeros(6)
    for t in range(2):
        actions = np.arange(6) * 10 + t
        vec.step(None, {B.OBS: np.zeros((6, 1), np.float32)}, z, z, (), actions, z, z.astype(bool),
                 z.astype(bool), {B.OBS: np.zeros((6, 1), np.float32)})
    out = vec.take()
    assert out[B.JOINT_ACTION].shape == (6, 2, 3)
    np.testing.assert_array_equal(out[B.JOINT_ACTION][4], [[30, 40, 50], [31, 41, 51]])
    np.testing.assert_array_equal(out[B.JOINT_ACTION][0], [[0, 10, 20], [1, 11, 21]])
    np.testing.assert_array_equal(out[B.ACTION][4], [40, 41])
