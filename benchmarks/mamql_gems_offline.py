"""Why Gems imitation falls short of the expert: offline behaviour cloning, where the losses are.

Trains BC critics offline (no Ray, no online data: the learner's loss on expert rows only) from the
scripted expert's demonstrations, for a few critic torsos, then plays greedy episodes and breaks the
return down: own gems collected, purple-gem meetings per episode, episodes with no meeting, episodes
that end in a deadlock (both agents waiting on different purple gems), and how often the policy
departs from the expert on the expert's own states, by what the expert is doing there (collecting
own gems, walking to the purple gem, the switch between them). Cheap next to `benchmarks/mamql.py`
(minutes per torso), so it is the place to try critic designs before paying for online runs.

    python benchmarks/mamql_gems_offline.py --torsos base wide --updates 4000
"""
from __future__ import annotations

import argparse
import copy
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import command_line, previous_rows, table, write_results, run_main  # noqa: E402

from rlfleet import demos  # noqa: E402
from rlfleet.algorithms.mamql.config import MAMQLConfig  # noqa: E402
from rlfleet.algorithms.mamql.learner import MAMQLLearner  # noqa: E402
from rlfleet.algorithms.mamql.policy import MAMQLPolicy  # noqa: E402
from rlfleet.envs.experts import gems as gems_expert  # noqa: E402
from rlfleet.envs.games.gems_v0 import SYM_ACTIONS, GemsEnv, expert_actions, expert_goals  # noqa: E402
from rlfleet.platform.envs import EnvMaker  # noqa: E402
from rlfleet.platform.multiagent import encode_agent_obs  # noqa: E402
from rlfleet.platform.registry import resolve_env  # noqa: E402

ENV_ID, KWARGS = "pz:rlfleet.envs.games.gems_v0", {"egocentric": True, "time_feature": True}
TORSOS = {  # the benchmark's conv critic, variants, and the transformer over the map's objects
    "base": {"torso": "conv", "conv_channels": [16, 32, 32], "conv_strides": [2, 2, 2], "hidden": [128, 128]},
    "stride1": {"torso": "conv", "conv_channels": [16, 32, 32], "conv_strides": [1, 2, 2], "hidden": [128, 128]},
    "wide": {"torso": "conv", "conv_channels": [32, 64, 64], "conv_strides": [1, 2, 2], "hidden": [256, 256]},
    "entities": {"torso": "entities", "entity_dim": 64, "entity_layers": 3, "hidden": [128, 128]},
}


def greedy_policy(learner, cfg, spec):
    """The acting policy (MAMQLPolicy, epsilon 0: argmax) on the learner's acting weights."""
    policy = MAMQLPolicy(cfg, spec)
    policy.load_weights(learner.acting_weights())

    def act(env, obs):
        x = np.concatenate([encode_agent_obs(spec, i, obs[a][None]) for i, a in enumerate(env.possible_agents)])
        actions, _ = policy.act(x, None, None, (), np.zeros(len(x)), np.random.default_rng(0))
        return dict(zip(env.possible_agents, actions.tolist()))
    return act


def play(policy, episodes: int, seed: int) -> dict:
    """Greedy episodes: per-agent return, own gems, meetings, and deadlocks at the end."""
    env = GemsEnv(**KWARGS)
    returns, own, meets, deadlocks = [], [], [], 0
    for k in range(episodes):
        obs, _ = env.reset(seed=seed + k)
        total, n_own, n_meet, still = 0.0, 0, 0, 0
        while env.agents:
            acts = policy(env, obs)
            before = env.pos.copy()
            obs, rew, *_ = env.step(acts)
            total += float(np.mean(list(rew.values())))
            n_own += sum(r in (1.0, 1.0 + 6.0) for r in rew.values())
            n_meet += rew["agent_0"] >= 6.0
            still = still + 1 if (env.pos == before).all() else 0
        on_purple = [p.tolist() in env.purple for p in env.pos]
        deadlocks += still >= 5 and all(on_purple) and env.pos[0].tolist() != env.pos[1].tolist()
        returns.append(total), own.append(n_own), meets.append(n_meet)
    meets = np.array(meets)
    return {"return": float(np.mean(returns)), "own_gems": float(np.mean(own)) / 2, "meetings": float(meets.mean()),
            "no_meeting_share": float(np.mean(meets == 0)), "deadlock_share": deadlocks / episodes}


def _under(p, k: int, n: int) -> list:
    r, c = int(p[0]), int(p[1])
    r, c = (c, r) if k & 1 else (r, c)
    return [n - 1 - r if k & 2 else r, n - 1 - c if k & 4 else c]


def expert_action_set(env: GemsEnv, i: int) -> set:
    """The expert's action for agent i under each grid symmetry, mapped back: what augmented demos teach."""
    out = set()
    for k in range(8):
        e = copy.copy(env)
        e.pos = np.array([_under(p, k, env.size) for p in env.pos])
        e.own = [[_under(g, k, env.size) for g in gs] for gs in env.own]
        e.purple = [_under(g, k, env.size) for g in env.purple]
        a = expert_actions(e)[env.possible_agents[i]]
        out.add(int(np.flatnonzero(SYM_ACTIONS[k] == a)[0]))
    return out


def expert_phase(env: GemsEnv, i: int) -> str:
    """What the expert does for agent i: 'own' (walks to an own gem), 'switch' (own gems are left but it
    walks to the purple gem: time is short), 'purple' (walks to or waits on the purple gem)."""
    kind = expert_goals(env)[i][1]
    return "own" if kind == "own" else "switch" if env.own[i] else "purple"


def departures(policy, episodes: int, seed: int) -> dict:
    """Share of the expert's own states where the greedy policy picks none of the expert's actions."""
    env = GemsEnv(**KWARGS)
    tally: dict[str, list[int]] = {}
    for k in range(episodes):
        obs, _ = env.reset(seed=seed + k)
        while env.agents:
            acts = policy(env, obs)
            for i, a in enumerate(env.possible_agents):
                t = tally.setdefault(expert_phase(env, i), [0, 0])
                t[0] += 1
                t[1] += acts[a] not in expert_action_set(env, i)
            obs, *_ = env.step(expert_actions(env))
    return {f"departures_{ph}": round(bad / n, 4) for ph, (n, bad) in sorted(tally.items())}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--torsos", nargs="+", default=list(TORSOS), choices=list(TORSOS))
    p.add_argument("--updates", type=int, default=4000)
    p.add_argument("--demo-steps", type=int, default=20000)
    p.add_argument("--episodes", type=int, default=100)
    p.add_argument("--acting-polyak", type=float, default=0.01)
    p.add_argument("--no-augment", dest="augment", action="store_false")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--keep-rows", action="store_true", help="keep the results file's rows of the other torsos "
                   "(each row records its command)")
    args = p.parse_args()
    command = command_line("mamql_gems_offline")
    kept = [r for r in previous_rows("mamql_gems_offline") if r["system"] == "bc-offline"
            and r["setting"] not in args.torsos] if args.keep_rows else []
    torch.manual_seed(args.seed)
    torch.set_flush_denormal(True)
    rows = []
    expert = play(lambda env, obs: expert_actions(env), args.episodes, 50_000)
    rand_rng = np.random.default_rng(0)
    rand = play(lambda env, obs: {a: int(rand_rng.integers(5)) for a in env.possible_agents}, args.episodes, 50_000)
    rows += [{"system": "expert", "setting": "scripted", "metric": "return", "value": expert["return"], **expert},
             {"system": "random", "setting": "uniform", "metric": "return", "value": rand["return"], **rand}]
    with tempfile.TemporaryDirectory(prefix="rlfleet-gems-offline-") as root:
        demos.record(ENV_ID, gems_expert, args.demo_steps, f"{root}/gems.parquet", KWARGS, seed=args.seed)
        spec = EnvMaker(resolve_env(ENV_ID), KWARGS, policy_mapping="per_agent").spec()
        for name in args.torsos:
            cfg = MAMQLConfig(demos=f"{root}/gems.parquet", objective="bc", batch_size=256,
                              map_shape=[5, 29, 29], acting_polyak=args.acting_polyak,
                              augment="rlfleet.envs.games.gems_v0:symmetry_augment" if args.augment else None,
                              **TORSOS[name])
            learner = MAMQLLearner(cfg, spec)
            t0 = time.time()
            for _ in range(args.updates):  # bc reads expert rows only: the online batch is a placeholder
                learner.update({"action": torch.zeros(1, 1)})
            wall = time.time() - t0
            policy = greedy_policy(learner, cfg, spec)
            res = play(policy, args.episodes, 50_000)
            res.update(departures(policy, max(args.episodes // 4, 1), 60_000))
            row = {"system": "bc-offline", "setting": name, **TORSOS[name], "updates": args.updates, "command": command,
                   "augment": args.augment, "acting_polyak": args.acting_polyak, "seed": args.seed,
                   "train_wall_s": round(wall, 1), "metric": "return", "value": res["return"],
                   "normalized": (res["return"] - rand["return"]) / (expert["return"] - rand["return"]), **res}
            rows.append(row)
            print(row, flush=True)
            write_results("mamql_gems_offline", rows + kept, summary(rows + kept))
    rows += kept
    cols = ["return", "own_gems", "meetings", "no_meeting_share", "deadlock_share"]
    deps = sorted({k for r in rows for k in r if k.startswith("departures_")})
    fmt = (lambda v: v if v is None else f"{v:.3f}")  # the table helper keeps one decimal: too few for shares
    print(table([[r["system"], r["setting"], fmt(r.get("normalized"))] + [fmt(r.get(c)) for c in cols + deps]
                 for r in rows],
                ["system", "setting", "normalized"] + cols + deps))
    print("wrote", write_results("mamql_gems_offline", rows, summary(rows)))


def summary(rows: list[dict]) -> dict:
    return {"normalized_return": {r["setting"]: round(r["normalized"], 3) for r in rows if r["system"] == "bc-offline"}}


if __name__ == "__main__":
    run_main(main)
