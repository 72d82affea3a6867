"""Learning curves from run directories (`rlfleet plot RUN_DIR... [--metric ...]`).

Reads each run's metrics.jsonl; runs whose config names match except for the seed are one group,
drawn as the mean over seeds with a min-max band (one thin line per seed when a group has one run).
The x axis is env steps. Writes a PNG (matplotlib, Agg backend: no display needed).
"""
from __future__ import annotations

import json
import re
import warnings
from collections import defaultdict
from pathlib import Path

import numpy as np

from rlfleet.platform.errors import UserError


def read_metric(run_dir: Path, metric: str) -> tuple[np.ndarray, np.ndarray]:
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        raise UserError(f"{run_dir}: no metrics.jsonl (not an rlfleet run directory)")
    xs, ys = [], []
    seen_keys: set[str] = set()
    for line in path.read_text().splitlines():
        rec = json.loads(line)
        seen_keys.update(rec)
        if metric in rec and rec[metric] is not None and "env_steps" in rec:
            xs.append(rec["env_steps"])
            ys.append(rec[metric])
    if not xs:
        from rlfleet.platform.errors import did_you_mean

        raise UserError(f"{run_dir}: metric {metric!r} was never logged{did_you_mean(metric, sorted(seen_keys))}")
    order = np.argsort(xs, kind="stable")
    return np.asarray(xs, float)[order], np.asarray(ys, float)[order]


def group_name(run_dir: Path) -> str:
    """Runs named like `<name>-s<seed>-<stamp>` or `<name>-<stamp>` group by `<name>`."""
    name = re.sub(r"-\d{8}-\d{6}(-\d+)?$", "", run_dir.name)
    return re.sub(r"-s\d+$", "", name)


def plot(run_dirs: list[str | Path], metric: str = "eval_return", out: str | Path = "curves.png",
         title: str | None = None) -> Path:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise UserError("rlfleet plot needs matplotlib: pip install 'rlfleet[plot]'") from None
    groups: dict[str, list[tuple[np.ndarray, np.ndarray]]] = defaultdict(list)
    for d in map(Path, run_dirs):
        groups[group_name(d)].append(read_metric(d, metric))
    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=110)
    for name, curves in sorted(groups.items()):
        grid = np.unique(np.concatenate([x for x, _ in curves]))
        ys = np.stack([np.interp(grid, x, y, left=np.nan, right=np.nan) for x, y in curves])
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # columns where no run has data yet
            mean, low, high = np.nanmean(ys, axis=0), np.nanmin(ys, axis=0), np.nanmax(ys, axis=0)
        (line,) = ax.plot(grid, mean, label=f"{name} (n={len(curves)})")
        if len(curves) > 1:
            ax.fill_between(grid, low, high, color=line.get_color(), alpha=0.2)
    ax.set_xlabel("env steps")
    ax.set_ylabel(metric)
    ax.set_title(title or metric)
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)
    return out
