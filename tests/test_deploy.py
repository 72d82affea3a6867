"""Deployment settings without a cluster: resources/placement/sweep validation, trial bundles, the
sweep table, checkpoint adoption, and the CLI's one-line errors for submit/sweep/train."""
import copy
import math
import subprocess
import sys

import numpy as np
import pytest
import yaml

from rlfleet.platform import checkpoint as ckpt
from rlfleet.platform.config import build_config
from rlfleet.platform.errors import UserError
from rlfleet.platform.placement import actor_requests, custom_resource_totals, trial_bundles
from rlfleet.platform.sweep import check_sweep, print_table, search_space
from tests.conftest import TINY

SWEEP = {"num_samples": 2, "metric": "eval_return", "mode": "max", "max_concurrent": 2,
         "params": {"algorithm.lr": {"grid": [1e-4, 5e-4]}, "seed": {"choice": [0, 1]},
                    "algorithm.gamma": {"uniform": [0.98, 0.999]}}}


def _raw(**sections):
    raw = copy.deepcopy(TINY)
    for key, value in sections.items():
        raw[key] = value if key in ("sweep", "stop") else {**raw[key], **value}
    return raw


def _error(raw) -> str:
    with pytest.raises(UserError) as e:
        cfg, _ = build_config(copy.deepcopy(raw), source="exp.yaml")
        if cfg.sweep is not None:
            check_sweep(raw, cfg.sweep, "exp.yaml")
    return str(e.value)


@pytest.mark.parametrize("sections, expected", [
    ({"runners": {"resources": {"CPU": 1}}}, ["runners.resources", "num_cpus"]),
    ({"learner": {"resources": {"gpu_node": 0}}}, ["learner.resources", "> 0"]),
    ({"replay": {"placement": "spred"}}, ["replay.placement", "spread"]),
    ({"eval": {"resourcse": {}}}, ["eval.resourcse", "resources"]),
    ({"sweep": {"params": {"algorithm.lr": {"gird": [1]}}}}, ["sweep.params.algorithm.lr.gird", "grid"]),
    ({"sweep": {"params": {"seed": {"grid": [0], "choice": [1]}}}}, ["sweep.params.seed", "exactly one"]),
    ({"sweep": {"params": {"algorithm.gamma": {"uniform": [0.999, 0.98]}}}}, ["low must be below high"]),
    ({"sweep": {**SWEEP, "metric": "eval_retrun"}}, ["sweep.metric", "eval_return"]),
    ({"sweep": {**SWEEP, "search": "grid"}}, ["algorithm.gamma", "grid or choice"]),
    ({"sweep": {"params": {"algorithm.lrr": {"grid": [1e-3]}}}}, ["sweep.params.algorithm.lrr", "algorithm.lrr", "lr"]),
    ({"sweep": {"params": {"algorithm.lr": {"grid": [1e-3, -1.0]}}}}, ["sweep.params.algorithm.lr = -1.0", "algorithm.lr"]),
])
def test_bad_deployment_settings_name_the_key(sections, expected):
    message = _error(_raw(**sections))
    assert message.startswith("exp.yaml"), message
    for part in expected:
        assert part in message, message


def test_resources_placement_and_trial_bundles():
    raw = _raw(runners={"resources": {"w": 0.25}, "placement": "spread"}, learner={"resources": {"gpu_node": 1}})
    cfg, _ = build_config(raw)
    kinds = [(kind, i) for kind, i, _ in actor_requests(cfg, 0.0)]
    assert kinds == [("replay", 0), ("replay", 1), ("learner", 0), ("runner", 0), ("runner", 1), ("eval", 0)]
    bundles, strategy = trial_bundles(cfg)
    assert strategy == "SPREAD" and bundles[0] == {"CPU": 0.1}  # the trial's own driver comes first
    assert bundles[3] == {"CPU": 0.5, "gpu_node": 1} and bundles[4] == {"CPU": 0.25, "w": 0.25}
    assert math.isclose(sum(b["CPU"] for b in bundles), 0.1 + 2 * 0.25 + 0.5 + 2 * 0.25 + 0.25)
    # an embedded local Ray offers what the config asks for, per concurrent copy
    assert custom_resource_totals(cfg, copies=3) == {"w": 2.0, "gpu_node": 3.0}


def test_search_space_and_grid_search_expand_choices():
    from ray import tune

    cfg, _ = build_config(_raw(sweep=SWEEP))
    space = search_space(cfg.sweep)
    assert space["algorithm.lr"] == tune.grid_search([1e-4, 5e-4])
    assert isinstance(space["seed"], tune.search.sample.Categorical)
    assert isinstance(space["algorithm.gamma"], tune.search.sample.Float)
    cfg, _ = build_config(_raw(sweep={**SWEEP, "search": "grid", "params": {"seed": {"choice": [0, 1]}}}))
    assert search_space(cfg.sweep)["seed"] == tune.grid_search([0, 1])


def test_sweep_table_lists_best_first(capsys):
    rows = [{"trial": "a", "params": {"seed": 0}, "best": 10.0, "last": 9.0, "env_steps": 100, "resumes": 0, "error": None},
            {"trial": "b", "params": {"seed": 1}, "best": None, "last": float("nan"), "env_steps": None, "resumes": 0,
             "error": "boom"},
            {"trial": "c", "params": {"seed": 2}, "best": 30.5, "last": 30.5, "env_steps": 100, "resumes": 1, "error": None}]
    print_table(rows, ["seed"], "eval_return", "max")
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["trial", "seed", "best", "eval_return", "last", "eval_return", "env_steps", "resumes",
                                "status"]
    assert [line.split()[0] for line in lines[1:]] == ["c", "a", "b"]
    assert lines[3].split()[2:4] == ["-", "-"] and lines[3].endswith("ERROR")


def test_adopted_checkpoint_reads_back_identically(tmp_path):
    import torch

    snap = {"storage": {"obs": np.arange(6, dtype=np.float32).reshape(3, 2)}, "leaves": np.ones(4),
            "next": 3, "count": 3, "inserts": 3, "samples": 5, "max_priority": 1.0, "rng": {"s": 1}}
    src = ckpt.save_checkpoint(tmp_path / "a", 1234, {"w": torch.ones(2)}, {"env_steps": 1234}, [snap], keep=2)
    adopted = ckpt.adopt_checkpoint(src, tmp_path / "b" / "checkpoints")
    assert adopted.name == src.name and ckpt.list_checkpoints(adopted.parent) == [adopted]
    assert not [p for p in adopted.parent.iterdir() if p.name.startswith(".tmp")]
    learner, driver, snaps = ckpt.load_checkpoint(adopted)
    assert torch.equal(learner["w"], torch.ones(2)) and driver == {"env_steps": 1234}
    np.testing.assert_array_equal(snaps[0]["storage"]["obs"], snap["storage"]["obs"])
    assert ckpt.adopt_checkpoint(src, tmp_path / "b" / "checkpoints") == adopted  # already there: kept


def _cli(*args, tmp_path, config=None):
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(config or TINY))
    p = subprocess.run([sys.executable, "-m", "rlfleet", *[str(path) if a == "CONFIG" else a for a in args]],
                       capture_output=True, text=True, timeout=120)
    lines = [line for line in p.stderr.strip().splitlines() if line.strip()]
    assert p.returncode == 2 and "Traceback" not in p.stderr and len(lines) == 1, p.stderr
    return lines[0], str(path)


def test_cli_train_refuses_a_sweep_block(tmp_path):
    line, path = _cli("train", "CONFIG", tmp_path=tmp_path, config=_raw(sweep=SWEEP))
    assert path in line and "sweep" in line and "rlfleet sweep" in line


def test_cli_sweep_needs_a_sweep_block(tmp_path):
    line, path = _cli("sweep", "CONFIG", tmp_path=tmp_path)
    assert path in line and "no 'sweep:' block" in line


def test_cli_submit_to_an_unreachable_cluster_is_one_line(tmp_path):
    line, _ = _cli("submit", "CONFIG", "--address", "http://127.0.0.1:9", "--no-wait", tmp_path=tmp_path)
    assert "http://127.0.0.1:9" in line


def test_attaching_to_a_cluster_without_a_required_resource_is_one_clear_error(ray_session):
    from rlfleet.platform.placement import check_cluster_resources

    cfg, _ = build_config(_raw(runners={"resources": {"spot_node": 0.1}}))
    with pytest.raises(UserError, match="spot_node are offered by no node"):
        check_cluster_resources(cfg)
