"""Sends a runner's stacked sequences to its replay shards from a thread of its own.

Why a thread: a shipment's `.remote` call (pickling, the object-store put, the task submission)
took ~1.4 ms for ~700 KB on SMAX 3m x 64 battles, about one env step, every ~6 steps. Ray's put
and submission release the GIL for most of that, so from here it overlaps the env and the loop.
Back-pressure is kept: shipments go out one at a time, each only after the previous one's answer
(its shard's rate limiter: may we insert more?) says yes, and at most one more waits in the queue;
beyond that the runner's loop blocks in `put`.
"""
from __future__ import annotations

import queue
import threading
import time
import traceback

import ray

from rlfleet.platform import batch as B


class Shipper:
    def __init__(self, shards: list, first: int, stop: threading.Event, name: str = "shipper"):
        """Shipment k goes to shards[(first + k) % len(shards)] (runners start at different shards)."""
        self.shards, self.first, self._stop = shards, first, stop
        self.shipments = 0
        self.sequences = 0
        self.error: str | None = None
        self._queue: queue.Queue = queue.Queue(maxsize=1)
        self._thread = threading.Thread(target=self._run_guarded, daemon=True, name=name)
        self._thread.start()

    def put(self, seqs: dict) -> None:
        """Queue stacked sequences; blocks while the previous ones still wait for their shard."""
        while not self._stop.is_set() and self.error is None:
            try:
                self._queue.put(seqs, timeout=0.1)
                return
            except queue.Full:
                continue
        if self.error is not None:
            raise RuntimeError(f"shipping failed:\n{self.error}")

    def _run_guarded(self) -> None:
        try:
            self._run()
        except Exception:  # the runner's loop raises it at its next put; stats() reports it
            self.error = traceback.format_exc()

    def _run(self) -> None:
        in_flight = None  # (shard, ref of its answer) of the last shipment
        while not self._stop.is_set():
            try:
                seqs = self._queue.get(timeout=0.1)
            except queue.Empty:
                continue
            if in_flight is not None:
                shard, ref = in_flight
                while not ray.get(ref) and not self._stop.is_set():
                    time.sleep(0.005)
                    ref = shard.can_insert.remote()
            shard = self.shards[(self.first + self.shipments) % len(self.shards)]
            in_flight = shard, shard.add.remote(seqs)
            self.shipments += 1
            self.sequences += len(seqs[B.MASK])

    def join(self, timeout: float = 10.0) -> None:
        self._thread.join(timeout)
