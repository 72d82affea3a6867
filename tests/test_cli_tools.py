"""The user's-day subcommands: envs, algos, demos record, plot, eval (errors exit 2 in one line)."""
import json

from rlfleet.cli import main


def test_envs_and_algos_list_sources_and_availability(capsys):
    assert main(["algos"]) == 0
    out = capsys.readouterr().out
    for name in ("r2d2", "mamql", "iql-ma", "bc"):
        assert name in out
    assert "rlfleet.algorithms.r2d2.learner" in out
    assert main(["envs"]) == 0
    out = capsys.readouterr().out
    assert "gym:<id>" in out and "pz:<id>" in out and "missing" not in out  # mpe2 is a test dependency


def test_demos_record_and_bad_expert(tmp_path, capsys):
    out = tmp_path / "gems.parquet"
    assert main(["demos", "record", "--env", "pz:rlfleet.envs.games.gems_v0", "--expert",
                 "scripted:rlfleet.envs.experts:gems", "--steps", "45", "--out", str(out)]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["steps"] == 45 and out.is_file()
    assert main(["demos", "record", "--env", "gym:CartPole-v1", "--expert", "magic", "--steps", "5",
                 "--out", str(tmp_path / "x.parquet")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "expected scripted:MODULE:FN or checkpoint:DIR" in err[0]


def test_plot_and_eval_from_the_command_line(tmp_path, capsys):
    run = tmp_path / "exp-s0-20261127-000000"
    run.mkdir()
    (run / "metrics.jsonl").write_text("\n".join(json.dumps({"env_steps": s, "eval_return": s * 0.1})
                                                 for s in range(0, 1000, 100)))
    assert main(["plot", str(run), "--out", str(tmp_path / "c.png")]) == 0
    assert (tmp_path / "c.png").stat().st_size > 1000
    assert main(["eval", str(run)]) == 2
    assert "no checkpoint found" in capsys.readouterr().err
