"""Gems (MAMQL paper's game, re-created): rules, determinism, and the scripted expert."""
import numpy as np

from rlfleet.envs.games.gems_v0 import GemsEnv, expert_actions
from rlfleet.platform.envs import EnvMaker
from rlfleet.platform.registry import resolve_env


def _play(env, seed, policy, ends=False):
    env.reset(seed=seed)
    total, steps = np.zeros(2), 0
    while env.agents:
        _, r, term, trunc, _ = env.step(policy(env))
        total += [r["agent_0"], r["agent_1"]]
        steps += 1
    return (total, steps, term, trunc) if ends else (total, steps, trunc)


def test_rules_own_gems_and_shared_purple_gem():
    env = GemsEnv()
    env.reset(seed=0)
    env.pos[:] = [[5, 5], [5, 7]]
    env.own = [[[5, 6]], [[0, 0]]]
    env.purple = [[5, 6], [9, 9]]
    _, r, *_ = env.step({"agent_0": 4, "agent_1": 0})  # agent 0 steps right onto its own gem (also purple)
    assert r == {"agent_0": 1.0, "agent_1": 0.0} and env.own[0] == []
    _, r, *_ = env.step({"agent_0": 0, "agent_1": 3})  # agent 1 joins it on the purple gem
    assert r == {"agent_0": 6.0, "agent_1": 6.0} and env.purple == [[9, 9]]
    _, r, *_ = env.step({"agent_0": 0, "agent_1": 0})  # the purple gem is used up
    assert r == {"agent_0": 0.0, "agent_1": 0.0}


def test_episodes_are_45_steps_seeded_and_the_expert_beats_random():
    env = GemsEnv()
    o1, _ = env.reset(seed=3)
    o2, _ = GemsEnv().reset(seed=3)
    np.testing.assert_array_equal(o1["agent_0"], o2["agent_0"])
    assert o1["agent_0"].shape == (5 * 15 * 15,) and o1["agent_0"].sum() == 2 + 3 + 3 + 3
    rng = np.random.default_rng(0)
    expert = [_play(env, s, expert_actions)[0].mean() for s in range(10)]
    rand = [_play(env, s, lambda e: {a: int(rng.integers(5)) for a in e.agents})[0].mean() for s in range(10)]
    _, steps, term, trunc = _play(env, 0, expert_actions, ends=True)
    assert steps == 45 and all(trunc.values()) and not any(term.values())
    # with the steps left observed, the limit is a true terminal
    _, steps, term, trunc = _play(GemsEnv(time_feature=True), 0, expert_actions, ends=True)
    assert steps == 45 and all(term.values()) and not any(trunc.values())
    assert np.mean(expert) > 10 and np.mean(rand) < 2


def test_gems_resolves_as_a_pz_env():
    spec = EnvMaker(resolve_env("pz:rlfleet.envs.games.gems_v0"), {}).spec()
    assert spec.agents == 2 and spec.num_actions == 5 and spec.obs_shape == (5 * 15 * 15 + 2,)


def test_egocentric_view_is_the_same_map_centred_on_the_agent():
    plain, ego = GemsEnv(), GemsEnv(egocentric=True)
    obs, _ = plain.reset(seed=4)
    view, _ = ego.reset(seed=4)
    s = plain.size
    for i, agent in enumerate(plain.possible_agents):
        grid = obs[agent].reshape(5, s, s)
        centred = view[agent].reshape(5, 2 * s - 1, 2 * s - 1)
        r, c = plain.pos[i]
        assert centred[0, s - 1, s - 1] == 1.0 and centred[0].sum() == 1.0  # the agent at the centre
        np.testing.assert_array_equal(centred[:, s - 1 - r:2 * s - 1 - r, s - 1 - c:2 * s - 1 - c], grid)
        assert centred.sum() == grid.sum()  # nothing else: off-map cells are empty


def test_time_feature_and_map_shape():
    env = GemsEnv(egocentric=True, time_feature=True)
    assert env.map_shape == (5, 29, 29)
    obs, _ = env.reset(seed=1)
    assert obs["agent_0"].shape == (5 * 29 * 29 + 1,) and obs["agent_0"][-1] == 1.0  # all 45 steps left
    for _ in range(9):
        obs, *_ = env.step({"agent_0": 0, "agent_1": 0})
    assert obs["agent_1"][-1] == np.float32(36 / 45)
    assert GemsEnv().map_shape == (5, 15, 15) and GemsEnv().observation_space("agent_0").shape == (5 * 15 * 15,)


def test_expert_breaks_ties_by_position_not_by_draw_order():
    env = GemsEnv()
    env.reset(seed=0)
    env.pos[:] = [[7, 7], [0, 14]]
    env.purple = [[14, 14]]
    for own in ([[9, 7], [5, 7]], [[5, 7], [9, 7]]):  # two own gems equally near, listed either way
        env.own = [own, [[0, 0]]]
        assert expert_actions(env)["agent_0"] == 1  # up, towards the smaller (row, col)


def test_expert_breaks_a_purple_tie_the_same_way_under_every_grid_symmetry():
    """Each agent waits on a different purple gem, equally near the pair: under every symmetry of the
    grid the expert sends agent_0 to agent_1's gem (a position-based tie-break would not: deadlock)."""
    from rlfleet.envs.games.gems_v0 import MOVES

    env = GemsEnv()
    env.reset(seed=0)
    n = env.size
    for k in range(8):
        def tf(p):
            r, c = p
            r, c = (c, r) if k & 1 else (r, c)
            return [n - 1 - r if k & 2 else r, n - 1 - c if k & 4 else c]

        env.pos = np.array([tf([10, 7]), tf([9, 8])])
        env.own, env.purple = [[], []], [tf([10, 7]), tf([9, 8])]
        acts = expert_actions(env)
        assert acts["agent_1"] == 0  # waits on its gem
        step = env.pos[0] + MOVES[acts["agent_0"]]
        assert np.abs(env.pos[1] - step).sum() == 1, k  # agent_0 walks towards it (rows first, then columns)


def test_symmetry_augment_is_the_game_seen_under_a_grid_symmetry():
    """Each augmented demo row equals what a twin game, laid out under one of the 8 grid symmetries
    and stepped with the mapped actions, observes: obs, next obs, own and joint actions."""
    import torch

    from rlfleet.envs.games.gems_v0 import SYM_ACTIONS, symmetry_augment

    env = GemsEnv(egocentric=True, time_feature=True)
    s = env.size
    env.reset(seed=5)
    env.step({"agent_0": 2, "agent_1": 4})

    def moved(rc, k):
        r, c = rc
        r, c = (c, r) if k & 1 else (r, c)
        return [s - 1 - r if k & 2 else r, s - 1 - c if k & 4 else c]

    twins = []
    for k in range(8):
        twin = GemsEnv(egocentric=True, time_feature=True)
        twin.reset(seed=0)
        twin.pos = np.array([moved(p, k) for p in env.pos])
        twin.own = [[moved(g, k) for g in gems] for gems in env.own]
        twin.purple, twin.t = [moved(g, k) for g in env.purple], env.t
        twins.append(twin)
    acts = {"agent_0": 1, "agent_1": 3}
    obs = env._observations()["agent_0"]
    nxt = env.step(acts)[0]["agent_0"]
    n = 64
    rows = {"obs": torch.tensor(np.tile(obs, (n, 1))), "next_obs": torch.tensor(np.tile(nxt, (n, 1))),
            "action": torch.full((n,), acts["agent_0"]), "joint": torch.tensor([[1, 3]] * n),
            "legal": torch.ones(n, 5, dtype=torch.bool), "legal_next": torch.ones(n, 5, dtype=torch.bool)}
    out = symmetry_augment(rows, env.map_shape, torch.Generator().manual_seed(0))
    seen = set()
    for i in range(n):
        match = [k for k, t in enumerate(twins) if np.array_equal(out["obs"][i].numpy(), t._observations()["agent_0"])]
        assert len(match) == 1, match
        k = match[0]
        seen.add(k)
        assert out["action"][i] == SYM_ACTIONS[k, 1] and out["joint"][i].tolist() == [SYM_ACTIONS[k, 1], SYM_ACTIONS[k, 3]]
    assert len(seen) == 8
    for k in seen:  # the twins step with the mapped actions into the augmented next observations
        i = next(i for i in range(n) if np.array_equal(out["obs"][i].numpy(), twins[k]._observations()["agent_0"]))
        twin_next = twins[k].step({a: int(SYM_ACTIONS[k, x]) for a, x in acts.items()})[0]["agent_0"]
        np.testing.assert_array_equal(out["next_obs"][i].numpy(), twin_next)
    assert out["legal"].all() and out["legal_next"].all()
