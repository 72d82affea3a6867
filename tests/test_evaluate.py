"""Greedy evaluation of a saved agent from its run directory, with a rendered episode."""
import copy
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import rlfleet
from rlfleet.evaluate import evaluate
from rlfleet.platform.errors import UserError

TICTACTOE = "pz:pettingzoo.classic.tictactoe_v3"


def fresh_run_dir(run_dir: Path, env: dict, **algorithm) -> Path:
    """A run directory with a freshly initialised R2D2 checkpoint (tests' tiny config on `env`),
    written without training or Ray: config.yaml and checkpoints/ckpt-0/learner.pt."""
    import torch
    import yaml

    from conftest import TINY
    from rlfleet.platform import checkpoint as ckpt
    from rlfleet.platform.config import build_config, resolved_dict
    from rlfleet.platform.envs import EnvMaker
    from rlfleet.platform.registry import resolve_algorithm

    raw = copy.deepcopy(TINY)
    raw["env"], raw["logging"]["root"] = env, str(run_dir.parent)
    raw["algorithm"].update(algorithm)
    cfg, algo_cfg = build_config(raw)
    run_dir.mkdir(parents=True)
    (run_dir / "config.yaml").write_text(yaml.safe_dump(resolved_dict(cfg, algo_cfg), sort_keys=False))
    torch.manual_seed(0)
    core = resolve_algorithm(cfg.algorithm_name).make_learner(algo_cfg, EnvMaker.from_config(cfg.env).spec(), "cpu")
    ckpt.save_checkpoint(run_dir / "checkpoints", 0, {"core": core.state_dict()}, {"env_steps": 0}, None, keep=1)
    return run_dir


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


def test_turn_based_eval_reports_each_player_and_renders_a_whole_game(tmp_path, capsys):
    from rlfleet.cli import main

    run = fresh_run_dir(tmp_path / "ttt", {"id": TICTACTOE}, burn_in=0, trace=4, period=2)
    report = evaluate(run, episodes=4, render=True)
    assert report["agents"] == 2 and 3 <= report["length_mean"] <= 5  # own turns per game
    returns = report["agent_returns"]
    assert set(returns) == {"player_1", "player_2"}
    assert returns["player_1"] == pytest.approx(-returns["player_2"])  # zero-sum, greedy self-play
    vs_random = report["agent_returns_vs_random"]
    assert set(vs_random) == {"player_1", "player_2"} and all(-1 <= r <= 1 for r in vs_random.values())
    assert json.loads(Path(report["written_to"]).read_text())["agent_returns_vs_random"] == vs_random
    # the GIF plays one whole game: the empty board, then a frame per move up to the final position
    gif = Image.open(report["video"])
    frames = []
    for i in range(gif.n_frames):
        gif.seek(i)
        frames.append(np.asarray(gif.convert("L").resize((90, 90))).astype(int))
    assert 6 <= len(frames) <= 10  # a game takes 5 to 9 moves (it used to stop after the first)
    assert all(np.abs(b - a).sum() > 0 for a, b in zip(frames, frames[1:]))  # every move changes the board
    assert gif.info["duration"] >= 200  # slow enough to follow a game
    # the CLI prints the per-player returns and the returns against random opponents
    assert main(["eval", str(run), "--episodes", "2", "--out", str(tmp_path / "cli")]) == 0
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert set(printed["agent_returns"]) == set(printed["agent_returns_vs_random"]) == {"player_1", "player_2"}
