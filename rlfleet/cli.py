"""The `rlfleet` command. User errors print one line and exit 2, with no traceback."""
from __future__ import annotations

import argparse
import json
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
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
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
