"""`rlfleet sweep`: one experiment YAML with a `sweep:` block, run as Ray Tune trials.

Each trial is a Tune function trainable that runs the ordinary rlfleet driver on the same Ray
cluster. Its actors go into the trial's placement group (one bundle per actor, sized from the config
by placement.trial_bundles), so Tune starts a trial only when all of its actors fit. Its run dir
lives inside the Tune trial dir, it reports every metrics record to Tune and hands each rlfleet
checkpoint to Tune, and a failed trial (FailureConfig.max_failures) is restarted from its last
checkpoint through the ordinary --resume path.
"""
from __future__ import annotations

import copy
import math
import sys
import time
from pathlib import Path

from rlfleet.platform import checkpoint as ckpt
from rlfleet.platform.config import SweepConfig, build_config, load_config, resolved_dict, set_path
from rlfleet.platform.errors import UserError, did_you_mean

# Keys of the driver's metrics records (driver.Experiment.run), any of which can rank trials.
METRICS = ("eval_return", "episode_return", "episode_return_100", "env_steps_per_s", "updates_per_s",
           "env_steps", "updates", "episodes", "wall_s", "runner_restarts", "replay_size",
           "replay_samples_per_insert")
METRIC_PREFIXES = ("learner.", "runner_time.", "learner_time.")


def _samples(param) -> list:
    """Values that stand for a parameter's whole range when validating it."""
    return list(param.value) if param.kind in ("grid", "choice", "uniform", "loguniform") else \
        [param.randint[0], param.randint[1] - 1]


def check_sweep(raw: dict, sweep: SweepConfig, source: str) -> None:
    """Reject a sweep that could only fail later, inside a trial: unknown metric, a search that
    cannot take a parameter kind, or values the experiment config itself would refuse."""
    if sweep.metric not in METRICS and not sweep.metric.startswith(METRIC_PREFIXES):
        raise UserError(f"{source}: invalid value for 'sweep.metric': unknown metric {sweep.metric!r}"
                        f"{did_you_mean(sweep.metric, METRICS)}")
    for key, param in sweep.params.items():
        if sweep.search == "grid" and param.kind not in ("grid", "choice"):
            raise UserError(f"{source}: 'sweep.params.{key}': search: grid takes only grid or choice, got {param.kind}")
        if sweep.search == "optuna" and param.kind == "grid":
            raise UserError(f"{source}: 'sweep.params.{key}': search: optuna samples, it has no grid; use choice")
        for value in _samples(param):
            trial_raw = copy.deepcopy(raw)
            trial_raw.pop("sweep", None)
            set_path(trial_raw, key, value)
            build_config(trial_raw, source=f"{source} (sweep.params.{key} = {value!r})")
    if sweep.search == "optuna":
        try:
            import optuna  # noqa: F401
        except ImportError:
            raise UserError(f"{source}: sweep.search: optuna needs the optuna package: "
                            "pip install 'rlfleet[sweep]'") from None


def search_space(sweep: SweepConfig) -> dict:
    from ray import tune

    grid_all = sweep.search == "grid"
    make = {"grid": tune.grid_search, "choice": tune.grid_search if grid_all else tune.choice,
            "uniform": lambda b: tune.uniform(*b), "loguniform": lambda b: tune.loguniform(*b),
            "randint": lambda b: tune.randint(*b)}
    return {key: make[p.kind](list(p.value)) for key, p in sweep.params.items()}


class TuneReporter:
    """Driver hook: every metrics record and every checkpoint goes to Tune (tune.report)."""

    def __init__(self, metric: str):
        self.metric = metric
        self.last: dict = {}

    def report(self, record: dict, path: Path | None = None) -> None:
        from ray import tune

        metrics = {k: v for k, v in record.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        metrics.setdefault(self.metric, float("nan"))  # Tune insists on the metric in every result
        self.last = metrics
        tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(str(path)) if path else None)

    def on_metrics(self, record: dict) -> None:
        self.report(record)

    def on_checkpoint(self, path: Path) -> None:
        """Reported at once: Tune copies the directory before rlfleet's rotation could delete it."""
        self.report(self.last, path)


def trial_run_dir(name: str) -> Path:
    """The trial's rlfleet run dir: inside the trial dir of Tune's storage when that is a file
    system path (shared, e.g. NFS, on a multi-node cluster); inside the trial's local working dir,
    which Tune uploads (SyncConfig(sync_artifacts=True)), when storage is a URI such as s3://.
    get_trial_dir() is neither: it is a staging dir on the node the trial runs on."""
    import pyarrow.fs
    from ray import tune

    ctx = tune.get_context()
    storage = ctx.get_storage()
    local = isinstance(storage.storage_filesystem, pyarrow.fs.LocalFileSystem)
    return Path(storage.trial_fs_path if local else storage.trial_working_directory) / f"{name}-{ctx.get_trial_id()}"


def run_trial(params: dict, base_raw: dict, source: str, metric: str) -> None:
    """The Tune function trainable: one rlfleet run with `params` applied to the base config."""
    from ray import tune

    from rlfleet.platform.driver import Experiment, check_replay

    raw = copy.deepcopy(base_raw)
    raw.pop("sweep", None)
    for key, value in params.items():
        set_path(raw, key, value)
    raw.setdefault("logging", {})["progress"] = False  # Tune prints its own table
    cfg, algo_cfg = build_config(raw, source=source)
    check_replay(cfg, algo_cfg)
    run_dir = trial_run_dir(cfg.name)
    run_dir.mkdir(parents=True, exist_ok=True)
    restored = tune.get_checkpoint()
    if restored is not None:  # a restarted trial: its last checkpoint, wherever Tune kept it
        with restored.as_directory() as d:
            ckpt.adopt_checkpoint(Path(d), run_dir / "checkpoints")
    resume = bool(ckpt.list_checkpoints(run_dir / "checkpoints"))
    reporter = TuneReporter(metric)
    exp = Experiment(cfg, algo_cfg, resolved_dict(cfg, algo_cfg), run_dir, resume=resume, reporter=reporter)
    summary = exp.run()
    final = {**reporter.last, "env_steps": summary["env_steps"], "updates": summary["updates"],
             "episodes": summary["episodes"], "runner_restarts": summary["runner_restarts"], "resumes": exp.resumes}
    if summary["evals"]:
        final["eval_return"] = summary["evals"][-1]["return_mean"]
    reporter.report(final)


def _storage_path(path: str) -> str:
    return path if "://" in path else str(Path(path).expanduser().resolve())


def sweep(config: str, overrides: list[str] | None = None, address: str | None = None) -> tuple[int, list[dict]]:
    """Run the sweep of `config`; returns (exit code, one row per trial) after printing the table."""
    from ray import tune

    from rlfleet.platform.driver import check_replay, ensure_ray
    from rlfleet.platform.placement import trial_bundles

    cfg, algo_cfg, resolved = load_config(config, overrides)
    if cfg.sweep is None:
        raise UserError(f"{config}: no 'sweep:' block; `rlfleet train` runs a single experiment (see docs/cluster.md)")
    sw = cfg.sweep
    check_sweep(resolved, sw, config)
    check_replay(cfg, algo_cfg)
    ensure_ray(cfg, address, trials=sw.max_concurrent or 1)
    bundles, strategy = trial_bundles(cfg)
    base_raw, source, metric = resolved, config, sw.metric

    def rlfleet_trial(params):  # a closure: Tune pickles it with the base config inside
        run_trial(params, base_raw, source, metric)

    search_alg = None
    if sw.search == "optuna":
        from ray.tune.search.optuna import OptunaSearch

        search_alg = OptunaSearch()
    name = sw.name or f"{cfg.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    tuner = tune.Tuner(
        tune.with_resources(rlfleet_trial, tune.PlacementGroupFactory(bundles, strategy=strategy)),
        param_space=search_space(sw),
        tune_config=tune.TuneConfig(metric=sw.metric, mode=sw.mode, num_samples=sw.num_samples,
                                    max_concurrent_trials=sw.max_concurrent, search_alg=search_alg),
        run_config=tune.RunConfig(name=name, storage_path=_storage_path(sw.storage_path),
                                  sync_config=tune.SyncConfig(sync_artifacts=True),
                                  failure_config=tune.FailureConfig(max_failures=sw.max_failures),
                                  checkpoint_config=tune.CheckpointConfig(num_to_keep=2), verbose=1))
    results = tuner.fit()
    rows = [_row(r, sw) for r in results]
    print_table(rows, list(sw.params), sw.metric, sw.mode)
    print(f"results: {results.experiment_path}   (tensorboard --logdir {results.experiment_path})")
    return (1 if any(r["error"] for r in rows) else 0), rows


def _row(result, sw: SweepConfig) -> dict:
    metrics = result.metrics or {}
    history = result.metrics_dataframe
    values = [] if history is None or sw.metric not in history else \
        [v for v in history[sw.metric].tolist() if isinstance(v, (int, float)) and not math.isnan(v)]
    best = (max if sw.mode == "max" else min)(values) if values else None
    return {"trial": metrics.get("trial_id", "?"),
            "params": {k: result.config.get(k) for k in sw.params}, "best": best,
            "last": metrics.get(sw.metric), "env_steps": metrics.get("env_steps"),
            "resumes": metrics.get("resumes", 0), "error": str(result.error).splitlines()[0] if result.error else None,
            "path": result.path}


def print_table(rows: list[dict], params: list[str], metric: str, mode: str, out=None) -> None:
    """Trials, best first: parameters, best and last value of the metric, env steps, restarts."""
    out = out or sys.stdout
    sign = -1 if mode == "max" else 1
    rows = sorted(rows, key=lambda r: (r["best"] is None, sign * (r["best"] or 0.0)))

    def fmt(v):
        return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else \
            f"{v:.4g}" if isinstance(v, float) else str(v)

    header = ["trial", *params, f"best {metric}", f"last {metric}", "env_steps", "resumes", "status"]
    table = [[r["trial"], *[fmt(r["params"][p]) for p in params], fmt(r["best"]), fmt(r["last"]),
              fmt(r["env_steps"]), fmt(r["resumes"]), "ERROR" if r["error"] else "ok"] for r in rows]
    widths = [max(len(str(c)) for c in col) for col in zip(header, *table)]
    for line in [header, *table]:
        print("  ".join(str(c).ljust(w) for c, w in zip(line, widths)).rstrip(), file=out)
