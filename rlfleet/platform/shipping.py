"""Sends a runner's stacked sequences to its replay shards from a thread of its own.

Why a thread: a shipment's `.remote` call (pickling, the object-store put, the task submission)
took ~1.4 ms for ~700 KB on SMAX 3m x 64 battles, about one env step, every ~6 steps. Ray's put
and submission release the GIL for most of that, so from here it overlaps the env and the loop.
Why coalescing: each call also costs the raylet and the shard, on the cores the envs need; what
arrives while a shipment is in flight or within `min_interval_s` of the last one goes out with
the next. Back-pressure is kept: shipments go out one at a time, each only after the previous
one's answer (its shard's rate limiter: may we insert more?) says yes; beyond `max_pending`
waiting batches the runner's loop blocks in `put`.
"""
from __future__ import annotations

import threading
import time
import traceback

import numpy as np
import ray

from rlfleet.platform import batch as B


class Shipper:
    def __init__(self, shards: list, first: int, stop: threading.Event, name: str = "shipper",
                 min_interval_s: float = 0.05, max_pending: int = 8):
        """Shipment k goes to shards[(first + k) % len(shards)] (runners start at different shards).
        Batches handed over while a shipment is in flight, or less than `min_interval_s` after the
        last one left, go out together as one shipment (Ray's per-call cost, ~1 ms of CPU spread
        over this process, the raylet and the shard, is paid at most 1 / min_interval_s times a
        second); beyond `max_pending` waiting batches the runner's loop blocks in `put`."""
        self.shards, self.first, self._stop = shards, first, stop
        self.min_interval_s, self.max_pending = min_interval_s, max_pending
        self.shipments = 0
        self.sequences = 0
        self.error: str | None = None
        self._pending: list[dict] = []
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._run_guarded, daemon=True, name=name)
        self._thread.start()

    def put(self, seqs: dict) -> None:
        """Hand over stacked sequences; blocks while `max_pending` batches already wait (the shard's
        rate limiter holds shipments back, or it cannot keep up)."""
        with self._cond:
            while len(self._pending) >= self.max_pending and not self._stop.is_set() and self.error is None:
                self._cond.wait(0.1)
            if self.error is not None:
                raise RuntimeError(f"shipping failed:\n{self.error}")
            self._pending.append(seqs)
            self._cond.notify_all()

    def _run_guarded(self) -> None:
        try:
            self._run()
        except Exception:  # the runner's loop raises it at its next put; stats() reports it
            self.error = traceback.format_exc()
            with self._cond:
                self._cond.notify_all()

    def _run(self) -> None:
        in_flight = None  # (shard, ref of its answer) of the last shipment
        last = -float("inf")
        while not self._stop.is_set():
            with self._cond:  # wait for batches, and for min_interval_s unless half of max_pending wait
                now = time.perf_counter()
                if not self._pending or (len(self._pending) < max(1, self.max_pending // 2)
                                         and now < last + self.min_interval_s):
                    self._cond.wait(0.1 if not self._pending else last + self.min_interval_s - now)
                    continue
            if in_flight is not None:
                shard, ref = in_flight
                while not ray.get(ref) and not self._stop.is_set():
                    time.sleep(0.005)
                    ref = shard.can_insert.remote()
            with self._cond:
                batches, self._pending = self._pending, []
                self._cond.notify_all()
            seqs = batches[0] if len(batches) == 1 else {k: np.concatenate([b[k] for b in batches])
                                                         for k in batches[0]}
            shard = self.shards[(self.first + self.shipments) % len(self.shards)]
            in_flight = shard, shard.add.remote(seqs)
            last = time.perf_counter()
            self.shipments += 1
            self.sequences += len(seqs[B.MASK])

    def join(self, timeout: float = 10.0) -> None:
        self._thread.join(timeout)
