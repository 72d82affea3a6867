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


TICTACTOE = "pz:pettingzoo.classic.tictactoe_v3"


def _replay_games(data):
    """{episode: [(t, agent, action)]} in turn order, from every agent's rows."""
    games = {}
    for a, d in data.items():
        for e, t, act in zip(d.episode.tolist(), d.t.tolist(), d.action.tolist()):
            games.setdefault(e, []).append((t, a, act))
    return {e: sorted(turns) for e, turns in games.items()}


def test_turn_based_demos_round_trip_turn_by_turn(tmp_path):
    from rlfleet.cli import main
    from rlfleet.envs.board_experts import TicTacToeExpert

    path = tmp_path / "ttt.parquet"
    # the documented CLI path with the deterministic scripted expert
    assert main(["demos", "record", "--env", TICTACTOE, "--expert", "scripted:rlfleet.envs.board_experts:tictactoe",
                 "--steps", "40", "--out", str(path)]) == 0
    data, meta = demos.load(path, resolve_env(TICTACTOE)())
    assert meta["turn_based"] and meta["steps"] >= 40 and set(data) == {"player_1", "player_2"}
    # varied games: win, block, else a random legal cell
    meta = demos.record(TICTACTOE, TicTacToeExpert(seed=3), 300, path, seed=0, expert_name="varied")
    env = resolve_env(TICTACTOE)()
    data, meta2 = demos.load(path, env)
    assert meta2 == meta and meta["turn_based"] is True and meta["agents"] == ["player_1", "player_2"]
    assert meta["spaces"]["player_1"] == {"obs_shape": [3, 3, 2], "num_actions": 9}
    x, o = data["player_1"], data["player_2"]
    assert len(x) + len(o) == meta["steps"] >= 300  # one row per turn, for the acting agent only
    assert meta["episodes"] == len(np.unique(x.episode)) == len(np.unique(o.episode))
    for d in (x, o):
        assert d.obs.shape == (len(d), 3, 3, 2) and d.obs.dtype == np.float32 and d.next_obs.shape == d.obs.shape
        assert d.action.dtype == np.int64 and d.action_mask.shape == (len(d), 9) and d.action_mask.dtype == bool
        # every recorded move is legal; the mask is the empty cells of the agent's own view
        assert d.action_mask[np.arange(len(d)), d.action].all()
        np.testing.assert_array_equal(d.action_mask, d.obs.reshape(-1, 9, 2).sum(-1) == 0)
        # a row runs from the agent's turn to its next one: next_obs is its next row's obs
        same = d.episode[1:] == d.episode[:-1]
        np.testing.assert_array_equal(d.next_obs[:-1][same], d.obs[1:][same])
        assert not d.terminated[:-1][same].any() and d.terminated[:-1][~same].all() and d.terminated[-1]
        assert not d.truncated.any() and set(d.reward[d.terminated].tolist()) <= {-1.0, 0.0, 1.0}
        assert (d.reward[~d.terminated] == 0).all()
    assert (x.t % 2 == 0).all() and (o.t % 2 == 1).all()  # x moves first; t counts the game's turns
    # every game ends with a final reward for both (the loser's -1 although the winner moved last)
    np.testing.assert_array_equal(x.reward[x.terminated], -o.reward[o.terminated])
    assert x.reward[x.terminated].max() == 1 and o.reward[o.terminated].max() == 1  # both sides win some
    games = _replay_games(data)
    assert len({tuple(a for _, _, a in g) for g in games.values()}) > 5  # varied games
    # the games replay on a fresh env: the moves are legal and the final rewards are PettingZoo's
    for e in list(games)[:10]:
        env.reset()
        for t, agent, action in games[e]:
            assert env.agent_selection == agent
            env.step(action)
        assert not any(env.truncations.values()) and all(env.terminations.values())
        for agent, d in data.items():
            assert env.rewards[agent] == float(d.reward[(d.episode == e) & d.terminated][0])


def test_turn_based_loader_checks_legality_and_env_kind(tmp_path):
    path = tmp_path / "ttt.parquet"
    from rlfleet.envs.board_experts import tictactoe

    demos.record(TICTACTOE, tictactoe, 20, path)
    table = pq.read_table(path)
    actions = table.column("action").to_numpy().copy()
    actions[2] = actions[0]  # x's second move onto its first: an occupied cell
    illegal = table.set_column(table.schema.get_field_index("action"), "action", pa.array(actions))
    with pytest.raises(UserError, match="row 2 has action .*, illegal under its action_mask"):
        demos.load(_rewrite(path, tmp_path / "illegal.parquet", illegal))
    with pytest.raises(UserError, match="recorded on a turn-based env, the env is not turn-based"):
        demos.load(path, resolve_env("pz:rlfleet.envs.games.gems_v0")())
    with pytest.raises(UserError, match="agents .* do not match"):
        demos.load(path, resolve_env("pz:pettingzoo.classic.connect_four_v3")())
    # an expert's illegal move is refused while recording (PettingZoo would quietly end the game)
    with pytest.raises(UserError, match="expert chose illegal action 0 for 'player_2' at turn 1"):
        demos.record(TICTACTOE, lambda env, obs: 0, 20, tmp_path / "bad.parquet")


def test_board_expert_wins_blocks_and_beats_random():
    from rlfleet.envs.board_experts import tictactoe, tictactoe_move

    def cells(*c):
        out = np.zeros(9, bool)
        out[list(c)] = True
        return out

    own, other = cells(0, 4), cells(1, 2)
    assert tictactoe_move(own, other, ~(own | other)) == 8  # win on the diagonal
    own, other = cells(0), cells(3, 4)
    assert tictactoe_move(own, other, ~(own | other)) == 5  # block the row
    own, other = cells(4), cells(0)
    assert tictactoe_move(own, other, ~(own | other)) == 1  # else the first legal cell
    env, rng, results = resolve_env(TICTACTOE)(), np.random.default_rng(0), []
    for game in range(40):
        env.reset()
        expert = ("player_1", "player_2")[game % 2]
        for agent in env.agent_iter():
            obs, reward, term, trunc, _ = env.last()
            if term or trunc:
                results += [reward] if agent == expert else []
                env.step(None)
                continue
            move = tictactoe(env, {agent: obs})[agent] if agent == expert else \
                int(rng.choice(np.flatnonzero(obs["action_mask"])))
            env.step(move)
    assert np.mean(results) > 0.5 and np.mean(np.array(results) < 0) < 0.2


def test_checkpoint_expert_plays_turn_based_games(tmp_path):
    from test_evaluate import fresh_run_dir  # a run dir with an untrained checkpoint, no Ray

    run = fresh_run_dir(tmp_path / "ttt", {"id": TICTACTOE}, burn_in=0, trace=4, period=2)
    expert = demos.load_expert(f"checkpoint:{run}")
    meta = demos.record("ignored", expert, 40, tmp_path / "agent.parquet", seed=2)
    assert meta["env"] == TICTACTOE and meta["turn_based"]
    data, _ = demos.load(tmp_path / "agent.parquet", expert.make_env())
    assert sum(len(d) for d in data.values()) == meta["steps"] >= 40
    for d in data.values():  # greedy among the legal moves only
        assert d.action_mask[np.arange(len(d)), d.action].all()
