"""Learner efficiency: R2D2 updates/s inside rlfleet vs a bare PyTorch loop.

- bare loop: the same network, loss and optimizer (R2D2Learner.update) on one synthetic batch
  already on the device, in a Ray actor with the learner's CPU share and torch threads;
- rlfleet learner: the Learner actor fed by a replay shard (filled first by a runner, which is then
  stopped so both sides get the same CPU): sampling RPCs, prefetch, host-to-device copies,
  priority updates and weight publishing included;
- rlfleet full system: the quickstart with the samples-per-insert limit off, runners and learner
  sharing the machine (context, not the ratio).
Writes benchmarks/results/perf_learner.json; the summary ratio is rlfleet learner / bare loop.

    python benchmarks/perf_learner.py --seconds 20
    python benchmarks/perf_learner.py --seconds 20 --batches-per-request 1 --priority-flush 1   # one RPC per batch/update
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import synthetic_batch, table, write_results, run_main  # noqa: E402

from rlfleet.platform import batch as B  # noqa: E402

import rlfleet  # noqa: E402
from rlfleet.platform.config import load_config  # noqa: E402
from rlfleet.platform.envs import EnvMaker  # noqa: E402
from rlfleet.platform.policies import RandomPolicy  # noqa: E402
from rlfleet.platform.registry import resolve_algorithm  # noqa: E402

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "quickstart.yaml"


class BareLoop:
    def __init__(self, make_learner, algo_cfg, env_spec, device: str, torch_threads: int, first_fraction: float):
        import torch

        torch.set_num_threads(torch_threads)
        self.core = make_learner(algo_cfg, env_spec, device)
        self.batch = synthetic_batch(algo_cfg, env_spec, device, first_fraction)

    def run(self, seconds: float, warmup: int = 20) -> float:
        import torch

        for _ in range(warmup):
            self.core.update(self.batch)
        n, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            self.core.update(self.batch)
            n += 1
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        return n / (time.perf_counter() - t0)


def learner_in_system(cfg, algo_cfg, seconds: float, repeats: int) -> tuple[list, list, list, float]:
    """Per repeat: rlfleet learner updates/s with a pre-filled replay, then the bare loop's
    updates/s, and the learner's time split; and the share of FIRST sequences in replay."""
    import ray

    from rlfleet.platform.learner import Learner, ReplayShard, pick_device
    from rlfleet.platform.runner import EnvRunner, apex_epsilons

    spec = resolve_algorithm(cfg.algorithm_name)
    maker = EnvMaker.from_config(cfg.env)
    env_spec = maker.spec()
    shard = ray.remote(ReplayShard).options(num_cpus=cfg.replay.num_cpus, max_concurrency=8).remote(
        capacity=cfg.replay.capacity, alpha=cfg.replay.alpha, beta=cfg.replay.beta, min_size=cfg.replay.min_size,
        samples_per_insert=None, error_buffer=cfg.replay.error_buffer, seed=0)
    n = cfg.runners.envs_per_runner
    weights = (0, [ray.put({})])
    filler = ray.remote(EnvRunner).options(num_cpus=cfg.runners.num_cpus, max_concurrency=4).remote(
        0, maker, RandomPolicy, algo_cfg, spec.sequence_layout(algo_cfg), apex_epsilons(n), [shard], None, weights,
        cfg.runners.ship_interval, 10**12, seed=0)
    ray.get(filler.start.remote())
    while ray.get(shard.stats.remote())["size"] < 5000:
        time.sleep(0.5)
    ray.get(filler.stop.remote())
    ray.kill(filler)
    # the same work per update on both sides: sequences that start their episode also train their
    # burn-in, so the bare loop's batch gets the replay's share of them
    probe = ray.get(shard.sample.remote(4096))[0]
    first_fraction = float(probe[B.FIRST].mean()) if B.FIRST in probe else 0.0
    bare = ray.remote(BareLoop).options(num_cpus=cfg.learner.num_cpus).remote(
        spec.make_learner, algo_cfg, env_spec, pick_device(cfg.learner.device), cfg.learner.torch_threads,
        first_fraction)
    rates, bare_rates, splits = [], [], []
    for _ in range(repeats):  # alternating windows: machine-load drift hits both sides alike
        learner = ray.remote(Learner).options(num_cpus=cfg.learner.num_cpus, max_concurrency=8).remote(
            spec.make_learner, algo_cfg, env_spec, [shard], batch_size=algo_cfg.batch_size, device=cfg.learner.device,
            prefetch=cfg.learner.prefetch, publish_interval=cfg.learner.publish_interval,
            torch_threads=cfg.learner.torch_threads, seed=0, batches_per_request=cfg.learner.batches_per_request,
            priority_flush=cfg.learner.priority_flush)
        ray.get(learner.start.remote())
        time.sleep(5.0)
        s0, t0 = ray.get(learner.stats.remote()), time.perf_counter()
        time.sleep(seconds)
        s1, dt = ray.get(learner.stats.remote()), time.perf_counter() - t0
        ray.get(learner.stop.remote())
        ray.kill(learner)
        splits.append({k: round((s1["time"][k] - s0["time"][k]) / dt, 3) for k in s1["time"]})
        rates.append((s1["updates"] - s0["updates"]) / dt)
        bare_rates.append(ray.get(bare.run.remote(seconds)))
    for a in (bare, shard):
        ray.kill(a)
    return rates, bare_rates, splits, first_fraction


def full_system(seconds: float, extra: list[str]) -> float:
    with tempfile.TemporaryDirectory(prefix="rlfleet-perf-") as root:
        s = rlfleet.train(str(CONFIG), overrides=[f"stop.time_s={seconds}", "stop.env_steps=100000000",
                                                   "replay.samples_per_insert=null", "eval.interval_env_steps=0",
                                                   f"logging.root={root}", "logging.progress=false", *extra])
    return s["updates"] / s["wall_s"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=20.0)
    p.add_argument("--repeats", type=int, default=3, help="alternating learner / bare-loop windows; medians reported")
    p.add_argument("--batches-per-request", type=int, default=None, help="override learner.batches_per_request")
    p.add_argument("--priority-flush", type=int, default=None, help="override learner.priority_flush")
    args = p.parse_args()
    import ray

    cfg, algo_cfg, _ = load_config(CONFIG)
    if args.batches_per_request:
        cfg.learner.batches_per_request = args.batches_per_request
    if args.priority_flush:
        cfg.learner.priority_flush = args.priority_flush
    ray.init(num_cpus=4, include_dashboard=False, logging_level="warning")
    rates, bares, splits, first_fraction = learner_in_system(cfg, algo_cfg, args.seconds, args.repeats)
    rate, bare = float(np.median(rates)), float(np.median(bares))
    split = splits[int(np.argsort(rates)[len(rates) // 2])]
    ray.shutdown()
    system = full_system(max(30.0, 2 * args.seconds), [f"learner.batches_per_request={cfg.learner.batches_per_request}",
                                                       f"learner.priority_flush={cfg.learner.priority_flush}"])
    common = {"setting": f"quickstart network, batch 16 x (8 + 20), {cfg.learner.batches_per_request} batches per "
              f"request, priorities every {cfg.learner.priority_flush} updates, {first_fraction:.0%} of sequences "
              "start their episode (burn-in trained)", "metric": "updates_per_s"}
    rows = [{"system": "bare-pytorch-loop", **common, "value": round(bare, 1)},
            {"system": "rlfleet-learner", **common, "value": round(rate, 1), "ratio_vs_bare": round(rate / bare, 3),
             "time_split_per_s": split, "repeats": {"learner": [round(r, 1) for r in rates],
                                                    "bare": [round(r, 1) for r in bares]}},
            {"system": "rlfleet-full-system", **common, "value": round(system, 1),
             "note": "runners and learner share the machine; no samples-per-insert limit"}]
    print(table([[r["system"], r["value"], r.get("ratio_vs_bare")] for r in rows], ["system", "updates/s", "vs bare"]))
    print("per repeat, learner / bare updates/s:", [f"{a:.1f}/{b:.1f}" for a, b in zip(rates, bares)])
    print("learner time split (s per s):", split)
    print("wrote", write_results("perf_learner", rows, {"ratio_vs_bare_loop": round(rate / bare, 3)}))


if __name__ == "__main__":
    run_main(main)
