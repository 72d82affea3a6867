"""GPU check for the R2D2 learner: updates/s and peak memory on CUDA, fp32 and bf16 autocast.

Paper-size network (conv torso on 4x84x84 uint8 frames, LSTM 512, dueling head) on batches of
64 sequences of 40 burn-in + 80 trace steps, synthetic data already on the device. Writes
benchmarks/results/perf_gpu.json (and a copy under $OUT when that is set).

    python benchmarks/gpu_check.py --updates 50
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from common import synthetic_batch, table, write_results, run_main  # noqa: E402

from rlfleet.algorithms.r2d2.config import R2D2Config  # noqa: E402
from rlfleet.algorithms.r2d2.learner import R2D2Learner  # noqa: E402
from rlfleet.platform.envs import EnvSpec  # noqa: E402


def measure(device: str, precision: str, updates: int, warmup: int = 5) -> dict:
    cfg = R2D2Config()  # the paper's defaults: batch 64, burn-in 40, trace 80, LSTM 512
    spec = EnvSpec((4, 84, 84), "uint8", 18)
    learner = R2D2Learner(cfg, spec, device)
    batch = synthetic_batch(cfg, spec, device)
    ctx = (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if precision == "bf16" else torch.enable_grad
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    for _ in range(warmup):
        with ctx():
            learner.update(batch)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(updates):
        with ctx():
            priorities, stats = learner.update(batch)  # device tensors: no sync here
        # as the Learner actor does: priorities to the host one update late, without stalling the device
        priorities.to("cpu", non_blocking=device.startswith("cuda"))
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    dt = time.perf_counter() - t0
    peak = torch.cuda.max_memory_allocated() / 2**30 if device.startswith("cuda") else None
    return {"precision": precision, "updates_per_s": updates / dt, "peak_mem_gb": peak, "loss": float(stats["loss"])}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--updates", type=int, default=50)
    args = p.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("gpu_check: no CUDA device here")
    torch.backends.cudnn.benchmark = True
    name = torch.cuda.get_device_name(0)
    rows = []
    for precision in ("fp32", "bf16"):
        r = measure("cuda", precision, args.updates)
        rows.append({"system": "rlfleet-r2d2-learner", "setting": precision, "seed": 0, "device": name,
                     "metric": "updates_per_s", "value": r["updates_per_s"], "peak_mem_gb": r["peak_mem_gb"],
                     "batch": "64 x (40 burn-in + 80 trace), conv 4x84x84, LSTM 512", "torch": torch.__version__})
    best = max(rows, key=lambda r: r["value"])
    summary = {"device": name, "updates_per_s": best["value"], "peak_mem_gb": best["peak_mem_gb"],
               "precision": best["setting"]}
    print(table([[r["setting"], r["device"], r["value"], r["peak_mem_gb"]] for r in rows],
                ["precision", "device", "updates/s", "peak GiB"]))
    path = write_results("perf_gpu", rows, summary)
    if os.environ.get("OUT"):
        shutil.copy(path, Path(os.environ["OUT"]) / path.name)
    print("wrote", path)


if __name__ == "__main__":
    run_main(main)
