"""The experiment driver: builds the actors from the config, runs to the stop budget, watches
health (dead runners are replaced and re-synced), evaluates on a schedule, logs and checkpoints."""
from __future__ import annotations

import json
import os
import time
from collections import deque
from pathlib import Path

import numpy as np
import ray
import yaml

from rlfleet.platform import checkpoint as ckpt
from rlfleet.platform.auth import enable_token_auth_if_available
from rlfleet.platform.config import ExperimentConfig, reject_sweep
from rlfleet.platform.envs import EnvMaker
from rlfleet.platform.errors import UserError, missing_extra
from rlfleet.platform.evaluation import Evaluator
from rlfleet.platform.learner import Learner, ReplayShard
from rlfleet.platform.metrics import MetricsLogger
from rlfleet.platform.placement import (TRIAL_DRIVER_BUNDLE, Placement, actor_runtime_env, check_cluster_resources,
                                        custom_resource_totals, node_info)
from rlfleet.platform.registry import resolve_algorithm
from rlfleet.platform.runner import EnvRunner, apex_epsilons, env_group_sizes

TICK_S = 0.25


def required_cpus(cfg: ExperimentConfig) -> float:
    return (cfg.runners.num_runners * cfg.runners.num_cpus + cfg.replay.num_shards * cfg.replay.num_cpus
            + cfg.learner.num_cpus + (cfg.eval.num_cpus if cfg.eval.interval_env_steps else 0))


def ensure_ray(cfg: ExperimentConfig, address: str | None = None, trials: int = 0) -> None:
    """Attach to `address` (else RAY_ADDRESS) when given, else start an embedded local Ray sized for
    the experiment, or for `trials` concurrent Tune trials of it (logical CPUs may exceed physical
    cores; actors are sized with fractional CPUs). The embedded Ray offers the custom resources the
    config asks for, so a config written for a cluster also runs on one machine."""
    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS")
    runtime_env = actor_runtime_env(cfg) or None  # job-wide too, so Tune trial drivers see plugins
    if address:
        enable_token_auth_if_available()
        ray.init(address=address, runtime_env=runtime_env)
        check_cluster_resources(cfg)
        return
    per_copy = required_cpus(cfg) + (TRIAL_DRIVER_BUNDLE["CPU"] if trials else 0.0)
    num_cpus = max(os.cpu_count() or 1, int(np.ceil(per_copy * max(1, trials))))
    ray.init(num_cpus=num_cpus, resources=custom_resource_totals(cfg, max(1, trials)) or None, runtime_env=runtime_env,
             dashboard_host="127.0.0.1", include_dashboard=False, logging_level="warning", log_to_driver=True)


def check_replay(cfg: ExperimentConfig, algo_cfg) -> None:
    """Settings under which replay could never start sampling, or sampling and inserting
    would block each other for good."""
    r, batch = cfg.replay, getattr(algo_cfg, "batch_size", 1)
    shard_cap = r.capacity // r.num_shards
    if shard_cap < max(r.min_size, batch):
        raise UserError(f"replay.capacity / replay.num_shards = {shard_cap} sequences per shard is below "
                        f"replay.min_size ({r.min_size}) or algorithm.batch_size ({batch})")
    if r.samples_per_insert is not None and r.error_buffer < batch + r.samples_per_insert:
        raise UserError(f"replay.error_buffer ({r.error_buffer}) must be >= algorithm.batch_size + "
                        f"replay.samples_per_insert ({batch + r.samples_per_insert}), or the rate limiter "
                        "can stop both sampling and inserting")


def new_run_dir(cfg: ExperimentConfig) -> Path:
    root = Path(cfg.logging.root)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    run_dir = root / f"{cfg.name}-{stamp}"
    i = 1
    while run_dir.exists():
        run_dir = root / f"{cfg.name}-{stamp}-{i}"
        i += 1
    run_dir.mkdir(parents=True)
    return run_dir


def _node_id(_actor) -> str:
    """Run inside an actor through __ray_call__: which node it landed on."""
    return ray.get_runtime_context().get_node_id()


class Experiment:
    """One run. `reporter` (optional) sees every metrics record and checkpoint; Tune trials use it."""

    def __init__(self, cfg: ExperimentConfig, algo_cfg, resolved: dict, run_dir: Path | None = None,
                 resume: bool = False, reporter=None):
        self.cfg, self.algo_cfg = cfg, algo_cfg
        self.reporter = reporter
        self.spec = resolve_algorithm(cfg.algorithm_name)
        self.layout = self.spec.sequence_layout(algo_cfg)
        self.env_maker = EnvMaker.from_config(cfg.env)
        try:
            self.env_spec = self.env_maker.spec()
        except UserError:
            raise
        except ImportError as e:
            raise missing_extra(f"env {cfg.env.id!r}", e) or UserError(
                f"env {cfg.env.id!r} could not be created: {type(e).__name__}: {e}") from None
        except Exception as e:
            raise UserError(f"env {cfg.env.id!r} could not be created: {type(e).__name__}: {e}") from None
        if self.env_spec.turn_based and len(env_group_sizes(
                cfg.runners.envs_per_runner, cfg.runners.env_groups,
                getattr(self.env_maker.factory, "steps_asynchronously", False))) > 1:
            raise UserError(f"runners.env_groups is {cfg.runners.env_groups}, but {cfg.env.id!r} is turn-based: its "
                            f"runner loop steps one batch (use 1 or auto)")
        self.run_dir = run_dir or new_run_dir(cfg)
        self.resume = resume
        (self.run_dir / "config.yaml").write_text(yaml.safe_dump(resolved, sort_keys=False))
        self.name = self.run_dir.name
        self.rng = np.random.default_rng(cfg.seed)

    # -- actor construction ----------------------------------------------------------------------
    def _build(self) -> None:
        cfg = self.cfg
        self.placement = Placement(cfg)
        shard_cap = max(1, cfg.replay.capacity // cfg.replay.num_shards)
        self.shards = [
            ray.remote(ReplayShard).options(**self.placement.options("replay", k), max_concurrency=8).remote(
                capacity=shard_cap, alpha=cfg.replay.alpha, beta=cfg.replay.beta, min_size=cfg.replay.min_size,
                samples_per_insert=cfg.replay.samples_per_insert, error_buffer=cfg.replay.error_buffer,
                seed=cfg.seed * 7919 + k)
            for k in range(cfg.replay.num_shards)]
        self.learner = ray.remote(Learner).options(**self.placement.options("learner"), max_concurrency=8).remote(
            self.spec.make_learner, self.algo_cfg, self.env_spec, self.shards,
            batch_size=self.algo_cfg.batch_size, device=cfg.learner.device, prefetch=cfg.learner.prefetch,
            publish_interval=cfg.learner.publish_interval, torch_threads=cfg.learner.torch_threads, seed=cfg.seed,
            batches_per_request=cfg.learner.batches_per_request, priority_flush=cfg.learner.priority_flush)
        n = cfg.runners.envs_per_runner
        slots = n * self.env_spec.agents  # per runner: one per env, or one per agent of each env
        self.epsilons = apex_epsilons(cfg.runners.num_runners * slots, cfg.runners.epsilon_base,
                                      cfg.runners.epsilon_alpha)
        self.runners = [None] * cfg.runners.num_runners
        self.evaluator = None
        if cfg.eval.interval_env_steps:
            self.evaluator = ray.remote(Evaluator).options(**self.placement.options("eval")).remote(
                self.env_maker, self.spec.make_policy, self.algo_cfg, min(cfg.eval.episodes, 32),
                seed=10_000_000 + cfg.seed)

    def _start_runner(self, i: int) -> None:
        cfg, n = self.cfg, self.cfg.runners.envs_per_runner
        weights = ray.get(self.learner.get_weights.remote(-1))
        seed = cfg.seed * 100_003 + i * 1009 + self.restarts * 17 + self.resumes * 7
        self.runners[i] = ray.remote(EnvRunner).options(
            **self.placement.options("runner", i), max_concurrency=4, name=f"{self.name}:runner:{i}",
            namespace="rlfleet").remote(
            i, self.env_maker, self.spec.make_policy, self.algo_cfg, self.layout,
            self.epsilons[i * n * self.env_spec.agents:(i + 1) * n * self.env_spec.agents],
            self.shards, self.learner, weights, cfg.runners.ship_interval, cfg.runners.weight_sync_interval, seed,
            epsilon_warmup_steps=cfg.runners.epsilon_warmup_steps // cfg.runners.num_runners,
            epsilon_warmup_done=self.env_steps // cfg.runners.num_runners, env_groups=cfg.runners.env_groups,
            weight_sync_min_interval_s=cfg.runners.weight_sync_min_interval_s)
        self.runners[i].start.remote()
        self.last_runner_steps[i] = 0
        self.node_refs[i] = self.runners[i].__ray_call__.remote(_node_id)

    def _note_runner_nodes(self) -> None:
        """Record on which node each runner (and each replacement) landed: placement is observable."""
        if not self.node_refs:
            return
        ready, _ = ray.wait(list(self.node_refs.values()), num_returns=len(self.node_refs), timeout=0)
        for i, ref in [(i, r) for i, r in self.node_refs.items() if r in ready]:
            del self.node_refs[i]
            try:
                node = ray.get(ref)
            except ray.exceptions.RayError:
                continue  # died before it ran; its replacement reports instead
            self.runner_nodes.setdefault(i, []).append(node)
            if node not in self.nodes:
                self.nodes[node] = node_info(node)
            self.logger.log({"env_steps": self.env_steps, "wall_s": self.wall_s(),
                             "placement": {"runner": i, "node_id": node, **self.nodes[node]}})

    # -- checkpointing -------------------------------------------------------------------------
    def _driver_state(self) -> dict:
        return {"env_steps": self.env_steps, "episodes": self.episodes, "wall_s": self.wall_s(),
                "next_eval_at": self.next_eval_at, "evals": self.evals, "resumes": self.resumes,
                "restarts": self.restarts, "rng": self.rng.bit_generator.state}

    def save(self) -> Path:
        learner_state = ray.get(self.learner.get_state.remote())
        snaps = ray.get([s.snapshot.remote() for s in self.shards]) if self.cfg.checkpoint.replay else None
        path = ckpt.save_checkpoint(self.run_dir / "checkpoints", self.env_steps, learner_state,
                                    self._driver_state(), snaps, self.cfg.checkpoint.keep)
        self.last_ckpt = time.time()
        if self.reporter is not None:
            self.reporter.on_checkpoint(path)
        return path

    def _restore(self) -> None:
        found = ckpt.list_checkpoints(self.run_dir / "checkpoints")
        if not found:
            raise UserError(f"--resume {self.run_dir}: no complete checkpoint in {self.run_dir / 'checkpoints'}")
        learner_state, d, snaps = ckpt.load_checkpoint(found[-1])
        ray.get(self.learner.set_state.remote(learner_state))
        if snaps and len(snaps) == len(self.shards):
            ray.get([s.restore.remote(snap) for s, snap in zip(self.shards, snaps)])
        self.env_steps_base = self.env_steps = int(d["env_steps"])
        self.episodes, self.evals = int(d["episodes"]), d["evals"]
        self.next_eval_at, self.restarts = int(d["next_eval_at"]), int(d["restarts"])
        self.resumes = int(d["resumes"]) + 1
        self.wall_offset = float(d["wall_s"])
        self.rng.bit_generator.state = d["rng"]
        self.resumed_from = str(found[-1])

    # -- main loop -----------------------------------------------------------------------------
    def wall_s(self) -> float:
        return self.wall_offset + time.time() - self.t_start

    def run(self) -> dict:
        cfg = self.cfg
        self.t_start = time.time()
        self.wall_offset = 0.0
        self.env_steps = self.env_steps_base = self.episodes = self.restarts = self.resumes = 0
        self.next_eval_at = cfg.eval.interval_env_steps
        self.evals: list[dict] = []
        self.resumed_from = None
        self.last_runner_steps: dict[int, int] = {}
        self.node_refs: dict[int, ray.ObjectRef] = {}
        self.runner_nodes: dict[int, list[str]] = {}
        self.nodes: dict[str, dict] = {}
        self._build()
        if self.resume:
            self._restore()
        for i in range(cfg.runners.num_runners):
            self._start_runner(i)
        self.learner.start.remote()
        self.logger = MetricsLogger(self.run_dir, cfg.logging.tensorboard, cfg.logging.progress)
        self.last_ckpt = time.time()
        recent = deque(maxlen=100)
        stats_refs: dict[int, tuple] = {}  # runner index -> (pending stats() ref, when it was sent)
        dropped: dict[int, int] = {}  # runner index -> episodes it dropped (counted by the current actor)
        eval_ref, eval_step = None, 0
        window = {"t": time.time(), "steps": self.env_steps, "updates": None, "episodes": []}
        runner_time = {}
        versions = {}
        learner_stats: dict = {"updates": 0}
        stop_reason = None
        try:
            while stop_reason is None:
                time.sleep(TICK_S)
                # runners: progress, episodes, health. A dead runner's answer is an error (replaced at
                # once); a slow one (a busy node, an env that compiles or launches a browser) is waited
                # for, up to runners.unresponsive_timeout_s, without blocking the loop.
                for i, r in enumerate(self.runners):
                    if i not in stats_refs:
                        stats_refs[i] = (r.stats.remote(), time.time())
                ready, _ = ray.wait([ref for ref, _ in stats_refs.values()], num_returns=len(stats_refs), timeout=0)
                ready = set(ready)
                for i, (ref, sent) in list(stats_refs.items()):
                    if ref not in ready:
                        if time.time() - sent > cfg.runners.unresponsive_timeout_s:
                            del stats_refs[i]
                            self._replace_runner(i, TimeoutError(
                                f"no answer for {cfg.runners.unresponsive_timeout_s:.0f} s"))
                        continue
                    del stats_refs[i]
                    try:
                        st = ray.get(ref)
                    except (ray.exceptions.RayError, RuntimeError) as e:
                        self._replace_runner(i, e)
                        continue
                    self.last_runner_steps[i] = st["env_steps"]
                    dropped[i] = st.get("episodes_dropped", 0)  # broken episodes (e.g. a crashed browser)
                    runner_time[i] = st["time"]
                    versions[i] = st["weights_version"]
                    for ret, _length in st["episodes"]:
                        recent.append(ret)
                        window["episodes"].append(ret)
                    self.episodes += len(st["episodes"])
                self.env_steps = self.env_steps_base + sum(self.last_runner_steps.values())
                self._note_runner_nodes()
                learner_stats = ray.get(self.learner.stats.remote())
                if window["updates"] is None:
                    window["updates"] = learner_stats["updates"]
                # evaluation
                if eval_ref is not None and ray.wait([eval_ref], timeout=0)[0]:
                    result = ray.get(eval_ref)
                    self.evals.append({"env_steps": eval_step, "updates": learner_stats["updates"],
                                       "wall_s": round(self.wall_s(), 2), **result})
                    self.logger.log({"env_steps": eval_step, "eval_return": result["return_mean"],
                                     "eval_return_std": result["return_std"], "wall_s": self.wall_s()})
                    eval_ref = None
                if self.evaluator is not None and eval_ref is None and self.env_steps >= self.next_eval_at:
                    eval_step = self.env_steps
                    eval_ref = self._launch_eval()
                    while self.next_eval_at <= self.env_steps:
                        self.next_eval_at += cfg.eval.interval_env_steps
                # metrics
                now = time.time()
                if now - window["t"] >= cfg.logging.interval_s:
                    dt = now - window["t"]
                    record = {
                        "env_steps": self.env_steps, "updates": learner_stats["updates"], "wall_s": self.wall_s(),
                        "env_steps_per_s": (self.env_steps - window["steps"]) / dt,
                        "updates_per_s": (learner_stats["updates"] - window["updates"]) / dt,
                        "episode_return": float(np.mean(window["episodes"])) if window["episodes"] else None,
                        "episode_return_100": float(np.mean(recent)) if recent else None,
                        "episodes": self.episodes, "runner_restarts": self.restarts,
                        "episodes_dropped": sum(dropped.values()),
                        "weights_version_learner": learner_stats["weights_version"],
                        "weights_version_runners_min": min(versions.values()) if versions else None,
                        "eval_return": self.evals[-1]["return_mean"] if self.evals else None,
                    }
                    replay = ray.get([s.stats.remote() for s in self.shards])
                    record["replay_size"] = sum(r["size"] for r in replay)
                    record["replay_samples_per_insert"] = (sum(r["samples"] for r in replay)
                                                           / max(1, sum(r["inserts"] for r in replay)))
                    record.update(_time_fractions("runner_time", runner_time.values()))
                    record.update(_time_fractions("learner_time", [learner_stats["time"]]))
                    record.update({f"learner.{k}": v for k, v in learner_stats.items()
                                   if isinstance(v, float) and k != "time"})
                    self.logger.log(record)
                    if self.reporter is not None:
                        self.reporter.on_metrics(record)
                    window = {"t": now, "steps": self.env_steps, "updates": learner_stats["updates"], "episodes": []}
                if now - self.last_ckpt >= cfg.checkpoint.interval_s:
                    self.save()
                stop_reason = self._should_stop(learner_stats["updates"])
        except KeyboardInterrupt:
            stop_reason = "interrupted"
        finally:
            self._stop_actors()
        learner_stats = ray.get(self.learner.stats.remote())  # final counters, after the loops stopped
        for i, ref in enumerate([r.stats.remote() for r in self.runners]):
            try:
                st = ray.get(ref, timeout=30)
            except ray.exceptions.RayError:
                continue
            self.last_runner_steps[i], versions[i] = st["env_steps"], st["weights_version"]
            self.episodes += len(st["episodes"])
        self.env_steps = self.env_steps_base + sum(self.last_runner_steps.values())
        if eval_ref is not None:
            result = ray.get(eval_ref)
            self.evals.append({"env_steps": eval_step, "updates": learner_stats["updates"],
                               "wall_s": round(self.wall_s(), 2), **result})
        self._note_runner_nodes()
        path = self.save()
        self.logger.close()
        summary = {"run_dir": str(self.run_dir), "stop_reason": stop_reason, "env_steps": self.env_steps,
                   "updates": learner_stats["updates"], "episodes": self.episodes, "wall_s": self.wall_s(),
                   "runner_restarts": self.restarts, "evals": self.evals, "checkpoint": str(path),
                   "resumed_from": self.resumed_from, "runner_weights_versions": [versions.get(i, -1) for i in range(len(self.runners))],
                   "runner_env_steps": [self.last_runner_steps.get(i, 0) for i in range(len(self.runners))],
                   "learner_device": learner_stats.get("device"),
                   "runner_nodes": {str(i): nodes for i, nodes in sorted(self.runner_nodes.items())},
                   "nodes": self.nodes}
        (self.run_dir / "summary.json").write_text(json.dumps(summary, indent=1))
        self._kill_actors()
        return summary

    def _launch_eval(self):
        version, ref = ray.get(self.learner.get_weights.remote(-1))
        return self.evaluator.evaluate.remote(ref, self.cfg.eval.episodes, self.cfg.eval.epsilon)

    def _replace_runner(self, i: int, err: Exception) -> None:
        if self.restarts >= self.cfg.runners.max_restarts:
            raise RuntimeError(f"runner {i} died and max_restarts={self.cfg.runners.max_restarts} is spent: {err}")
        self.restarts += 1
        print(f"[rlfleet] runner {i} died ({type(err).__name__}); starting a replacement", flush=True)
        self.env_steps_base += self.last_runner_steps.get(i, 0)
        try:
            ray.kill(self.runners[i])
        except Exception:
            pass
        self._start_runner(i)

    def _should_stop(self, updates: int) -> str | None:
        s = self.cfg.stop
        if s.env_steps is not None and self.env_steps >= s.env_steps:
            return "env_steps"
        if s.updates is not None and updates >= s.updates:
            return "updates"
        if s.time_s is not None and self.wall_s() >= s.time_s:
            return "time_s"
        if s.target_return is not None and self.evals and self.evals[-1]["return_mean"] >= s.target_return:
            return "target_return"
        return None

    def _stop_actors(self) -> None:
        refs = [r.stop.remote() for r in self.runners] + [self.learner.stop.remote()]
        for ref in refs:
            try:
                ray.get(ref, timeout=60)
            except ray.exceptions.RayError:
                pass

    def _kill_actors(self) -> None:
        for a in self.runners + self.shards + [self.learner, self.evaluator]:
            if a is not None:
                ray.kill(a)


def _time_fractions(prefix: str, splits) -> dict:
    totals: dict[str, float] = {}
    for split in splits:
        for k, v in split.items():
            totals[k] = totals.get(k, 0.0) + v
    whole = sum(totals.values()) or 1.0
    return {f"{prefix}.{k}": v / whole for k, v in totals.items()}


def train(cfg: ExperimentConfig, algo_cfg, resolved: dict, resume_dir: str | Path | None = None,
          address: str | None = None) -> dict:
    """Run one experiment here, on an embedded Ray or on the cluster at `address` / RAY_ADDRESS."""
    reject_sweep(cfg)
    check_replay(cfg, algo_cfg)
    ensure_ray(cfg, address)
    exp = Experiment(cfg, algo_cfg, resolved, Path(resume_dir) if resume_dir else None, resume=bool(resume_dir))
    return exp.run()
