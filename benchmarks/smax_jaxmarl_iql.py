"""Reference: JaxMARL's own IQL baseline (recurrent, the authors' SMAX settings) on the same SMAX battles.

What rlfleet's R2D2 win rate on SMAX should be compared with at the same budget: JaxMARL's
`baselines/QLearning/iql_rnn.py`, unchanged, with `config/alg/ql_rnn_smax.yaml` (GRU 512, 16 envs x 128
steps per update, 8 epochs, lr 5e-5, rewards x10, epsilon 1 -> 0.05 over the first 10% of updates),
only the map and the total budget changed. Its greedy test win rate (512 battles, every 5% of training)
is recorded against env steps (JaxMARL counts env steps: x3 for 3m's agent steps) as it arrives.
The script is not vendored: it needs a JaxMARL checkout and the baseline's extra packages.

    git clone https://github.com/FLAIROx/JaxMARL /opt/JaxMARL
    pip install --no-deps flashbax && pip install hydra-core omegaconf
    python benchmarks/smax_jaxmarl_iql.py --jaxmarl /opt/JaxMARL --map 3m --env-steps 1000000

Writes benchmarks/results/smax_jaxmarl_iql.json (summary.win_rate: map -> last test win rate).
"""
from __future__ import annotations

import argparse
import copy
import sys
import time
import types
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import write_results, run_main  # noqa: E402


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--jaxmarl", required=True, help="a JaxMARL checkout (has baselines/QLearning/iql_rnn.py)")
    p.add_argument("--map", default="3m")
    p.add_argument("--env-steps", type=float, default=1e6, help="JaxMARL's TOTAL_TIMESTEPS (env steps)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    import yaml

    qdir = Path(args.jaxmarl) / "baselines" / "QLearning"
    if not (qdir / "iql_rnn.py").is_file():
        sys.exit(f"error: --jaxmarl {args.jaxmarl}: no baselines/QLearning/iql_rnn.py there")
    rows: list[dict] = []
    t0 = time.time()
    agents_per_env = None

    def log(metrics, *a, **k):  # stands in for wandb.log: a row per new test result
        m = {key: float(v) for key, v in metrics.items() if getattr(v, "ndim", 0) == 0}
        if "test_returned_won_episode" not in m or (rows and rows[-1]["update"] == m["update_steps"]):
            return
        if rows and rows[-1]["value"] == m["test_returned_won_episode"] and rows[-1]["test_return"] == \
                m.get("test_returned_episode_returns"):
            return  # the test result is carried between tests: not a new measurement
        rows.append({"system": "jaxmarl-iql-rnn", "setting": args.map, "seed": args.seed,
                     "env_steps": int(m["env_step"]) * agents_per_env, "jaxmarl_env_steps": int(m["env_step"]),
                     "update": m["update_steps"], "wall_s": round(time.time() - t0, 1), "metric": "win_rate",
                     "value": m["test_returned_won_episode"], "test_return": m.get("test_returned_episode_returns")})
        print(f"[{args.map}] env steps {rows[-1]['jaxmarl_env_steps']:>9} (agent steps {rows[-1]['env_steps']:>9})  "
              f"wall {rows[-1]['wall_s']:>7.0f} s  greedy win rate {rows[-1]['value']:.2f}", flush=True)
        write_results("smax_jaxmarl_iql", rows, {"win_rate": {args.map: rows[-1]["value"]}})

    sys.modules["wandb"] = types.SimpleNamespace(log=log, init=lambda *a, **k: None, finish=lambda *a, **k: None,
                                                 login=lambda *a, **k: None)
    sys.path.insert(0, str(qdir))
    import jax
    import iql_rnn

    alg = yaml.safe_load((qdir / "config" / "alg" / "ql_rnn_smax.yaml").read_text())
    config = {"NUM_SEEDS": 1, "SEED": args.seed, "HYP_TUNE": False, "ENTITY": "", "PROJECT": "",
              "WANDB_MODE": "online", "WANDB_LOG_ALL_SEEDS": False, "SAVE_PATH": None,
              **alg, "MAP_NAME": args.map, "TOTAL_TIMESTEPS": args.env_steps}
    env, _ = iql_rnn.env_from_config(copy.deepcopy(config))
    agents_per_env = len(env.agents)
    train = jax.jit(jax.vmap(iql_rnn.make_train(config, env)))
    jax.block_until_ready(train(jax.random.split(jax.random.PRNGKey(args.seed), 1)))
    print(f"[{args.map}] done in {time.time() - t0:.0f} s; last greedy win rate {rows[-1]['value'] if rows else None}")


if __name__ == "__main__":
    run_main(main)
