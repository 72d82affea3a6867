"""Metrics sinks: metrics.jsonl, TensorBoard events and a live progress line."""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path


class MetricsLogger:
    def __init__(self, run_dir: Path, tensorboard: bool = True, progress: bool = True):
        self.file = open(run_dir / "metrics.jsonl", "a", buffering=1)
        self.writer = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(run_dir / "tb"))
        self.progress = progress
        self.tty = sys.stdout.isatty()

    def log(self, record: dict) -> None:
        self.file.write(json.dumps(record) + "\n")
        if self.writer is not None:
            step = int(record.get("env_steps", 0))
            for k, v in record.items():
                if isinstance(v, (int, float)) and k != "env_steps" and v is not None:
                    self.writer.add_scalar(k.replace(".", "/"), v, step)
            self.writer.flush()
        if self.progress:
            self._print(record)

    def _print(self, r: dict) -> None:
        line = None
        if "eval_return_std" in r:  # an evaluation record
            line = (f"eval @ {r['env_steps']:,d} steps: return {r['eval_return']:.1f} "
                    f"+- {r['eval_return_std']:.1f}")
        elif "placement" in r:  # a runner started on a node
            p = r["placement"]
            line = (f"runner {p['runner']} on node {p['node_id'][:12]} ({p['address']}"
                    + "".join(f", {name}" for name in p["custom_resources"]) + ")")
        if line is not None:
            sys.stdout.write(("\r" + line + "\033[K\n") if self.tty else line + "\n")
            sys.stdout.flush()
            return
        def fmt(key, spec, label):
            v = r.get(key)
            return f"{label} {v:{spec}}" if isinstance(v, (int, float)) else f"{label} -"

        line = " | ".join([
            fmt("env_steps", ",d", "steps"), fmt("updates", ",d", "updates"),
            fmt("episode_return", ".1f", "return"), fmt("eval_return", ".1f", "eval"),
            fmt("env_steps_per_s", ".0f", "steps/s"), fmt("updates_per_s", ".1f", "upd/s"),
            f"elapsed {time.strftime('%H:%M:%S', time.gmtime(r.get('wall_s', 0.0)))}"])
        if self.tty:
            sys.stdout.write("\r" + line + "\033[K")
        else:
            sys.stdout.write(line + "\n")
        sys.stdout.flush()

    def close(self) -> None:
        if self.tty and self.progress:
            sys.stdout.write("\n")
        self.file.close()
        if self.writer is not None:
            self.writer.close()
