"""Retrieval process (Goyal et al. 2022): the two-stage top-k attention on a constructed dataset,
the information bottleneck's KL against a hand computation, causal past/future summaries, the
faiss key index, and retrieval learning to find same-task trajectories when only they identify
the task."""
import math

import numpy as np
import pytest
import torch

from rlfleet.algorithms.retrieval import (KeyIndex, OfflineRDQN, RDQNOfflineConfig, RetrievalConfig,
                                          TrajectoryDataset, top_k_attention)
from rlfleet.algorithms.retrieval.networks import RetrievalAgentNetwork, RetrievalProcess, gaussian_kl, reverse_valid
from rlfleet.algorithms.retrieval import kernels
from rlfleet.algorithms.retrieval.policy import NumpyRetrievalStep, RetrievalPolicy

torch.set_num_threads(1)


def _constructed_keys():
    """6 trajectories x 5 steps, keys along e0 with chosen scores; everything else ~0.

    traj 2: steps 1, 3 score 10, 9 | traj 4: steps 2, 4 score 9.5, 9.4 | traj 5: step 0 scores 9.8
    (one strong step: less attention mass than traj 4's two) | traj 1 step 0 scores 50 but is padding.
    """
    n, l, d = 6, 5, 4
    g = torch.Generator().manual_seed(0)
    keys = 0.01 * torch.randn(n, l, d, generator=g)
    for (i, j), s in {(2, 1): 10.0, (2, 3): 9.0, (4, 2): 9.5, (4, 4): 9.4, (5, 0): 9.8, (1, 0): 50.0}.items():
        keys[i, j] = torch.tensor([s, 0, 0, 0]) * math.sqrt(d) / 2  # q . k / sqrt(d) = s / 2
    valid = torch.ones(n, l, dtype=torch.bool)
    valid[1, 0] = False
    values = torch.eye(n * l).reshape(n, l, n * l)  # value of step (i, j) = one-hot of i * l + j
    return keys, values, valid


def test_top_k_attention_picks_the_right_trajectories_then_steps():
    keys, values, valid = _constructed_keys()
    q = torch.tensor([[[1.0, 0, 0, 0]]])  # one row, one slot
    g, (traj, step, w) = top_k_attention(q, keys[None], values[None], valid[None], k_traj=2, k_steps=3)
    assert sorted(traj[0, 0].tolist()) == [2, 4]  # traj 5's single best step does not make it
    assert step[0, 0].tolist() == [2 * 5 + 1, 4 * 5 + 2, 4 * 5 + 4]  # (2,1), (4,2), (4,4); not (2,3), not (5,0)
    expected = torch.softmax(torch.tensor([10.0, 9.5, 9.4]) / 2, 0)
    torch.testing.assert_close(w[0, 0], expected, atol=1e-5, rtol=1e-4)
    dense = torch.zeros(30)
    dense[[11, 22, 24]] = expected
    torch.testing.assert_close(g[0, 0], dense, atol=1e-5, rtol=1e-4)  # g = sum alpha v over the kept steps
    # per-row retrieval sets (index candidates) give the same answer as one shared set
    g2, (traj2, step2, _) = top_k_attention(q.expand(3, 1, 4), keys[None].expand(3, -1, -1, -1),
                                            values[None].expand(3, -1, -1, -1), valid[None].expand(3, -1, -1), 2, 3)
    torch.testing.assert_close(g2, g.expand(3, 1, 30))
    # with every trajectory kept, the single best valid step wins; the masked 50 never does
    _, (_, step3, w3) = top_k_attention(q, keys[None], values[None], valid[None], k_traj=6, k_steps=1)
    assert step3[0, 0].tolist() == [11] and w3[0, 0].tolist() == [1.0]


def test_top_k_attention_with_no_valid_step_returns_zero_and_finite_gradients():
    q = torch.randn(2, 3, 4, requires_grad=True)
    keys = torch.randn(1, 5, 6, 4, requires_grad=True)
    g, _ = top_k_attention(q, keys, torch.randn(1, 5, 6, 7), torch.zeros(1, 5, 6, dtype=torch.bool), 3, 4)
    g.sum().backward()
    assert torch.equal(g, torch.zeros_like(g)) and torch.isfinite(q.grad).all() and torch.isfinite(keys.grad).all()


def test_gaussian_kl_matches_hand_computation():
    # KL(N(1, 2^2) || N(0, 1)) = log(1/2) + (4 + 1) / 2 - 1/2 = 2 - ln 2
    kl = gaussian_kl(torch.tensor(1.0), torch.tensor(math.log(2.0)), torch.tensor(0.0), torch.tensor(0.0))
    assert kl.item() == pytest.approx(2.0 - math.log(2.0), abs=1e-6)
    # KL(N(1, 2^2) || N(0.5, 0.5^2)) = log(0.5/2) + (4 + 0.25) / (2 * 0.25) - 1/2
    kl = gaussian_kl(torch.tensor(1.0), torch.tensor(math.log(2.0)), torch.tensor(0.5), torch.tensor(math.log(0.5)))
    assert kl.item() == pytest.approx(math.log(0.25) + 8.5 - 0.5, abs=1e-5)
    assert gaussian_kl(torch.tensor(0.3), torch.tensor(-1.0), torch.tensor(0.3), torch.tensor(-1.0)).item() == 0.0


def test_bottleneck_kl_term_of_the_process_and_the_loss_matches_hand_computation():
    """Posterior and prior heads fixed to constants: per slot, dim 1 is KL(N(1, 2^2) || N(0, 1)) and
    dim 2 is KL(N(-1, 1) || N(0, 0.5^2)) = log(0.5) + (1 + 1) / (2 * 0.25) - 1/2; the term is their
    mean over the dimensions (and the slots)."""
    cfg = RetrievalConfig(num_slots=3, slot_size=2, summary_size=8, key_size=4, top_k_trajectories=2,
                          top_k_steps=2, beta=0.3)
    proc = RetrievalProcess(embed_size=5, cfg=cfg)
    with torch.no_grad():
        for lin, bias in ((proc.posterior, [1.0, -1.0, math.log(2.0), 0.0]),
                          (proc.prior, [0.0, 0.0, 0.0, math.log(0.5)])):
            lin.weight.zero_()
            lin.bias.copy_(torch.tensor(bias))
    hand = ((2.0 - math.log(2.0)) + (math.log(0.5) + 4.0 - 0.5)) / 2
    mem = proc.summarize(torch.randn(4, 6, 5), torch.ones(4, 6, dtype=torch.bool))
    _, _, kl = proc.step(torch.randn(7, 5), torch.randn(7, 3, 2), mem, sample=True)
    torch.testing.assert_close(kl, torch.full((7,), hand), atol=1e-5, rtol=1e-5)
    # and the learner adds beta * that KL to its loss
    lcfg = RDQNOfflineConfig(mlp_hidden=[8], embed_size=5, lstm_size=8, dueling_hidden=8, retrieval=cfg)
    learner = OfflineRDQN(lcfg, (3,), 2)
    with torch.no_grad():
        for lin in (learner.online.retrieval.posterior, learner.online.retrieval.prior):
            lin.weight.zero_()
        learner.online.retrieval.posterior.bias.copy_(torch.tensor([1.0, -1.0, math.log(2.0), 0.0]))
        learner.online.retrieval.prior.bias.copy_(torch.tensor([0.0, 0.0, 0.0, math.log(0.5)]))
    data = _toy_dataset(np.random.default_rng(0), 6)
    rng = np.random.default_rng(1)
    loss, stats = learner.loss(data.sequence_batch(np.arange(3), 8, rng), data.sample_retrieval(3, rng, 8, exclude=[0, 1, 2]))
    assert stats["kl"] == pytest.approx(hand, abs=1e-5)
    assert loss.item() == pytest.approx(stats["rl_loss"] + stats["cql"] + 0.3 * hand, abs=1e-5)


@pytest.mark.parametrize("alpha", [0.0, 0.5])
def test_offline_cql_term_matches_a_hand_computation(alpha):
    """CQL(H): mean over real steps of logsumexp_a Q(s, a) - Q(s, a_data), weighted by cql_alpha."""
    cfg = RDQNOfflineConfig(mlp_hidden=[8], embed_size=5, lstm_size=8, dueling_hidden=8, cql_alpha=alpha,
                            retrieval=RetrievalConfig(enabled=False))
    learner = OfflineRDQN(cfg, (3,), 2)
    data = _toy_dataset(np.random.default_rng(0), 6)
    batch = data.sequence_batch(np.arange(4), 8, np.random.default_rng(1))
    loss, stats = learner.loss(batch, None)
    with torch.no_grad():
        q, _ = learner.online.unroll(batch["obs"], batch["prev_action"], batch["prev_reward"],
                                     learner.online.initial_state(4))
    q, mask = q[:, :-1].numpy().astype(np.float64), batch["mask"].numpy() > 0
    taken = np.take_along_axis(q, batch["action"].numpy()[..., None], -1)[..., 0]
    hand = (np.log(np.exp(q).sum(-1)) - taken)[mask].mean()
    assert hand > 0.1 and stats["cql"] == pytest.approx(hand if alpha else 0.0, abs=1e-5)
    assert loss.item() == pytest.approx(stats["rl_loss"] + alpha * hand, abs=1e-5)


def _toy_dataset(rng, n, obs_dim=3, actions=2):
    eps = []
    for i in range(n):
        t = int(rng.integers(2, 6))
        eps.append({"obs": rng.normal(size=(t + 1, obs_dim)).astype(np.float32), "action": rng.integers(0, actions, t),
                    "reward": rng.random(t).astype(np.float32), "terminated": bool(i % 2), "task": i % 3})
    return TrajectoryDataset(eps, actions)


def test_slot_memory_stays_bounded_and_queries_keep_depending_on_the_observation_over_long_episodes():
    """The slot memory is the slot GRU's recurrent state; unbounded (`mhat + z` plus a residual
    attention) it grew to ~3e6 within 40 steps, every row then asked the same query and the KL
    to the prior conditioned on it exploded. Over 100 steps: |m| <= 1, a per-dimension KL of order
    one, and rows that see different observations still keep different trajectories."""
    torch.manual_seed(0)
    cfg = RetrievalConfig(num_slots=4, slot_size=16, summary_size=16, key_size=8, top_k_trajectories=2, top_k_steps=3)
    net = RetrievalAgentNetwork((3,), 2, mlp_hidden=[16], embed_size=16, lstm_size=16, dueling=True,
                                dueling_hidden=8, retrieval=cfg).train()
    rng = np.random.default_rng(0)
    net.set_memory(_toy_dataset(rng, 12).sample_retrieval(8, rng, 6))
    b, t = 16, 100
    obs = torch.randn(b, t, 3)
    _, state = net.unroll(obs, torch.randint(0, 2, (b, t)), torch.rand(b, t), net.initial_state(b))
    assert state[2].abs().max() <= 1.0
    assert torch.isfinite(net.kl).all() and net.kl[:, -10:].max() < 10.0, net.kl[:, -10:].max()
    traj = net.retrieval.last_selection[0]  # [B, slots, k1] at step 100
    assert len({tuple(r.flatten().tolist()) for r in traj}) > 1


def test_past_summary_sees_only_the_past_and_future_summary_only_the_future():
    cfg = RetrievalConfig(summary_size=8, key_size=4, slot_size=6)
    proc = RetrievalProcess(embed_size=5, cfg=cfg)
    e = torch.randn(2, 6, 5)
    valid = torch.tensor([[True] * 6, [True] * 4 + [False] * 2])
    assert torch.equal(reverse_valid(reverse_valid(e, valid), valid), e)
    assert torch.equal(reverse_valid(e, valid)[1, :4], e[1, :4].flip(0))
    base = proc.summarize(e, valid)
    e2 = e.clone()
    e2[:, 2] += 1.0  # change step 2
    moved = proc.summarize(e2, valid)
    k, v = (base["keys"][0] - moved["keys"][0]).abs().sum(-1), (base["values"][0] - moved["values"][0]).abs().sum(-1)
    assert (k[:, :2] == 0).all() and (k[:, 2:4] > 0).all()  # keys (past summaries): steps >= 2 change
    assert (v[:, 3:4] == 0).all() and (v[:, :3] > 0).all()  # values (future summaries): steps <= 2 change
    e3 = e.clone()
    e3[1, 4:] += 5.0  # padding of row 1 does not leak into its future summaries
    assert torch.equal(proc.summarize(e3, valid)["values"][0, 1, :4], base["values"][0, 1, :4])


def test_dataset_batches_and_retrieval_exclusion():
    rng = np.random.default_rng(0)
    data = _toy_dataset(rng, 10)
    b = data.sequence_batch(np.array([0, 3]), 8, rng)
    n0 = data.lengths[0]
    assert b["obs"].shape[1] == b["action"].shape[1] + 1 == max(data.lengths[[0, 3]]) + 1
    ep = data.episode(0)
    np.testing.assert_array_equal(b["obs"][0, :n0 + 1].numpy(), ep["obs"])
    np.testing.assert_array_equal(b["prev_action"][0, 1:n0 + 1].numpy(), ep["action"])
    assert b["mask"][0].sum() == n0 and b["terminal"][0].sum() == float(ep["terminated"])
    r = data.sample_retrieval(8, rng, 8, exclude=[0, 3])
    assert len(r["index"]) == 8 and not set(r["index"].tolist()) & {0, 3}
    assert r["valid"].sum(1).tolist() == (data.lengths[r["index"]] + 1).tolist()


@pytest.mark.parametrize("variant", ["single", "multi"])
def test_offline_training_never_retrieves_the_episodes_it_trains_on(variant, monkeypatch):
    """Single-level retrieval draws from the training data itself, multi-level from every level's
    data concatenated: in both, the batch's own episodes (at their place in the pool) are left out."""
    from rlfleet.algorithms.retrieval import offline
    from rlfleet.algorithms.retrieval import learner as learner_mod

    rng = np.random.default_rng(0)
    levels = [_toy_dataset(rng, 6), _toy_dataset(rng, 5), _toy_dataset(rng, 7)]
    seen = []
    real_sample = TrajectoryDataset.sample_retrieval
    real_batch = TrajectoryDataset.sequence_batch

    def sequence_batch(self, idx, *a, **k):
        seen.append({"train": self, "idx": np.array(idx)})
        return real_batch(self, idx, *a, **k)

    def sample_retrieval(self, *a, **k):  # the draws for evaluation come after training's last batch
        out = real_sample(self, *a, **k)
        if "pool" not in seen[-1]:
            seen[-1].update(pool=self, retrieved=out["index"])
        return out

    monkeypatch.setattr(TrajectoryDataset, "sequence_batch", sequence_batch)
    monkeypatch.setattr(TrajectoryDataset, "sample_retrieval", sample_retrieval)
    monkeypatch.setattr(learner_mod.OfflineRDQN, "update", lambda self, batch, rset=None: {})
    monkeypatch.setattr(offline, "evaluate", lambda *a, **k: 0.0)
    base = RDQNOfflineConfig(batch_size=4, updates=20, mlp_hidden=[8], embed_size=8, lstm_size=8, dueling_hidden=8,
                             retrieval=RetrievalConfig(num_slots=1, slot_size=4, summary_size=4, key_size=4,
                                                       retrieval_batch=10))
    offline.run_variant(variant, base, levels, 1, seed=0, eval_episodes=1)
    assert len(seen) == 20
    offset = 0 if variant == "single" else len(levels[0])
    for call in seen:
        assert call["train"] is levels[1] and len(call["pool"]) == (5 if variant == "single" else 18)
        assert not set(call["retrieved"].tolist()) & set((call["idx"] + offset).tolist())
    if variant == "multi":  # the pool's other levels are retrieved from
        assert any((c["retrieved"] < offset).any() or (c["retrieved"] >= offset + 5).any() for c in seen)


def test_key_index_finds_the_trajectories_holding_the_best_keys_and_refreshes_in_background():
    """A network whose keys depend on the observation only: the index must return the episodes
    whose observations match the query direction, and re-embed after the weights change."""
    from rlfleet.algorithms.retrieval.learner import make_offline_network

    pytest.importorskip("faiss", reason="the retrieval extra (faiss-cpu) is not installed")
    rng = np.random.default_rng(0)
    cfg = RDQNOfflineConfig(mlp_hidden=[16], embed_size=8, lstm_size=8, dueling_hidden=8,
                            retrieval=RetrievalConfig(summary_size=8, key_size=4, slot_size=8, index_candidates=3))
    net = make_offline_network((3,), 2, cfg).eval()
    data = _toy_dataset(rng, 40)
    index = KeyIndex(data, max_len=8, candidates=3, refresh_s=0.05)
    index.refresh(net)
    _, owner, keys, _, valid = index._tables
    target = 17  # query = the key of episode 17's step 1: that episode must be among the candidates
    q = keys[target, 1].reshape(1, 1, -1)
    cand = index.candidates_for(q)
    assert target in cand["episodes"][0].tolist() and cand["keys"].shape == (1, 3) + keys.shape[1:]
    v0 = index.version
    index.start(lambda: net)
    try:
        with torch.no_grad():
            net.retrieval.w_e[0].weight.mul_(-1.0)
        deadline = __import__("time").time() + 20
        while index.version < v0 + 2 and __import__("time").time() < deadline:
            __import__("time").sleep(0.05)
    finally:
        index.stop()
    assert index.version >= v0 + 2
    torch.testing.assert_close(index._tables[2][target, 1], -keys[target, 1] + 2 * net.retrieval.w_e[1].bias, atol=1e-5, rtol=1e-4)


def test_retrieval_finds_same_task_trajectories_when_only_they_identify_the_task():
    """Bandit episodes: the observation is a noisy cue of one of 4 tasks; the rewarded action of
    each task is redrawn for every batch, so it can only be read from the retrieval set (8
    expert trajectories per task under the current mapping), never memorized. After training,
    the top-10 trajectories that the slots keep must be mostly same-task ones (chance: 8/32).

    The retrieval process is trained with the RL loss plus an auxiliary attention loss (the
    attention mass on same-task steps); with the RL loss alone it stayed at chance within this
    budget (see docs/retrieval.md)."""
    n_tasks, n_actions, dim = 4, 4, 8
    rng = np.random.default_rng(0)
    torch.manual_seed(0)
    cues = rng.normal(size=(n_tasks, dim)).astype(np.float32)

    def episodes(tasks, mapping, expert):
        out = []
        for k in tasks:
            a = int(mapping[k]) if expert else int(rng.integers(n_actions))
            obs = cues[k] + 0.3 * rng.normal(size=(2, dim)).astype(np.float32)
            out.append({"obs": obs, "action": [a], "reward": [float(a == mapping[k])], "terminated": True, "task": k})
        return TrajectoryDataset(out, n_actions)

    rtask = np.repeat(np.arange(n_tasks), 8)
    cfg = RDQNOfflineConfig(n_step=1, batch_size=32, lr=3e-3, cql_alpha=0.0, mlp_hidden=[32], embed_size=32, lstm_size=32,
                            dueling_hidden=32, retrieval=RetrievalConfig(num_slots=1, slot_size=32, summary_size=32,
                                                                         key_size=16, bottleneck=False))
    learner = OfflineRDQN(cfg, (dim,), n_actions, seed=0)
    net = learner.online

    def hit_rate():
        mapping = rng.permutation(n_actions)
        qtask = rng.integers(0, n_tasks, 64)
        q = episodes(qtask, mapping, expert=False).sequence_batch(np.arange(64), 4, rng)
        net.eval()
        with torch.no_grad():
            net.set_memory(episodes(rtask, mapping, expert=True).retrieval_batch(np.arange(32), 4))
            net.unroll(q["obs"][:, :1], q["prev_action"][:, :1], q["prev_reward"][:, :1], net.initial_state(64))
            traj = net.retrieval.last_selection[0].numpy()  # [B, slots, top-k trajectories]
            net.set_memory(None)
        return float((rtask[traj] == qtask[:, None, None]).mean())

    before = hit_rate()
    for _ in range(150):
        mapping = rng.permutation(n_actions)
        qtask = rng.integers(0, n_tasks, 32)
        batch = episodes(qtask, mapping, expert=False).sequence_batch(np.arange(32), 4, rng)
        net.train()
        rl_loss, _ = learner.loss(batch, episodes(rtask, mapping, expert=True).retrieval_batch(np.arange(32), 4))
        _, step, w = net.retrieval.last_selection  # the last unrolled step (the final observation)
        same = torch.from_numpy(rtask[step.numpy() // 2] == qtask[:, None, None]).float()  # L = 2 steps per trajectory
        loss = rl_loss - (w * same).sum(-1).mean()
        learner.optimizer.zero_grad()
        loss.backward()
        learner.optimizer.step()
        net.set_memory(None)
        learner.target.set_memory(None)
    after = hit_rate()
    assert before < 0.45 and after > 0.6, (before, after)  # chance 0.25, the most possible 0.8 (8 of 10)


def _acting_matches_the_network(net, policy, obs_dim, n_actions, steps=6, batch=7):
    """The policy's numpy acting step, one step at a time with its state carried, gives the same
    Q-values, actions and state as the network's own torch unroll over all steps at once."""
    rng = np.random.default_rng(1)
    obs = rng.normal(size=(batch, steps, obs_dim)).astype(np.float32)
    prev_a = rng.integers(0, n_actions, (batch, steps))
    prev_r = rng.random((batch, steps)).astype(np.float32)
    state = policy.initial_state(batch)
    state[2][:] = rng.normal(size=state[2].shape)  # non-zero slot memories
    with torch.no_grad():
        q_net, final = net.unroll(torch.from_numpy(obs), torch.from_numpy(prev_a), torch.from_numpy(prev_r),
                                  tuple(torch.from_numpy(s.copy()) for s in state))
    selected = net.retrieval.last_selection[0]
    assert policy._fast is not None
    for t in range(steps):
        args = (obs[:, t], prev_a[:, t], prev_r[:, t])
        q_torch, st_torch = policy.q_values(*args, state, fast=False)
        q, state = policy.q_values(*args, state)
        np.testing.assert_allclose(q, q_torch, atol=1e-5, rtol=0)
        np.testing.assert_allclose(q, q_net[:, t].numpy(), atol=1e-5, rtol=0)
        assert (q.argmax(-1) == q_net[:, t].numpy().argmax(-1)).all()
        for a, b in zip(state, st_torch):
            np.testing.assert_allclose(a, b, atol=1e-5, rtol=0)
    for a, b in zip(state, final):
        np.testing.assert_allclose(a, b.numpy(), atol=1e-5, rtol=0)
    return selected


@pytest.fixture(params=["compiled", "numpy"])
def acting_path(request, monkeypatch):
    """Both acting paths: numba kernels (the test extra installs numba) and the numpy fallback."""
    if request.param == "compiled":
        assert kernels.ENABLED, "numba is part of the test extra; RLFLEET_NUMBA=0 must not be set here"
    else:
        monkeypatch.setattr(NumpyRetrievalStep, "use_kernel", False)
    return request.param


@pytest.mark.parametrize("bottleneck,gain", [(True, 3.0), (False, 30.0)])  # 30: logits large enough to need exp's shift
def test_numpy_acting_step_gives_the_networks_q_values_and_state(bottleneck, gain, acting_path):
    """The cached numpy acting path (keys/values once per weights and retrieval set, top-k in
    numpy or compiled loops) against the full torch forward, offline (a fixed retrieval set with padding)."""
    torch.manual_seed(1)  # (seed 0's network at gain 30 keeps the same trajectories in every row)
    obs_dim, n_actions = 5, 3
    cfg = RetrievalConfig(num_slots=3, slot_size=8, summary_size=8, key_size=6, top_k_trajectories=3, top_k_steps=4,
                          bottleneck=bottleneck)
    net = RetrievalAgentNetwork((obs_dim,), n_actions, mlp_hidden=[16], embed_size=12, lstm_size=10, dueling=True,
                                dueling_hidden=8, retrieval=cfg).eval()
    with torch.no_grad():  # peaked attention, so that which steps the top-k keeps matters
        net.retrieval.f_query[1].weight.mul_(gain)
        net.retrieval.w_e[1].weight.mul_(3.0)
    data = _toy_dataset(np.random.default_rng(0), 12, obs_dim=obs_dim, actions=n_actions)
    retrieval_set = data.sample_retrieval(8, np.random.default_rng(2), 6)
    assert not retrieval_set["valid"].all()  # padded trajectories
    policy = RetrievalPolicy(net, n_actions)
    policy.set_retrieval_set(retrieval_set)
    selected = _acting_matches_the_network(net, policy, obs_dim, n_actions)
    assert policy._fast.shift == (gain > 10)
    assert selected.shape[-1] == 3 and len(np.unique(selected.numpy())) > 3  # rows keep different trajectories


def test_numpy_acting_step_over_the_online_bank_matches_the_network(acting_path):
    """r2d2-retrieval: the retrieval set is the bank that travels with the weights; the cached
    numpy step is rebuilt at every weight load."""
    torch.manual_seed(1)
    cfg = RetrievalConfig(num_slots=2, slot_size=8, summary_size=8, key_size=4, top_k_trajectories=2, top_k_steps=3)
    kw = dict(mlp_hidden=[16], embed_size=8, lstm_size=8, dueling=False, dueling_hidden=8, retrieval=cfg,
              bank_shape=(4, 5))
    net, learner_net = (RetrievalAgentNetwork((3,), 2, **kw) for _ in range(2))
    valid = torch.arange(5).expand(4, 5) < torch.tensor([[5], [3], [2], [5]])
    learner_net.set_bank({"obs": torch.randn(4, 5, 3), "prev_action": torch.randint(0, 2, (4, 5)),
                          "prev_reward": torch.rand(4, 5), "valid": valid})
    policy = RetrievalPolicy(net, 2)
    policy.load_weights(net.state_dict())  # an empty bank (no valid step yet): g = 0
    _acting_matches_the_network(net, policy, 3, 2)
    policy.load_weights(learner_net.state_dict())
    first = policy._fast
    _acting_matches_the_network(net, policy, 3, 2)
    policy.load_weights(learner_net.state_dict())
    assert policy._fast is not first
