"""Turn-based (AEC) PettingZoo envs: per-agent transitions from turn to turn, final rewards for
every agent, waiting agents that neither act nor write rows, action masks, R2D2 through Ray."""
from __future__ import annotations

import numpy as np
import pytest
from pettingzoo.utils import BaseWrapper

from rlfleet.platform import batch as B
from rlfleet.platform.batch import SequenceLayout
from rlfleet.platform.envs import EnvMaker
from rlfleet.platform.registry import resolve_env
from rlfleet.platform.runner import EnvRunner
from rlfleet.platform.turnbased import act_on_turns

TICTACTOE = "pz:pettingzoo.classic.tictactoe_v3"
CONNECT_FOUR = "pz:pettingzoo.classic.connect_four_v3"


class ScriptedPolicy:
    """Plays `moves` in order (one per turn, whoever's turn it is); its recurrent state counts the
    slot's own turns, so a waiting slot's state must not move. Stops the runner after the script."""

    def __init__(self, moves, runner_box):
        self.moves, self.calls, self.box = list(moves), [], runner_box

    def initial_state(self, n):
        return (np.zeros((n, 1), np.float32),)

    def load_weights(self, weights):
        pass

    def act(self, obs, prev_action, prev_reward, state, epsilon, rng, action_mask=None):
        assert len(obs) == 1, "one env: exactly one slot acts per step"
        a = self.moves.pop(0)
        assert action_mask[0, a]
        self.calls.append((obs[0].copy(), int(prev_action[0]), float(prev_reward[0]), float(state[0][0, 0])))
        if not self.moves:
            self.box[0]._stop.set()
        return np.array([a]), (state[0] + 1,)


class CollectingRunner(EnvRunner):
    def _ship(self, seqs):
        self.shipped.append(seqs)


def run_script(env_id: str, moves: list[int], layout=SequenceLayout(0, 5, 5)):
    """The runner's turn-based loop on one env playing `moves`; returns (runner, policy, sequences by slot)."""
    box = []
    policy = ScriptedPolicy(moves, box)
    runner = CollectingRunner(0, EnvMaker(resolve_env(env_id), {}), lambda cfg, spec: policy, None, layout,
                              np.zeros(2), shards=[], learner=None, weights=(0, {}), ship_interval=1,
                              weight_sync_interval=10**9, seed=0)
    box.append(runner)
    runner.shipped = []
    runner._run()
    seqs = {0: [], 1: []}
    for batch in runner.shipped:
        for j in range(len(batch[B.MASK])):
            slot = int(batch[B.OBS][j, 0, -2:].argmax())  # the one-hot agent index
            seqs[slot].append({k: v[j] for k, v in batch.items()})
    return runner, policy, seqs


def board(seq_obs_row) -> np.ndarray:
    """Tic-tac-toe obs row -> [3, 3, 2] (own pieces, opponent's pieces)."""
    return seq_obs_row[:18].reshape(3, 3, 2)


def test_tictactoe_transitions_run_from_turn_to_turn_and_the_loser_gets_its_final_reward():
    # player_1 (x) plays 0, 1, 2 and wins on its third move; player_2 (o) plays 3, 4
    runner, policy, seqs = run_script(TICTACTOE, [0, 3, 1, 4, 2])
    assert runner.env_steps == 5  # one transition per move: waiting steps add no rows
    assert list(runner.episodes) == [(1.0, 3), (-1.0, 2)]  # (return, own turns) of each player
    [x], [o] = seqs[0], seqs[1]
    np.testing.assert_array_equal(x[B.MASK], [1, 1, 1, 0, 0])
    np.testing.assert_array_equal(o[B.MASK], [1, 1, 0, 0, 0])
    np.testing.assert_array_equal(x[B.ACTION][:3], [0, 1, 2])
    np.testing.assert_array_equal(o[B.ACTION][:2], [3, 4])
    # rewards accumulate until the agent's next turn or the game's end; both get terminal
    np.testing.assert_array_equal(x[B.REWARD][:3], [0, 0, 1])
    np.testing.assert_array_equal(x[B.TERMINAL][:3], [0, 0, 1])
    np.testing.assert_array_equal(o[B.REWARD][:2], [0, -1])  # the winner moved last; the loser still gets -1
    np.testing.assert_array_equal(o[B.TERMINAL][:2], [0, 1])
    # each row is the agent's own turn: x's second observation shows both first moves
    np.testing.assert_array_equal(board(x[B.OBS][1])[0, 0], [1, 0])  # own piece at 0
    np.testing.assert_array_equal(board(x[B.OBS][1])[1, 0], [0, 1])  # o at 3
    np.testing.assert_array_equal(board(o[B.OBS][0])[0, 0], [0, 1])  # o's first turn: x at 0 already
    np.testing.assert_array_equal(x[B.OBS][0, -2:], [1, 0])  # agent index
    np.testing.assert_array_equal(o[B.OBS][0, -2:], [0, 1])
    # the bootstrap input after the last step is the final board; prev action / reward are the agent's own
    assert board(o[B.OBS][2])[0, :, 1].tolist() == [1, 1, 1]
    np.testing.assert_array_equal(x[B.PREV_ACTION][:4], [0, 0, 1, 2])
    np.testing.assert_array_equal(o[B.PREV_ACTION][:3], [0, 3, 4])
    np.testing.assert_array_equal(o[B.PREV_REWARD][:3], [0, 0, -1])
    # masks: legal moves at each of the agent's turns (the next turn's mask bootstraps a step)
    legal = x[B.ACTION_MASK]
    assert legal[0].all() and not legal[1, [0, 3]].any() and legal[1].sum() == 7
    assert not legal[2, [0, 1, 3, 4]].any() and legal[2].sum() == 5
    assert not o[B.ACTION_MASK][1, [0, 1, 3]].any() and o[B.ACTION_MASK][1].sum() == 6
    # the policy only ever saw the acting agent; a waiting agent's state, prev action and reward
    # stayed as they were (state counts the agent's own turns)
    seen = [(int(obs[-2:].argmax()), pa, pr, s) for obs, pa, pr, s in policy.calls]
    assert seen == [(0, 0, 0.0, 0), (1, 0, 0.0, 0), (0, 0, 0.0, 1), (1, 3, 0.0, 1), (0, 1, 0.0, 2)]
    assert x[B.state_key(0)][0] == 0 and o[B.state_key(0)][0] == 0


def test_connect_four_sequences_span_games_and_state_resets_for_the_next_game():
    # game 1: player_0 stacks column 0 four times and wins (7 moves); game 2 starts with player_0 again
    runner, policy, seqs = run_script(CONNECT_FOUR, [0, 1, 0, 1, 0, 1, 0, 3, 3], layout=SequenceLayout(1, 3, 2))
    [first], [second] = seqs[0], seqs[1]  # game 2's turns are in no finished sequence yet
    np.testing.assert_array_equal(first[B.REWARD], [0, 0, 0, 1])
    np.testing.assert_array_equal(first[B.TERMINAL], [0, 0, 0, 1])
    np.testing.assert_array_equal(second[B.MASK], [1, 1, 1, 0])
    np.testing.assert_array_equal(second[B.REWARD], [0, 0, -1, 0])
    np.testing.assert_array_equal(second[B.TERMINAL], [0, 0, 1, 0])
    assert runner.env_steps == 8  # game 2: player_0's first transition completed at its second turn
    # the new game's first turn: fresh state, prev action and reward zeroed
    assert policy.calls[7][1:] == (0, 0.0, 0.0) and policy.calls[8][1:] == (0, 0.0, 0.0)


class MaskChecker(BaseWrapper):
    """Fails on any action outside the acting agent's action_mask (PettingZoo would end the game)."""

    moves = 0

    def step(self, action):
        agent = self.agent_selection
        if not (self.terminations[agent] or self.truncations[agent]):
            mask = self.observe(agent)["action_mask"]
            assert mask[action], f"illegal action {action} sent for {agent} (mask {mask})"
            MaskChecker.moves += 1
        super().step(action)


@pytest.mark.parametrize("module,mapping", [("tictactoe_v3", "shared"), ("connect_four_v3", "per_agent")])
def test_no_illegal_action_is_ever_sent(module, mapping):
    from rlfleet.algorithms.r2d2.config import R2D2Config
    from rlfleet.algorithms.r2d2.policy import R2D2Policy

    factory = resolve_env(f"pz:pettingzoo.classic.{module}")
    envs = EnvMaker(lambda: MaskChecker(factory()), {}, policy_mapping=mapping).batch(4, seed=1)
    n = len(envs)
    policy = R2D2Policy(R2D2Config(burn_in=0, trace=4, period=2, lstm_size=8, mlp_hidden=[8], dueling_hidden=8),
                        envs.spec)
    assert (envs.spec.agent_groups is None) == (mapping == "shared")  # per_agent: one network per player
    rng = np.random.default_rng(0)
    eps = np.array([0.0, 1.0, 0.3, 0.0, 1.0, 0.1, 0.0, 0.5])[:n]
    obs, legal, acting = envs.reset(), envs.action_mask, envs.acting
    state = policy.initial_state(n)
    prev_a, prev_r = np.zeros(n, np.int64), np.zeros(n, np.float32)
    MaskChecker.moves, games, rewards = 0, 0, set()
    for _ in range(300):
        assert acting.reshape(-1, 2).sum(1).tolist() == [1] * (n // 2)  # one agent per env acts
        actions, idx, _ = act_on_turns(policy, acting, obs, prev_a, prev_r, state, eps, rng, legal)
        assert legal[idx, actions[idx]].all()
        res = envs.step(actions)
        done = ~res.reset_step & res.terminated
        games += int(done.sum())
        rewards |= set(res.reward[done].tolist())
        obs, legal, acting = res.obs, res.action_mask, res.acting
    assert MaskChecker.moves == 300 * n // 2 and games > 20
    assert rewards <= {-1.0, 0.0, 1.0} and {-1.0, 1.0} <= rewards


def test_r2d2_trains_on_tictactoe_through_ray_and_reports_per_agent_returns(ray_session, tiny_config):
    import rlfleet

    tiny_config["env"] = {"id": TICTACTOE, "policy_mapping": "shared"}
    tiny_config["algorithm"].update(burn_in=1, trace=4, period=2)
    tiny_config["stop"] = {"env_steps": 1500}
    tiny_config["eval"].update(interval_env_steps=500, episodes=8)
    summary = rlfleet.train(tiny_config)
    assert summary["stop_reason"] == "env_steps"
    assert summary["updates"] > 0 and summary["episodes"] > 0
    last = summary["evals"][-1]
    assert set(last["agent_returns"]) == {"player_1", "player_2"}
    # zero-sum: one player's wins are the other's losses (greedy play of both players)
    assert last["agent_returns"]["player_1"] == pytest.approx(-last["agent_returns"]["player_2"])
    # turns per player and game: a win on move 5 is 3 + 2 turns (2.5 each), a draw 5 + 4 (4.5 each)
    assert 2.5 <= last["length_mean"] <= 4.5
    # and each player against uniformly random opponents (the evaluator's measure of skill in games)
    vs_random = last["agent_returns_vs_random"]
    assert set(vs_random) == {"player_1", "player_2"} and all(-1 <= r <= 1 for r in vs_random.values())
