"""Greedy evaluation of a saved agent from its run directory, with a rendered episode."""
import json
from pathlib import Path

import pytest
from PIL import Image

import rlfleet
from rlfleet.evaluate import evaluate
from rlfleet.platform.errors import UserError


def test_evaluate_a_run_dir_and_render_a_gif(ray_session, tiny_config, tmp_path):
    summary = rlfleet.train(tiny_config)
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
