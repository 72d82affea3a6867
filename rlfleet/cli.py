"""The `rlfleet` command. User errors print one line and exit 2, with no traceback."""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from rlfleet.platform.errors import UserError


def _train(args) -> int:
    from rlfleet.platform.config import (build_config, load_config, load_raw, parse_overrides, reject_sweep,
                                         resolved_dict, set_path)
    from rlfleet.platform.driver import train

    if args.resume:
        run_dir = Path(args.resume)
        cfg_path = run_dir / "config.yaml"
        if not cfg_path.is_file():
            raise UserError(f"--resume {run_dir}: not a run directory (no config.yaml)")
        raw = load_raw(cfg_path)
        for key, value in parse_overrides(args.set):
            set_path(raw, key, value)
        cfg, algo_cfg = build_config(raw, source=str(cfg_path))
        resolved = resolved_dict(cfg, algo_cfg)
    else:
        if not args.config:
            raise UserError("train: give a CONFIG file (or --resume RUN_DIR)")
        cfg, algo_cfg, resolved = load_config(args.config, args.set)
        reject_sweep(cfg, args.config)
    if args.quiet:
        cfg.logging.progress = False
    summary = train(cfg, algo_cfg, resolved, args.resume, address=args.address)
    last = summary["evals"][-1]["return_mean"] if summary["evals"] else None
    print(json.dumps({k: summary[k] for k in ("run_dir", "stop_reason", "env_steps", "updates", "wall_s")}
                     | {"final_eval_return": last}))
    return 0


def _submit(args) -> int:
    from rlfleet.cluster.submit import submit

    return submit(args.config, args.set, args.address, wait=not args.no_wait)


def _sweep(args) -> int:
    from rlfleet.platform.sweep import sweep

    code, _ = sweep(args.config, args.set, args.address)
    return code


def _eval(args) -> int:
    from rlfleet.evaluate import evaluate

    report = evaluate(args.path, episodes=args.episodes, success_threshold=args.success_threshold,
                      render=args.render, out=args.out)
    line = f"return {report['return_mean']:.2f} +- {report['return_std']:.2f} over {args.episodes} episodes"
    if "success_rate" in report:
        line += f", success {report['success_rate']:.0%}"
    if "agent_returns" in report:
        line += "; per agent: " + ", ".join(f"{a} {r:+.2f}" for a, r in report["agent_returns"].items())
    if "agent_returns_vs_random" in report:  # zero-sum self-play averages to ~0: this is the skill measure
        line += "; vs random opponents: " + ", ".join(f"{a} {r:+.2f}"
                                                      for a, r in report["agent_returns_vs_random"].items())
    print(line)
    print(json.dumps(report))
    return 0


def _plot(args) -> int:
    from rlfleet.plot import plot

    print(plot(args.run_dirs, metric=args.metric, out=args.out))
    return 0


def _demos_record(args) -> int:
    from rlfleet import demos

    try:
        kwargs = json.loads(args.env_kwargs) if args.env_kwargs else {}
    except json.JSONDecodeError as e:
        raise UserError(f"--env-kwargs is not JSON: {e}") from None
    expert = demos.load_expert(args.expert)
    if not args.env and not hasattr(expert, "make_env"):
        raise UserError("demos record: --env is required with a scripted expert")
    meta = demos.record(args.env or "", expert, args.steps, args.out, kwargs, seed=args.seed, expert_name=args.expert)
    print(json.dumps({"out": str(args.out), "steps": meta["steps"], "episodes": meta["episodes"],
                      "agents": meta["agents"]}))
    return 0


def _list(args) -> int:
    from rlfleet.platform.registry import describe_algorithms, describe_envs

    rows = describe_algorithms() if args.command == "algos" else describe_envs()
    width = max(len(r["name"]) for r in rows)
    for r in rows:
        status = "" if r["available"] else f"  [missing: {r['missing']}; pip install 'rlfleet[{r['extra']}]']"
        print(f"{r['name']:<{width}}  {r['source']}  {r['description']}{status}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="rlfleet", description="Distributed actor-learner RL on Ray")
    sub = p.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train", help="run an experiment from a YAML config")
    t.add_argument("config", nargs="?", help="experiment YAML (see configs/)")
    t.add_argument("--set", action="append", metavar="KEY.PATH=VALUE", help="override a config value (repeatable)")
    t.add_argument("--resume", metavar="RUN_DIR", help="continue a run from its newest checkpoint")
    t.add_argument("--quiet", action="store_true", help="no progress display")
    t.add_argument("--address", help="attach to this Ray cluster (as ray.init(address=...); default: RAY_ADDRESS, "
                                      "else an embedded local Ray)")
    t.set_defaults(func=_train)

    s = sub.add_parser("submit", help="run an experiment (or sweep) on a Ray cluster as a Ray job")
    s.add_argument("config", help="experiment YAML")
    s.add_argument("--address", help="Ray dashboard / Jobs API address, e.g. http://127.0.0.1:8265 "
                                      "(default: RAY_ADDRESS, else http://127.0.0.1:8265)")
    s.add_argument("--set", action="append", metavar="KEY.PATH=VALUE", help="override a config value (repeatable)")
    s.add_argument("--no-wait", action="store_true", help="print the job id and return; do not follow the logs")
    s.set_defaults(func=_submit)

    w = sub.add_parser("sweep", help="run the config's sweep: block as Ray Tune trials")
    w.add_argument("config", help="experiment YAML with a sweep: block")
    w.add_argument("--set", action="append", metavar="KEY.PATH=VALUE", help="override a config value (repeatable)")
    w.add_argument("--address", help="attach to this Ray cluster (default: RAY_ADDRESS, else an embedded local Ray)")
    w.set_defaults(func=_sweep)

    e = sub.add_parser("eval", help="greedy evaluation of a saved agent (run dir or checkpoint dir)")
    e.add_argument("path", help="run directory (newest checkpoint) or checkpoints/ckpt-* directory")
    e.add_argument("--episodes", type=int, default=20)
    e.add_argument("--success-threshold", type=float, help="an episode with return >= this counts as a success")
    e.add_argument("--render", action="store_true", help="save one rendered episode as a GIF")
    e.add_argument("--out", help="where eval-*.json (and the GIF) go (default: the run directory)")
    e.set_defaults(func=_eval)

    pl = sub.add_parser("plot", help="PNG learning curves of runs (seeds of one experiment: mean and spread)")
    pl.add_argument("run_dirs", nargs="+")
    pl.add_argument("--metric", default="eval_return", help="a metrics.jsonl key (default eval_return)")
    pl.add_argument("--out", default="curves.png")
    pl.set_defaults(func=_plot)

    d = sub.add_parser("demos", help="demonstrations")
    dsub = d.add_subparsers(dest="demos_command", required=True)
    rec = dsub.add_parser("record", help="record an expert's demonstrations to a Parquet file")
    rec.add_argument("--env", help="env name (not needed with a checkpoint expert: it brings its own)")
    rec.add_argument("--env-kwargs", help="JSON object passed to the env factory")
    rec.add_argument("--expert", required=True, help="scripted:MODULE:FN or checkpoint:RUN_DIR")
    rec.add_argument("--steps", type=int, required=True, help="env steps to record (whole episodes)")
    rec.add_argument("--out", required=True, help="output .parquet file")
    rec.add_argument("--seed", type=int, default=0)
    rec.set_defaults(func=_demos_record)

    for name, what in (("envs", "registered envs and env families"), ("algos", "registered algorithms")):
        ls = sub.add_parser(name, help=f"list {what}, with their source and whether their extras are installed")
        ls.set_defaults(func=_list)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if os.getcwd() not in sys.path:  # dotted paths (`env: my_envs:make_env`) resolve from the cwd, as with
        sys.path.append(os.getcwd())  # `python -m rlfleet` (uvicorn and gunicorn do the same)
    try:
        return args.func(args)
    except UserError as e:
        print(f"rlfleet: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("rlfleet: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
