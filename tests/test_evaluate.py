"""Greedy evaluation of a saved agent from its run directory, with a rendered episode."""
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import rlfleet
from rlfleet.evaluate import evaluate
from rlfleet.platform.errors import UserError


def test_evaluate_and_plot_a_real_run(ray_session, tiny_config, tmp_path):
    summary = rlfleet.train(tiny_config)
    # learning curves: this run plus a fake second seed of the same experiment
    from rlfleet.plot import plot, read_metric

    png = plot([summary["run_dir"]], metric="episode_return", out=tmp_path / "curves.png")
    image = Image.open(png)
    assert image.size[0] > 300 and len(np.unique(np.asarray(image.convert("L")))) > 10  # axes, text, a curve
    x, y = read_metric(Path(summary["run_dir"]), "episode_return")
    assert len(x) >= 1 and (x[1:] >= x[:-1]).all()
    with pytest.raises(UserError, match="never logged.*did you mean"):
        plot([summary["run_dir"]], metric="episode_retrun", out=tmp_path / "x.png")
    report = evaluate(summary["run_dir"], episodes=4, success_threshold=10.0, render=True)
    written = json.loads(Path(report["written_to"]).read_text())
    assert written["episodes"] == 4 and written["return_mean"] > 0 and 0.0 <= written["success_rate"] <= 1.0
    assert Path(report["written_to"]).parent == Path(summary["run_dir"])
    gif = Image.open(report["video"])
    assert gif.n_frames > 3 and gif.size[0] >= 100  # CartPole's rgb frames, one per step
    # a checkpoint directory works as well and agrees on the checkpoint
    ckpt = Path(report["checkpoint"])
    again = evaluate(ckpt, episodes=2, out=tmp_path)
    assert again["checkpoint"] == str(ckpt) and Path(again["written_to"]).parent == tmp_path


def test_evaluate_rejects_what_is_not_a_run(tmp_path):
    with pytest.raises(UserError, match="no checkpoint found"):
        evaluate(tmp_path)


def test_plot_groups_seeds_and_draws_their_spread(tmp_path):
    from rlfleet.plot import group_name, plot

    runs = []
    for seed in range(3):
        d = tmp_path / f"cartpole-s{seed}-20261127-010203"
        d.mkdir()
        lines = [json.dumps({"env_steps": s, "eval_return": s / 100 + 10 * seed}) for s in range(0, 5000, 500)]
        (d / "metrics.jsonl").write_text("\n".join(lines))
        runs.append(d)
    assert {group_name(r) for r in runs} == {"cartpole"}
    png = plot(runs, out=tmp_path / "seeds.png")
    assert png.stat().st_size > 5000
