"""Prioritized sequence replay (Schaul et al. 2016; Ape-X/R2D2 sharding), plain numpy.

`SumTree` and `SequenceReplay` are Ray-free so tests drive them directly; `ReplayShard` (in
rlfleet.platform.actors) wraps one SequenceReplay per Ray actor.
"""
from __future__ import annotations

import numpy as np

from rlfleet.platform import batch as B


class SumTree:
    """Binary tree of priorities; leaf i holds p_i, each parent the sum of its children.

    Updates and prefix-sum searches are vectorized level by level, O(log n) numpy ops per batch.
    """

    def __init__(self, capacity: int):
        self.capacity = capacity
        self.size = 1
        while self.size < capacity:
            self.size *= 2
        self.tree = np.zeros(2 * self.size, dtype=np.float64)

    @property
    def total(self) -> float:
        return float(self.tree[1])

    def get(self, idx) -> np.ndarray:
        return self.tree[np.asarray(idx) + self.size]

    def set(self, idx, values) -> None:
        nodes = np.asarray(idx, dtype=np.int64) + self.size
        if nodes.size == 0:
            return
        self.tree[nodes] = np.asarray(values, dtype=np.float64)
        nodes = np.unique(nodes // 2)
        while nodes[0] >= 1:
            self.tree[nodes] = self.tree[2 * nodes] + self.tree[2 * nodes + 1]
            if nodes[0] == 1:
                break
            nodes = np.unique(nodes // 2)

    def find(self, mass: np.ndarray) -> np.ndarray:
        """Leaf indices i with prefix(i) <= mass < prefix(i+1)."""
        mass = np.asarray(mass, dtype=np.float64).copy()
        nodes = np.ones(mass.shape, dtype=np.int64)
        while nodes[0] < self.size:
            left = 2 * nodes
            left_sum = self.tree[left]
            go_right = mass >= left_sum
            mass = np.where(go_right, mass - left_sum, mass)
            nodes = np.where(go_right, left + 1, left)
        return nodes - self.size

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """Stratified sampling: one draw per equal-mass segment (as in the PER paper)."""
        bounds = np.linspace(0.0, self.total, n + 1)
        mass = rng.uniform(bounds[:-1], bounds[1:])
        idx = self.find(np.minimum(mass, np.nextafter(self.total, 0)))
        return np.minimum(idx, self.capacity - 1)


class SequenceReplay:
    """FIFO ring of sequences with proportional prioritization, P(i) = p_i^a / sum_k p_k^a.

    Stores whole sequences (dict of arrays with a leading sequence axis); capacity is in sequences.
    A samples-per-insert limit (Reverb-style, two-sided with an error buffer) keeps the replay ratio
    fixed however fast runners and learner happen to run.
    """

    def __init__(self, capacity: int, alpha: float = 0.9, beta: float = 0.6, min_size: int = 1,
                 samples_per_insert: float | None = None, error_buffer: float = 500.0, seed: int = 0):
        self.capacity = capacity
        self.alpha = alpha
        self.beta = beta
        self.min_size = min_size
        self.samples_per_insert = samples_per_insert
        self.error_buffer = error_buffer
        self.tree = SumTree(capacity)
        self.rng = np.random.default_rng(seed)
        self.storage: dict[str, np.ndarray] | None = None
        self.next = 0
        self.count = 0
        self.inserts = 0  # sequences inserted since creation (restored from snapshots)
        self.samples = 0  # sequences sampled
        self.max_priority = 1.0

    def __len__(self) -> int:
        return self.count

    # -- rate limiting -----------------------------------------------------------------------
    def _rate_diff(self) -> float:
        """Sampled minus allowed samples; > 0 means the learner is ahead of the inserts."""
        return self.samples - self.samples_per_insert * (self.inserts - self.min_size)

    def can_sample(self, batch_size: int) -> bool:
        if self.count < max(self.min_size, 1):
            return False
        if self.samples_per_insert is None:
            return True
        return self._rate_diff() + batch_size <= self.error_buffer

    def can_insert(self) -> bool:
        if self.samples_per_insert is None or self.inserts < self.min_size:
            return True
        return self._rate_diff() >= -self.error_buffer

    # -- data ----------------------------------------------------------------------------------
    def _allocate(self, seqs: dict[str, np.ndarray]) -> None:
        self.storage = {k: np.zeros((self.capacity,) + v.shape[1:], dtype=v.dtype) for k, v in seqs.items()}

    def add(self, seqs: dict[str, np.ndarray], priorities: np.ndarray | None = None) -> None:
        n = len(next(iter(seqs.values())))
        if n == 0:
            return
        if self.storage is None:
            self._allocate(seqs)
        for k in seqs.keys() - self.storage.keys():  # a column newer than a restored snapshot: zeros before
            self.storage[k] = np.zeros((self.capacity,) + seqs[k].shape[1:], dtype=seqs[k].dtype)
        idx = (self.next + np.arange(n)) % self.capacity
        for k, v in seqs.items():
            self.storage[k][idx] = v
        if priorities is None:
            priorities = np.full(n, self.max_priority)
        self.tree.set(idx, np.asarray(priorities, dtype=np.float64) ** self.alpha)
        self.next = int((self.next + n) % self.capacity)
        self.count = min(self.count + n, self.capacity)
        self.inserts += n

    def sample(self, batch_size: int) -> dict[str, np.ndarray]:
        """Draw a batch; adds INDEX and WEIGHT (w_i = (N P(i))^-beta / max_j w_j) columns."""
        idx = self.tree.sample(batch_size, self.rng)
        p = self.tree.get(idx) / self.tree.total
        # Normalized by the largest weight in the batch (Ape-X / R2D2 practice).
        weights = (self.count * p) ** (-self.beta)
        weights = weights / weights.max()
        out = {k: v[idx] for k, v in self.storage.items()}
        out[B.INDEX] = self._serial(idx)
        out[B.WEIGHT] = weights.astype(np.float32)
        self.samples += batch_size
        return out

    def _serial(self, slot: np.ndarray) -> np.ndarray:
        """Insert number of the sequence now in `slot` (the ring is written in order, so it follows
        from the insert count): INDEX carries it so late priority updates can be recognised."""
        last = self.inserts - 1
        return (last - (last - np.asarray(slot, np.int64)) % self.capacity).astype(np.int64)

    def update_priorities(self, idx: np.ndarray, priorities: np.ndarray) -> None:
        """`idx`: INDEX values of a sampled batch. Updates for sequences that have been overwritten
        since they were sampled (the learner answers one or more updates late) are dropped, so a
        stale TD error never becomes the priority of the newer sequence in the same slot."""
        priorities = np.maximum(np.asarray(priorities, dtype=np.float64), 1e-6)
        idx = np.asarray(idx, np.int64)
        slot = idx % self.capacity
        current = self._serial(slot) == idx
        if not current.all():
            slot, priorities = slot[current], priorities[current]
        if priorities.size == 0:
            return
        self.tree.set(slot, priorities ** self.alpha)
        self.max_priority = max(self.max_priority, float(priorities.max()))

    def priorities(self) -> np.ndarray:
        """Current p_i (not raised to alpha) of the stored sequences."""
        return self.tree.get(np.arange(self.count)) ** (1.0 / self.alpha) if self.alpha > 0 else self.tree.get(np.arange(self.count))

    # -- checkpointing -------------------------------------------------------------------------
    def snapshot(self) -> dict:
        return {
            "storage": None if self.storage is None else {k: v[: self.count].copy() for k, v in self.storage.items()},
            "leaves": self.tree.get(np.arange(self.count)).copy(),
            "next": self.next, "count": self.count, "inserts": self.inserts, "samples": self.samples,
            "max_priority": self.max_priority, "rng": self.rng.bit_generator.state,
        }

    def restore(self, snap: dict) -> None:
        self.count, self.next = int(snap["count"]), int(snap["next"])
        self.inserts, self.samples = int(snap["inserts"]), int(snap["samples"])
        self.max_priority = float(snap["max_priority"])
        self.rng.bit_generator.state = snap["rng"]
        if snap["storage"] is not None and self.count:
            self._allocate(snap["storage"])
            for k, v in snap["storage"].items():
                self.storage[k][: self.count] = v
            self.tree.set(np.arange(self.count), snap["leaves"])
