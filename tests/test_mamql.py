"""MAMQL / BC: the loss against a hand computation, the expert encoding against the runners',
and learning on a tiny budget (a contextual bandit whose expert picks the best arm)."""
from __future__ import annotations

import math

import gymnasium as gym
import numpy as np
import pytest
import torch
from pettingzoo import ParallelEnv

import rlfleet
from rlfleet import demos
from rlfleet.algorithms.mamql.config import MAMQLConfig
from rlfleet.algorithms.mamql.learner import MAMQLLearner, iq_chi2_loss, soft_value
from rlfleet.envs.experts import simple_spread
from rlfleet.platform import batch as B
from rlfleet.platform.envs import EnvMaker
from rlfleet.platform.registry import resolve_env


def test_soft_value_and_chi2_loss_match_a_hand_computation():
    q = torch.tensor([[1.0, 2.0, 3.0]])
    legal = torch.tensor([[True, False, True]])
    assert soft_value(q, 0.5).item() == pytest.approx(0.5 * math.log(sum(math.exp(x / 0.5) for x in (1, 2, 3))))
    assert soft_value(q, 1.0, legal).item() == pytest.approx(math.log(math.e + math.e ** 3))
    q_exp = torch.tensor([[0.5, 2.0], [1.0, -1.0]])
    a_exp = torch.tensor([1, 0])
    v_exp_next, done_exp = torch.tensor([1.0, 3.0]), torch.tensor([0.0, 1.0])
    v_on, v_on_next, done_on = torch.tensor([2.0, 1.0]), torch.tensor([1.5, 4.0]), torch.tensor([0.0, 1.0])
    gamma, alpha = 0.9, 2.0
    loss, r = iq_chi2_loss(q_exp, a_exp, v_exp_next, done_exp, v_on, v_on_next, done_on, gamma, alpha)
    r_hand = [2.0 - 0.9 * 1.0, 1.0 - 0.0]
    expert = np.mean([x - x * x / (4 * alpha) for x in r_hand])
    value = np.mean([2.0 - 0.9 * 1.5, 1.0 - 0.0])
    np.testing.assert_allclose(r.numpy(), r_hand, rtol=1e-6)
    assert loss.item() == pytest.approx(value - expert, rel=1e-6)
    # value_data expert_and_online: the value term averages over the online and the expert rows
    v_exp = torch.tensor([0.7, 2.5])
    loss, _ = iq_chi2_loss(q_exp, a_exp, v_exp_next, done_exp, v_on, v_on_next, done_on, gamma, alpha, v_exp)
    value = np.mean([2.0 - 0.9 * 1.5, 1.0 - 0.0, 0.7 - 0.9 * 1.0, 2.5 - 0.0])
    assert loss.item() == pytest.approx(value - expert, rel=1e-6)


def test_expert_rows_are_encoded_like_runner_slots(tmp_path):
    demos.record("pz:mpe2.simple_spread_v3", simple_spread, 25, tmp_path / "s.parquet", env_kwargs={"max_cycles": 25})
    maker = EnvMaker(resolve_env("pz:mpe2.simple_spread_v3"), {"max_cycles": 25})
    batch = maker.batch(1, seed=0)
    first = batch.reset()  # the recorder reset its env with seed 0 too
    learner = MAMQLLearner(MAMQLConfig(demos=str(tmp_path / "s.parquet"), hidden=[8]), batch.spec)
    t = learner.expert.t
    for k in range(3):  # rows are grouped by agent, 25 steps each; row 0 of each block is the first step
        np.testing.assert_allclose(t["obs"][25 * k].numpy(), first[k], rtol=1e-6)


class Bandit(gym.Env):
    """One-step episodes: 4-dim context, 3 arms; arm argmax(W @ context) pays 1, others 0."""

    W = np.array([[1.0, -1.0, 0.5, 0.0], [-0.5, 1.0, 0.0, 1.0], [0.0, 0.0, -1.0, -1.0]])

    def __init__(self):
        self.observation_space = gym.spaces.Box(-3, 3, (4,), np.float32)
        self.action_space = gym.spaces.Discrete(3)

    def reset(self, seed=None, options=None):
        super().reset(seed=seed)
        self.ctx = self.np_random.normal(size=4).astype(np.float32)
        return self.ctx, {}

    def step(self, action):
        best = int(np.argmax(self.W @ self.ctx))
        return np.zeros(4, np.float32), float(action == best), True, False, {}


def _bandit_expert(env, obs):
    return int(np.argmax(Bandit.W @ obs))


@pytest.mark.parametrize("objective", ["mamql", "bc"])
def test_learns_to_imitate_the_expert_on_a_tiny_budget(tmp_path, objective):
    rlfleet.register_env("test-bandit", Bandit)
    demos.record("test-bandit", _bandit_expert, 400, tmp_path / "bandit.parquet", seed=0)
    spec = EnvMaker(resolve_env("test-bandit"), {}).spec()
    torch.manual_seed(0)
    cfg = MAMQLConfig(demos=str(tmp_path / "bandit.parquet"), objective=objective, hidden=[32], batch_size=64,
                      lr=3e-3, weight_decay=0.0)
    learner = MAMQLLearner(cfg, spec)
    rng = np.random.default_rng(1)
    for _ in range(300):  # online data: random arms in random contexts, one-step episodes
        ctx = rng.normal(size=(64, 4)).astype(np.float32)
        online = {B.OBS: torch.from_numpy(np.stack([ctx, np.zeros_like(ctx)], 1)),
                  B.ACTION: torch.from_numpy(rng.integers(0, 3, (64, 1))), B.TERMINAL: torch.ones(64, 1)}
        learner.update(online)
    test = rng.normal(size=(500, 4)).astype(np.float32)
    with torch.no_grad():
        chosen = learner.online(torch.from_numpy(test)).argmax(-1).numpy()
    accuracy = np.mean(chosen == np.argmax(test @ Bandit.W.T, axis=1))
    assert accuracy > 0.85, accuracy
    if objective == "mamql":  # the recovered reward ranks the expert's arm first as well
        r = torch.stack([learner.recovered_reward(torch.from_numpy(test), torch.full((500,), a), torch.zeros(500, 4),
                                                  torch.ones(500)) for a in range(3)], 1)
        assert np.mean(r.argmax(1).numpy() == np.argmax(test @ Bandit.W.T, axis=1)) > 0.85


def test_acting_polyak_acts_with_the_averaged_critic_and_checkpoints_it(tmp_path):
    rlfleet.register_env("test-bandit", Bandit)
    demos.record("test-bandit", _bandit_expert, 100, tmp_path / "bandit.parquet", seed=0)
    spec = EnvMaker(resolve_env("test-bandit"), {}).spec()
    cfg = MAMQLConfig(demos=str(tmp_path / "bandit.parquet"), hidden=[8], batch_size=16, acting_polyak=0.25)
    learner = MAMQLLearner(cfg, spec)
    avg = {k: v.clone() for k, v in learner.online.state_dict().items()}
    rng = np.random.default_rng(0)
    for _ in range(3):
        ctx = rng.normal(size=(16, 4)).astype(np.float32)
        learner.update({B.OBS: torch.from_numpy(np.stack([ctx, ctx], 1)), B.TERMINAL: torch.ones(16, 1),
                        B.ACTION: torch.from_numpy(rng.integers(0, 3, (16, 1)))})
        avg = {k: 0.75 * v + 0.25 * learner.online.state_dict()[k] for k, v in avg.items()}
    acting = learner.acting_weights()
    for k, v in avg.items():
        torch.testing.assert_close(acting[k], v)
        assert not torch.allclose(acting[k], learner.online.state_dict()[k])  # not the critic itself
    restored = MAMQLLearner(cfg, spec)
    restored.load_state_dict(learner.state_dict())
    for k, v in avg.items():
        torch.testing.assert_close(restored.acting_weights()[k], v)


class MatrixGame(ParallelEnv):
    """One-step two-agent matrix game in one of 3 contexts (one-hot observation); both act at once."""

    metadata = {"name": "matrix_v0"}
    possible_agents = ["agent_0", "agent_1"]

    def observation_space(self, agent):
        return gym.spaces.Box(0.0, 1.0, (3,), np.float32)

    def action_space(self, agent):
        return gym.spaces.Discrete(3)

    def reset(self, seed=None, options=None):
        self.rng = np.random.default_rng(seed) if seed is not None or not hasattr(self, "rng") else self.rng
        self.agents = list(self.possible_agents)
        self.ctx = np.eye(3, dtype=np.float32)[self.rng.integers(3)]
        return {a: self.ctx for a in self.agents}, {a: {} for a in self.agents}

    def step(self, actions):
        self.agents = []
        ones = {a: True for a in self.possible_agents}
        return ({a: self.ctx for a in ones}, {a: float(actions[a] == 0) for a in ones}, ones,
                {a: False for a in ones}, {a: {} for a in ones})


# the experts' Boltzmann policies: pi_i(a | context c) = softmax(EXPERT_Q[i, c])
EXPERT_Q = np.array([[[1.0, 0.0, -1.0], [-0.5, 0.8, 0.0], [0.0, 0.3, 0.6]],
                     [[0.0, -1.0, 0.7], [1.0, 0.5, -0.5], [-0.6, -0.6, 0.9]]])
EXPERT_PI = np.exp(EXPERT_Q) / np.exp(EXPERT_Q).sum(-1, keepdims=True)
_EXPERT_RNG = [np.random.default_rng(7)]


def _boltzmann_experts(env, observations):
    return {a: int(_EXPERT_RNG[0].choice(3, p=EXPERT_PI[i, int(np.argmax(observations[a]))]))
            for i, a in enumerate(["agent_0", "agent_1"]) if a in observations}


def _matrix_game_kl(tmp_path, value_data: str, seed: int = 0) -> float:
    """Largest KL(pi_E || pi) over agents and contexts after MAMQL on 3000 expert steps."""
    from rlfleet.platform.multiagent import encode_agent_obs

    rlfleet.register_env("test-matrix", MatrixGame)
    path = tmp_path / "matrix.parquet"
    if not path.exists():
        _EXPERT_RNG[0] = np.random.default_rng(7)
        demos.record("test-matrix", _boltzmann_experts, 3000, path, seed=0)
    spec = EnvMaker(resolve_env("test-matrix"), {}, policy_mapping="per_agent").spec()
    torch.manual_seed(seed)
    cfg = MAMQLConfig(demos=str(path), hidden=[32], batch_size=256, lr=3e-3, weight_decay=0.0, value_data=value_data)
    learner = MAMQLLearner(cfg, spec)
    rng = np.random.default_rng(seed + 1)
    for _ in range(400):  # online rows: uniform actions of both agents in random contexts
        ctx = np.eye(3, dtype=np.float32)[rng.integers(3, size=128)]
        obs = np.concatenate([encode_agent_obs(spec, k, ctx) for k in range(2)])
        learner.update({B.OBS: torch.from_numpy(np.stack([obs, obs], 1)), B.TERMINAL: torch.ones(256, 1),
                        B.ACTION: torch.from_numpy(rng.integers(0, 3, (256, 1)))})
    kl = []
    with torch.no_grad():
        for k in range(2):
            pi = torch.softmax(learner.online(torch.from_numpy(encode_agent_obs(spec, k, np.eye(3)))), -1).numpy()
            kl += list((EXPERT_PI[k] * np.log(EXPERT_PI[k] / pi)).sum(-1))
    return max(kl)


@pytest.mark.parametrize("value_data", ["expert_and_online", "online"])
def test_recovers_the_experts_boltzmann_policies_in_a_matrix_game(tmp_path, value_data):
    assert _matrix_game_kl(tmp_path, value_data) < 0.05


def test_a_wrong_update_fails_the_matrix_game(tmp_path, monkeypatch):
    """Without the value term (the expert term alone), every expert action's Q goes to 2 alpha: near-uniform."""
    from rlfleet.algorithms.mamql import learner as mamql_learner

    def expert_term_only(q_exp, a_exp, v_exp_next, done_exp, *rest, **kw):
        r = q_exp.gather(-1, a_exp.unsqueeze(-1)).squeeze(-1) - 0.99 * (1.0 - done_exp) * v_exp_next
        return -(r - r.square() / 4.0).mean(), r

    monkeypatch.setattr(mamql_learner, "iq_chi2_loss", expert_term_only)
    assert _matrix_game_kl(tmp_path, "expert_and_online") > 0.05


@pytest.mark.parametrize("algo", ["mamql", "iql-ma"])
def test_trains_through_ray_on_gems_with_per_agent_critics(ray_session, tiny_config, tmp_path, algo):
    from rlfleet.envs.experts import gems

    demos.record("pz:rlfleet.envs.games.gems_v0", gems, 90, tmp_path / "gems.parquet", seed=0)
    tiny_config["env"] = {"id": "pz:rlfleet.envs.games.gems_v0", "policy_mapping": "per_agent"}
    tiny_config["algorithm"] = {"name": algo, "demos": str(tmp_path / "gems.parquet"), "batch_size": 16,
                                "hidden": [16]}
    tiny_config["stop"] = {"env_steps": 1200}
    summary = rlfleet.train(tiny_config)
    assert summary["stop_reason"] == "env_steps" and summary["updates"] > 0
    assert min(summary["runner_weights_versions"]) >= 1
    assert summary["evals"] and summary["evals"][-1]["length_mean"] == 45


def test_iqlma_critic_sees_the_other_agents_actions():
    from rlfleet.algorithms.mamql.networks import Critic

    torch.manual_seed(0)
    critic = Critic(4 + 3, 2, [8], num_agents=3, sees_others=True)
    obs = torch.zeros(1, 7)
    obs[0, 4 + 1] = 1.0  # agent 1
    joint = torch.tensor([[1, 0, 1]])
    np.testing.assert_array_equal(critic.others_onehot(obs, joint).numpy(), [[0, 1, 0, 1]])  # agents 0 and 2
    q = [critic(obs, torch.tensor([[a0, 0, a2]])) for a0 in range(2) for a2 in range(2)]
    torch.testing.assert_close(critic(obs), torch.stack(q).mean(0))  # no joint: the uniform marginal
    assert not torch.allclose(q[0], q[3])


def test_conv_torso_shapes_and_behaviour_cloning_fits_a_tiny_dataset(tmp_path):
    from rlfleet.algorithms.mamql.networks import ConvQ, Critic, make_critic
    from rlfleet.envs.experts import gems
    from rlfleet.platform.errors import UserError

    net = ConvQ((5, 7, 7), 5 * 49 + 3, [16], 5, [4, 8])
    assert net(torch.zeros(6, 5 * 49 + 3)).shape == (6, 5)
    assert net.head[0].in_features == 8 * 4 * 4 + 3  # 7x7 -> (stride 1) 7x7 -> (stride 2) 4x4, then the 3 extras
    critic = Critic(5 * 49 + 2, 5, [16], groups=(0, 1), num_agents=2, map_shape=(5, 7, 7), conv_channels=[4, 8],
                    torso="conv")
    assert all(isinstance(n, ConvQ) for n in critic.nets) and critic(torch.zeros(3, 5 * 49 + 2)).shape == (3, 5)
    kw = {"size": 7, "max_steps": 12, "time_feature": True}
    demos.record("pz:rlfleet.envs.games.gems_v0", gems, 48, tmp_path / "g.parquet", env_kwargs=kw, seed=0)
    spec = EnvMaker(resolve_env("pz:rlfleet.envs.games.gems_v0"), kw, policy_mapping="per_agent").spec()
    with pytest.raises(UserError, match="map_shape"):
        make_critic(MAMQLConfig(demos="x", torso="conv"), spec)
    torch.manual_seed(0)
    cfg = MAMQLConfig(demos=str(tmp_path / "g.parquet"), objective="bc", torso="conv", map_shape=[5, 7, 7],
                      conv_channels=[8, 16], hidden=[64], batch_size=96, lr=3e-3, weight_decay=0.0)
    learner = MAMQLLearner(cfg, spec)
    dummy = {B.ACTION: torch.zeros(1, 1)}
    for _ in range(150):
        learner.update(dummy)
    t = learner.expert.t
    with torch.no_grad():
        accuracy = (learner.online(t["obs"]).argmax(-1) == t["action"]).float().mean().item()
    assert accuracy > 0.95, accuracy  # 96 expert rows, memorized
    # expert rows under the grid's symmetries: same sizes, and the hook is named in the config
    aug = MAMQLLearner(cfg.model_copy(update={"augment": "rlfleet.envs.games.gems_v0:symmetry_augment"}), spec)
    rows = aug.expert.sample(32)
    e = aug.augment(rows, cfg.map_shape, aug.expert.gen)
    torch.testing.assert_close(e["obs"].sum(1), rows["obs"].sum(1))  # map cells permuted, the rest kept
    assert e["obs"].shape == rows["obs"].shape and not torch.equal(e["obs"], rows["obs"])
    aug.update(dummy)
    with pytest.raises(UserError, match="algorithm.augment"):
        MAMQLLearner(cfg.model_copy(update={"augment": "rlfleet.envs.games.gems_v0:nope"}), spec)


def test_turn_based_demonstrations_are_rejected_with_a_clear_message(tmp_path):
    from rlfleet import demos
    from rlfleet.algorithms.mamql.learner import ExpertData
    from rlfleet.envs.board_experts import tictactoe
    from rlfleet.platform.errors import UserError

    path = tmp_path / "ttt.parquet"
    demos.record("pz:pettingzoo.classic.tictactoe_v3", tictactoe, 30, path, seed=0)
    with pytest.raises(UserError, match="turn-based game"):
        ExpertData(str(path), None, "cpu", None)


def test_entity_torso_masks_padding_rejects_crowded_maps_and_fits_a_tiny_dataset(tmp_path):
    from rlfleet.algorithms.mamql.networks import EntityQ
    from rlfleet.envs.experts import gems
    from rlfleet.platform.errors import UserError

    torch.manual_seed(0)
    x = torch.zeros(4, 3 * 25 + 2)
    x[:, [0, 30, 31, 60]] = 1.0  # 4 objects on a 3 x 5 x 5 map, then 2 extra inputs
    x[1, 12] = 1.0  # row 1 has a fifth object
    x[:, -2:] = torch.randn(4, 2)
    small = EntityQ((3, 5, 5), 77, [16], 5, dim=16, heads=2, max_entities=5)
    big = EntityQ((3, 5, 5), 77, [16], 5, dim=16, heads=2, max_entities=12)
    big.load_state_dict(small.state_dict())
    torch.testing.assert_close(small(x), big(x))  # the cap alone changes nothing
    # a row with 4 objects gets 4 slots alone and 5 (one padded) beside the 5-object row: padding is masked
    torch.testing.assert_close(small(x[[0, 2]]), small(x)[[0, 2]])
    moved = x.clone()
    moved[:, 60], moved[:, 74] = 0.0, 1.0  # one object moves across the map
    assert not torch.allclose(small(moved), small(x))
    x[2, 40:44] = 1.0  # 8 objects > 5
    with pytest.raises(UserError, match="max_entities 5"):
        small(x)
    with pytest.raises(ValueError, match="must divide entity_dim 64"):
        MAMQLConfig(demos="x", torso="entities", entity_heads=5)
    kw = {"size": 7, "max_steps": 12, "time_feature": True}
    demos.record("pz:rlfleet.envs.games.gems_v0", gems, 48, tmp_path / "g.parquet", env_kwargs=kw, seed=0)
    spec = EnvMaker(resolve_env("pz:rlfleet.envs.games.gems_v0"), kw, policy_mapping="per_agent").spec()
    cfg = MAMQLConfig(demos=str(tmp_path / "g.parquet"), objective="bc", torso="entities", map_shape=[5, 7, 7],
                      entity_dim=32, entity_layers=2, hidden=[64], batch_size=96, lr=3e-3, weight_decay=0.0)
    learner = MAMQLLearner(cfg, spec)
    assert all(isinstance(n, EntityQ) for n in learner.online.nets)
    for _ in range(150):
        learner.update({B.ACTION: torch.zeros(1, 1)})
    t = learner.expert.t
    with torch.no_grad():
        accuracy = (learner.online(t["obs"]).argmax(-1) == t["action"]).float().mean().item()
    assert accuracy > 0.95, accuracy  # 96 expert rows, memorized


@pytest.mark.parametrize("torso", ["mlp", "entities"])
@pytest.mark.parametrize("rows_per_call", [8192, 10])
def test_marginal_over_the_others_actions_is_the_mean_over_every_combination(monkeypatch, rows_per_call, torso):
    """IQL-MA's V(s') averages Q over the others' joint actions; the stacked (and chunked) critic
    calls (for the entity torso: one encoding, the head per combination) must give the plain mean
    over all A^(K-1) combinations, agent by agent."""
    import itertools

    import torch.nn.functional as F

    from rlfleet.algorithms.mamql import networks

    monkeypatch.setattr(networks, "MARGINAL_ROWS", rows_per_call)
    torch.manual_seed(0)
    critic = networks.Critic(6, 4, [16], groups=(0, 1, 1), num_agents=3, sees_others=True, torso=torso,
                             map_shape=(1, 1, 3), entity={"dim": 8, "layers": 1, "heads": 2})
    obs = torch.randn(7, 6)
    obs[:, 3:] = F.one_hot(torch.arange(7) % 3, 3).float()  # the agent index closes the observation
    per_combination = []
    for combo in itertools.product(range(4), repeat=2):
        others = F.one_hot(torch.tensor(combo).expand(7, -1), 4).float().reshape(7, -1)
        per_combination.append(critic._route(torch.cat([obs, others], -1), obs))
    expected = torch.stack(per_combination).mean(0)
    torch.testing.assert_close(critic(obs), expected)
