"""Offline BabyAI: recurrent DQN vs retrieval-augmented variants (Goyal et al. 2022, Sec. 5.2), small scale.

For each dataset size (bot episodes per level) and seed, every level gets four agents trained
on that level's data only: `dqn` (no retrieval), `single` (retrieval over the level's data),
`multi` (retrieval over all levels' data) and `multi_no_ib` (multi without the bottleneck).
Each is evaluated greedily on unseen start states of its level (success = positive reward).
Then acting latency: seconds per batched acting step for two briefly trained networks of the same
sizes with and without retrieval, taking turns step by step in one loop (medians over steps).

Writes benchmarks/results/retrieval_babyai.json after every run (`--resume` skips rows already
there), and prints the success table. Default budget: 5 levels x 2 sizes x 3 seeds x 4 variants.

    nice -n 10 python benchmarks/retrieval_babyai.py                # the default (long on 2 cores)
    python benchmarks/retrieval_babyai.py --levels GoToRedBall,GoToObjS6 --sizes 50 --seeds 1 --updates 50
    nice -n 5 python benchmarks/retrieval_babyai.py --latency-only  # only the acting-latency part (~1 min)
    python benchmarks/retrieval_babyai.py --table-only              # the results file's table so far
    nice -n 5 python benchmarks/retrieval_babyai.py --levels hard --updates 1000  # the harder level set (its own file)
    python benchmarks/retrieval_babyai.py --updates 1000 --beta 0.03 --variants single,multi --resume
                                    # another bottleneck weight: rows keyed by it, summary under by_beta

`--latency-only` replaces the latency rows and the summary's latency entries of the results file
and keeps its success rows (and their command) as they are.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, git_commit, table, write_results, run_main  # noqa: E402

from rlfleet.algorithms.retrieval.config import RDQNOfflineConfig  # noqa: E402
from rlfleet.algorithms.retrieval import offline  # noqa: E402

LEVELS = "GoToRedBallGrey,GoToRedBall,GoToObjS6,GoToLocalS6N2,PickupLoc"
# `--levels hard`: levels chosen by recurrent DQN alone, before any retrieval run on them (session
# 16): bot episodes short enough for the 20-step windows (mean <= 20 steps) and DQN's greedy
# success below 0.6 at 100 episodes per level, 1000 updates, seed 0 (scout: GoToLocal 0.50,
# PutNextLocal 0.03, PickupDist 0.43, ActionObjDoor 0.33, PickupLoc 0.36 in the default grid; left
# out: GoToDoor 0.80, OpenDoor 0.60, PutNextS5N1 0.77). The paper's recurrent DQN is at 32%.
HARD_LEVELS = "GoToLocal,PutNextLocal,PickupDist,ActionObjDoor,PickupLoc"
DEFAULT_BETA = RDQNOfflineConfig().retrieval.beta  # rows without a "beta" ran with it


def beta_of(row: dict) -> float:
    return row.get("beta", DEFAULT_BETA)


def summarize(rows: list[dict], latency: dict | None) -> dict:
    """Success means of the rows at the default bottleneck weight (the paper's setting), and the
    multi-level variant's mean and ratio to recurrent DQN at each other weight run (`by_beta`)."""
    def mean(variant, size=None, beta=DEFAULT_BETA):
        vals = [r["value"] for r in rows if r["system"] == variant and r["metric"] == "success"
                and (size is None or r["episodes_per_level"] == size) and beta_of(r) == beta]
        return float(np.mean(vals)) if vals else None

    sizes = sorted({r["episodes_per_level"] for r in rows if r["metric"] == "success"})
    dqn, multi = mean("dqn"), mean("multi")
    out = {"dqn_success": dqn, "retrieval_multilevel_success": multi,
           "ratio_multilevel_vs_dqn": (multi / dqn) if dqn and multi is not None else None,
           "acting_latency_ratio": latency["ratio_act"] if latency else None,
           "success_by_size": {str(s): {v: mean(v, s) for v in offline.VARIANTS} for s in sizes},
           "single_level_success": mean("single"), "multilevel_no_bottleneck_success": mean("multi_no_ib")}
    other = sorted({beta_of(r) for r in rows if r["metric"] == "success"} - {DEFAULT_BETA})
    for b in other:  # dqn has no bottleneck: the ratios use its default-weight rows
        m = mean("multi", beta=b)
        out.setdefault("by_beta", {})[str(b)] = {"multi_success": m, "ratio_multilevel_vs_dqn":
                                                 m / dqn if dqn and m is not None else None}
    if latency:
        out["acting_latency"] = latency
    return out


def write_latency(path: Path, rows: list[dict], latency: dict, argv) -> None:
    """--latency-only: the new latency rows and summary entries; everything else of the file kept."""
    if not path.exists():
        write_results("retrieval_babyai", rows, summarize(rows, latency), argv, file_name=path.stem)
        return
    out = json.loads(path.read_text())
    out["rows"] = rows
    out["summary"]["acting_latency_ratio"] = latency["ratio_act"]
    out["summary"]["acting_latency"] = dict(latency, git_commit=git_commit(), date=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                                            command="python benchmarks/retrieval_babyai.py "
                                            + " ".join(sys.argv[1:] if argv is None else argv))
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(out, indent=1))
    tmp.replace(path)


def print_table(rows: list[dict], levels: list[str], sizes: list[int], variants: list[str], summary: dict,
                beta: float = DEFAULT_BETA) -> None:
    """Success % per level and dataset size (mean over the seeds run so far, their count in brackets)
    at bottleneck weight `beta`."""
    rows = [r for r in rows if beta_of(r) == beta]
    grid = []
    for size in sizes:
        for level in levels + ["mean"]:
            line = [f"{level}/n{size}"]
            for v in variants:
                vals = [r["value"] for r in rows if r["metric"] == "success" and r["system"] == v
                        and r["episodes_per_level"] == size and (level == "mean" or r["level"] == level)]
                line.append(f"{100 * float(np.mean(vals)):.0f} ({len(vals)})" if vals else "-")
            grid.append(line)
    print(table(grid, ["level/size"] + [f"{v} % (runs)" for v in variants]))
    ratio = (summary["ratio_multilevel_vs_dqn"] if beta == DEFAULT_BETA
             else summary.get("by_beta", {}).get(str(beta), {}).get("ratio_multilevel_vs_dqn"))
    print(f"multi-level retrieval (beta {beta}) / recurrent DQN success: {ratio}")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--levels", default=LEVELS, help="comma-separated BabyAI levels (babyai: names), or 'hard' "
                   f"({HARD_LEVELS}; results then default to retrieval_babyai_hard.json)")
    p.add_argument("--results-name", help="write benchmarks/results/NAME.json (default: retrieval_babyai, "
                   "retrieval_babyai_hard with --levels hard)")
    p.add_argument("--sizes", default="100,400", help="bot episodes per level, comma-separated")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--updates", type=int, default=400, help="gradient updates per agent")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--max-len", type=int, default=20, help="training windows / retrieved trajectories, in steps")
    p.add_argument("--retrieval-batch", type=int, default=16, help="trajectories per uniform retrieval batch")
    p.add_argument("--slots", type=int, default=2)
    p.add_argument("--top-k", type=int, default=5, help="top-k trajectories, then top-k steps")
    p.add_argument("--eval-episodes", type=int, default=30)
    p.add_argument("--epsilon", type=float, default=0.25, help="bot noise: random action probability")
    p.add_argument("--variants", default=",".join(offline.VARIANTS))
    p.add_argument("--beta", type=float, default=DEFAULT_BETA, help="information-bottleneck KL weight; rows "
                   "record it, the summary's main keys count the default's rows, others go to by_beta")
    p.add_argument("--cache", default=str(Path.home() / ".cache" / "rlfleet" / "babyai"), help="recorded demonstrations")
    p.add_argument("--threads", type=int, default=1, help="torch threads")
    p.add_argument("--resume", action="store_true", help="keep rows of an earlier run of the same settings")
    p.add_argument("--latency-only", action="store_true",
                   help="measure acting latency only; keep the results file's success rows")
    p.add_argument("--table-only", action="store_true", help="print the results file's success table; run nothing")
    args = p.parse_args(argv)
    if args.levels == "hard":
        args.levels, args.results_name = HARD_LEVELS, args.results_name or "retrieval_babyai_hard"
    path = RESULTS / f"{args.results_name or 'retrieval_babyai'}.json"
    if args.table_only:
        if not path.is_file():
            from rlfleet.platform.errors import UserError

            raise UserError(f"no results file {path} yet (run the grid without --table-only first)")
        out = json.loads(path.read_text())
        print_table(out["rows"], args.levels.split(","), [int(s) for s in args.sizes.split(",")],
                    args.variants.split(","), out["summary"], args.beta)
        return 0
    torch.set_num_threads(args.threads)
    levels, sizes = args.levels.split(","), [int(s) for s in args.sizes.split(",")]
    variants = args.variants.split(",")
    base = RDQNOfflineConfig(updates=args.updates, batch_size=args.batch_size, max_episode_len=args.max_len)
    base.retrieval.retrieval_batch = args.retrieval_batch
    base.retrieval.num_slots = args.slots
    base.retrieval.top_k_trajectories = base.retrieval.top_k_steps = args.top_k
    base.retrieval.beta = args.beta
    rows = []
    if (args.resume or args.latency_only) and path.exists():
        rows = json.loads(path.read_text())["rows"]
    done = {(r["system"], r["setting"], r["seed"], beta_of(r)) for r in rows}
    t_start = time.perf_counter()
    latency = None
    data = {}
    for size in sizes:
        data[size] = offline.load_levels(levels, size, args.cache, seed=0, epsilon=args.epsilon)
        print(f"[{time.perf_counter() - t_start:.0f}s] {size} bot episodes per level: "
              + ", ".join(f"{d.name} {d.steps} steps" for d in data[size]), flush=True)
    # acting latency first (cheap): two briefly trained agents of the same sizes, with and without retrieval
    datasets = data[sizes[-1]]
    small = base.model_copy(update={"updates": 20})
    pool = offline.TrajectoryDataset.concat(datasets)
    with_r = offline.train_offline(offline.variant_config(small, "multi"), datasets[0], pool, seed=0)
    without = offline.train_offline(offline.variant_config(small, "dqn"), datasets[0], None, seed=0)
    pols = {"retrieval": offline.policy_for(with_r, pool, offline.variant_config(small, "multi"), 0),
            "no_retrieval": offline.policy_for(without, None, offline.variant_config(small, "dqn"), 0)}
    lat = offline.acting_latency(pols, levels[0], num_envs=16, steps=200)
    latency = {"num_envs": 16, "act_s": {k: v["act_s"] for k, v in lat.items()},
               "act_cpu_s": {k: v["act_cpu_s"] for k, v in lat.items()},
               "runner_step_s": {k: v["step_s"] for k, v in lat.items()},
               "ratio_act": lat["retrieval"]["act_s"] / lat["no_retrieval"]["act_s"],
               "ratio_act_cpu": lat["retrieval"]["act_cpu_s"] / lat["no_retrieval"]["act_cpu_s"],
               "ratio_runner_step": lat["retrieval"]["step_s"] / lat["no_retrieval"]["step_s"]}
    rows = [r for r in rows if r["metric"] != "act_s"]
    for k, v in lat.items():
        rows.append({"system": k, "setting": f"latency/{levels[0]}/16envs", "seed": 0, "metric": "act_s",
                     "value": v["act_s"]})
    print(f"acting latency, 16 envs: {1e3 * latency['act_s']['retrieval']:.2f} ms with retrieval, "
          f"{1e3 * latency['act_s']['no_retrieval']:.2f} ms without (x{latency['ratio_act']:.2f}; CPU time "
          f"x{latency['ratio_act_cpu']:.2f}); per runner step incl. env: x{latency['ratio_runner_step']:.2f}", flush=True)
    if args.latency_only:
        write_latency(path, rows, latency, argv)
        return 0
    for seed in range(args.seeds):  # seed-major: a partial run already covers every level and size
        for size in sizes:
            datasets = data[size]
            for li, level in enumerate(levels):
                for variant in variants:
                    setting = f"{level}/n{size}"
                    if (variant, setting, seed, args.beta) in done:
                        continue
                    r = offline.run_variant(variant, base, datasets, li, seed, args.eval_episodes)
                    rows.append({"system": variant, "setting": setting, "seed": seed, "level": level,
                                 "episodes_per_level": size, "updates": args.updates, "wall_s": r["train_s"],
                                 "beta": args.beta, "metric": "success", "value": r["success"]})
                    print(f"[{time.perf_counter() - t_start:.0f}s] {setting} seed {seed} {variant}: "
                          f"success {r['success']:.2f} ({r['train_s']:.0f} s training)", flush=True)
                    write_results("retrieval_babyai", rows, summarize(rows, latency), argv, file_name=path.stem)
    summary = summarize(rows, latency)
    write_results("retrieval_babyai", rows, summary, argv, file_name=path.stem)
    print_table(rows, levels, sizes, variants, summary, args.beta)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    run_main(main)
