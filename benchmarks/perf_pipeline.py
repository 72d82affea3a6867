"""Pipeline efficiency: env steps/s of rlfleet runners vs the same envs stepped raw.

For each env family present and R runners (1 and 2) of M envs each:
- raw: R plain processes (multiprocessing, spawn), each stepping M envs in a loop with random
  actions and resetting finished ones: the ceiling, no learning machinery at all;
- rlfleet random: R EnvRunner actors hosting a RandomPolicy (no network), building sequences and
  shipping them to a replay shard with no rate limit (so no learner bottleneck);
- rlfleet r2d2: the same with the quickstart's R2D2 network acting (one batched forward per step).
Each setting is measured `--repeats` times, raw and rlfleet alternating, and the medians are
reported (this 2-core machine drifts by 10-20% within minutes). Writes
benchmarks/results/perf_pipeline.json; the summary ratio is median rlfleet random / median raw.

    python benchmarks/perf_pipeline.py --seconds 10
"""
from __future__ import annotations

import argparse
import importlib.util
import multiprocessing as mp
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import previous_rows, table, write_results, run_main  # noqa: E402

from rlfleet.platform.config import load_config  # noqa: E402
from rlfleet.platform.envs import EnvMaker  # noqa: E402
from rlfleet.platform.policies import RandomPolicy  # noqa: E402
from rlfleet.platform.registry import resolve_algorithm  # noqa: E402

try:  # the miniwob family and the qweb agent (until rlfleet.envs / rlfleet.algorithms import them)
    import rlfleet.algorithms.qweb  # noqa: E402,F401
    import rlfleet.envs.miniwob  # noqa: E402,F401
    import miniwob  # noqa: E402,F401
    HAVE_MINIWOB = True
except ImportError:  # without the web extra the miniwob row is left out
    HAVE_MINIWOB = False

ROOT = Path(__file__).resolve().parents[1]
# family name -> config whose env and network are measured
ENVS = {"stateless_cartpole": ROOT / "configs" / "quickstart.yaml",
        "mpe2_simple_spread": ROOT / "configs" / "spread_r2d2.yaml",
        "miniwob_click_button": ROOT / "configs" / "miniwob_click_button.yaml"}
# families too heavy for the default sizes (one headless Chromium per env): (runners, envs per runner)
SIZES = {"miniwob_click_button": ([1, 2], [4])}
if not HAVE_MINIWOB:
    del ENVS["miniwob_click_button"]


def _raw_worker(maker: EnvMaker, num_envs: int, seconds: float, seed: int, out, start) -> None:
    """One raw process; `start` (a barrier of all of them) makes their windows coincide, as the
    runners' do: a process that finished setting up early would otherwise run alone for a while."""
    from rlfleet.platform.multiagent import is_parallel_env

    if hasattr(maker.factory, "make_batch"):  # natively vectorized (smax: one jax.vmap): the batch is the raw env
        return _raw_batch(maker, num_envs, seconds, seed, out, start)
    envs = [maker() for _ in range(num_envs)]
    for i, e in enumerate(envs):
        e.reset(seed=seed + i)
    steps, k = 0, 0
    start.wait()
    t_end = time.perf_counter() + seconds
    if is_parallel_env(envs[0]):  # PettingZoo: count agent steps, as rlfleet's runners do
        n_actions = envs[0].action_space(envs[0].possible_agents[0]).n
        actions = np.random.default_rng(seed).integers(0, n_actions, 1 << 16).tolist()
        while time.perf_counter() < t_end:
            for e in envs:
                live = e.agents
                e.step({a: actions[(k + j) & 0xFFFF] for j, a in enumerate(live)})
                k += len(live)
                steps += len(live)
                if not e.agents:
                    e.reset()
    elif hasattr(envs[0], "action_mask"):  # envs with legal-action masks (miniwob): random legal actions
        rng = np.random.default_rng(seed)
        while time.perf_counter() < t_end:
            for e in envs:
                legal = np.flatnonzero(e.action_mask())
                _, _, term, trunc, _ = e.step(int(legal[rng.integers(len(legal))]))
                if term or trunc:
                    e.reset()
            steps += num_envs
        for e in envs:
            e.close()
    else:
        n_actions = envs[0].action_space.n
        actions = np.random.default_rng(seed).integers(0, n_actions, 1 << 16).tolist()  # Python ints: fastest
        while time.perf_counter() < t_end:
            for e in envs:
                _, _, term, trunc, _ = e.step(actions[k & 0xFFFF])
                k += 1
                if term or trunc:
                    e.reset()
            steps += num_envs
    out.put(steps / seconds)


def _raw_batch(maker: EnvMaker, num_envs: int, seconds: float, seed: int, out, start) -> None:
    """A factory's own batch stepped in a loop with random legal actions; agent steps counted
    (slots sitting out excluded), as rlfleet's runners count them. Compiled before the clock starts."""
    from rlfleet.platform.policies import random_legal_actions

    batch = maker.batch(num_envs, seed)
    rng = np.random.default_rng(seed)
    batch.reset()
    batch.step(random_legal_actions(rng, len(batch), batch.spec.num_actions, batch.action_mask))
    steps = 0
    start.wait()
    t0 = time.perf_counter()
    t_end = t0 + seconds
    while time.perf_counter() < t_end:
        res = batch.step(random_legal_actions(rng, len(batch), batch.spec.num_actions, batch.action_mask))
        steps += len(batch) - int(res.reset_step.sum())
    batch.close()
    out.put(steps / (time.perf_counter() - t0))


# SMAX 3m: all envs of a runner in one jax.vmap (until rlfleet.envs imports the smax family). Only
# looked up, not imported: importing jaxmarl starts JAX's backend (module-level jnp arrays) before
# rlfleet.envs.smax can size its thread pool, and this module is imported by every raw process and
# every actor that unpickles WeightsSource
if importlib.util.find_spec("jaxmarl") is not None:
    import rlfleet.envs.smax  # noqa: E402,F401
    ENVS["smax_3m"] = ROOT / "configs" / "smax_3m_r2d2.yaml"


def raw_steps_per_s(maker: EnvMaker, runners: int, num_envs: int, seconds: float) -> float:
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    start = ctx.Barrier(runners)
    procs = [ctx.Process(target=_raw_worker, args=(maker, num_envs, seconds, 1000 * i, out, start))
             for i in range(runners)]
    for p in procs:
        p.start()
    rates = [out.get() for _ in procs]
    for p in procs:
        p.join()
    return float(sum(rates))


class WeightsSource:
    """Stands in for the learner's get_weights: version 0 forever (no learner in this benchmark)."""

    def __init__(self, weights):
        self.weights = weights

    def get_weights(self, known_version: int = -1):
        return self.weights if known_version < self.weights[0] else None


def rlfleet_steps_per_s(cfg, algo_cfg, maker: EnvMaker, policy: str, runners: int, num_envs: int,
                        ship_interval: int, seconds: float, warmup: float = 3.0) -> tuple[float, dict]:
    import ray

    from rlfleet.platform.learner import ReplayShard
    from rlfleet.platform.runner import EnvRunner, apex_epsilons

    spec = resolve_algorithm(cfg.algorithm_name)
    layout = spec.sequence_layout(algo_cfg)
    env_spec = maker.spec()
    if policy == "random":
        make_policy, weights = RandomPolicy, (0, [ray.put({})])
    else:
        make_policy = spec.make_policy
        weights = (0, [ray.put(make_policy(algo_cfg, env_spec).net.state_dict())])
    shard = ray.remote(ReplayShard).options(num_cpus=0.1, max_concurrency=4).remote(
        capacity=20_000, alpha=0.9, beta=0.6, min_size=1, samples_per_insert=None, error_buffer=100, seed=0)
    source = ray.remote(WeightsSource).options(num_cpus=0.01).remote(weights)
    slots = num_envs * maker.agents_per_env()  # a runner's epsilons: one per (env, agent) slot
    eps = apex_epsilons(runners * slots)
    actors = [ray.remote(EnvRunner).options(num_cpus=0.5, max_concurrency=4).remote(
        i, maker, make_policy, algo_cfg, layout, eps[i * slots:(i + 1) * slots], [shard], source, weights,
        ship_interval, cfg.runners.weight_sync_interval, seed=i) for i in range(runners)]
    ray.get([a.start.remote() for a in actors])
    deadline = time.perf_counter() + 300  # envs started and compiled (browsers, jax.jit) before the clock, as in raw
    while min(s["env_steps"] for s in ray.get([a.stats.remote() for a in actors])) == 0:
        if time.perf_counter() > deadline:
            raise RuntimeError(f"runners took no env step within 300 s ({maker.factory})")
        time.sleep(0.5)
    time.sleep(warmup)
    s0 = ray.get([a.stats.remote() for a in actors])
    t0 = time.perf_counter()
    time.sleep(seconds)
    s1 = ray.get([a.stats.remote() for a in actors])
    dt = time.perf_counter() - t0
    ray.get([a.stop.remote() for a in actors])
    split = {k: sum(b["time"][k] - a["time"][k] for a, b in zip(s0, s1)) for k in s1[0]["time"]}
    total = sum(split.values()) or 1.0
    for a in actors + [shard, source]:
        ray.kill(a)
    rate = sum(b["env_steps"] - a["env_steps"] for a, b in zip(s0, s1)) / dt
    return rate, {k: round(v / total, 3) for k, v in split.items()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--envs", nargs="+", default=list(ENVS), choices=list(ENVS))
    p.add_argument("--runners", type=int, nargs="+", default=[1, 2])
    p.add_argument("--envs-per-runner", type=int, nargs="+", default=[8, 64])
    p.add_argument("--ship-interval", type=int, default=1024, help="env steps per shipment to replay")
    p.add_argument("--repeats", type=int, default=3, help="alternating raw/rlfleet measurements; medians are reported")
    args = p.parse_args()
    import ray

    # keep the other envs' rows when measuring a subset
    rows = [r for r in previous_rows("perf_pipeline") if r["env"] not in args.envs]
    for family in args.envs:
        config = ENVS[family]
        cfg, algo_cfg, _ = load_config(config)
        maker = EnvMaker.from_config(cfg.env)
        runner_counts, env_counts = SIZES.get(family, (args.runners, args.envs_per_runner))
        for num_envs in env_counts:
            for r in runner_counts:
                setting = f"{family} {r}x{num_envs}"
                common = {"setting": setting, "env": family, "runners": r, "envs_per_runner": num_envs,
                          "metric": "env_steps_per_s"}
                runs = {"raw": [], "random": [], "r2d2": []}
                splits = {"random": [], "r2d2": []}
                for _ in range(args.repeats):  # alternated: slow drifts of this shared machine hit both sides
                    runs["raw"].append(raw_steps_per_s(maker, r, num_envs, args.seconds))  # before Ray: nothing else running
                    ray.init(num_cpus=4, include_dashboard=False, logging_level="warning")
                    for policy in ("random", "r2d2"):
                        rate, split = rlfleet_steps_per_s(cfg, algo_cfg, maker, policy, r, num_envs,
                                                          args.ship_interval, args.seconds)
                        runs[policy].append(rate)
                        splits[policy].append(split)
                    ray.shutdown()
                raw = float(np.median(runs["raw"]))
                rows.append({"system": "raw", **common, "value": round(raw, 1),
                             "repeats": [round(v, 1) for v in runs["raw"]]})
                for policy in ("random", "r2d2"):
                    rate = float(np.median(runs[policy]))
                    split = {k: round(float(np.median([sp[k] for sp in splits[policy]])), 3) for k in splits[policy][0]}
                    rows.append({"system": f"rlfleet-{policy}", **common, "value": round(rate, 1),
                                 "ratio_vs_raw": round(rate / raw, 3), "time_split": split,
                                 "repeats": [round(v, 1) for v in runs[policy]]})
    ratio = {}
    for row in rows:
        if row["system"] == "rlfleet-random":
            ratio[f"{row['env']} {row['runners']}x{row['envs_per_runner']}"] = row["ratio_vs_raw"]
    print(table([[r["setting"], r["system"], r["value"], r.get("ratio_vs_raw"),
                  " ".join(f"{k}={v}" for k, v in r.get("time_split", {}).items())] for r in rows],
                ["env runners x envs", "system", "env steps/s", "vs raw", "runner time split"]))
    print("wrote", write_results("perf_pipeline", rows, {"ratio": ratio}))


if __name__ == "__main__":
    run_main(main)
