"""Deployment on a real multi-node Ray cluster on this machine: Jobs submission with token auth,
runner placement over worker nodes, a worker node dying mid-run, a SIGKILLed driver resumed from
its checkpoint, and a Ray Tune sweep whose killed trial restarts from its checkpoint.

One cluster (head + 2 workers, `ray start` subprocesses, see local_cluster.py) serves the module;
the test that kills a worker node runs last. Select with `-m cluster`.
"""
from __future__ import annotations

import copy
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from rlfleet.platform import checkpoint as ckpt
from tests.conftest import TINY
from tests.local_cluster import LocalCluster

pytestmark = pytest.mark.cluster


@pytest.fixture(scope="module")
def cluster():
    c = LocalCluster(port=6391, dashboard_port=8275, worker_port_base=21000)
    try:
        c.start_node("head", num_cpus=1, resources={"head": 1})
        c.start_node("w1", num_cpus=2, resources={"w1": 1})
        c.start_node("w2", num_cpus=2, resources={"w2": 1})
        yield c
    finally:
        c.shutdown()
        assert not c.alive_pids(), "cluster processes outlived the teardown"


def _config(tmp_path: Path, name: str, pinned: bool, **sections) -> Path:
    """TINY; `pinned` keeps replay, learner and eval on the head (which they fill), so runners,
    spread, can only land on the worker nodes."""
    cfg = copy.deepcopy(TINY)
    cfg["name"] = name
    cfg["logging"]["root"] = str(tmp_path / "runs")
    if pinned:
        cfg["runners"]["placement"] = "spread"
        cfg["replay"]["num_cpus"] = 0.125
        for section in ("replay", "learner", "eval"):
            cfg[section]["resources"] = {"head": 0.01}
    for key, value in sections.items():
        cfg[key] = value if key in ("stop", "sweep") else {**cfg[key], **value}
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _rlfleet(cluster: LocalCluster, *args: str, env: dict | None = None, **kw) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "rlfleet", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env or cluster.env, **kw)


def _finish(proc: subprocess.Popen, timeout: float) -> tuple[int, str, str]:
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        pytest.fail(f"rlfleet {proc.args[3:]} did not finish in {timeout} s:\n{out[-3000:]}\n{err[-3000:]}")
    return proc.returncode, out, err


def _wait_for(predicate, timeout: float, what: str, proc: subprocess.Popen | None = None):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            out, err = proc.communicate()
            pytest.fail(f"process ended (rc {proc.returncode}) while waiting for {what}:\n{out[-3000:]}\n{err[-3000:]}")
        time.sleep(0.5)
    pytest.fail(f"timed out waiting for {what}")


def _run_dir(root: Path) -> Path | None:
    found = sorted(root.glob("*/config.yaml"))
    return found[-1].parent if found else None


def _placements(run_dir: Path | None) -> list[dict]:
    if run_dir is None or not (run_dir / "metrics.jsonl").is_file():
        return []
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [json.loads(line)["placement"] for line in lines if '"placement"' in line]


def _runner_workers(summary: dict) -> dict[str, list[str]]:
    """Runner index -> the custom resource of each node it ran on, in order."""
    names = {node: "+".join(info["custom_resources"]) for node, info in summary["nodes"].items()}
    return {i: [names[n] for n in nodes] for i, nodes in summary["runner_nodes"].items()}


def test_submit_runs_runners_on_both_workers_with_token_auth(cluster, tmp_path):
    path = _config(tmp_path, "submit", pinned=True, stop={"env_steps": 1500})
    # a wrong token is refused before anything is uploaded: one line, exit 2
    wrong = {**cluster.env, "RAY_AUTH_TOKEN": secrets.token_hex(32)}
    code, _, err = _finish(_rlfleet(cluster, "submit", str(path), "--address", cluster.dashboard_url, env=wrong), 120)
    assert code == 2 and "Traceback" not in err and "uthentication" in err, err

    code, out, err = _finish(_rlfleet(cluster, "submit", str(path), "--address", cluster.dashboard_url), 400)
    assert code == 0, f"{out[-3000:]}\n{err[-3000:]}"
    assert out.splitlines()[0].startswith("raysubmit_"), out[:300]
    assert "SUCCEEDED" in err
    summary = json.loads((_run_dir(tmp_path / "runs") / "summary.json").read_text())
    assert summary["stop_reason"] == "env_steps"
    workers = _runner_workers(summary)
    assert sorted(w[0] for w in workers.values()) == ["w1", "w2"], workers
    # a job that fails on the cluster (an env kwarg only the env itself rejects) exits 1
    code, _, err = _finish(_rlfleet(cluster, "submit", str(path), "--address", cluster.dashboard_url,
                                    "--set", "env.kwargs={bogus: 1}"), 300)
    assert code == 1 and "FAILED" in err.splitlines()[-1], err[-2000:]


def test_sweep_of_four_trials_restarts_a_killed_trial_from_its_checkpoint(cluster, tmp_path):
    storage = tmp_path / "tune"
    # runners step tiny CartPole at ~15k env steps/s: a budget that leaves the test seconds to see a
    # checkpointed trial before it is half done
    path = _config(tmp_path, "sweep", pinned=False, stop={"env_steps": 120_000},
                   eval={"interval_env_steps": 1000}, checkpoint={"interval_s": 1.0},
                   sweep={"num_samples": 2, "max_concurrent": 2, "max_failures": 2, "metric": "eval_return",
                          "mode": "max", "storage_path": str(storage), "name": "tiny-sweep",
                          "params": {"algorithm.lr": {"grid": [1e-3, 5e-4]}, "seed": {"choice": [0, 1]}}})
    proc = _rlfleet(cluster, "sweep", str(path), "--address", cluster.gcs_address)

    def checkpointed_trial():  # (trial dir, its process) once a running trial has checkpointed progress
        for trial in storage.glob("tiny-sweep/rlfleet_trial_*"):
            lines = (trial / "result.json").read_text().splitlines() if (trial / "result.json").is_file() else []
            results = [json.loads(line) for line in lines if line.strip()]
            # Tune leaves `done` false in result.json: a finished trial is told by run_trial's final
            # report (the one with "resumes"); and one past half its budget may finish before the kill
            if (any(r.get("checkpoint_dir_name") and r.get("env_steps", 0) > 0 for r in results)
                    and "resumes" not in results[-1] and results[-1].get("env_steps", 0) < 60_000):
                return trial, results[-1]["pid"]
        return None

    trial, pid = _wait_for(checkpointed_trial, 300, "a trial checkpoint", proc)
    cluster._remember()
    assert pid in cluster.seen, "the trial process is not one of this cluster's"
    os.kill(pid, signal.SIGKILL)
    code, out, err = _finish(proc, 500)
    assert code == 0, f"{out[-4000:]}\n{err[-3000:]}"
    table = out[out.index("trial  "):].splitlines()
    assert len([line for line in table[1:] if line.endswith("ok")]) == 4, out[-4000:]
    last = json.loads((trial / "result.json").read_text().splitlines()[-1])
    assert last["resumes"] >= 1 and last["env_steps"] >= 120_000, out[-4000:]
    summary = json.loads(next(trial.glob("sweep-*/summary.json")).read_text())
    assert summary["resumed_from"] is not None
    assert list(trial.glob("sweep-*/tb/events.out.tfevents.*")), "no TensorBoard events in the trial dir"


def test_sigkilled_driver_resumes_from_newest_complete_checkpoint(cluster, tmp_path):
    path = _config(tmp_path, "crash", pinned=False, stop={"env_steps": 100_000},
                   eval={"interval_env_steps": 0}, checkpoint={"interval_s": 0.5, "keep": 3})
    proc = _rlfleet(cluster, "train", str(path), "--address", cluster.gcs_address, "--quiet")
    root = tmp_path / "runs"
    _wait_for(lambda: len(ckpt.list_checkpoints((_run_dir(root) or root) / "checkpoints")) >= 2, 300,
              "two checkpoints", proc)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    run_dir = _run_dir(root)
    lines_before = len((run_dir / "metrics.jsonl").read_text().splitlines())
    newest = ckpt.list_checkpoints(run_dir / "checkpoints")[-1]
    learner_before, before, snaps_before = ckpt.load_checkpoint(newest)
    # what a crash in the middle of a save leaves: a temp dir, here even with driver.json, and a torn
    # learner.pt; resume must never read it
    torn = run_dir / "checkpoints" / f".tmp-{ckpt.PREFIX}999999999999-1"
    torn.mkdir()
    (torn / "learner.pt").write_bytes(b"\x80\x02 torn")
    (torn / "driver.json").write_text(json.dumps({**before, "env_steps": 999_999_999_999}))

    target = before["env_steps"] + 1000
    code, out, err = _finish(_rlfleet(cluster, "train", "--resume", str(run_dir), "--address", cluster.gcs_address,
                                      "--quiet", "--set", f"stop.env_steps={target}"), 400)
    assert code == 0, f"{out[-3000:]}\n{err[-3000:]}"
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["resumed_from"] == str(newest)
    assert summary["env_steps"] >= target and summary["updates"] > learner_before["num_updates"]
    _, after, snaps_after = ckpt.load_checkpoint(ckpt.list_checkpoints(run_dir / "checkpoints")[-1])
    assert after["resumes"] == before["resumes"] + 1
    assert after["env_steps"] >= target > before["env_steps"]
    # replay came back from the snapshot and kept growing from its counts
    assert sum(s["inserts"] for s in snaps_after) > sum(s["inserts"] for s in snaps_before) > 0
    # the resumed run counts on from the checkpoint: env steps never go back
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()[lines_before:]]
    steps = [r["env_steps"] for r in records if "updates_per_s" in r]
    assert steps and min(steps) >= before["env_steps"]


def test_worker_node_death_reschedules_runners_and_the_job_finishes(cluster, tmp_path):
    """Runs last in this module: it takes worker w1 away for good."""
    # a budget of several seconds: the job must still be running when the node's loss is noticed and
    # its replacement runner has started on w2 (at 20k env steps the job once ended ~3 s after the
    # restart, before the replacement reported where it ran)
    path = _config(tmp_path, "nodeloss", pinned=True, stop={"env_steps": 60000})
    proc = _rlfleet(cluster, "submit", str(path), "--address", cluster.dashboard_url)

    def both_placed():
        placed = _placements(_run_dir(tmp_path / "runs"))
        return placed if len(placed) >= 2 else None

    placed = _wait_for(both_placed, 300, "both runners placed", proc)
    assert sorted(p["custom_resources"][0] for p in placed) == ["w1", "w2"], placed
    on_w1 = next(p["runner"] for p in placed if p["custom_resources"] == ["w1"])
    cluster.kill_node("w1")
    code, out, err = _finish(proc, 500)
    assert code == 0, f"{out[-3000:]}\n{err[-3000:]}"
    summary = json.loads((_run_dir(tmp_path / "runs") / "summary.json").read_text())
    assert summary["stop_reason"] == "env_steps" and summary["env_steps"] >= 60000
    assert summary["runner_restarts"] >= 1
    workers = _runner_workers(summary)
    assert workers[str(on_w1)][0] == "w1" and workers[str(on_w1)][-1] == "w2", workers
