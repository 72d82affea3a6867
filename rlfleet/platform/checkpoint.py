"""Atomic, resumable checkpoints: written to a temp dir, fsynced, then renamed into place.

Layout: checkpoints/ckpt-<env_steps>/{learner.pt, driver.json, replay-<k>.npz, replay-<k>.json}.
Loading uses torch.load(weights_only=True) and np.load(allow_pickle=False): no pickle is read.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np

PREFIX = "ckpt-"


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_json(path: Path, obj) -> None:
    with open(path, "w") as f:
        json.dump(obj, f)
        f.flush()
        os.fsync(f.fileno())


def save_checkpoint(root: Path, env_steps: int, learner_state: dict, driver_state: dict,
                    replay_snapshots: list[dict] | None, keep: int) -> Path:
    import torch

    root.mkdir(parents=True, exist_ok=True)
    final = root / f"{PREFIX}{env_steps:012d}"
    tmp = root / f".tmp-{final.name}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    with open(tmp / "learner.pt", "wb") as f:
        torch.save(learner_state, f)
        f.flush()
        os.fsync(f.fileno())
    for k, snap in enumerate(replay_snapshots or []):
        arrays = {f"storage.{name}": v for name, v in (snap["storage"] or {}).items()}
        arrays["leaves"] = snap["leaves"]
        with open(tmp / f"replay-{k}.npz", "wb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        meta = {key: snap[key] for key in ("next", "count", "inserts", "samples", "max_priority", "rng")}
        meta["has_storage"] = snap["storage"] is not None
        _write_json(tmp / f"replay-{k}.json", meta)
    _write_json(tmp / "driver.json", driver_state)  # written last: its presence marks completeness
    _commit(tmp, final)
    for old in list_checkpoints(root)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def _commit(tmp: Path, final: Path) -> None:
    """Make a fully written temp dir the checkpoint `final` in one rename."""
    _fsync_dir(tmp)
    if final.exists():
        shutil.rmtree(final)
    os.rename(tmp, final)
    _fsync_dir(final.parent)


def _copy_synced(src: str, dst: str) -> None:
    shutil.copy2(src, dst)
    with open(dst, "rb+") as f:
        os.fsync(f.fileno())


def adopt_checkpoint(src: Path, root: Path) -> Path:
    """Copy a complete checkpoint from elsewhere (the one Ray Tune hands a restarted trial) into
    `root` under its usual name, atomically, so the ordinary resume path reads it."""
    env_steps = int(json.loads((src / "driver.json").read_text())["env_steps"])
    final = root / f"{PREFIX}{env_steps:012d}"
    if (final / "driver.json").is_file():
        return final
    root.mkdir(parents=True, exist_ok=True)
    tmp = root / f".tmp-{final.name}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(src, tmp, copy_function=_copy_synced)
    _commit(tmp, final)
    return final


def list_checkpoints(root: Path) -> list[Path]:
    """Complete checkpoints, oldest first (temp dirs of interrupted writes are ignored)."""
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.name.startswith(PREFIX) and (p / "driver.json").is_file())


def load_checkpoint(path: Path) -> tuple[dict, dict, list[dict]]:
    import torch

    learner_state = torch.load(path / "learner.pt", map_location="cpu", weights_only=True)
    driver_state = json.loads((path / "driver.json").read_text())
    snaps = []
    k = 0
    while (path / f"replay-{k}.json").is_file():
        meta = json.loads((path / f"replay-{k}.json").read_text())
        with np.load(path / f"replay-{k}.npz", allow_pickle=False) as z:
            storage = {name[len("storage."):]: z[name] for name in z.files if name.startswith("storage.")}
            leaves = z["leaves"]
        snaps.append({**meta, "storage": storage if meta.pop("has_storage") else None, "leaves": leaves})
        k += 1
    return learner_state, driver_state, snaps
