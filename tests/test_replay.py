"""Unit checks of the prioritized sequence replay (SumTree, SequenceReplay); no Ray."""
from __future__ import annotations

import pickle

import numpy as np
import pytest

from rlfleet.platform import batch as B
from rlfleet.platform.replay import SequenceReplay, SumTree


# ------------------------------------------------------------------------------------------------
# SumTree
# ------------------------------------------------------------------------------------------------
def _check_tree_consistent(tree: SumTree, leaves: np.ndarray) -> None:
    np.testing.assert_allclose(tree.get(np.arange(len(leaves))), leaves, rtol=0, atol=0)
    assert tree.total == pytest.approx(float(np.sum(leaves)), rel=1e-12, abs=1e-12)
    for node in range(1, tree.size):
        assert tree.tree[node] == pytest.approx(tree.tree[2 * node] + tree.tree[2 * node + 1], rel=1e-12, abs=1e-12)


@pytest.mark.parametrize("capacity", [1, 2, 5, 8, 13, 64])
def test_sumtree_totals_after_updates(capacity):
    rng = np.random.default_rng(capacity)
    tree = SumTree(capacity)
    leaves = np.zeros(capacity)
    assert tree.total == 0.0
    for _ in range(30):
        k = int(rng.integers(1, capacity + 1))
        idx = rng.choice(capacity, size=k, replace=False)
        vals = rng.uniform(0.0, 10.0, size=k)
        tree.set(idx, vals)
        leaves[idx] = vals
        _check_tree_consistent(tree, leaves)
    # single index updates, and setting to zero
    tree.set([0], [0.0])
    leaves[0] = 0.0
    _check_tree_consistent(tree, leaves)
    tree.set(np.array([capacity - 1]), np.array([123.5]))
    leaves[capacity - 1] = 123.5
    _check_tree_consistent(tree, leaves)


def test_sumtree_find_prefix_sums():
    tree = SumTree(5)
    p = np.array([1.0, 0.0, 2.0, 3.0, 4.0])
    tree.set(np.arange(5), p)
    edges = np.concatenate([[0.0], np.cumsum(p)])
    for i in range(5):
        if p[i] == 0:
            continue
        lo, hi = edges[i], edges[i + 1]
        masses = np.array([lo, (lo + hi) / 2, np.nextafter(hi, lo)])
        assert np.all(tree.find(masses) == i), (i, masses, tree.find(masses))


def _chi_square(counts: np.ndarray, expected: np.ndarray) -> float:
    keep = expected > 0
    return float(np.sum((counts[keep] - expected[keep]) ** 2 / expected[keep]))


@pytest.mark.parametrize("capacity", [7, 16, 100])
def test_sumtree_sampling_frequencies_match_priorities(capacity):
    rng = np.random.default_rng(1234)
    p = rng.uniform(0.05, 5.0, size=capacity)
    p[capacity // 3] = 0.0  # a zero-priority leaf is never drawn
    p[-1] = 20.0  # one dominant leaf, and the last leaf is reachable
    tree = SumTree(capacity)
    tree.set(np.arange(capacity), p)
    draws = []
    n_draws, batch = 200_000, 50
    for _ in range(n_draws // batch):
        draws.append(tree.sample(batch, rng))
    idx = np.concatenate(draws)
    assert idx.min() >= 0 and idx.max() < capacity
    counts = np.bincount(idx, minlength=capacity).astype(np.float64)
    expected = n_draws * p / p.sum()
    assert counts[capacity // 3] == 0
    # chi-square with (k - 1) dof; the 0.9999 quantile is about dof + 4.3 sqrt(2 dof) + 15 for these dofs
    dof = int(np.sum(p > 0)) - 1
    chi2 = _chi_square(counts, expected)
    assert chi2 < dof + 4.3 * np.sqrt(2 * dof) + 15, chi2
    # frequent leaves individually: within 5 % of the expectation
    big = expected > 2000
    np.testing.assert_allclose(counts[big], expected[big], rtol=0.05)


def test_sumtree_unstratified_find_frequencies():
    """`find` with uniform masses gives P(i) = p_i / sum p (no stratification involved)."""
    rng = np.random.default_rng(7)
    p = np.array([1.0, 2.0, 3.0, 0.0, 4.0, 10.0])
    tree = SumTree(len(p))
    tree.set(np.arange(len(p)), p)
    n = 200_000
    idx = tree.find(rng.uniform(0.0, tree.total, size=n))
    counts = np.bincount(idx, minlength=len(p)).astype(np.float64)
    assert counts[3] == 0
    expected = n * p / p.sum()
    assert _chi_square(counts, expected) < 4 + 4.3 * np.sqrt(8) + 15
    np.testing.assert_allclose(counts[p > 0], expected[p > 0], rtol=0.03)


# ------------------------------------------------------------------------------------------------
# SequenceReplay
# ------------------------------------------------------------------------------------------------
def _seqs(ids, T: int = 4) -> dict[str, np.ndarray]:
    ids = np.asarray(ids)
    n = len(ids)
    return {
        B.OBS: np.stack([np.full((T + 1, 2), i, np.float32) for i in ids]).reshape(n, T + 1, 2),
        B.ACTION: np.tile(ids[:, None], (1, T)).astype(np.int64),
        B.REWARD: (ids[:, None] * 0.5 + np.arange(T)[None]).astype(np.float32),
        B.MASK: np.ones((n, T), np.float32),
        B.state_key(0): np.tile(ids[:, None], (1, 3)).astype(np.float32),
    }


def _ids(batch: dict) -> np.ndarray:
    return batch[B.ACTION][:, 0]


def test_is_weights_formula_for_sampled_items():
    alpha, beta = 0.9, 0.6
    replay = SequenceReplay(capacity=32, alpha=alpha, beta=beta, seed=3)
    n = 20
    prios = np.linspace(0.1, 5.0, n)
    replay.add(_seqs(np.arange(n)), priorities=prios)
    P = prios ** alpha / np.sum(prios ** alpha)
    for _ in range(20):
        out = replay.sample(16)
        idx = out[B.INDEX]
        assert idx.dtype == np.int64
        np.testing.assert_array_equal(_ids(out), idx)  # slot i holds sequence i here
        w = (n * P[idx]) ** (-beta)
        w = w / w.max()
        np.testing.assert_allclose(out[B.WEIGHT], w, rtol=1e-5)
        assert out[B.WEIGHT].dtype == np.float32
        assert out[B.WEIGHT].max() == pytest.approx(1.0)
        assert np.all(out[B.WEIGHT] > 0)


def test_sample_returns_stored_columns():
    replay = SequenceReplay(capacity=10, seed=0)
    replay.add(_seqs(np.arange(6)))
    out = replay.sample(8)
    ref = _seqs(np.arange(6))
    for k, v in ref.items():
        np.testing.assert_array_equal(out[k], v[out[B.INDEX]])


def test_new_items_get_max_priority_and_priorities_roundtrip():
    replay = SequenceReplay(capacity=10, alpha=0.9, seed=0)
    replay.add(_seqs([0, 1]))
    np.testing.assert_allclose(replay.priorities(), [1.0, 1.0])
    replay.update_priorities(np.array([1]), np.array([7.5]))
    np.testing.assert_allclose(replay.priorities(), [1.0, 7.5], rtol=1e-9)
    assert replay.max_priority == pytest.approx(7.5)
    replay.add(_seqs([2]))
    np.testing.assert_allclose(replay.priorities(), [1.0, 7.5, 7.5], rtol=1e-9)
    # leaves hold p^alpha
    np.testing.assert_allclose(replay.tree.get(np.arange(3)), np.array([1.0, 7.5, 7.5]) ** 0.9, rtol=1e-12)


def test_update_priorities_changes_sampling():
    replay = SequenceReplay(capacity=16, alpha=1.0, seed=5)
    replay.add(_seqs(np.arange(10)), priorities=np.ones(10))
    counts = np.bincount(np.concatenate([replay.sample(10)[B.INDEX] for _ in range(500)]), minlength=10)
    assert counts.max() < 2 * counts.min()  # roughly uniform
    replay.update_priorities(np.array([3]), np.array([91.0]))  # P(3) = 91 / 100
    idx = np.concatenate([replay.sample(10)[B.INDEX] for _ in range(500)])
    frac3 = np.mean(idx == 3)
    assert frac3 == pytest.approx(0.91, abs=0.02)
    replay.update_priorities(np.arange(10), np.r_[np.full(3, 1.0), 1e-9, np.full(6, 1.0)])
    idx = np.concatenate([replay.sample(10)[B.INDEX] for _ in range(500)])
    assert np.mean(idx == 3) < 0.005
    # after being sampled the weight of the rare item is the largest
    out = replay.sample(10)
    assert np.all(out[B.WEIGHT] <= 1.0)


def test_fifo_eviction_at_capacity():
    cap = 5
    replay = SequenceReplay(capacity=cap, alpha=1.0, seed=0)
    replay.add(_seqs([0, 1, 2]), priorities=np.array([1.0, 1.0, 1.0]))
    assert len(replay) == 3
    replay.add(_seqs([3, 4, 5, 6]), priorities=np.array([2.0, 2.0, 2.0, 2.0]))  # wraps: 5, 6 overwrite 0, 1
    assert len(replay) == cap
    np.testing.assert_array_equal(replay.storage[B.ACTION][:, 0], [5, 6, 2, 3, 4])
    np.testing.assert_allclose(replay.priorities(), [2.0, 2.0, 1.0, 2.0, 2.0])
    replay.add(_seqs([7]), priorities=np.array([3.0]))
    np.testing.assert_array_equal(replay.storage[B.ACTION][:, 0], [5, 6, 7, 3, 4])
    assert len(replay) == cap and replay.inserts == 8
    np.testing.assert_allclose(replay.priorities(), [2.0, 2.0, 3.0, 2.0, 2.0])
    sampled = np.concatenate([_ids(replay.sample(5)) for _ in range(200)])
    assert set(np.unique(sampled)) == {3, 4, 5, 6, 7}
    # an insert larger than the capacity keeps the newest items
    replay.add(_seqs(np.arange(100, 112)))
    assert len(replay) == cap
    assert set(replay.storage[B.ACTION][:, 0]) == {107, 108, 109, 110, 111}
    np.testing.assert_allclose(replay.tree.total, np.sum(replay.tree.get(np.arange(cap))))


def test_samples_per_insert_limiter_basic():
    replay = SequenceReplay(capacity=100, min_size=4, samples_per_insert=2.0, error_buffer=10.0, seed=0)
    assert not replay.can_sample(4)  # empty / below min_size
    assert replay.can_insert()
    replay.add(_seqs([0, 1, 2]))
    assert not replay.can_sample(1)
    replay.add(_seqs([3]))
    assert replay.can_sample(4)
    # sample until the limiter says stop; samples never exceed spi*(inserts-min) + error_buffer
    n = 0
    while replay.can_sample(4):
        replay.sample(4)
        n += 4
        assert n < 1000
    assert replay.samples <= 2.0 * (replay.inserts - 4) + 10.0
    assert replay.samples + 4 > 2.0 * (replay.inserts - 4) + 10.0
    assert replay.can_insert()  # learner ahead -> inserts allowed
    # insert until the limiter blocks inserts; sampling must then be allowed
    k = 4
    while replay.can_insert():
        replay.add(_seqs([k]))
        k += 1
        assert k < 1000
    assert replay.can_sample(4)
    assert 2.0 * (replay.inserts - 4) - replay.samples > 10.0


def test_no_limit_when_samples_per_insert_is_none():
    replay = SequenceReplay(capacity=10, min_size=2, samples_per_insert=None, seed=0)
    assert not replay.can_sample(1)
    replay.add(_seqs([0, 1]))
    for _ in range(100):
        assert replay.can_sample(8) and replay.can_insert()
        replay.sample(8)


@pytest.mark.parametrize("spi,buffer,batch", [(2.0, 10.0, 4), (16.0, 400.0, 32), (0.5, 20.0, 8), (8.0, 40.0, 16)])
def test_limiter_no_deadlock_and_ratio_kept(spi, buffer, batch):
    """Random interleaving of inserts (in shipments) and batch samples: at every point at least one
    side can progress, and the sample/insert ratio stays within the error buffer (plus one step)."""
    rng = np.random.default_rng(0)
    min_size = 10
    replay = SequenceReplay(capacity=200, min_size=min_size, samples_per_insert=spi, error_buffer=buffer, seed=1)
    one = _seqs([0])
    seen_blocked = {"sample": False, "insert": False}
    for it in range(800):
        cs, ci = replay.can_sample(batch), replay.can_insert()
        assert cs or ci, (replay.samples, replay.inserts)
        if replay.count >= min_size:
            seen_blocked["sample"] |= not cs
            seen_blocked["insert"] |= not ci
        # phases that favour the runners, then the learner, then neither
        p_sample = (0.02, 0.98, 0.5)[min(it // 270, 2)]
        if cs and (not ci or rng.random() < p_sample):
            replay.sample(batch)
        else:
            replay.add(one)
        if replay.inserts >= min_size:
            diff = replay.samples - spi * (replay.inserts - min_size)
            assert -buffer - spi <= diff <= buffer, diff
    assert replay.samples > 0 and replay.inserts > min_size
    assert seen_blocked["sample"] and seen_blocked["insert"], seen_blocked


def _filled_replay(seed: int = 0) -> SequenceReplay:
    replay = SequenceReplay(capacity=12, alpha=0.8, beta=0.5, min_size=2, samples_per_insert=4.0,
                            error_buffer=100.0, seed=seed)
    rng = np.random.default_rng(42)
    replay.add(_seqs(np.arange(9)), priorities=rng.uniform(0.1, 3, 9))
    replay.add(_seqs(np.arange(9, 16)))  # wraps around: count = capacity, next = 4
    for _ in range(5):
        out = replay.sample(6)
        replay.update_priorities(out[B.INDEX], rng.uniform(0.01, 10, 6))
    return replay


def _assert_same_replay(a: SequenceReplay, b: SequenceReplay) -> None:
    assert (a.count, a.next, a.inserts, a.samples) == (b.count, b.next, b.inserts, b.samples)
    assert a.max_priority == b.max_priority
    assert set(a.storage) == set(b.storage)
    for k in a.storage:
        np.testing.assert_array_equal(a.storage[k][: a.count], b.storage[k][: b.count])
        assert a.storage[k].dtype == b.storage[k].dtype
    np.testing.assert_array_equal(a.priorities(), b.priorities())
    np.testing.assert_array_equal(a.tree.tree, b.tree.tree)
    assert a.tree.total == b.tree.total


@pytest.mark.parametrize("partial", [False, True])
def test_snapshot_restore_round_trip(partial):
    if partial:
        src = SequenceReplay(capacity=12, alpha=0.8, beta=0.5, seed=0)
        src.add(_seqs(np.arange(5)), priorities=np.array([0.5, 1, 2, 3, 4]))
        src.sample(3)
    else:
        src = _filled_replay()
    snap = pickle.loads(pickle.dumps(src.snapshot()))  # checkpoints go through serialization
    dst = SequenceReplay(capacity=src.capacity, alpha=src.alpha, beta=src.beta, min_size=src.min_size,
                         samples_per_insert=src.samples_per_insert, error_buffer=src.error_buffer, seed=999)
    dst.restore(snap)
    _assert_same_replay(src, dst)
    assert dst.can_sample(6) == src.can_sample(6) and dst.can_insert() == src.can_insert()
    # identical subsequent samples (rng state restored), inserts and priority updates
    for step in range(6):
        a, b = src.sample(6), dst.sample(6)
        assert set(a) == set(b)
        for k in a:
            np.testing.assert_array_equal(a[k], b[k])
        new_p = np.linspace(0.2, 2.0, 6) * (step + 1)
        src.update_priorities(a[B.INDEX], new_p)
        dst.update_priorities(b[B.INDEX], new_p)
        src.add(_seqs([100 + step]))
        dst.add(_seqs([100 + step]))
        _assert_same_replay(src, dst)


def test_snapshot_is_a_copy():
    src = _filled_replay()
    snap = src.snapshot()
    before = {k: v.copy() for k, v in snap["storage"].items()}
    leaves = snap["leaves"].copy()
    src.add(_seqs(np.arange(200, 206)), priorities=np.full(6, 50.0))
    src.sample(6)
    for k in before:
        np.testing.assert_array_equal(snap["storage"][k], before[k])
    np.testing.assert_array_equal(snap["leaves"], leaves)
    dst = SequenceReplay(capacity=12, alpha=0.8, beta=0.5, seed=1)
    dst.restore(snap)
    ref = _filled_replay()
    _assert_same_replay(ref, dst)
    for _ in range(3):
        a, b = ref.sample(5), dst.sample(5)
        for k in a:
            np.testing.assert_array_equal(a[k], b[k])


def test_priority_update_for_an_overwritten_sequence_is_dropped():
    """The learner sends priorities one update late; by then the slot may hold a newer sequence."""
    replay = SequenceReplay(capacity=4, alpha=1.0, beta=0.0)
    replay.add({"x": np.arange(4, dtype=np.float32)[:, None]})
    old = replay.sample(4)
    replay.add({"x": np.full((2, 1), 9.0, np.float32)})  # overwrites slots 0 and 1
    replay.update_priorities(old[B.INDEX], np.full(4, 50.0))
    p = replay.priorities()
    stored = replay.storage["x"][:, 0]
    assert (p[stored == 9.0] == 1.0).all()  # the new sequences keep their initial priority
    assert (p[stored != 9.0] == 50.0).all()  # the old ones that are still there get the update
    fresh = replay.sample(4)["index"]
    replay.update_priorities(fresh, np.full(4, 3.0))
    assert np.allclose(replay.priorities()[fresh % 4], 3.0)  # current sequences do get their updates


def test_shard_returns_several_batches_per_request_within_the_rate_limit_and_takes_joined_priorities():
    """The learner asks a shard for `batches_per_request` batches in one call and sends the
    priorities of several updates joined; the samples-per-insert limit still caps what one call
    may return."""
    from rlfleet.platform.learner import ReplayShard

    shard = ReplayShard(capacity=32, alpha=1.0, beta=0.4, min_size=4, samples_per_insert=2.0, error_buffer=8.0, seed=0)
    assert shard.sample(2, 3) == []  # below min_size
    shard.add(_seqs(np.arange(8)))   # 8 inserts, min 4: 2 * (8 - 4) + 8 = 16 samples allowed
    batches = shard.sample(2, 3)
    assert len(batches) == 3 and all(b[B.ACTION].shape == (2, 4) for b in batches)
    assert len(shard.sample(4, 10)) == 2  # 6 sampled + 2 x 4 = 14 <= 16; a third would be 18
    idx = np.concatenate([b[B.INDEX] for b in batches])
    shard.update_priorities(idx, np.arange(1.0, len(idx) + 1))
    prios = shard.replay.priorities()
    last = {int(i): p for i, p in zip(idx, np.arange(1.0, len(idx) + 1))}  # a repeated index: its last value
    for i, p in last.items():
        assert prios[i % 32] == pytest.approx(p)
