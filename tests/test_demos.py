"""Demonstrations: record with a scripted expert, load with validation against the env."""
from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from rlfleet import demos
from rlfleet.envs.experts import simple_spread
from rlfleet.platform.errors import UserError
from rlfleet.platform.registry import resolve_env

SPREAD = "pz:mpe2.simple_spread_v3"


@pytest.fixture(scope="module")
def spread_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("demos") / "spread.parquet"
    meta = demos.record(SPREAD, simple_spread, 100, path, env_kwargs={"max_cycles": 25}, seed=0,
                        expert_name="scripted:rlfleet.envs.experts:simple_spread")
    return path, meta


def test_record_writes_whole_episodes_with_metadata(spread_file):
    path, meta = spread_file
    assert meta["steps"] == 100 and meta["episodes"] == 4  # 25-step episodes, whole episodes only
    assert meta["versions"]["pettingzoo"] and meta["spaces"]["agent_0"] == {"obs_shape": [18], "num_actions": 5}
    env = resolve_env(SPREAD)(max_cycles=25)
    data, meta2 = demos.load(path, env)
    assert meta2 == meta and set(data) == {"agent_0", "agent_1", "agent_2"}
    d = data["agent_1"]
    assert len(d) == 100 and d.obs.shape == (100, 18) and d.action_mask.shape == (100, 5)
    assert d.truncated.sum() == 4 and not d.terminated.any()
    # next_obs of step t is obs of step t + 1 within an episode
    same = (d.episode[1:] == d.episode[:-1])
    np.testing.assert_array_equal(d.next_obs[:-1][same], d.obs[1:][same])
    # the expert's episodes replay: reset with the file's seed and its actions reproduce the rewards
    obs, _ = env.reset(seed=0)
    for t in range(25):
        _, rew, *_ = env.step({a: int(data[a].action[t]) for a in data})
        assert rew["agent_1"] == pytest.approx(float(d.reward[t]), abs=1e-5)
    assert d.reward[:25].sum() > -15  # an expert, not random (random is about -28)


def _rewrite(path, out, table=None, meta=None):
    table = table if table is not None else pq.read_table(path)
    if meta is not None:
        table = table.replace_schema_metadata({demos.META_KEY: json.dumps(meta).encode()})
    pq.write_table(table, out)
    return out


def test_bad_files_fail_with_one_clear_line(spread_file, tmp_path):
    path, meta = spread_file
    env = resolve_env(SPREAD)(max_cycles=25)
    garbage = tmp_path / "garbage.parquet"
    garbage.write_bytes(b"PK\x03\x04 not parquet")
    with pytest.raises(UserError, match="not a readable Parquet file"):
        demos.load(garbage)
    table = pq.read_table(path)
    no_meta = _rewrite(path, tmp_path / "nometa.parquet", table.replace_schema_metadata({}))
    with pytest.raises(UserError, match="no 'rlfleet.demos' metadata"):
        demos.load(no_meta)
    dropped = _rewrite(path, tmp_path / "dropped.parquet", table.drop(["reward"]))
    with pytest.raises(UserError, match="missing column 'reward'"):
        demos.load(dropped)
    wrong_type = table.set_column(table.schema.get_field_index("action"), "action",
                                  pa.array([str(x) for x in table.column("action").to_pylist()]))
    with pytest.raises(UserError, match="column 'action' has type string"):
        demos.load(_rewrite(path, tmp_path / "type.parquet", wrong_type))
    bad_space = dict(meta, spaces={a: {"obs_shape": [17], "num_actions": 5} for a in meta["spaces"]})
    with pytest.raises(UserError, match="observation shape \\(17,\\).*the env has \\(18,\\)"):
        demos.load(_rewrite(path, tmp_path / "space.parquet", meta=bad_space), env)
    with pytest.raises(UserError, match="row 0 has 18 values, the agent's space needs 17"):
        demos.load(_rewrite(path, tmp_path / "space2.parquet", meta=bad_space))
    actions = table.column("action").to_numpy().copy()
    actions[7] = 9
    out_of_range = table.set_column(table.schema.get_field_index("action"), "action", pa.array(actions))
    with pytest.raises(UserError, match="row 7 has action 9, outside 0..4"):
        demos.load(_rewrite(path, tmp_path / "range.parquet", out_of_range))
    with pytest.raises(UserError, match="format version 99"):
        demos.load(_rewrite(path, tmp_path / "version.parquet", meta=dict(meta, format_version=99)))
    other_env = resolve_env("pz:rlfleet.envs.games.gems_v0")()
    with pytest.raises(UserError, match="agents .* do not match"):
        demos.load(path, other_env)


def test_load_expert_spec_errors():
    assert demos.load_expert("scripted:rlfleet.envs.experts:gems") is not None
    with pytest.raises(UserError, match="cannot load 'nope'"):
        demos.load_expert("scripted:rlfleet.envs.experts:nope")
    with pytest.raises(UserError, match="expected scripted:MODULE:FN"):
        demos.load_expert("magic:x")


def test_gems_demos_single_agent_env_too(tmp_path):
    from rlfleet.envs.experts import gems

    meta = demos.record("pz:rlfleet.envs.games.gems_v0", gems, 45, tmp_path / "gems.parquet", seed=1)
    data, _ = demos.load(tmp_path / "gems.parquet", resolve_env("pz:rlfleet.envs.games.gems_v0")())
    assert meta["steps"] == 45 and data["agent_0"].obs.shape == (45, 5 * 15 * 15)
    assert data["agent_0"].reward.sum() + data["agent_1"].reward.sum() > 10
    meta = demos.record("gym:CartPole-v1", lambda env, obs: int(obs[2] > 0), 50, tmp_path / "cp.parquet")
    data, _ = demos.load(tmp_path / "cp.parquet", resolve_env("gym:CartPole-v1")())
    assert list(data) == ["agent"] and len(data["agent"]) == meta["steps"] >= 50


def test_checkpoint_expert_records_a_trained_agent(ray_session, tiny_config, tmp_path):
    import rlfleet

    summary = rlfleet.train(tiny_config)
    expert = demos.load_expert(f"checkpoint:{summary['run_dir']}")
    meta = demos.record("ignored", expert, 60, tmp_path / "agent.parquet", seed=5)
    assert meta["env"] == "gym:CartPole-v1" and meta["spaces"]["agent"]["obs_shape"] == [2]  # masked as trained
    data, _ = demos.load(tmp_path / "agent.parquet", expert.make_env())
    d = data["agent"]
    assert len(d) == meta["steps"] >= 60 and set(np.unique(d.action)) <= {0, 1}
    # greedy and deterministic: the same agent on the same seeds takes the same actions
    again = demos.record("ignored", demos.load_expert(f"checkpoint:{summary['run_dir']}"), 60,
                         tmp_path / "again.parquet", seed=5)
    d2, _ = demos.load(tmp_path / "again.parquet")
    assert again["steps"] == meta["steps"]
    np.testing.assert_array_equal(d2["agent"].action, d.action)
