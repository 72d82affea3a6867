"""Where the experiment's actors run: Ray resource requests and scheduling strategies from the config.

Outside Tune each actor asks Ray for itself: CPUs/GPUs, the custom resources of its section (which pin
it to the nodes that offer them) and SPREAD for `placement: spread`. Inside a Tune trial every actor
goes into its own bundle of the trial's placement group instead: the trial reserves everything it
needs before it starts, so concurrent trials never deadlock each holding half of their actors.
"""
from __future__ import annotations

import math

import ray
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

from rlfleet.platform.config import ExperimentConfig
from rlfleet.platform.errors import UserError

# The Tune trial itself (the rlfleet driver loop) mostly sleeps between polls.
TRIAL_DRIVER_BUNDLE = {"CPU": 0.1}
_NOT_CUSTOM = ("CPU", "GPU", "memory", "object_store_memory")


def _custom(resources: dict) -> list[str]:
    return sorted(k for k in resources if k not in _NOT_CUSTOM and not k.startswith(("node:", "accelerator_type:")))


def learner_gpus(cfg: ExperimentConfig) -> float:
    """learner.num_gpus, or one GPU when device is auto and the (connected) cluster has one."""
    if (cfg.learner.device == "auto" and cfg.learner.num_gpus == 0 and ray.is_initialized()
            and ray.cluster_resources().get("GPU", 0) >= 1):
        return 1.0
    return cfg.learner.num_gpus


def actor_requests(cfg: ExperimentConfig, num_gpus_learner: float) -> list[tuple[str, int, dict]]:
    """(kind, index, resources) for every actor of the experiment, in a fixed order."""
    def req(num_cpus, resources, num_gpus=0.0):
        return {"CPU": num_cpus, **({"GPU": num_gpus} if num_gpus else {}), **resources}

    out = [("replay", k, req(cfg.replay.num_cpus, cfg.replay.resources)) for k in range(cfg.replay.num_shards)]
    out.append(("learner", 0, req(cfg.learner.num_cpus, cfg.learner.resources, num_gpus_learner)))
    out += [("runner", i, req(cfg.runners.num_cpus, cfg.runners.resources)) for i in range(cfg.runners.num_runners)]
    if cfg.eval.interval_env_steps:
        out.append(("eval", 0, req(cfg.eval.num_cpus, cfg.eval.resources)))
    return out


def trial_bundles(cfg: ExperimentConfig) -> tuple[list[dict], str]:
    """Placement-group bundles of one Tune trial (driver first, as Tune requires) and their strategy:
    SPREAD when runners or replay ask to be spread, else PACK."""
    bundles = [dict(TRIAL_DRIVER_BUNDLE)] + [r for _, _, r in actor_requests(cfg, learner_gpus(cfg))]
    spread = "spread" in (cfg.runners.placement, cfg.replay.placement)
    return bundles, "SPREAD" if spread else "PACK"


def custom_resource_totals(cfg: ExperimentConfig, copies: int = 1) -> dict[str, float]:
    """Custom resources the experiment asks for in all (an embedded local Ray offers exactly these)."""
    totals: dict[str, float] = {}
    for _, _, req in actor_requests(cfg, 0.0):
        for name in _custom(req):
            totals[name] = totals.get(name, 0.0) + req[name] * copies
    return {k: float(math.ceil(v)) for k, v in totals.items()}


def check_cluster_resources(cfg: ExperimentConfig) -> None:
    """A custom resource no node offers would leave its actors pending forever: say so instead."""
    offered = ray.cluster_resources()
    missing = sorted(set(custom_resource_totals(cfg)) - set(offered))
    if missing:
        raise UserError(f"resources {', '.join(missing)} are offered by no node of the Ray cluster "
                        f"(custom resources there: {', '.join(_custom(offered)) or 'none'})")


def actor_runtime_env(cfg: ExperimentConfig) -> dict:
    """The runtime_env the experiment's actors need: the config's own, plus the modules of plugins
    (envs/algorithms from outside installed packages) resolved in this driver. Merged with the
    job's runtime_env by hand, because Ray lets an actor's field replace the job's (an actor's
    py_modules would otherwise drop the rlfleet package `rlfleet submit` shipped with the job)."""
    from rlfleet.platform.registry import plugin_modules, resolve_algorithm, resolve_env

    resolve_env(cfg.env.id), resolve_algorithm(cfg.algorithm_name)  # notes their plugin modules, if any
    env = cfg.runtime_env.to_ray()
    mine = list(env.get("py_modules", [])) + [m.__path__[0] if hasattr(m, "__path__") else m.__file__
                                              for m in plugin_modules()]
    if not env and not mine:
        return {}
    job = dict(ray.get_runtime_context().runtime_env or {}) if ray.is_initialized() else {}
    merged = {**job, **env}
    if mine or job.get("py_modules"):
        merged["py_modules"] = list(job.get("py_modules", [])) + mine
    if job.get("env_vars") or env.get("env_vars"):
        merged["env_vars"] = {**job.get("env_vars", {}), **env.get("env_vars", {})}
    return upload_local_paths(merged) if ray.is_initialized() else merged


def upload_local_paths(runtime_env: dict) -> dict:
    """Ray accepts local dirs/files in py_modules and working_dir only in ray.init (job level); for
    an actor's runtime_env they must already be URIs. Upload them to the cluster's object store the
    way ray.init does (content-addressed, so repeated uploads are no-ops) and pass the gcs:// URIs."""
    import logging

    from ray._private.runtime_env.py_modules import upload_py_modules_if_needed
    from ray._private.runtime_env.working_dir import upload_working_dir_if_needed

    log = logging.getLogger("rlfleet")
    runtime_env = upload_py_modules_if_needed(dict(runtime_env), include_gitignore=True, logger=log)
    return upload_working_dir_if_needed(runtime_env, include_gitignore=True, logger=log)


class Placement:
    """Ray .options() for each actor of one experiment."""

    _SECTION = {"replay": "replay", "learner": "learner", "runner": "runners", "eval": "eval"}

    def __init__(self, cfg: ExperimentConfig):
        self.cfg = cfg
        self.runtime_env = actor_runtime_env(cfg)
        self.pg = ray.util.get_current_placement_group()  # set inside a Tune trial
        self.bundle = {(kind, i): b + 1 for b, (kind, i, _) in enumerate(actor_requests(cfg, 0.0))}
        if self.pg is not None:  # the GPU the trial reserved, whatever the cluster looks like now
            self.num_gpus_learner = self.pg.bundle_specs[self.bundle["learner", 0]].get("GPU", 0.0)
        else:
            self.num_gpus_learner = learner_gpus(cfg)

    def options(self, kind: str, index: int = 0) -> dict:
        section = getattr(self.cfg, self._SECTION[kind])
        opts = {"num_cpus": section.num_cpus, "num_gpus": self.num_gpus_learner if kind == "learner" else 0,
                "resources": dict(section.resources)}
        if self.runtime_env:
            opts["runtime_env"] = self.runtime_env
        if self.pg is not None:
            opts["scheduling_strategy"] = PlacementGroupSchedulingStrategy(
                self.pg, placement_group_bundle_index=self.bundle[kind, index],
                placement_group_capture_child_tasks=False)
        elif getattr(section, "placement", "pack") == "spread":
            opts["scheduling_strategy"] = "SPREAD"
        return opts


def node_info(node_id: str) -> dict:
    """Address and custom resources of a node, so a summary says which machine `node_id` was."""
    for n in ray.nodes():
        if n["NodeID"] == node_id:
            return {"address": n.get("NodeManagerAddress"), "custom_resources": _custom(n.get("Resources", {}))}
    return {"address": None, "custom_resources": []}
