"""Bad input: one line naming the file and key path (with the closest valid names), exit 2, no traceback."""
import subprocess
import sys

import pytest
import yaml

from tests.conftest import TINY


def _run(*args, cwd=None):
    p = subprocess.run([sys.executable, "-m", "rlfleet", *args], capture_output=True, text=True, timeout=120, cwd=cwd)
    return p.returncode, p.stdout, p.stderr


def _write(tmp_path, cfg):
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return str(path)


def _check_one_line(code, err):
    assert code == 2
    assert "Traceback" not in err
    lines = [l for l in err.strip().splitlines() if l.strip()]
    assert len(lines) == 1, err
    return lines[0]


def test_unknown_key_names_path_and_suggestion(tmp_path):
    cfg = dict(TINY, runners={**TINY["runners"], "num_runner": 3})
    path = _write(tmp_path, cfg)
    line = _check_one_line(*_run("train", path)[::2])
    assert path in line and "runners.num_runner" in line and "num_runners" in line


def test_unknown_algorithm_key(tmp_path):
    cfg = dict(TINY, algorithm={**TINY["algorithm"], "burnin": 3})
    path = _write(tmp_path, cfg)
    line = _check_one_line(*_run("train", path)[::2])
    assert "algorithm.burnin" in line and "burn_in" in line


def test_wrong_type(tmp_path):
    cfg = dict(TINY, replay={**TINY["replay"], "capacity": "lots"})
    path = _write(tmp_path, cfg)
    line = _check_one_line(*_run("train", path)[::2])
    assert path in line and "replay.capacity" in line


def test_unknown_env_suggests_closest(tmp_path):
    cfg = dict(TINY, env={"id": "gym:CartPol-v1"})
    line = _check_one_line(*_run("train", _write(tmp_path, cfg))[::2])
    assert "env.id" in line and "gym:CartPole-v1" in line


def test_unknown_algorithm_suggests_closest(tmp_path):
    cfg = dict(TINY, algorithm={**TINY["algorithm"], "name": "r2d3"})
    line = _check_one_line(*_run("train", _write(tmp_path, cfg))[::2])
    assert "algorithm.name" in line and "r2d2" in line


def test_unreadable_file(tmp_path):
    missing = str(tmp_path / "nope.yaml")
    line = _check_one_line(*_run("train", missing)[::2])
    assert missing in line


def test_invalid_yaml(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("env: {id: [unclosed\n")
    line = _check_one_line(*_run("train", str(path))[::2])
    assert str(path) in line


def test_bad_override(tmp_path):
    path = _write(tmp_path, TINY)
    line = _check_one_line(*_run("train", path, "--set", "learner.prefetch=-3")[::2])
    assert "learner.prefetch" in line


def test_replay_settings_that_would_stall(tmp_path):
    cfg = dict(TINY, replay={**TINY["replay"], "samples_per_insert": 4, "error_buffer": 5})
    line = _check_one_line(*_run("train", _write(tmp_path, cfg))[::2])
    assert "replay.error_buffer" in line
    cfg = dict(TINY, replay={**TINY["replay"], "capacity": 10, "min_size": 8})
    line = _check_one_line(*_run("train", _write(tmp_path, cfg))[::2])
    assert "replay.min_size" in line


@pytest.mark.parametrize("blocked,args,extra", [
    ("mpe2", ["train", "configs/spread_r2d2.yaml"], "multiagent"),
    ("matplotlib", ["plot", "runs-that-need-no-reading"], "plot"),
])
def test_missing_optional_dependency_names_the_extra(blocked, args, extra):
    """The dependency is made unimportable in the child process (sys.modules[name] = None)."""
    code = (f"import sys; sys.modules[{blocked!r}] = None; sys.argv = ['rlfleet', *{args!r}]; "
            "from rlfleet.cli import main; sys.exit(main())")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    line = _check_one_line(p.returncode, p.stderr)
    assert f"pip install 'rlfleet[{extra}]'" in line, line


def test_lanes_for_a_turn_based_env_are_refused_up_front(tmp_path):
    """Checked once the env is built, so after Ray started (whose own log lines may precede it)."""
    cfg = dict(TINY, env={"id": "pz:pettingzoo.classic.tictactoe_v3"}, runners={**TINY["runners"], "env_groups": 2})
    code, _, err = _run("train", _write(tmp_path, cfg))
    assert code == 2 and "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith("rlfleet: error")]
    assert len(lines) == 1 and "runners.env_groups" in lines[0] and "turn-based" in lines[0], err
