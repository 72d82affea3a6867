"""End-to-end on real Ray: runners, sharded replay and the learner on a tiny budget."""
import json
import threading
import time
from pathlib import Path

import numpy as np
import pytest

import rlfleet
from rlfleet.platform import checkpoint as ckpt


def _metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_end_to_end_tiny_run(ray_session, tiny_config):
    tiny_config["stop"] = {"env_steps": 3000}
    summary = rlfleet.train(tiny_config)
    run_dir = Path(summary["run_dir"])
    assert summary["stop_reason"] == "env_steps"
    assert summary["updates"] >= 20
    assert summary["env_steps"] > 0 and summary["episodes"] > 0
    records = _metrics(run_dir)
    train_records = [r for r in records if "updates_per_s" in r]
    assert train_records, "no training metrics were logged"
    for key in ("env_steps_per_s", "updates_per_s", "runner_time.env", "runner_time.inference",
                "runner_time.shipping", "runner_time.waiting", "replay_size", "replay_samples_per_insert"):
        assert key in train_records[-1], key
    # runners received a newer weight version than the initial one (0)
    assert min(summary["runner_weights_versions"]) >= 1
    assert list((run_dir / "tb").glob("events.out.tfevents.*")), "no TensorBoard event file"
    assert (run_dir / "config.yaml").is_file()
    found = ckpt.list_checkpoints(run_dir / "checkpoints")
    assert found, "no checkpoint"
    learner_state, driver_state, snaps = ckpt.load_checkpoint(found[-1])
    assert learner_state["num_updates"] == summary["updates"]
    assert len(snaps) == 2 and all(s["count"] > 0 for s in snaps)
    # the learner sent priority updates: stored priorities are no longer all the initial value
    leaves = np.concatenate([s["leaves"] for s in snaps])
    assert np.unique(np.round(leaves, 8)).size > 1
    assert summary["evals"], "no evaluation ran"


def test_resume_continues_from_newest_checkpoint(ray_session, tiny_config):
    first = rlfleet.train(tiny_config)
    run_dir = Path(first["run_dir"])
    _, before, snaps_before = ckpt.load_checkpoint(ckpt.list_checkpoints(run_dir / "checkpoints")[-1])
    target = before["env_steps"] + 1500
    resumed = rlfleet.train(str(run_dir / "config.yaml"), overrides=["stop.updates=null", f"stop.env_steps={target}"],
                            resume=run_dir)
    assert resumed["resumed_from"] is not None
    assert resumed["env_steps"] >= target
    assert resumed["updates"] > first["updates"]
    learner_state, after, snaps_after = ckpt.load_checkpoint(ckpt.list_checkpoints(run_dir / "checkpoints")[-1])
    assert after["resumes"] == 1
    assert after["env_steps"] > before["env_steps"]
    # replay was restored, then grew: inserts continue from the snapshot's count
    assert sum(s["inserts"] for s in snaps_after) > sum(s["inserts"] for s in snaps_before)
    assert sum(s["samples"] for s in snaps_after) > sum(s["samples"] for s in snaps_before)
    counts = [r["env_steps"] for r in _metrics(run_dir) if "updates_per_s" in r]
    resumed_counts = counts[len(counts) // 2:]
    assert min(resumed_counts) >= 0 and counts[-1] >= before["env_steps"]


def test_killed_runner_is_replaced(ray_session, tiny_config):
    import ray

    tiny_config["stop"] = {"env_steps": 6000}
    tiny_config["eval"]["interval_env_steps"] = 0
    tiny_config["name"] = "killtest"
    result = {}
    t = threading.Thread(target=lambda: result.update(rlfleet.train(tiny_config)))
    t.start()
    victim = None
    deadline = time.time() + 60
    while victim is None and time.time() < deadline:
        time.sleep(0.5)
        for name in ray.util.list_named_actors(all_namespaces=True):
            if name["namespace"] == "rlfleet" and name["name"].startswith("killtest") and name["name"].endswith(":runner:0"):
                victim = ray.get_actor(name["name"], namespace="rlfleet")
    assert victim is not None, "runner 0 never appeared"
    steps_at_kill = ray.get(victim.stats.remote())["env_steps"]
    ray.kill(victim)
    t.join(timeout=300)
    assert not t.is_alive()
    assert result["runner_restarts"] >= 1
    assert result["env_steps"] >= 6000 > steps_at_kill
    assert result["stop_reason"] == "env_steps"


def test_registered_env_and_next_step_autoreset(ray_session, tiny_config):
    """A user-registered env resolves inside Ray workers, and with a gymnasium SyncVectorEnv
    (NEXT_STEP autoreset) the reset steps are not stored as transitions."""
    import gymnasium as gym

    def make_cartpole(max_steps=500):  # a closure: shipped to the workers by value
        return gym.wrappers.TimeLimit(gym.make("CartPole-v1").unwrapped, max_steps)

    rlfleet.register_env("test-cartpole", make_cartpole)
    tiny_config["env"] = {"id": "test-cartpole", "kwargs": {"max_steps": 30}, "observation_mask": [0, 2],
                          "vectorization": "sync"}
    tiny_config["stop"] = {"env_steps": 2000}
    tiny_config["eval"]["interval_env_steps"] = 0
    summary = rlfleet.train(tiny_config)
    assert summary["env_steps"] >= 2000 and summary["episodes"] > 0
    _, _, snaps = ckpt.load_checkpoint(ckpt.list_checkpoints(Path(summary["run_dir"]) / "checkpoints")[-1])
    reward = np.concatenate([s["storage"]["reward"] for s in snaps])
    mask = np.concatenate([s["storage"]["mask"] for s in snaps])
    terminal = np.concatenate([s["storage"]["terminal"] for s in snaps])
    # CartPole pays 1 for every real step; a stored reset step would show up as a 0 reward
    assert mask.sum() > 0 and np.all(reward[mask == 1] == 1.0)
    assert terminal.sum() > 0


def test_learner_threads_flush_denormal_floats():
    """Weights that weight decay drives towards zero become denormal and every op on them takes a
    slow path (MAMQL's conv critic slowed 4.4x); the learner's loop threads flush them to zero."""
    import threading

    import torch

    from rlfleet.platform.learner import Learner

    seen = {}

    def probe():
        seen["denormal"] = (torch.tensor([1e-39]) * 1.0).item()

    torch.set_flush_denormal(False)  # tests that build an EnvRunner in this thread turned it on here
    learner = object.__new__(Learner)
    thread = threading.Thread(target=Learner._guard(learner, probe))
    thread.start()
    thread.join()
    assert seen["denormal"] == 0.0
    assert (torch.tensor([1e-39]) * 1.0).item() > 0  # the flag is per thread: this one keeps denormals
