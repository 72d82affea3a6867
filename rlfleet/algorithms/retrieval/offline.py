"""The offline experiment of Goyal et al. 2022 (Sec. 5.2, BabyAI) at small scale: record expert-bot
trajectories per level, train offline recurrent DQN and retrieval-augmented variants on each
level's data, and measure greedy success rates and acting latency in one batched runner.

Variants (the paper's four):
- `dqn`:         recurrent DQN, no retrieval;
- `single`:      retrieval over the level's own data (never the episodes being trained on);
- `multi`:       retrieval over every level's data;
- `multi_no_ib`: `multi` without the information bottleneck (z = W g, no KL).
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from rlfleet.algorithms.retrieval.config import RDQNOfflineConfig
from rlfleet.algorithms.retrieval.dataset import KeyIndex, TrajectoryDataset
from rlfleet.algorithms.retrieval.learner import train_offline
from rlfleet.algorithms.retrieval.policy import RetrievalPolicy

VARIANTS = ("dqn", "single", "multi", "multi_no_ib")


def variant_config(base: RDQNOfflineConfig, variant: str) -> RDQNOfflineConfig:
    if variant not in VARIANTS:
        from rlfleet.platform.errors import UserError, did_you_mean

        raise UserError(f"unknown variant {variant!r}{did_you_mean(variant, VARIANTS)}")
    cfg = base.model_copy(deep=True)
    cfg.retrieval.enabled = variant != "dqn"
    cfg.retrieval.bottleneck = variant != "multi_no_ib"
    return cfg


def record_level(level: str, episodes: int, out: str | Path, seed: int = 0, epsilon: float = 0.25) -> Path:
    """Bot trajectories for one level in rlfleet's demonstration format (Parquet), recorded once
    and reused (the file name holds level, size, seed and noise)."""
    from rlfleet import demos
    from rlfleet.envs import babyai

    out = Path(out)
    if out.exists():
        return out
    expert = babyai.BabyAIBotExpert(epsilon=epsilon, seed=seed)
    env = babyai.make(level)
    # demos.record stops on steps; count episodes through the expert instead
    path_tmp = out.with_name(out.name + ".partial")
    _record_episodes(env, expert, episodes, path_tmp, level, seed, epsilon)
    path_tmp.replace(out)
    demos.read_metadata(out)
    return out


def _record_episodes(env, expert, episodes: int, out: Path, level: str, seed: int, epsilon: float) -> None:
    """Like rlfleet.demos.record (same columns and metadata) but for a number of whole episodes."""
    import json

    import pyarrow as pa
    import pyarrow.parquet as pq

    from rlfleet import demos

    cols = {k: [] for k in ("episode", "t", "obs", "next_obs", "action", "reward", "terminated", "truncated")}
    n_actions = int(env.action_space.n)
    for ep in range(episodes):
        obs, _ = env.reset(seed=seed * 1_000_003 + ep)
        expert.begin_episode(env)
        t = 0
        while True:
            a = expert(env, obs)
            nxt, r, term, trunc, _ = env.step(a)
            for k, v in (("episode", ep), ("t", t), ("obs", obs), ("next_obs", nxt), ("action", a), ("reward", r),
                         ("terminated", term), ("truncated", trunc)):
                cols[k].append(v)
            t += 1
            obs = nxt
            if term or trunc:
                break
    meta = {"format_version": demos.FORMAT_VERSION, "env": f"babyai:{level}", "env_kwargs": {}, "agents": ["agent"],
            "spaces": {"agent": {"obs_shape": list(env.observation_space.shape), "num_actions": n_actions}},
            "steps": len(cols["t"]), "episodes": episodes, "expert": f"babyai bot (epsilon {epsilon})", "seed": seed,
            "versions": demos._versions()}
    n = len(cols["t"])
    table = pa.table({
        "episode": pa.array(cols["episode"], pa.int64()), "t": pa.array(cols["t"], pa.int32()),
        "agent": pa.array(["agent"] * n, pa.string()),
        "obs": pa.array([np.asarray(o, np.float32) for o in cols["obs"]], pa.list_(pa.float32())),
        "next_obs": pa.array([np.asarray(o, np.float32) for o in cols["next_obs"]], pa.list_(pa.float32())),
        "action": pa.array(cols["action"], pa.int64()), "reward": pa.array(cols["reward"], pa.float32()),
        "terminated": pa.array(cols["terminated"], pa.bool_()), "truncated": pa.array(cols["truncated"], pa.bool_()),
        "action_mask": pa.array([[True] * n_actions] * n, pa.list_(pa.bool_())),
    }).replace_schema_metadata({demos.META_KEY: json.dumps(meta).encode()})
    out.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, out)


def load_levels(levels: list[str], episodes: int, cache: str | Path, seed: int = 0,
                epsilon: float = 0.25) -> list[TrajectoryDataset]:
    """One TrajectoryDataset per level (task label = level index), recorded on first use."""
    out = []
    for k, level in enumerate(levels):
        path = Path(cache) / f"babyai-{level}-n{episodes}-s{seed}-e{epsilon}.parquet"
        out.append(TrajectoryDataset.from_demos(record_level(level, episodes, path, seed, epsilon), task=k,
                                                task_name=level))
    return out


def make_envs(level: str, n: int, seed: int):
    from rlfleet.envs import babyai
    from rlfleet.platform.envs import EnvList

    return EnvList([babyai.make(level) for _ in range(n)], seed)


def evaluate(policy: RetrievalPolicy, level: str, episodes: int, seed: int, num_envs: int = 16) -> float:
    """Greedy success rate (BabyAI rewards are positive only on success) on unseen start states."""
    from rlfleet.platform.evaluation import run_episodes

    envs = make_envs(level, min(num_envs, episodes), 10_000_000 + seed)
    results = run_episodes(policy, envs, episodes, 0.0, np.random.default_rng(seed))
    return float(np.mean([ret > 0 for ret, _ in results]))


def policy_for(learner, pool: TrajectoryDataset | None, cfg: RDQNOfflineConfig, seed: int,
               index: bool = False) -> RetrievalPolicy:
    """Greedy acting copy of the trained network, attending over a uniform retrieval batch of
    `pool` (the paper), or over ANN candidates from the whole pool (`index`)."""
    net = learner.online
    policy = RetrievalPolicy(net, net.num_actions)
    if net.retrieval is not None:
        rng = np.random.default_rng(seed + 7)
        if index:
            policy.set_retrieval_set(index=KeyIndex(pool, cfg.max_episode_len + 1, cfg.retrieval.index_candidates))
        else:
            policy.set_retrieval_set(pool.sample_retrieval(cfg.retrieval.retrieval_batch, rng, cfg.max_episode_len + 1))
    return policy


def run_variant(variant: str, base: RDQNOfflineConfig, datasets: list[TrajectoryDataset], level_idx: int, seed: int,
                eval_episodes: int, index: bool = False, eval_draws: int = 3) -> dict:
    """Train one variant on level `level_idx`'s data and evaluate it there (retrieval variants:
    the episodes split over `eval_draws` uniform retrieval batches)."""
    cfg = variant_config(base, variant)
    train = datasets[level_idx]
    pool = None if variant == "dqn" else train if variant == "single" else TrajectoryDataset.concat(datasets)
    offset = sum(len(d) for d in datasets[:level_idx]) if variant.startswith("multi") else None  # train's place in concat
    t0 = time.perf_counter()
    learner = train_offline(cfg, train, pool, seed=seed, train_offset=offset)
    train_s = time.perf_counter() - t0
    policy = policy_for(learner, pool, cfg, seed, index=index)
    if pool is None or index:
        success = evaluate(policy, train.name, eval_episodes, seed)
    else:  # a fresh uniform retrieval batch per share of the episodes, as in training (one draw for
        # all of them would make a level's score hinge on which few trajectories that draw held)
        rng = np.random.default_rng([seed, 7])  # a stream of its own (policy_for drew the first set)
        shares = [len(a) for a in np.array_split(np.arange(eval_episodes), min(eval_draws, eval_episodes))]
        success = 0.0
        for d, n in enumerate(shares):
            if d:
                policy.set_retrieval_set(pool.sample_retrieval(cfg.retrieval.retrieval_batch, rng, cfg.max_episode_len + 1))
            success += n * evaluate(policy, train.name, n, seed + 1000 * d)
        success /= eval_episodes
    return {"variant": variant, "level": train.name, "seed": seed, "episodes": len(train),
            "updates": cfg.updates, "train_s": round(train_s, 2), "success": success}


def acting_latency(policies: dict[str, RetrievalPolicy], level: str, num_envs: int = 16, steps: int = 200,
                   seed: int = 0, warmup: int = 10) -> dict[str, dict]:
    """Seconds per batched acting step (one forward pass for `num_envs` envs) and per runner step
    (acting + stepping the envs) for each policy. The policies take turns step by step in one loop
    (each with its own envs and state, in alternating order), so that machine load hits all of
    them alike, and every entry is a median over steps, which resists the process being preempted
    mid-step on a shared machine: `act_s` and `step_s` wall-clock, `act_cpu_s` the process CPU time
    of the act."""
    from rlfleet.platform.runner import reset_state_rows

    rng = np.random.default_rng(seed)
    runs = {}
    for name, policy in policies.items():
        envs = make_envs(level, num_envs, seed)
        runs[name] = {"policy": policy, "envs": envs, "obs": envs.reset(), "init": policy.initial_state(1),
                      "state": policy.initial_state(num_envs), "prev_a": np.zeros(num_envs, np.int64),
                      "prev_r": np.zeros(num_envs, np.float32), "act_s": [], "act_cpu_s": [], "step_s": []}
    eps = np.zeros(num_envs)
    order = list(runs.values())
    with torch.inference_mode():
        for i in range(warmup + steps):
            for r in order if i % 2 else order[::-1]:
                t0, c0 = time.perf_counter(), time.process_time()
                actions, r["state"] = r["policy"].act(r["obs"], r["prev_a"], r["prev_r"], r["state"], eps, rng)
                t1, c1 = time.perf_counter(), time.process_time()
                res = r["envs"].step(actions)
                t2 = time.perf_counter()
                if i >= warmup:
                    r["act_s"].append(t1 - t0)
                    r["act_cpu_s"].append(c1 - c0)
                    r["step_s"].append(t2 - t0)
                r["prev_a"], r["prev_r"], r["obs"] = actions, res.reward.astype(np.float32), res.obs
                done = np.flatnonzero(res.terminated | res.truncated)
                if done.size:
                    r["prev_a"][done], r["prev_r"][done] = 0, 0.0
                    reset_state_rows(r["state"], r["init"], done)
    return {name: {k: float(np.median(r[k])) for k in ("act_s", "act_cpu_s", "step_s")} for name, r in runs.items()}
