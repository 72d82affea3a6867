"""Learner actor and replay shard actor.

The learner's update loop never waits on a remote call: a prefetch thread keeps `prefetch` sample
requests in flight across the shards and fills a local queue; priority updates are sent
fire-and-forget; weights are published with `ray.put` under a version number that runners poll.
"""
from __future__ import annotations

import copy
import queue
import threading
import time
import traceback
import warnings

import numpy as np
import ray

from rlfleet.platform import batch as B
from rlfleet.platform.replay import SequenceReplay


class ReplayShard:
    """One shard of prioritized sequence replay (a threaded Ray actor around SequenceReplay)."""

    def __init__(self, **kwargs):
        self.replay = SequenceReplay(**kwargs)
        self.lock = threading.Lock()

    def add(self, seqs: dict) -> bool:
        """Insert; returns whether the caller may insert more now (samples-per-insert limit)."""
        with self.lock:
            self.replay.add(seqs)
            return self.replay.can_insert()

    def can_insert(self) -> bool:
        with self.lock:
            return self.replay.can_insert()

    def sample(self, batch_size: int, count: int = 1) -> list:
        """Up to `count` batches (one RPC for several: fewer calls on both sides), or an empty list
        while the buffer is too small or the learner is ahead of the inserts."""
        out = []
        with self.lock:
            while len(out) < count and self.replay.can_sample(batch_size):
                out.append(self.replay.sample(batch_size))
        return out

    def update_priorities(self, idx, priorities) -> None:
        """`idx`/`priorities` may concatenate several batches (the learner sends them together)."""
        with self.lock:
            self.replay.update_priorities(idx, priorities)

    def stats(self) -> dict:
        with self.lock:
            r = self.replay
            return {"size": len(r), "inserts": r.inserts, "samples": r.samples}

    def snapshot(self) -> dict:
        with self.lock:
            return self.replay.snapshot()

    def restore(self, snap: dict) -> bool:
        with self.lock:
            self.replay.restore(snap)
        return True


def pick_device(requested: str) -> str:
    import torch

    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return requested


class Learner:
    def __init__(self, make_learner, algo_cfg, env_spec, shards, batch_size: int, device: str,
                 prefetch: int, publish_interval: int, torch_threads: int, seed: int,
                 batches_per_request: int = 1, priority_flush: int = 1):
        import torch

        torch.set_num_threads(torch_threads)
        torch.set_flush_denormal(True)  # see _guard
        torch.manual_seed(seed)
        # Ray hands out read-only zero-copy arrays; the learner never writes into a batch.
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        self.device = pick_device(device)
        self.core = make_learner(algo_cfg, env_spec, self.device)
        self.shards = shards
        self.batch_size, self.prefetch, self.publish_interval = batch_size, prefetch, publish_interval
        self.batches_per_request, self.priority_flush = batches_per_request, priority_flush
        self._pending: dict[int, list] = {}  # shard -> [(index, priorities)] not sent yet
        self._pending_updates = 0
        self.queue: queue.Queue = queue.Queue(maxsize=prefetch)
        self.lock = threading.Lock()  # held during an update; checkpoints read state under it
        self.num_updates = 0
        self.version = 0
        self._weights = (0, [ray.put(self.core.acting_weights())])
        self.metrics: dict = {}
        self.time = {"update": 0.0, "wait_batch": 0.0, "priorities": 0.0, "publish": 0.0}
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self.error = None

    # -- actor API -----------------------------------------------------------------------------
    def start(self) -> bool:
        if not self._threads:
            for target in (self._prefetch_loop, self._update_loop):
                t = threading.Thread(target=self._guard(target), daemon=True)
                t.start()
                self._threads.append(t)
        return True

    def stop(self) -> bool:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=30)
        return True

    def device_name(self) -> str:
        return self.device

    def get_weights(self, known_version: int = -1):
        """(version, [ref]) if newer than `known_version`, else None. The ref is wrapped in a
        list so Ray passes the reference itself, not the weights, to the caller."""
        version, ref = self._weights
        return (version, ref) if version > known_version else None

    def stats(self) -> dict:
        if self.error:
            raise RuntimeError(f"learner loop failed:\n{self.error}")
        return {"updates": self.num_updates, "weights_version": self._weights[0], "device": self.device,
                "time": dict(self.time), **self.metrics}

    def get_state(self) -> dict:
        import torch

        with self.lock:  # deep copies: Ray serialises after the lock is released, while updates go on
            return copy.deepcopy({"core": self.core.state_dict(), "num_updates": self.num_updates,
                                  "version": self._weights[0], "torch_rng": torch.get_rng_state()})

    def set_state(self, state: dict) -> bool:
        import torch

        with self.lock:
            self.core.load_state_dict(state["core"])
            self.num_updates = int(state["num_updates"])
            torch.set_rng_state(state["torch_rng"])
            self._publish(int(state["version"]))
        return True

    # -- loops ---------------------------------------------------------------------------------
    def _guard(self, fn):
        def run():
            import torch

            # Flush denormals to zero in this thread too (the CPU flag is per thread): weights that
            # weight decay shrinks towards zero (e.g. those of always-zero input pixels) become
            # denormal, and each op on them takes a slow path; MAMQL's conv critic on Gems slowed 4.4x
            torch.set_flush_denormal(True)
            try:
                fn()
            except Exception:
                self.error = traceback.format_exc()
                self._stop.set()
        return run

    def _publish(self, version: int | None = None) -> None:
        t0 = time.perf_counter()
        version = self._weights[0] + 1 if version is None else version
        self._weights = (version, [ray.put(self.core.acting_weights())])
        self.time["publish"] += time.perf_counter() - t0

    def _to_tensors(self, sample: dict) -> dict:
        import torch

        pin = self.device.startswith("cuda")
        out = {}
        for k, v in sample.items():
            if k in (B.INDEX, B.FIRST):  # stay on the host: INDEX only goes back to the shard with the
                out[k] = v               # priorities; FIRST selects rows without a device sync
                continue
            t = torch.from_numpy(np.ascontiguousarray(v))
            out[k] = (t.pin_memory() if pin else t).to(self.device, non_blocking=True)
        return out

    def _prefetch_loop(self):
        """Keeps about `prefetch` batches requested ahead, `batches_per_request` per sample request,
        round robin over shards; a reply's replacement is requested before its batches are queued."""
        n = len(self.shards)
        in_flight: dict = {}
        next_shard = 0
        requests = max(1, self.prefetch // self.batches_per_request)

        def refill():
            nonlocal next_shard
            while len(in_flight) < requests:
                k = next_shard % n
                next_shard += 1
                in_flight[self.shards[k].sample.remote(self.batch_size, self.batches_per_request)] = k

        while not self._stop.is_set():
            refill()
            ready, _ = ray.wait(list(in_flight), num_returns=1, timeout=0.5)
            for ref in ready:
                k = in_flight.pop(ref)
                samples = ray.get(ref)
                if not samples:  # shard not ready (too small, or rate-limited): back off a bit
                    time.sleep(0.002)
                    continue
                refill()
                for sample in samples:
                    batch = self._to_tensors(sample)
                    batch[B.SHARD] = k
                    while not self._stop.is_set():
                        try:
                            self.queue.put(batch, timeout=0.5)
                            break
                        except queue.Full:
                            pass

    def _update_loop(self):
        import torch

        cuda = self.device.startswith("cuda")
        sent = None  # the previous update's priorities, copied to the host asynchronously
        while not self._stop.is_set():
            t0 = time.perf_counter()
            try:
                batch = self.queue.get(timeout=0.5)
            except queue.Empty:
                self.time["wait_batch"] += time.perf_counter() - t0
                continue
            t1 = time.perf_counter()
            self.time["wait_batch"] += t1 - t0
            with self.lock:
                priorities, stats = self.core.update(batch)
                self.num_updates += 1
                priorities = priorities.detach().to("cpu", non_blocking=cuda)
                done = torch.cuda.Event() if cuda else None
                if done is not None:
                    done.record()
            t2 = time.perf_counter()
            self.time["update"] += t2 - t1
            # Priorities go back one update late on a GPU: by the time this update is queued the
            # previous one has finished, so reading its priorities does not stall the device.
            if sent is not None:
                self._send_priorities(*sent)
            sent = (batch[B.SHARD], batch[B.INDEX], priorities, done)
            if not cuda:
                self._send_priorities(*sent)
                sent = None
            self.time["priorities"] += time.perf_counter() - t2
            if self.num_updates % self.publish_interval == 0:
                self.metrics = {k: float(v) for k, v in stats.items()}  # the only sync with the device
                self._publish()
        if sent is not None:
            self._send_priorities(*sent)
        self._flush_priorities()

    def _send_priorities(self, shard: int, index, priorities, done) -> None:
        """Collect one update's priorities; every `priority_flush` updates they go to their shards
        in one call per shard (each call costs ~0.5 ms of this loop on a loaded CPU)."""
        if done is not None:
            done.synchronize()
        self._pending.setdefault(shard, []).append((index, priorities.numpy()))
        self._pending_updates += 1
        if self._pending_updates >= self.priority_flush:
            self._flush_priorities()

    def _flush_priorities(self) -> None:
        for shard, parts in self._pending.items():
            idx, prio = (parts[0] if len(parts) == 1 else
                         (np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])))
            # fire-and-forget: the update loop never waits on a remote call
            self.shards[shard].update_priorities.remote(idx, prio)
        self._pending.clear()
        self._pending_updates = 0
