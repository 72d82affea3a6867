"""MAMQL vs IQL-MA vs BC from demonstrations, on Gems and mpe2 simple_spread.

For each env and expert-data size (expert env steps taken from one recorded file), each algorithm
and seed: the true return of the learned policy (per-agent mean; greedy, and sampled from
pi ~ exp(Q / alpha) as the MAMQL authors evaluate), reward recovery on held-out expert transitions
(not defined for BC): Pearson correlation and MSE between the recovered reward
rhat_i(s, a) = Qbar_i(s, a) - gamma (1 - d) V_i(s') and the true per-agent reward, next to the MSE of
a constant predictor (the true reward's variance: rewards are identified up to shaping, and chi^2
pulls every expert step's rhat toward 2 alpha, so Pearson on expert rows is low by construction),
and how often the expert's action has the highest rhat(s, .) of the legal actions; and reward
transfer (a fresh R2D2 agent with shared parameters trained on rhat instead of the env's reward,
then evaluated on the true reward). Expert (scripted) and random returns bound the scale; a
normalized return is (x - random) / (expert - random). Writes benchmarks/results/mamql.json.

    python benchmarks/mamql.py --seeds 3 --sizes 1000 5000 20000 --env-steps 60000 --samples-per-insert 32

Gems runs with the egocentric map plus the fraction of steps left (`time_feature`, a departure from
the paper's 5-channel observation: the scripted expert's switch to the purple gem depends on it)
and a critic torso that reads the map: `--torso entities` (default; `algorithm.torso: entities`, a
transformer over the map's occupied cells) or `--torso conv` (3x3 conv layers before the MLP).
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import command_line, RESULTS, previous_rows, table, write_results, run_main  # noqa: E402

import rlfleet  # noqa: E402
from rlfleet import demos  # noqa: E402
from rlfleet.envs import experts  # noqa: E402
from rlfleet.platform.agent import load_agent  # noqa: E402
from rlfleet.platform.evaluation import run_episodes  # noqa: E402
from rlfleet.platform.registry import resolve_env  # noqa: E402

ENVS = {
    # egocentric view (same map, centred on the agent): with the plain map, even BC from 20k expert steps
    # reached only 0.9 of the expert's 15.5 after 3000 updates; centred, 7-8 (see README)
    # + time_feature: the expert's own-gems -> purple switch depends on the steps left (a policy ignoring
    # it returns 13.3 vs 15.0). Offline BC, 20k expert steps, 3000 updates of 256, greedy over 50 episodes:
    # MLP 7.30 (no time) / 6.08 (time); conv torso + time 10.02 (held-out action accuracy 0.91 -> 0.95)
    "gems": {"id": "pz:rlfleet.envs.games.gems_v0", "kwargs": {"egocentric": True, "time_feature": True},
             "expert": experts.gems, "map_shape": [5, 29, 29],
             "augment": "rlfleet.envs.games.gems_v0:symmetry_augment"},
    "spread": {"id": "pz:mpe2.simple_spread_v3", "kwargs": {"max_cycles": 25}, "expert": experts.simple_spread},
}
ALGOS = ("mamql", "iql-ma", "bc")


def base_config(env: dict, root: str, seed: int, env_steps: int, samples_per_insert: float = 4) -> dict:
    return {
        "name": "demo", "seed": seed,
        "env": {"id": env["id"], "kwargs": env["kwargs"], "policy_mapping": "per_agent"},
        "runners": {"num_runners": 1, "envs_per_runner": 8, "num_cpus": 0.5, "ship_interval": 256,
                    "weight_sync_interval": 400, "epsilon_warmup_steps": 0},
        "replay": {"num_shards": 1, "capacity": 100_000, "alpha": 0.0, "min_size": 256,
                   "samples_per_insert": samples_per_insert,
                   "error_buffer": 2000},
        "stop": {"env_steps": env_steps},
        "eval": {"interval_env_steps": max(env_steps // 4, 1000), "episodes": 24},
        "checkpoint": {"interval_s": 60},
        "logging": {"root": root, "progress": False},
    }


def scripted_return(env: dict, policy, episodes: int = 200, seed: int = 10_000) -> float:
    e = resolve_env(env["id"])(**env["kwargs"])
    rng = np.random.default_rng(seed)
    totals = []
    for k in range(episodes):
        obs, _ = e.reset(seed=seed + k)
        total = 0.0
        while e.agents:
            acts = policy(e, obs) if policy else {a: int(rng.integers(e.action_space(a).n)) for a in e.agents}
            obs, rew, *_ = e.step(acts)
            total += float(np.mean(list(rew.values())))
        totals.append(total)
    return float(np.mean(totals))


def reward_recovery(run_dir: str, heldout: str) -> dict:
    """Pearson r and MSE between rhat and the true reward on held-out expert transitions, the MSE of a
    constant predictor, and the share of states where the expert's action has the highest rhat."""
    from rlfleet.algorithms.mamql.learner import ExpertData

    agent = load_agent(run_dir)
    spec, core = agent.env_spec, agent.core
    data, _ = demos.load(heldout)
    held = ExpertData(heldout, spec, "cpu", None)
    true_r = np.concatenate([data[a].reward for a in spec.agent_names])
    t = held.t
    rhat = core.recovered_reward(t["obs"], t["action"], t["next_obs"], t["done"], t["legal_next"]).numpy()
    rhat = rhat - rhat.mean() + true_r.mean()  # rewards are identified up to a constant: compare shapes
    pearson = float(np.corrcoef(rhat, true_r)[0, 1]) if rhat.std() > 0 and true_r.std() > 0 else None
    every = torch.stack([core.recovered_reward(t["obs"], torch.full_like(t["action"], a), t["next_obs"], t["done"],
                                               t["legal_next"]) for a in range(spec.num_actions)], -1)
    top = every.masked_fill(~t["legal"], float("-inf")).argmax(-1)
    return {"reward_pearson": pearson, "reward_mse": float(np.mean((rhat - true_r) ** 2)),
            "reward_mse_constant": float(true_r.var()), "reward_expert_action_top": float((top == t["action"]).float().mean())}


class RecoveredRewardEnv:
    """Factory of the env whose rewards are replaced by a learned critic's rhat (reward transfer)."""

    def __init__(self, env: dict, run_dir: str):
        self.env, self.run_dir = env, run_dir

    def __call__(self, **kwargs):
        import torch
        from pettingzoo.utils.wrappers import BaseParallelWrapper

        from rlfleet.platform.multiagent import encode_agent_obs

        agent = load_agent(self.run_dir)
        spec, core = agent.env_spec, agent.core
        names = list(spec.agent_names)

        class Wrapped(BaseParallelWrapper):
            def reset(self, seed=None, options=None):
                obs, info = self.env.reset(seed=seed, options=options)
                self._last = obs
                return obs, info

            def step(self, actions):
                obs, rew, term, trunc, info = self.env.step(actions)
                new = {}
                for a in rew:
                    k = names.index(a)
                    enc = lambda x: torch.from_numpy(encode_agent_obs(spec, k, np.asarray(x)[None]))  # noqa: E731
                    r = core.recovered_reward(enc(self._last[a]), torch.tensor([actions[a]]), enc(obs[a]),
                                              torch.tensor([float(term[a])]))
                    new[a] = float(r[0])
                self._last = obs
                return obs, new, term, trunc, info

        return Wrapped(resolve_env(self.env["id"])(**{**self.env["kwargs"], **kwargs}))


def reward_transfer(run_dir: str | None, name: str, root: str, steps: int, seed: int = 0,
                    samples_per_insert: float = 4) -> dict:
    """Train a fresh R2D2 agent (shared parameters, feed-forward) for `steps` agent steps on the env whose
    reward is the run's rhat (or, without a run, the true reward: the reference for transfer), and
    score it on the true reward (200 greedy episodes)."""
    env = ENVS[name]
    if run_dir:
        agent = load_agent(run_dir)
        seed = agent.cfg.seed
        tname = f"{name}-rhat-{agent.cfg.algorithm_name}-{agent.algo_cfg.demo_steps}-s{seed}"
        rlfleet.register_env(tname, RecoveredRewardEnv(env, run_dir))
        env_cfg = {"id": tname, "policy_mapping": "shared"}
    else:
        tname = f"{name}-true-reward-s{seed}"
        env_cfg = {"id": env["id"], "kwargs": env["kwargs"], "policy_mapping": "shared"}
    cfg = base_config(env, root, seed, steps, samples_per_insert)
    cfg["name"], cfg["env"] = tname, env_cfg
    cfg["algorithm"] = {"name": "r2d2", "burn_in": 0, "trace": 8, "period": 4, "n_step": 3, "gamma": 0.99,
                        "batch_size": 32, "lr": 5e-4, "target_tau": 0.005, "use_lstm": False, "lstm_size": 128,
                        "mlp_hidden": [128], "dueling_hidden": 128}
    cfg["replay"]["alpha"] = 0.6
    cfg["runners"]["epsilon_warmup_steps"] = steps // 5
    s = rlfleet.train(cfg)
    value, se = true_return(s["run_dir"], env)
    return {"transfer_return": value, "transfer_se": se, "transfer_steps": steps,
            "transfer_samples_per_insert": samples_per_insert, "transfer_wall_s": round(s["wall_s"], 1)}


def true_return(run_dir: str, env: dict, episodes: int = 200, sample: bool = False) -> tuple[float, float]:
    """Mean per-agent return and its standard error over `episodes` episodes (per-episode means of the
    agents); greedy, or (`sample`) actions drawn from the policy's softmax. 48 episodes were too few:
    the same Gems policy scored 12.2 / 9.4 / 10.4 / 11.0 on four sets of 48."""
    agent = load_agent(run_dir)
    maker = copy.copy(agent.env_maker)
    maker.factory, maker.kwargs = resolve_env(env["id"]), env["kwargs"]  # the true reward, whatever it trained on
    batch = maker.batch(8, seed=123_457)
    k = agent.env_spec.agents
    res = run_episodes(agent.policy, batch, episodes * k, 1.0 if sample else 0.0, np.random.default_rng(0))
    returns = np.array([r for r, _ in res])
    per_episode = returns[:len(returns) // k * k].reshape(-1, k).mean(1) if k > 1 else returns
    return float(returns.mean()), float(per_episode.std(ddof=1) / np.sqrt(len(per_episode)))


def evaluate_run(run_dir: str, name: str, update_row: bool, command: str, transfer_steps: int = 0,
                 transfer_spi: float = 4) -> None:
    """Greedy and sampled true return of a saved run (200 episodes), normalized by the results file's
    expert and random rows for that env, or (`transfer_steps`) its reward transfer instead; `update_row`:
    write them into the file's last row of the same algorithm, expert steps and seed (rows scored before
    200-episode evaluations, or run without transfer)."""
    env = ENVS[name]
    rows = previous_rows("mamql")
    agent = load_agent(run_dir)
    match = [r for r in rows if r["env"] == name and r["system"] == agent.cfg.algorithm_name
             and r.get("expert_steps") == agent.algo_cfg.demo_steps and r.get("seed") == agent.cfg.seed]
    if update_row and not match:
        sys.exit(f"error: {RESULTS / 'mamql.json'} has no {agent.cfg.algorithm_name} row for {name} with "
                 f"{agent.algo_cfg.demo_steps} expert steps and seed {agent.cfg.seed}")
    if transfer_steps:
        with tempfile.TemporaryDirectory(prefix="rlfleet-transfer-") as root:
            res = reward_transfer(run_dir, name, root, transfer_steps, samples_per_insert=transfer_spi)
        print(f"reward transfer: true return {res['transfer_return']:.2f} +- {res['transfer_se']:.2f} (s.e., "
              f"200 episodes) after {transfer_steps} agent steps on rhat")
        res["transfer_by"] = command
    else:
        ref = {r["system"]: r["value"] for r in rows if r["env"] == name and r["system"] in ("expert", "random")}
        res = {"eval_episodes": 200, "rescored_by": command}
        for mode, sample, keys in (("greedy", False, ("value", "value_se", "normalized")),
                                   ("sampled", True, ("sampled_return", "sampled_se", "sampled_normalized"))):
            value, se = true_return(run_dir, env, sample=sample)
            norm = (value - ref["random"]) / (ref["expert"] - ref["random"])
            res.update(zip(keys, (value, se, norm)))
            print(f"{mode}: return {value:.2f} +- {se:.2f} (s.e., 200 episodes), normalized {norm:.3f}")
    if update_row:
        match[-1].update(res)
        print("updated its row in", write_results("mamql", rows, summarize(rows)))


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--envs", nargs="+", default=list(ENVS))
    p.add_argument("--algos", nargs="+", default=list(ALGOS))
    p.add_argument("--sizes", type=int, nargs="+", default=[1000, 5000, 20000])
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--first-seed", type=int, default=0, help="seeds run are first-seed .. first-seed + seeds - 1 "
                   "(add seeds to a --keep-rows file)")
    p.add_argument("--env-steps", type=int, default=60_000, help="agent steps of online interaction per run")
    p.add_argument("--samples-per-insert", type=float, default=32,
                   help="replay rate limit: updates x batch per inserted agent step (sets the number of updates)")
    p.add_argument("--batch-size", type=int, default=256, help="online rows per update (and as many expert rows)")
    p.add_argument("--no-augment", dest="augment", action="store_false",
                   help="turn off the env's demonstration augmentation (gems: the grid's symmetries; on by default)")
    p.add_argument("--lr", type=float, default=1e-3, help="critic learning rate (Adam)")
    p.add_argument("--gamma", type=float, default=0.99, help="the critic's discount (MAMQL's and the baselines')")
    p.add_argument("--acting-polyak", type=float, default=0.01,
                   help="act and evaluate with a Polyak average of the critic (tau; 0 = the critic itself)")
    p.add_argument("--keep-rows", action="store_true", help="add to the results file's rows instead of replacing "
                   "them (each row records its own command)")
    p.add_argument("--value-data", choices=["expert_and_online", "online"], default="expert_and_online")
    p.add_argument("--transfer-steps", type=int, default=60_000, help="agent steps for reward-transfer R2D2 runs")
    p.add_argument("--transfer-samples-per-insert", type=float, default=4,
                   help="replay rate limit of the transfer runs (updates x batch per inserted agent step)")
    p.add_argument("--torso", choices=["mlp", "conv", "entities"], default="entities",
                   help="critic torso; conv and entities apply to envs with a map_shape (gems), the others keep "
                   "the MLP")
    p.add_argument("--conv-channels", type=int, nargs="+", default=[16, 32, 32])
    p.add_argument("--conv-strides", type=int, nargs="+", default=[2, 2, 2])
    p.add_argument("--workdir", help="keep demonstrations and run directories here (default: a temporary directory, "
                   "removed at the end); a kept run can be re-scored with --evaluate")
    p.add_argument("--evaluate", metavar="RUN_DIR", help="only evaluate a saved run of --envs' first env (200 "
                   "episodes, greedy and sampled) and print its return")
    p.add_argument("--transfer", metavar="RUN_DIR", help="only run reward transfer from a saved run of --envs' first "
                   "env (R2D2 for --transfer-steps on its rhat) and print the true return")
    p.add_argument("--transfer-reference", action="store_true", help="only train the transfer agent (R2D2, "
                   "--transfer-steps) on --envs' true reward for --seeds seeds: the reference for transfer returns; "
                   "adds its rows to the results file")
    p.add_argument("--update-row", action="store_true", help="with --evaluate or --transfer: write the result into "
                   "the results file's row of that run (same algorithm, expert steps, seed)")
    p.add_argument("--learner-threads", type=int, default=min(2, os.cpu_count() or 1),
                   help="torch threads of the learner (on 2 cores, 2 make a Gems MAMQL update 1.4x faster alone; "
                   "online, sharing the cores with the runner and replay, a run makes ~3.3 updates/s either way)")
    p.add_argument("--summary-only", action="store_true",
                   help="recompute the results file's summary from its rows (default-setting rows) and print it")
    return p


def main() -> None:
    args = build_parser().parse_args()
    command = command_line("mamql")
    if args.evaluate or args.transfer:
        evaluate_run(args.evaluate or args.transfer, args.envs[0], args.update_row, command,
                     args.transfer_steps if args.transfer else 0, args.transfer_samples_per_insert)
        return
    if args.transfer_reference:
        rows = previous_rows("mamql")
        for name in args.envs:
            for seed in range(args.first_seed, args.first_seed + args.seeds):
                with tempfile.TemporaryDirectory(prefix="rlfleet-transfer-") as root:
                    res = reward_transfer(None, name, root, args.transfer_steps, seed, args.transfer_samples_per_insert)
                rows.append({"system": "r2d2-true-reward", "env": name, "setting": "transfer reference", "seed": seed,
                             "metric": "return", "value": res["transfer_return"], "command": command, **res})
                print(f"{name} seed {seed}: R2D2 on the true reward, {args.transfer_steps} agent steps: "
                      f"{res['transfer_return']:.2f} +- {res['transfer_se']:.2f}", flush=True)
                write_results("mamql", rows, summarize(rows))
        return
    if args.summary_only:  # each row keeps its own command; the file's top-level command becomes this one
        rows = previous_rows("mamql")
        write_results("mamql", rows, summarize(rows))
        print(json.dumps(summarize(rows), indent=1))
        return
    rows: list[dict] = [r for r in previous_rows("mamql") if r["system"] not in ("expert", "random")
                        or r["env"] not in args.envs] if args.keep_rows else []
    if args.workdir:
        Path(args.workdir).mkdir(parents=True, exist_ok=True)
    with (contextlib.nullcontext(args.workdir) if args.workdir else tempfile.TemporaryDirectory(prefix="rlfleet-mamql-")) as root:
        for name in args.envs:
            env = ENVS[name]
            demo_file, heldout = f"{root}/{name}.parquet", f"{root}/{name}-heldout.parquet"
            demos.record(env["id"], env["expert"], max(args.sizes), demo_file, env["kwargs"], seed=0)
            demos.record(env["id"], env["expert"], 2000, heldout, env["kwargs"], seed=999_000)
            expert, rand = scripted_return(env, env["expert"]), scripted_return(env, None)
            rows += [{"system": "expert", "env": name, "setting": "scripted", "metric": "return", "value": expert},
                     {"system": "random", "env": name, "setting": "uniform", "metric": "return", "value": rand}]
            for size in args.sizes:
                for algo in args.algos:
                    for seed in range(args.first_seed, args.first_seed + args.seeds):
                        cfg = base_config(env, root, seed, args.env_steps, args.samples_per_insert)
                        cfg["name"] = f"{name}-{algo}-{size}-s{seed}"
                        cfg["learner"] = {"torch_threads": args.learner_threads}
                        cfg["algorithm"] = {"name": algo, "demos": demo_file, "demo_steps": size,
                                            "batch_size": args.batch_size, "hidden": [128, 128], "lr": args.lr,
                                            "gamma": args.gamma,
                                            "value_data": args.value_data, "acting_polyak": args.acting_polyak}
                        if args.augment and env.get("augment"):
                            cfg["algorithm"].update(augment=env["augment"], map_shape=env["map_shape"])
                        if args.torso != "mlp" and env.get("map_shape"):  # the others keep the MLP
                            cfg["algorithm"].update(torso=args.torso, map_shape=env["map_shape"])
                            if args.torso == "conv":
                                cfg["algorithm"].update(conv_channels=args.conv_channels, conv_strides=args.conv_strides)
                        s = rlfleet.train(cfg)
                        row = {"system": algo, "env": name, "setting": f"{size} expert steps", "expert_steps": size,
                               "torso": cfg["algorithm"].get("torso", "mlp"),
                               "seed": seed, "env_steps": s["env_steps"], "updates": s["updates"],
                               "wall_s": round(s["wall_s"], 1), "learner_threads": args.learner_threads,
                               "samples_per_insert": args.samples_per_insert,
                               "batch_size": args.batch_size, "value_data": args.value_data, "lr": args.lr,
                               "gamma": args.gamma, "acting_polyak": args.acting_polyak,
                               "evals": [[e["env_steps"], round(e["return_mean"], 2)] for e in s["evals"]],
                               "command": command, "augment": cfg["algorithm"].get("augment"),
                               "metric": "return", "eval_episodes": 200,
                               "normalized": None, "reward_pearson": None, "reward_mse": None,
                               "transfer_return": None}
                        row["value"], row["value_se"] = true_return(s["run_dir"], env)
                        row["sampled_return"], row["sampled_se"] = true_return(s["run_dir"], env, sample=True)
                        row["normalized"] = (row["value"] - rand) / (expert - rand)
                        row["sampled_normalized"] = (row["sampled_return"] - rand) / (expert - rand)
                        if algo != "bc":
                            row.update(reward_recovery(s["run_dir"], heldout))
                            if args.transfer_steps:
                                row.update(reward_transfer(s["run_dir"], name, root, args.transfer_steps,
                                                           samples_per_insert=args.transfer_samples_per_insert))
                        rows.append(row)
                        print({k: v for k, v in row.items()}, flush=True)
                        write_results("mamql", rows, summarize(rows))
    print(table([[r["env"], r["system"], r.get("expert_steps"), r.get("seed"), r["value"], r.get("normalized"),
                  r.get("sampled_normalized"), r.get("reward_pearson"), r.get("reward_mse"),
                  r.get("reward_mse_constant"), r.get("reward_expert_action_top"), r.get("transfer_return")]
                 for r in rows],
                ["env", "system", "expert steps", "seed", "true return", "normalized", "sampled norm.",
                 "rhat pearson", "rhat mse", "const. mse", "a_E top", "transfer return"]))
    print("wrote", write_results("mamql", rows, summarize(rows)))


def default_setting(r: dict) -> bool:
    """Rows run with the script's default training settings, read from its argument parser (the
    summary's; --keep-rows files also hold variants, each row recording its command). A key an older
    row lacks counts as the value it ran with then."""
    d, env = build_parser().parse_args([]), ENVS[r["env"]]
    return (r.get("lr", 1e-3) == d.lr and r.get("gamma", 0.99) == d.gamma
            and r.get("augment") == (env.get("augment") if d.augment else None)
            and r.get("acting_polyak", 0.0) == d.acting_polyak
            and r.get("torso", "mlp") == (d.torso if env.get("map_shape") else "mlp")
            and r.get("samples_per_insert") == d.samples_per_insert
            and r.get("batch_size") == d.batch_size and r.get("value_data") == d.value_data)


def summarize(rows: list[dict]) -> dict:
    def mean(env, algo, size, key):
        vals = [r[key] for r in rows if r["env"] == env and r["system"] == algo and r.get("expert_steps") == size
                and r.get(key) is not None and default_setting(r)]
        return float(np.mean(vals)) if vals else None

    return {"gems_20k_mamql_normalized_return": mean("gems", "mamql", 20000, "normalized"),
            "gems_20k_mamql_sampled_normalized_return": mean("gems", "mamql", 20000, "sampled_normalized"),
            "gems_1k_mamql_return": mean("gems", "mamql", 1000, "value"),
            "gems_1k_iqlma_return": mean("gems", "iql-ma", 1000, "value"),
            "spread_20k_mamql_normalized_return": mean("spread", "mamql", 20000, "normalized"),
            "gems_mamql_reward_pearson": mean("gems", "mamql", 20000, "reward_pearson"),
            "gems_iqlma_reward_pearson": mean("gems", "iql-ma", 20000, "reward_pearson")}


if __name__ == "__main__":
    run_main(main)
