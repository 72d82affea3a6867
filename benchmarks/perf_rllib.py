"""rlfleet vs RLlib on stateless CartPole: wall-clock to a mean return of 350, env steps/s, updates/s.

RLlib 2.60, new API stack, DQN with an LSTM, with the settings of RLlib's own tuned example
(rllib/tuned_examples/dqn/stateless_cartpole_dqn.py: lr 3e-4, batch 32, episode replay 1.5M,
double + dueling, eps 1 -> 0.02 over 40k steps, MeanStdFilter, fcnet [256] tanh, LSTM, max_seq_len
20, 3 env runners; it expects 350 within 2M steps). Both sides get the same env (Gymnasium
CartPole-v1 with position and angle only, 500-step limit), the same logical CPUs on an embedded
local Ray, and a wall-clock budget per seed. rlfleet runs configs/quickstart.yaml and is timed to
its first greedy evaluation (20 episodes) >= 350; RLlib to its own criterion, the training
episode_return_mean >= 350 (epsilon 0.02 by then). A run that never gets there is reported as such,
with its best return, steps and budget; the speedup then is a lower bound (budget / rlfleet time).
Writes benchmarks/results/perf_rllib.json.

    python benchmarks/perf_rllib.py --seeds 3 --rllib-budget-s 600
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import previous_rows, table, write_results, run_main  # noqa: E402

import rlfleet  # noqa: E402

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "quickstart.yaml"
TARGET = 350.0
NUM_CPUS = 4  # what the embedded Ray of the quickstart gets on this machine


def run_rlfleet(seed: int, budget_s: float) -> dict:
    with tempfile.TemporaryDirectory(prefix="rlfleet-perf-") as root:
        s = rlfleet.train(str(CONFIG), overrides=[
            f"seed={seed}", f"stop.time_s={budget_s}", f"stop.target_return={TARGET}", f"logging.root={root}",
            "logging.progress=false", "eval.interval_env_steps=5000"])
    hit = next((e for e in s["evals"] if e["return_mean"] >= TARGET), None)
    return {"system": "rlfleet", "setting": "quickstart r2d2", "seed": seed, "env_steps": s["env_steps"],
            "wall_s": round(s["wall_s"], 1), "metric": "wall_s_to_350",
            "value": round(hit["wall_s"], 1) if hit else None, "env_steps_to_350": hit["env_steps"] if hit else None,
            "best_return": max((e["return_mean"] for e in s["evals"]), default=None),
            "env_steps_per_s": round(s["env_steps"] / s["wall_s"], 1),
            "updates_per_s": round(s["updates"] / s["wall_s"], 1), "budget_s": budget_s}


def run_rllib(seed: int, budget_s: float) -> dict:
    import ray
    from ray.rllib.algorithms.dqn import DQNConfig
    from ray.rllib.connectors.env_to_module import MeanStdFilter
    from ray.rllib.core.rl_module.default_model_config import DefaultModelConfig
    from ray.tune.registry import register_env

    ray.init(num_cpus=NUM_CPUS, include_dashboard=False, logging_level="error")
    from rlfleet.platform.config import load_config
    from rlfleet.platform.envs import EnvMaker

    maker = EnvMaker.from_config(load_config(CONFIG)[0].env)  # the quickstart's env
    register_env("stateless-cartpole", lambda _config: maker())
    config = (
        DQNConfig()
        .environment("stateless-cartpole")
        .env_runners(num_env_runners=3, env_to_module_connector=lambda *args, **kw: MeanStdFilter())
        .training(lr=0.0003, train_batch_size_per_learner=32,
                  replay_buffer_config={"type": "EpisodeReplayBuffer", "capacity": 1500000},
                  n_step=1, double_q=True, dueling=True, num_atoms=1, epsilon=[(0, 1.0), (40000, 0.02)])
        .rl_module(model_config=DefaultModelConfig(fcnet_hiddens=[256], fcnet_activation="tanh",
                                                   head_fcnet_hiddens=[256], head_fcnet_activation="tanh",
                                                   use_lstm=True, max_seq_len=20))
        .debugging(seed=seed)
    )
    algo = config.build_algo()
    t0 = time.perf_counter()
    hit, best, steps, updates, curve = None, -np.inf, 0, 0, []
    while time.perf_counter() - t0 < budget_s:
        res = algo.train()
        wall = time.perf_counter() - t0
        steps = int(res.get("num_env_steps_sampled_lifetime", steps))
        learners = res.get("learners", {}).get("__all_modules__", {})
        updates = int(learners.get("num_module_steps_trained_lifetime", 0)) // 32 or updates
        ret = res.get("env_runners", {}).get("episode_return_mean")
        if ret is not None and np.isfinite(ret):
            best = max(best, float(ret))
            curve.append([steps, round(wall, 1), round(float(ret), 1)])
            if hit is None and ret >= TARGET:
                hit = (wall, steps)
                break
    wall = time.perf_counter() - t0
    algo.stop()
    ray.shutdown()
    return {"system": "rllib-dqn-lstm", "setting": "tuned example settings", "seed": seed, "env_steps": steps,
            "wall_s": round(wall, 1), "metric": "wall_s_to_350", "value": round(hit[0], 1) if hit else None,
            "env_steps_to_350": hit[1] if hit else None, "best_return": round(best, 1) if np.isfinite(best) else None,
            "env_steps_per_s": round(steps / wall, 1), "updates_per_s": round(updates / wall, 2),
            "budget_s": budget_s, "curve": curve}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--rlfleet-budget-s", type=float, default=600)
    p.add_argument("--rllib-budget-s", type=float, default=660)
    p.add_argument("--reuse-rlfleet", action="store_true", help="keep the rlfleet rows of the existing results file")
    args = p.parse_args()
    rows = []
    if args.reuse_rlfleet:
        rows = [r for r in previous_rows("perf_rllib") if r["system"] == "rlfleet"]
    for seed in range(args.seeds if not rows else 0):
        rows.append(run_rlfleet(seed, args.rlfleet_budget_s))
        print({k: v for k, v in rows[-1].items()}, flush=True)
        write_results("perf_rllib", rows, summarize(rows))
    for seed in range(args.seeds):
        rows.append(run_rllib(seed, args.rllib_budget_s))
        print({k: v for k, v in rows[-1].items() if k != "curve"}, flush=True)
        write_results("perf_rllib", rows, summarize(rows))
    summary = summarize(rows)
    print(table([[r["system"], r["seed"], r["value"], r["env_steps_to_350"], r["best_return"], r["env_steps"],
                  r["wall_s"], r["env_steps_per_s"], r["updates_per_s"]] for r in rows],
                ["system", "seed", "wall s to 350", "steps to 350", "best return", "env steps", "wall s",
                 "env steps/s", "updates/s"]))
    print(summary)
    print("wrote", write_results("perf_rllib", rows, summary))


def summarize(rows: list[dict]) -> dict:
    """Worst seed on each side; a side that missed 350 counts as its budget (speedup >= ...)."""
    def worst(system):
        rs = [r for r in rows if r["system"] == system]
        if not rs:
            return None, False
        missed = any(r["value"] is None for r in rs)
        return max(r["budget_s"] if r["value"] is None else r["value"] for r in rs), missed

    ours, ours_missed = worst("rlfleet")
    theirs, theirs_missed = worst("rllib-dqn-lstm")
    return {"rlfleet_wall_s_to_350": None if ours_missed else ours,
            "rllib_wall_s_to_350": None if theirs_missed else theirs,
            "speedup": round(theirs / ours, 1) if ours and theirs and not ours_missed else None,
            "speedup_is_lower_bound": theirs_missed}


if __name__ == "__main__":
    run_main(main)
