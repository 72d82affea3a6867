"""R2D2 on stateless CartPole (position + angle only), 3 seeds, plus a feed-forward ablation.

For each run: env steps and wall-clock until the greedy evaluation return (20 episodes) first
reaches 475, and the final return (mean of the last 5 evaluations). Writes
benchmarks/results/r2d2_stateless_cartpole.json.

    python benchmarks/r2d2_stateless_cartpole.py --seeds 3
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import table, write_results, run_main  # noqa: E402

import rlfleet  # noqa: E402

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "quickstart.yaml"
TARGET = 475.0


def run(seed: int, env_steps: int, lstm: bool, root: str) -> dict:
    overrides = [f"seed={seed}", f"stop.env_steps={env_steps}", f"logging.root={root}", "logging.progress=false",
                 f"name={'lstm' if lstm else 'feedforward'}-s{seed}"]
    if not lstm:
        overrides.append("algorithm.use_lstm=false")
    summary = rlfleet.train(str(CONFIG), overrides=overrides)
    evals = summary["evals"]
    hit = next((e for e in evals if e["return_mean"] >= TARGET), None)
    final = float(np.mean([e["return_mean"] for e in evals[-5:]])) if evals else None
    return {"system": "rlfleet-r2d2", "setting": "lstm" if lstm else "feedforward", "seed": seed,
            "env_steps": summary["env_steps"], "wall_s": round(summary["wall_s"], 1),
            "metric": "final_eval_return", "value": final,
            "env_steps_to_475": hit["env_steps"] if hit else None,
            "wall_s_to_475": hit["wall_s"] if hit else None,
            "updates": summary["updates"], "peak_eval_return": max((e["return_mean"] for e in evals), default=None),
            "evals": [[e["env_steps"], round(e["return_mean"], 1)] for e in evals]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--ablation-seeds", type=int, default=1)
    p.add_argument("--env-steps", type=int, default=300_000)
    args = p.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="rlfleet-bench-") as root:
        for lstm, seeds in ((True, args.seeds), (False, args.ablation_seeds)):
            for seed in range(seeds):
                rows.append(run(seed, args.env_steps, lstm, root))
                r = rows[-1]
                print(f"{r['setting']} seed {seed}: final {r['value']:.1f}, 475 at {r['env_steps_to_475']}", flush=True)
                write_results("r2d2_stateless_cartpole", rows, summarize(rows))  # partial results survive a crash
    summary = summarize(rows)
    print(table([[r["setting"], r["seed"], r["env_steps_to_475"], r["wall_s_to_475"], r["peak_eval_return"],
                  r["value"], r["env_steps"], r["wall_s"]] for r in rows],
                ["setting", "seed", "steps to 475", "wall s to 475", "peak eval", "final eval (last 5)",
                 "env steps", "wall s"]))
    print(summary)
    print("wrote", write_results("r2d2_stateless_cartpole", rows, summary))


def summarize(rows: list[dict]) -> dict:
    rec = [r for r in rows if r["setting"] == "lstm"]
    ff = [r for r in rows if r["setting"] == "feedforward"]
    to_475 = [r["env_steps_to_475"] for r in rec]
    return {
        "recurrent_min_final_eval_return": min(r["value"] for r in rec) if rec else None,
        "recurrent_max_env_steps_to_475": None if (not rec or None in to_475) else max(to_475),
        "feedforward_mean_final_eval_return": float(np.mean([r["value"] for r in ff])) if ff else None,
    }


if __name__ == "__main__":
    run_main(main)
