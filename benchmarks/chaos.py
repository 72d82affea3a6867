"""Chaos: the quickstart with one runner killed every 20 s, against the same run without kills.

A side thread finds the run's runner actors by name (namespace "rlfleet"), kills one (round
robin) with ray.kill every `--every` seconds, and times the recovery: from the kill until the
replacement runner (same name, started by the driver) reports env steps again. Env steps lost are
measured against the undisturbed run: 1 - (env steps/s with chaos) / (env steps/s without).
Both runs have the same env-step budget, so the final greedy evaluation returns compare directly.
Writes benchmarks/results/chaos.json.

    python benchmarks/chaos.py --every 20
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import table, write_results, run_main  # noqa: E402

import rlfleet  # noqa: E402

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "quickstart.yaml"


class Chaos(threading.Thread):
    def __init__(self, every: float):
        super().__init__(daemon=True)
        self.every = every
        self.stop = threading.Event()
        self.kills: list[dict] = []

    def _runners(self) -> list[str]:
        from ray.util import list_named_actors

        return sorted(a["name"] for a in list_named_actors(all_namespaces=True)
                      if a.get("namespace") == "rlfleet" and ":runner:" in a["name"])

    def run(self):
        import ray

        while not ray.is_initialized() and not self.stop.is_set():
            time.sleep(0.5)
        k = 0
        while not self.stop.wait(self.every):
            names = self._runners()
            if not names:
                continue
            name = names[k % len(names)]
            k += 1
            try:
                old = ray.get_actor(name, namespace="rlfleet")
                before = ray.get(old.stats.remote(), timeout=10)["env_steps"]
                ray.kill(old)
            except Exception:  # the run is ending, or the driver is replacing this runner right now
                continue
            t_kill = time.perf_counter()
            recovered = None
            while not self.stop.is_set() and time.perf_counter() - t_kill < 60:
                try:
                    new = ray.get_actor(name, namespace="rlfleet")
                    if new._actor_id != old._actor_id and ray.get(new.stats.remote(), timeout=5)["env_steps"] > 0:
                        recovered = time.perf_counter() - t_kill
                        break
                except Exception:
                    pass
                time.sleep(0.1)
            self.kills.append({"runner": name.rsplit(":", 1)[-1], "steps_of_killed_runner": before,
                               "recovery_s": None if recovered is None else round(recovered, 2)})


def run(chaos_every: float | None, seed: int, env_steps: int, root: str) -> dict:
    chaos = Chaos(chaos_every) if chaos_every else None
    if chaos:
        chaos.start()
    try:
        s = rlfleet.train(str(CONFIG), overrides=[f"seed={seed}", f"stop.env_steps={env_steps}", f"logging.root={root}",
                                                   "logging.progress=false", "runners.max_restarts=1000",
                                                   f"name={'chaos' if chaos else 'calm'}-s{seed}"])
    finally:
        if chaos:
            chaos.stop.set()
            chaos.join(timeout=70)
    final = float(np.mean([e["return_mean"] for e in s["evals"][-5:]]))
    kills = chaos.kills if chaos else []
    recov = [k["recovery_s"] for k in kills if k["recovery_s"] is not None]
    return {"system": "rlfleet", "setting": f"kill a runner every {chaos_every:g} s" if chaos else "no kills",
            "seed": seed, "env_steps": s["env_steps"], "wall_s": round(s["wall_s"], 1),
            "metric": "final_eval_return", "value": final, "env_steps_per_s": s["env_steps"] / s["wall_s"],
            "runner_restarts": s["runner_restarts"], "kills": kills,
            "mean_recovery_s": float(np.mean(recov)) if recov else None}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--every", type=float, default=20.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--env-steps", type=int, default=300_000)
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="rlfleet-chaos-") as root:
        calm = run(None, args.seed, args.env_steps, root)
        write_results("chaos", [calm], {})
        wild = run(args.every, args.seed, args.env_steps, root)
    rows = [calm, wild]
    # Two estimates of the env steps lost: throughput against the calm run (sensitive to whatever else
    # the machine does in the meantime), and downtime: each kill idles one of R runners for its recovery.
    runners = 2  # configs/quickstart.yaml
    downtime = sum(k["recovery_s"] or 0.0 for k in wild["kills"])
    summary = {"final_return_with_chaos": wild["value"], "final_return_without_chaos": calm["value"],
               "env_steps_lost_fraction": round(1.0 - wild["env_steps_per_s"] / calm["env_steps_per_s"], 3),
               "env_steps_lost_fraction_downtime": round(downtime / (runners * wild["wall_s"]), 3),
               "mean_recovery_s": wild["mean_recovery_s"], "kills": len(wild["kills"])}
    print(table([[r["setting"], r["value"], r["env_steps"], r["wall_s"], r["env_steps_per_s"], r["runner_restarts"],
                  r["mean_recovery_s"]] for r in rows],
                ["setting", "final eval (last 5)", "env steps", "wall s", "env steps/s", "restarts", "mean recovery s"]))
    print(summary)
    print("wrote", write_results("chaos", rows, summary))


if __name__ == "__main__":
    run_main(main)
