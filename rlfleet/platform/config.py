"""Experiment configuration: one YAML file = one experiment, validated into strict pydantic models.

Errors name the file, the key path and the closest valid key; the CLI prints them as one line.
"""
from __future__ import annotations

import copy
import typing
from pathlib import Path
from typing import Annotated, Any, Literal, Optional

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, model_validator

from rlfleet.platform.errors import UserError, did_you_mean


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


_RAY_BUILTIN_RESOURCES = ("CPU", "GPU", "memory", "object_store_memory")


def _custom_resources(v: dict[str, float]) -> dict[str, float]:
    for name, amount in v.items():
        if name in _RAY_BUILTIN_RESOURCES:
            raise ValueError(f"'{name}' is set by num_cpus / num_gpus, not resources")
        if not amount > 0:
            raise ValueError(f"resource '{name}' needs an amount > 0, got {amount}")
    return v


# Custom Ray resources per actor (Ray's .options(resources=...)): they pin an actor kind to the nodes
# that offer them, e.g. `ray start --resources='{"gpu_node": 1}'` and `learner.resources: {gpu_node: 1}`.
CustomResources = Annotated[dict[str, float], AfterValidator(_custom_resources), Field(
    default_factory=dict, description="custom Ray resources per actor, e.g. {spot_node: 0.01}")]
PLACEMENT_DESCRIPTION = "'spread' asks Ray to put these actors on different nodes (SPREAD); 'pack' uses Ray's default"


class EnvConfig(Strict):
    id: str = Field(description="registered env name, e.g. gym:CartPole-v1")
    kwargs: dict[str, Any] = Field(default_factory=dict, description="passed to the env factory")
    observation_mask: Optional[list[int]] = Field(
        None, description="keep only these observation indices (memory tasks from ordinary envs)")
    agent_id: bool = Field(
        True, description="multi-agent envs: append a one-hot agent index to each agent's observation")
    policy_mapping: Any = Field(
        "shared", description="multi-agent envs: 'shared' (one network), 'per_agent', or {agent name: group name}")
    normalize_observations: bool = Field(
        False, description="scale Box observation dims with finite bounds to [-1, 1] (static, so replay stays valid)")
    vectorization: Literal["none", "sync"] = Field(
        "none", description="'sync' runs the envs of a runner in a gymnasium SyncVectorEnv (NEXT_STEP autoreset)")


class RunnersConfig(Strict):
    num_runners: int = Field(2, ge=1)
    envs_per_runner: int = Field(8, ge=1, description="envs stepped together, one forward pass per step")
    num_cpus: float = Field(0.5, gt=0, description="CPUs reserved per runner actor")
    weight_sync_interval: int = Field(400, ge=1, description="runner env steps between weight pulls")
    weight_sync_min_interval_s: float = Field(
        0.05, ge=0, description="and at least this long between them (a fast vectorized env would otherwise ask "
        "the learner hundreds of times a second)")
    ship_interval: int = Field(64, ge=1, description="runner steps between shipments of sequences to replay")
    env_groups: Annotated[int, Field(ge=1)] | Literal["auto"] = Field(
        "auto", description="lanes a runner's envs are split into, one stepping while the loop serves the other "
        "(only batches that step asynchronously gain); auto: 2 for those with >= 64 envs, else 1")
    epsilon_base: float = Field(0.4, gt=0, le=1, description="Ape-X eps_i = base^(1 + alpha*i/(N-1))")
    epsilon_alpha: float = Field(7.0, ge=0)
    epsilon_warmup_steps: int = Field(
        0, ge=0, description="fleet env steps over which every slot's eps decays linearly from 1 to its Ape-X value")
    max_restarts: int = Field(100, ge=0, description="dead runners replaced at most this many times")
    unresponsive_timeout_s: float = Field(
        300.0, gt=0, description="a runner that does not answer the driver for this long is replaced (a dead one at once)")
    placement: Literal["pack", "spread"] = Field("pack", description=PLACEMENT_DESCRIPTION)
    resources: CustomResources


class ReplayConfig(Strict):
    num_shards: int = Field(1, ge=1)
    capacity: int = Field(100_000, ge=1, description="sequences, over all shards")
    alpha: float = Field(0.9, ge=0, description="priority exponent")
    beta: float = Field(0.6, ge=0, description="importance-sampling exponent")
    min_size: int = Field(100, ge=1, description="sequences per shard before sampling starts")
    samples_per_insert: Optional[float] = Field(
        None, gt=0, description="sequences sampled per sequence inserted (None = no limit)")
    error_buffer: float = Field(
        500.0, gt=0, description="tolerated deviation from samples_per_insert, in sampled sequences")
    num_cpus: float = Field(0.25, gt=0)
    placement: Literal["pack", "spread"] = Field("pack", description=PLACEMENT_DESCRIPTION)
    resources: CustomResources


class LearnerConfig(Strict):
    device: str = Field("auto", description="auto | cpu | cuda | cuda:N")
    num_cpus: float = Field(1.0, gt=0)
    num_gpus: float = Field(0.0, ge=0)
    prefetch: int = Field(4, ge=1, description="batches requested ahead of the update loop (in requests of batches_per_request)")
    publish_interval: int = Field(10, ge=1, description="updates between weight publications")
    batches_per_request: int = Field(4, ge=1, description="batches one sample request to a shard returns")
    priority_flush: int = Field(8, ge=1, description="updates whose priorities go back to the shards in one call")
    torch_threads: int = Field(1, ge=1)
    resources: CustomResources


class StopConfig(Strict):
    env_steps: Optional[int] = Field(None, ge=1)
    updates: Optional[int] = Field(None, ge=1)
    time_s: Optional[float] = Field(None, gt=0)
    target_return: Optional[float] = None


class EvalConfig(Strict):
    interval_env_steps: int = Field(10_000, ge=0, description="0 disables evaluation")
    episodes: int = Field(20, ge=1)
    epsilon: float = Field(0.0, ge=0, le=1, description="0 = greedy (R2D2 uses 0.001)")
    num_cpus: float = Field(0.25, gt=0)
    resources: CustomResources


class CheckpointConfig(Strict):
    interval_s: float = Field(300.0, gt=0)
    keep: int = Field(3, ge=1)
    replay: bool = Field(True, description="include replay snapshots")


class LoggingConfig(Strict):
    root: str = Field("runs", description="run directories go under here")
    interval_s: float = Field(5.0, gt=0)
    progress: bool = True
    tensorboard: bool = True


class SweepParam(Strict):
    """How Ray Tune picks one config value: exactly one of these keys."""

    grid: Optional[list[Any]] = Field(None, min_length=1, description="every value, in every sample (tune.grid_search)")
    choice: Optional[list[Any]] = Field(None, min_length=1, description="one value at random per trial")
    uniform: Optional[tuple[float, float]] = Field(None, description="[low, high], uniform")
    loguniform: Optional[tuple[float, float]] = Field(None, description="[low, high], uniform in log space")
    randint: Optional[tuple[int, int]] = Field(None, description="[low, high), an integer")

    @model_validator(mode="after")
    def _exactly_one(self) -> "SweepParam":
        given = [k for k in type(self).model_fields if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one of {', '.join(type(self).model_fields)} (got {', '.join(given) or 'none'})")
        bounds = self.uniform or self.loguniform or self.randint
        if bounds is not None and not bounds[0] < bounds[1]:
            raise ValueError(f"{given[0]}: low must be below high, got {list(bounds)}")
        if self.loguniform is not None and self.loguniform[0] <= 0:
            raise ValueError(f"loguniform: low must be > 0, got {self.loguniform[0]}")
        return self

    @property
    def kind(self) -> str:
        return next(k for k in type(self).model_fields if getattr(self, k) is not None)

    @property
    def value(self):
        return getattr(self, self.kind)


class SweepConfig(Strict):
    """A Ray Tune sweep over this experiment (`rlfleet sweep`); `rlfleet train` refuses configs that have one."""

    params: dict[str, SweepParam] = Field(
        min_length=1, description="dotted config key -> {grid|choice|uniform|loguniform|randint: ...}")
    num_samples: int = Field(1, ge=1, description="trials drawn (grids: repeats of the whole grid)")
    metric: str = Field("eval_return", description="reported metric that ranks trials")
    mode: Literal["max", "min"] = "max"
    search: Literal["random", "grid", "optuna"] = Field(
        "random", description="random: Tune's variant generator; grid: grid/choice only, all combinations; "
                              "optuna: OptunaSearch (pip install 'rlfleet[sweep]')")
    max_concurrent: Optional[int] = Field(None, ge=1, description="trials running at once (None = as resources allow)")
    max_failures: int = Field(2, ge=0, description="a failed trial is restarted from its last checkpoint this often")
    storage_path: str = Field("~/ray_results", description="Tune's results root (local path or URI)")
    name: Optional[str] = Field(None, description="experiment folder under storage_path (default <name>-<timestamp>)")


class RuntimeEnvConfig(Strict):
    """Ray runtime_env fields applied to every rlfleet actor (and to the job by `rlfleet submit`).
    Plugin modules outside installed packages are added to py_modules automatically."""

    py_modules: list[str] = Field(default_factory=list, description="local package dirs / .py files / wheels shipped "
                                  "to the workers (Ray uploads them, so other nodes can import them)")
    working_dir: Optional[str] = Field(None, description="a local dir or URI shipped to the workers as their cwd")
    pip: Optional[list[str]] = Field(None, description="pip packages installed for the workers (Ray caches the env)")
    uv: Optional[list[str]] = Field(None, description="like pip, installed with uv")
    conda: Optional[Any] = Field(None, description="a conda env name or spec")
    env_vars: dict[str, str] = Field(default_factory=dict, description="environment variables of the worker processes")
    excludes: list[str] = Field(default_factory=list, description="patterns left out of working_dir/py_modules uploads")

    def to_ray(self) -> dict:
        return {k: v for k, v in self.model_dump().items() if v not in (None, [], {})}


class ExperimentConfig(Strict):
    name: str = "experiment"
    seed: int = 0
    env: EnvConfig
    algorithm: dict[str, Any] = Field(description="`name` plus the algorithm's own section")
    runners: RunnersConfig = Field(default_factory=RunnersConfig)
    replay: ReplayConfig = Field(default_factory=ReplayConfig)
    learner: LearnerConfig = Field(default_factory=LearnerConfig)
    stop: StopConfig = Field(default_factory=StopConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    checkpoint: CheckpointConfig = Field(default_factory=CheckpointConfig)
    logging: LoggingConfig = Field(default_factory=LoggingConfig)
    sweep: Optional[SweepConfig] = Field(None, description="run through Ray Tune with `rlfleet sweep`")
    runtime_env: RuntimeEnvConfig = Field(default_factory=RuntimeEnvConfig,
                                          description="Ray runtime_env for rlfleet's actors (plugins, pip, env vars)")

    @property
    def algorithm_name(self) -> str:
        return self.algorithm["name"]


def reject_sweep(cfg: ExperimentConfig, source: str = "this config") -> None:
    """A sweep is many runs: training once from such a config would silently ignore the block."""
    if cfg.sweep is not None:
        raise UserError(f"{source} has a 'sweep:' block: run it with `rlfleet sweep`, or remove the block "
                        "(or --set sweep=null) to train once")


def _model_fields(model: type[BaseModel], path: tuple) -> list[str]:
    """Valid keys at `path` inside `model` (for 'did you mean')."""
    path = list(path)
    while path:
        ann = getattr(model.model_fields.get(str(path.pop(0))), "annotation", None)
        args = [a for a in typing.get_args(ann) if a is not type(None)]
        if typing.get_origin(ann) is dict and path:  # dict[str, Model]: skip the user's key
            ann, path = args[1], path[1:]
        elif args and len(args) == 1:  # Optional[Model]
            ann = args[0]
        if not (isinstance(ann, type) and issubclass(ann, BaseModel)):
            return []
        model = ann
    return list(model.model_fields)


def _format_error(err: ValidationError, model: type[BaseModel], source: str, prefix: str = "") -> UserError:
    e = err.errors()[0]
    loc = tuple(e["loc"])
    path = prefix + ".".join(str(p) for p in loc)
    if e["type"] == "extra_forbidden":
        hint = did_you_mean(str(loc[-1]), _model_fields(model, loc[:-1]))
        return UserError(f"{source}: unknown key '{path}'{hint}")
    if e["type"] == "missing":
        return UserError(f"{source}: missing required key '{path}'")
    return UserError(f"{source}: invalid value for '{path}': {e['msg']} (got {e.get('input')!r})")


def set_path(raw: dict, dotted: str, value: Any) -> None:
    node = raw
    keys = dotted.split(".")
    for k in keys[:-1]:
        if not isinstance(node.get(k, {}), dict):
            raise UserError(f"--set {dotted}: '{k}' is not a section")
        node = node.setdefault(k, {})
    node[keys[-1]] = value


def parse_overrides(overrides: list[str] | None) -> list[tuple[str, Any]]:
    out = []
    for item in overrides or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UserError(f"--set expects key.path=value, got {item!r}")
        out.append((key.strip(), yaml.safe_load(value)))
    return out


def load_raw(path: str | Path) -> dict:
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as e:
        raise UserError(f"cannot read config file {str(path)!r}: {e.strerror or e}") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise UserError(f"{path}:{where} invalid YAML: {getattr(e, 'problem', e)}") from None
    if not isinstance(raw, dict):
        raise UserError(f"{path}: top level must be a mapping of sections")
    return raw


def build_config(raw: dict, source: str = "<config>") -> tuple[ExperimentConfig, Any]:
    """Validate the experiment and the algorithm section. Returns (experiment, algorithm config)."""
    from rlfleet.platform.registry import resolve_algorithm, resolve_env

    try:
        cfg = ExperimentConfig.model_validate(raw)
    except ValidationError as err:
        raise _format_error(err, ExperimentConfig, source) from None
    algo = dict(cfg.algorithm)
    name = algo.pop("name", None)
    if not isinstance(name, str):
        raise UserError(f"{source}: missing required key 'algorithm.name'")
    try:
        spec = resolve_algorithm(name)
    except UserError as e:
        raise UserError(f"{source}: algorithm.name: {e}") from None
    try:
        algo_cfg = spec.config_cls.model_validate(algo)
    except ValidationError as err:
        raise _format_error(err, spec.config_cls, source, prefix="algorithm.") from None
    try:
        resolve_env(cfg.env.id)
    except UserError as e:
        raise UserError(f"{source}: env.id: {e}") from None
    return cfg, algo_cfg


def load_config(path: str | Path, overrides: list[str] | None = None) -> tuple[ExperimentConfig, Any, dict]:
    """Read, apply `--set` overrides, validate. Returns (experiment, algorithm config, resolved raw dict)."""
    raw = load_raw(path)
    for key, value in parse_overrides(overrides):
        set_path(raw, key, value)
    cfg, algo_cfg = build_config(copy.deepcopy(raw), source=str(path))
    return cfg, algo_cfg, resolved_dict(cfg, algo_cfg)


def resolved_dict(cfg: ExperimentConfig, algo_cfg: BaseModel) -> dict:
    out = cfg.model_dump(mode="json")
    out["algorithm"] = {"name": cfg.algorithm_name, **algo_cfg.model_dump(mode="json")}
    return out
