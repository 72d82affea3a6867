"""SMAX win rate of R2D2 with parameter sharing vs the heuristic enemy, against env steps and wall-clock.

For each scenario: train with configs/smax_<scenario>_r2d2.yaml (checkpoints every --checkpoint-s,
all kept), then play every checkpoint greedily for >= --episodes battles on fresh battles and count
wins (all enemies dead, one of ours alive). Writes benchmarks/results/smax.json
(summary.win_rate: scenario -> final win rate, the mean over seeds when `--seed` added runs;
summary.win_rate_by_seed: each run's). Targets: >= 0.9 on 3m, >= 0.7 on 2s3z.

    python benchmarks/smax.py --scenarios 3m 2s3z --time-s 1800
    python benchmarks/smax.py --scenarios 3m --resume RUN_DIR --env-steps 5000000 --time-s 3600   # train on
    python benchmarks/smax.py --scenarios 3m 2s3z --references-only   # scripted policies' win rates
    python benchmarks/smax.py --scenarios 3m --set env.kwargs.dead_agents=sit_out   # a variant's rows
    python benchmarks/smax.py --scenarios 2s3z --seed 1   # another seed: rows beside seed 0's, not replacing them

`--references` adds two scripted policies for our side, as a scale for what a policy without
learned micro wins: focus fire (every unit shoots the weakest enemy in range, else walks to the
nearest visible enemy, else to the map centre) and the same shooting the nearest enemy in range
(close to the enemy's own heuristic).
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import command_line, previous_rows, run_main, write_results  # noqa: E402

TARGETS = {"3m": 0.9, "2s3z": 0.7}
LEARNER = "rlfleet-r2d2-shared"


def win_rate(policy, scenario: str, env_kwargs: dict, episodes: int, seed: int, num_envs: int = 50) -> dict:
    """Greedy battles, a fixed quota per env (short battles are not over-represented)."""
    from rlfleet.envs.smax import SmaxBatch

    batch = SmaxBatch(num_envs, seed, scenario, **env_kwargs)
    K = batch.K
    quota = np.full(num_envs, -(-episodes // num_envs))
    wins, ended, returns = 0, 0, []
    obs = batch.reset()
    n = len(batch)
    state, init = policy.initial_state(n), policy.initial_state(1)
    prev_a, prev_r = np.zeros(n, np.int64), np.zeros(n, np.float32)
    ret = np.zeros(num_envs)
    legal = batch.action_mask
    rng = np.random.default_rng(seed)
    while (quota > 0).any():
        actions, state = policy.act(obs, prev_a, prev_r, state, np.zeros(n), rng, action_mask=legal)
        res = batch.step(actions)
        ret += res.reward.reshape(num_envs, K).max(1)  # the team reward (every live agent gets it)
        prev_a, prev_r = actions, res.reward.astype(np.float32)
        for e in np.flatnonzero(batch.last_done):
            if quota[e] > 0:
                quota[e] -= 1
                ended += 1
                wins += int(batch.last_won[e])
                returns.append(ret[e])
            ret[e] = 0.0
            rows = slice(e * K, (e + 1) * K)
            for s, s0 in zip(state, init):
                s[rows] = s0[0]
            prev_a[rows], prev_r[rows] = 0, 0.0
        obs, legal = res.obs, res.action_mask
    return {"episodes": ended, "wins": wins, "win_rate": wins / ended, "team_return": float(np.mean(returns))}


class ScriptedPolicy:
    """Focus fire ("weakest") or nearest-target ("closest") micro from each unit's own observation.

    SMAX's unit-list observation: (allies - 1 + enemies) blocks of unit features (health, relative x,
    relative y, ...; zero when out of sight) then the unit's own features (health, x, y, ...) with
    positions scaled to the map; attack action 5 + j is legal when enemy j is in range."""

    MOVES = np.array([[0, 1], [1, 0], [0, -1], [-1, 0]], float)  # SMAX's move actions 0-3; 4 = stop

    def __init__(self, env, target: str):
        self.nf, self.na, self.ne = len(env.unit_features), env.num_allies, env.num_enemies
        self.target = target

    def initial_state(self, n):
        return ()

    def act(self, obs, prev_a, prev_r, state, epsilon, rng, action_mask=None):
        nf, na, ne = self.nf, self.na, self.ne
        first, own = (na - 1) * nf, (na - 1 + ne) * nf
        health = obs[:, first:own:nf]
        rel = np.stack([obs[:, first + 1:own:nf], obs[:, first + 2:own:nf]], -1)
        dist = np.linalg.norm(rel, axis=-1)
        shoot = action_mask[:, 5:5 + ne]
        key = health + 1e-3 * dist if self.target == "weakest" else dist
        attack = 5 + np.where(shoot, key, np.inf).argmin(1)
        seen = health > 0
        towards = np.where(seen.any(1)[:, None], rel[np.arange(len(obs)), np.where(seen, dist, np.inf).argmin(1)],
                           0.5 - obs[:, own + 1:own + 3])
        move = (towards @ self.MOVES.T).argmax(1)
        actions = np.where(shoot.any(1), attack, move)
        return np.where(action_mask[:, :4].any(1), actions, 4).astype(np.int64), state  # dead: stop


def references(scenario: str, cfg_kwargs: dict, episodes: int, seed: int) -> list[dict]:
    from rlfleet.envs.smax import make_smax

    env = make_smax(scenario, cfg_kwargs.get("max_steps", 100))
    rows = []
    for target in ("weakest", "closest"):
        t0 = time.time()
        res = win_rate(ScriptedPolicy(env, target), scenario, cfg_kwargs, episodes, seed=20_000 + seed)
        rows.append({"system": f"scripted-{'focus-fire' if target == 'weakest' else 'closest'}", "setting": scenario,
                     "seed": seed, "env_steps": 0, "wall_s": round(time.time() - t0, 1), "metric": "win_rate",
                     "value": res["win_rate"], "episodes": res["episodes"], "team_return": round(res["team_return"], 3)})
        print(f"[{scenario}] {rows[-1]['system']}: win rate {res['win_rate']:.2f} over {res['episodes']} battles",
              flush=True)
    return rows


def run_scenario(scenario: str, args, root: Path, done: set) -> list[dict]:
    import yaml

    import rlfleet
    import rlfleet.envs.smax  # noqa: F401  (registers smax:)
    from rlfleet.platform import checkpoint as ckpt
    from rlfleet.platform.config import parse_overrides, set_path
    from rlfleet.platform.agent import load_agent

    cfg_path = Path(__file__).resolve().parents[1] / "configs" / f"smax_{scenario}_r2d2.yaml"
    cfg = yaml.safe_load(cfg_path.read_text())
    for key, value in parse_overrides(args.set):  # a variant: its rows carry the overrides
        set_path(cfg, key, value)
    cfg["seed"] = args.seed
    cfg["stop"] = {"env_steps": args.env_steps} if args.env_steps else dict(cfg["stop"])
    if args.time_s:
        cfg["stop"]["time_s"] = args.time_s
    cfg["checkpoint"] = {"interval_s": args.checkpoint_s, "keep": 10_000, "replay": False}
    cfg["logging"] = {"root": str(root), "progress": False}
    t0 = time.time()
    refs = references(scenario, cfg["env"].get("kwargs", {}), max(args.episodes, 1000), args.seed) \
        if args.references or args.references_only else []
    if args.references_only:
        return refs
    if args.eval_only:  # a run that stopped (or was stopped) before this script could evaluate it
        run_dir = args.resume
    else:
        summary = rlfleet.train(cfg, resume=args.resume)  # resume: budgets count from the run's start
        run_dir = summary["run_dir"]
        print(f"[{scenario}] trained: {summary['env_steps']} env steps in {time.time() - t0:.0f} s "
              f"({summary['stop_reason']})", flush=True)
    rows = []
    for path in ckpt.list_checkpoints(Path(run_dir) / "checkpoints"):
        driver = json.loads((path / "driver.json").read_text())
        if int(driver["env_steps"]) in done:  # measured before this run was resumed
            continue
        agent = load_agent(path)
        res = win_rate(agent.policy, scenario, cfg["env"].get("kwargs", {}), args.episodes, seed=10_000 + args.seed)
        row = {"system": system_name(args.set), "setting": scenario, "seed": args.seed,
               "env_steps": int(driver["env_steps"]), "wall_s": round(float(driver["wall_s"]), 1),
               "metric": "win_rate", "value": res["win_rate"], "episodes": res["episodes"],
               "team_return": round(res["team_return"], 3), "command": command_line("smax")}
        rows.append(row)
        print(f"[{scenario}] env_steps {row['env_steps']:>9}  wall {row['wall_s']:>7.0f} s  "
              f"win rate {row['value']:.2f} over {row['episodes']} battles", flush=True)
    return refs + rows


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--scenarios", nargs="+", default=["3m", "2s3z"])
    p.add_argument("--env-steps", type=int, default=None, help="agent steps per scenario (default: the config's)")
    p.add_argument("--time-s", type=float, default=None, help="wall-clock budget per scenario")
    p.add_argument("--checkpoint-s", type=float, default=120.0, help="seconds between evaluated checkpoints")
    p.add_argument("--episodes", type=int, default=100, help="greedy battles per checkpoint (>= 100)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--root", default=None, help="run directories (default: a temp dir)")
    p.add_argument("--resume", default=None, help="continue this run dir (one scenario; its earlier rows are kept)")
    p.add_argument("--eval-only", action="store_true", help="with --resume: only evaluate the run's new checkpoints")
    p.add_argument("--references", action="store_true", help="also measure the scripted policies (1000 battles)")
    p.add_argument("--references-only", action="store_true", help="only measure the scripted policies")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override the scenario's config (as `rlfleet train --set`); the rows are a variant, "
                        "named by the overrides and kept beside the default rows (summary: win_rate_variants)")
    p.add_argument("--summary-only", action="store_true", help="only recompute the results file's summary")
    args = p.parse_args(argv)
    if args.summary_only:
        rows = previous_rows("smax")
        summary = summarize(rows)
        write_results("smax", rows, summary)
        print(json.dumps(summary, indent=1))
        return
    if args.eval_only and not args.resume:
        p.error("--eval-only needs --resume RUN_DIR")
    if args.resume and len(args.scenarios) != 1:
        p.error("--resume continues one scenario's run: pass exactly one --scenarios")
    root = Path(args.root or tempfile.mkdtemp(prefix="smax-bench-"))
    system = system_name(args.set)
    mine = ([r for r in previous_rows("smax") if r["setting"] in args.scenarios and r["system"] == system
             and r["seed"] == args.seed] if args.resume else [])

    def keep(r: dict) -> bool:
        """Rows of the file that this run does not replace."""
        if r["setting"] not in args.scenarios:
            return True
        if r["system"] == system:  # training replaces (or, resumed, carries in `mine`) its seed's rows
            return args.references_only or r["seed"] != args.seed
        if r["system"].startswith(LEARNER):  # other variants of the learner
            return True
        return not (args.references or args.references_only)  # scripted rows stay unless measured again

    for scenario in args.scenarios:
        mine += run_scenario(scenario, args, root, {r["env_steps"] for r in mine if r["setting"] == scenario})
        # re-read: another run may have written meanwhile
        rows = [r for r in previous_rows("smax") if keep(r)] + mine
        write_results("smax", rows, summarize(rows))
    for scenario, w in _final_win_rates([r for r in rows if r["seed"] == args.seed], system).items():
        print(f"{scenario}: final greedy win rate {w} of seed {args.seed} (target {TARGETS.get(scenario)}){' of ' + system if args.set else ''}")


def system_name(overrides: list[str]) -> str:
    """The learner's rows are named by their config overrides: `rlfleet-r2d2-shared[a=1,b=2]`."""
    return f"{LEARNER}[{','.join(overrides)}]" if overrides else LEARNER


def summarize(rows: list[dict]) -> dict:
    """win_rate: the default config's final win rate per scenario (the mean over its seeds' runs);
    win_rate_by_seed: scenario -> {seed: final win rate}; win_rate_variants: each `--set` variant's,
    scenario -> {system: win rate}. A run is one (system, scenario, seed): `--seed` adds a run."""
    variants = {}
    for system in sorted({r["system"] for r in rows if r["system"].startswith(LEARNER + "[")}):
        for scenario, w in _final_win_rates(rows, system).items():
            variants.setdefault(scenario, {})[system] = w
    return {"win_rate": _final_win_rates(rows), "win_rate_by_seed": _final_by_seed(rows),
            "win_rate_variants": variants}


def _final_by_seed(rows: list[dict], system: str = LEARNER) -> dict:
    """scenario -> {seed: win rate of that run's last checkpoint (most env steps)}."""
    last = {}
    for r in sorted(rows, key=lambda r: r["env_steps"]):
        if r["system"] == system:
            last.setdefault(r["setting"], {})[str(r["seed"])] = r["value"]
    return last


def _final_win_rates(rows: list[dict], system: str = LEARNER) -> dict:
    """scenario -> mean over seeds of each run's final win rate."""
    return {sc: round(float(np.mean(list(by_seed.values()))), 3) for sc, by_seed in _final_by_seed(rows, system).items()}


if __name__ == "__main__":
    run_main(main)
