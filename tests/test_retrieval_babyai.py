"""BabyAI family, bot demonstrations, the offline experiment's four variants on a tiny budget,
acting latency, and R2D2 + retrieval run online through the registry."""
import copy

import numpy as np
import pytest
import torch

pytest.importorskip("minigrid", reason="the babyai extra (minigrid) is not installed")

import rlfleet.algorithms.retrieval  # noqa: E402,F401  (registers r2d2-retrieval)
import rlfleet.envs.babyai as babyai  # noqa: E402  (registers babyai:)
from rlfleet import demos  # noqa: E402
from rlfleet.algorithms.retrieval import RDQNOfflineConfig, RetrievalConfig, TrajectoryDataset  # noqa: E402
from rlfleet.algorithms.retrieval import offline  # noqa: E402
from rlfleet.platform.errors import UserError  # noqa: E402
from rlfleet.platform.registry import resolve_algorithm, resolve_env  # noqa: E402

torch.set_num_threads(1)
LEVELS = ["GoToObjS6", "GoToLocalS6N2"]
TINY = RDQNOfflineConfig(updates=3, batch_size=4, mlp_hidden=[16], embed_size=16, lstm_size=16, dueling_hidden=16,
                         max_episode_len=12, retrieval=RetrievalConfig(num_slots=2, slot_size=8, summary_size=8,
                                                                       key_size=8, retrieval_batch=6))


def test_babyai_family_symbolic_observation_and_errors():
    env = resolve_env("babyai:GoToRedBall")()
    obs, _ = env.reset(seed=3)
    assert obs.shape == (babyai.OBS_SIZE,) and obs.dtype == np.float32 and env.observation_space.contains(obs)
    cells = obs[:7 * 7 * 20].reshape(49, 20)
    assert (cells[:, :11].sum(1) == 1).all() and (cells[:, 11:17].sum(1) == 1).all()  # one object, one colour per cell
    mission = obs[-2 * len(babyai.VOCAB):]
    words = {babyai.VOCAB[i] for i in np.flatnonzero(mission[:len(babyai.VOCAB)])}
    assert words == {"go", "to", "the", "red", "ball"} and mission[len(babyai.VOCAB):].sum() == 0
    put = babyai.encode_mission("put the red ball next to the blue box")
    v = len(babyai.VOCAB)
    assert put[babyai.VOCAB.index("red")] == 1 and put[v + babyai.VOCAB.index("blue")] == 1
    assert put[babyai.VOCAB.index("blue")] == 0  # the object to reach is in the second clause only
    assert resolve_env("babyai:BabyAI-GoToRedBall-v0") is not None
    with pytest.raises(UserError, match="did you mean: babyai:GoToRedBall"):
        resolve_env("babyai:GoToRedBal")


def test_bot_demonstrations_record_in_the_demos_format_and_solve_levels(tmp_path):
    path = offline.record_level("GoToObjS6", 12, tmp_path / "d.parquet", seed=1, epsilon=0.0)
    per_agent, meta = demos.load(path, env=babyai.make("GoToObjS6"))
    assert meta["episodes"] == 12 and meta["env"] == "babyai:GoToObjS6"
    data = TrajectoryDataset.from_demos(path, task=0, task_name="GoToObjS6")
    assert len(data) == 12 and data.steps == len(per_agent["agent"])
    assert all(data.episode(i)["reward"][-1] > 0 for i in range(12))  # the noiseless bot succeeds
    # recorded through rlfleet demos record's expert interface too
    out = demos.record("babyai:GoToObjS6", babyai.BabyAIBotExpert(epsilon=0.5, seed=0), 30, tmp_path / "n.parquet")
    assert out["steps"] >= 30


def test_offline_variants_train_and_evaluate_on_a_tiny_budget(tmp_path):
    datasets = offline.load_levels(LEVELS, 10, tmp_path, seed=0)
    assert [d.name for d in datasets] == LEVELS
    pool = TrajectoryDataset.concat(datasets)
    assert sorted(set(pool.task.tolist())) == [0, 1] and len(pool) == 20
    results = {v: offline.run_variant(v, TINY, datasets, 1, seed=0, eval_episodes=4) for v in offline.VARIANTS}
    for v, r in results.items():
        assert r["level"] == LEVELS[1] and r["updates"] == 3 and 0.0 <= r["success"] <= 1.0
    with pytest.raises(UserError, match="did you mean: multi"):
        offline.variant_config(TINY, "mult")
    # retrieval over the index of the whole pool acts too (candidates come from both levels)
    r = offline.run_variant("multi", TINY, datasets, 0, seed=1, eval_episodes=2, index=True)
    assert 0.0 <= r["success"] <= 1.0


def test_acting_latency_is_measured_for_both_policies_in_one_runner(tmp_path):
    datasets = offline.load_levels(LEVELS[:1], 6, tmp_path, seed=0)
    pool = datasets[0]
    multi, dqn = offline.variant_config(TINY, "multi"), offline.variant_config(TINY, "dqn")
    pols = {"retrieval": offline.policy_for(offline.train_offline(multi, pool, pool, seed=0), pool, multi, 0),
            "no_retrieval": offline.policy_for(offline.train_offline(dqn, pool, None, seed=0), None, dqn, 0)}
    lat = offline.acting_latency(pols, LEVELS[0], num_envs=4, steps=16)
    assert set(lat) == {"retrieval", "no_retrieval"}
    assert all(0 < v["act_s"] <= v["step_s"] for v in lat.values())


def test_r2d2_retrieval_trains_online_through_the_registry(ray_session, tiny_config):
    import rlfleet

    spec = resolve_algorithm("r2d2-retrieval")
    assert spec.config_cls.__name__ == "R2D2RetrievalConfig"
    cfg = copy.deepcopy(tiny_config)
    cfg["algorithm"].update({"name": "r2d2-retrieval", "embed_size": 16,
                             "retrieval": {"num_slots": 2, "slot_size": 8, "summary_size": 8, "key_size": 8,
                                           "retrieval_batch": 4}})
    cfg["stop"] = {"updates": 6}
    cfg["eval"]["interval_env_steps"] = 0
    summary = rlfleet.train(cfg)
    assert summary["updates"] >= 6 and summary["env_steps"] > 0
    # the learner's bank (its previous replay batch) reached the weights the runners act with
    from rlfleet.platform.agent import load_agent

    agent = load_agent(summary["run_dir"])
    assert agent.core.online.bank_valid.any()
    assert agent.policy.net.bank_valid.any() and agent.policy.net.memory is not None


def test_r2d2_retrieval_learner_banks_its_replay_batch_and_the_policy_acts_with_it():
    """Without Ray: the registry's learner and policy on CartPole shapes. The learner's previous
    batch becomes the retrieval set, it travels with the weights, and the policy's state carries
    the slot memories."""
    from rlfleet.platform import batch as B
    from rlfleet.platform.envs import EnvSpec

    spec = resolve_algorithm("r2d2-retrieval")
    cfg = spec.config_cls(burn_in=2, trace=4, n_step=2, batch_size=6, lstm_size=8, mlp_hidden=[8], dueling_hidden=8,
                          embed_size=8, retrieval={"num_slots": 2, "slot_size": 4, "summary_size": 4, "key_size": 4,
                                                   "retrieval_batch": 3})
    env_spec = EnvSpec((4,), "float32", 2)
    learner = spec.make_learner(cfg, env_spec, "cpu")
    g = torch.Generator().manual_seed(0)
    t = 6
    batch = {B.OBS: torch.randn(6, t + 1, 4, generator=g), B.PREV_ACTION: torch.randint(0, 2, (6, t + 1), generator=g),
             B.PREV_REWARD: torch.rand(6, t + 1, generator=g), B.ACTION: torch.randint(0, 2, (6, t), generator=g),
             B.REWARD: torch.rand(6, t, generator=g), B.TERMINAL: torch.zeros(6, t), B.MASK: torch.ones(6, t),
             B.WEIGHT: torch.ones(6)}
    batch[B.MASK][0, 3:] = 0.0
    state = learner.online.initial_state(6)
    for i, s in enumerate(state):
        batch[B.state_key(i)] = s
    assert not learner.online.bank_valid.any()
    priorities, stats = learner.update(batch)
    assert priorities.shape == (6,) and "kl" in stats and torch.isfinite(stats["loss"])
    assert learner.online.bank_valid.sum(1).tolist() == [4, 7, 7]  # x_0 + 3 real steps; full sequences
    torch.testing.assert_close(learner.online.bank_obs[1], batch[B.OBS][1])
    _, stats2 = learner.update(batch)  # now attending over the banked batch
    assert torch.isfinite(stats2["loss"])
    policy = spec.make_policy(cfg, env_spec)
    policy.load_weights(learner.acting_weights())
    assert policy.net.bank_valid.sum() == 18 and policy.net.memory is not None
    st = policy.initial_state(5)
    assert [s.shape for s in st] == [(5, 8), (5, 8), (5, 8)]  # LSTM h, c and 2 slots x 4
    actions, st = policy.act(np.random.default_rng(0).normal(size=(5, 4)).astype(np.float32), np.zeros(5, np.int64),
                             np.zeros(5, np.float32), st, np.zeros(5), np.random.default_rng(0))
    assert actions.shape == (5,) and np.abs(st[2]).sum() > 0
