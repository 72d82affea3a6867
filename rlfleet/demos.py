"""Demonstrations: a documented columnar format (Parquet), a recorder and a validating loader.

One Parquet file, one row per (env step, agent present at that step), columns:

    episode      int64    episode index in the file
    t            int32    step within the episode
    agent        string   agent name (the env's `possible_agents`; "agent" for single-agent envs)
    obs          list<float32>   the agent's observation, flattened (its shape is in the metadata)
    next_obs     list<float32>   the observation after the step (the final one at an episode end)
    action       int64
    reward       float32
    terminated   bool
    truncated    bool
    action_mask  list<bool>      legal actions at `obs` (all true where the env has no masks)

Turn-based games (PettingZoo AEC envs: tic-tac-toe, connect four) are recorded turn by turn:
one row per turn, for the acting agent only (`agent`), `t` counts the game's turns (so an
agent's rows skip the others' turns). A row is the agent's transition from its turn to its next
turn, as the runner trains on it: `obs` and `action_mask` at its turn, `reward` accumulated
until its next turn or the game's end, `next_obs` its next turn's observation (the final board
at the end), and at the end every agent's last row is terminal with its final reward (the loser
gets its -1 although the winner moved last). Actions are always legal under `action_mask`.
The metadata says `"turn_based": true` (absent or false: every present agent acts each step).

File metadata (key "rlfleet.demos", JSON): format version, env id and kwargs, agents, per-agent
observation shape/dtype and action count, `turn_based`, number of steps (turns, for turn-based
games) and episodes, the expert, the seed, and the versions of rlfleet, gymnasium, pettingzoo,
numpy and pyarrow. Loading checks every column's type and every agent's shapes and action ranges
against the env it is loaded for (and that a turn-based file meets a turn-based env), and fails
with one line naming the file and what is wrong (turn-based files: also an action outside its
row's mask). Parquet holds plain arrays: loading never unpickles anything.

Experts: `fn(env, observations) -> {agent: action}` with the present agents' observations
(Parallel envs), the observation (Gymnasium envs: an action), or `{acting agent: observation}`
(turn-based games: called on the acting agent only; an action or `{agent: action}` back).
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from importlib import metadata as importlib_metadata
from pathlib import Path

import numpy as np

from rlfleet.platform.errors import UserError

FORMAT_VERSION = 1
META_KEY = b"rlfleet.demos"
SCALAR_COLUMNS = {"episode": "int64", "t": "int32", "agent": "string", "action": "int64", "reward": "float",
                  "terminated": "bool", "truncated": "bool"}
LIST_COLUMNS = {"obs": "float", "next_obs": "float", "action_mask": "bool"}


@dataclass
class AgentDemos:
    """One agent's transitions as numpy arrays (rows in file order)."""

    obs: np.ndarray  # [N, *obs_shape] float32
    next_obs: np.ndarray
    action: np.ndarray  # [N] int64
    reward: np.ndarray  # [N] float32
    terminated: np.ndarray  # [N] bool
    truncated: np.ndarray
    action_mask: np.ndarray  # [N, A] bool
    episode: np.ndarray  # [N] int64
    t: np.ndarray  # [N] int32

    def __len__(self) -> int:
        return len(self.action)


# -- agents' spaces ----------------------------------------------------------------------------------
def _agent_spaces(env) -> dict[str, tuple[tuple, int]]:
    """agent -> (observation shape, action count), for Gymnasium and PettingZoo (Parallel or AEC) envs."""
    from rlfleet.platform.multiagent import _split_obs, is_aec_env, is_parallel_env

    if is_parallel_env(env) or is_aec_env(env):
        out = {}
        for a in env.possible_agents:
            space, _ = _split_obs(env.observation_space(a))
            out[a] = (tuple(space.shape), int(env.action_space(a).n))
        return out
    return {"agent": (tuple(env.observation_space.shape), int(env.action_space.n))}


def _versions() -> dict:
    out = {}
    for pkg in ("rlfleet", "gymnasium", "pettingzoo", "numpy", "pyarrow"):
        try:
            out[pkg] = importlib_metadata.version(pkg)
        except importlib_metadata.PackageNotFoundError:
            out[pkg] = None
    return out


# -- recording ---------------------------------------------------------------------------------------
class CheckpointExpert:
    """A trained rlfleet agent acting greedily, with the observation encoding (agent index,
    action masks) and recurrent state its runs used. `begin_episode` resets the state. In
    turn-based games only the acting agent's slot acts (the others keep their state, previous
    action and reward, as in the runner); `observe` gets the rewards of the agents whose
    transitions completed."""

    def __init__(self, path: str):
        from rlfleet.platform.agent import load_agent

        self.agent = load_agent(path)
        self.rng = np.random.default_rng(0)
        self._batch = None

    def make_env(self):
        """The env exactly as the agent was trained on it (observation mask, scaling included)."""
        return self.agent.env_maker()

    def begin_episode(self, env) -> None:
        from rlfleet.platform.multiagent import MultiAgentBatch, is_aec_env, is_parallel_env

        self.turn_based = is_aec_env(env)
        self._batch = MultiAgentBatch([env], 0, self.agent.env_maker.agent_id, self.agent.env_maker.policy_mapping) \
            if is_parallel_env(env) or self.turn_based else None
        n = len(self._batch) if self._batch is not None else 1
        self.state = self.agent.policy.initial_state(n)
        self.prev_a, self.prev_r = np.zeros(n, np.int64), np.zeros(n, np.float32)

    def __call__(self, env, observations):
        spec = self.agent.env_spec
        if self._batch is None:
            obs, mask = np.asarray(observations, np.float32)[None], None
        else:
            obs, mask = self._batch._empty()
            self._batch._write(0, observations, obs, mask)
        mask = mask if spec.action_mask else None
        if self.turn_based:
            from rlfleet.platform.turnbased import act_on_turns

            acting = np.array([a in observations for a in self._batch.agents])
            actions, idx, _ = act_on_turns(self.agent.policy, acting, obs, self.prev_a, self.prev_r, self.state,
                                           np.zeros(len(obs)), self.rng, mask)
            self.prev_a[idx] = actions[idx]
        else:
            actions, self.state = self.agent.policy.act(obs, self.prev_a, self.prev_r, self.state, np.zeros(len(obs)),
                                                        self.rng, action_mask=mask)
            self.prev_a = actions
        if self._batch is None:
            return int(actions[0])
        return {a: int(actions[k]) for k, a in enumerate(self._batch.agents) if a in observations}

    def observe(self, rewards: dict | float) -> None:
        if self._batch is None:
            self.prev_r[:] = float(rewards)
        elif self.turn_based:  # only the agents whose transitions completed
            for a, r in rewards.items():
                self.prev_r[self._batch.agents.index(a)] = float(r)
        else:
            self.prev_r = np.array([float(rewards.get(a, 0.0)) for a in self._batch.agents], np.float32)


def load_expert(spec: str):
    """`scripted:MODULE:FN` -> FN(env, observations) -> {agent: action} (turn-based games: called
    with the acting agent's observation only); `checkpoint:DIR` -> a trained agent (CheckpointExpert)."""
    kind, _, rest = spec.partition(":")
    if kind == "checkpoint":
        return CheckpointExpert(rest)
    if kind == "scripted":
        from rlfleet.platform.registry import load_callable

        return load_callable(rest, "--expert scripted:")
    raise UserError(f"--expert {spec!r}: expected scripted:MODULE:FN or checkpoint:DIR")


def record(env_id: str, expert, steps: int, out: str | Path, env_kwargs: dict | None = None, seed: int = 0,
           expert_name: str = "") -> dict:
    """Run `expert` for at least `steps` env steps (turns in turn-based games; whole episodes) and
    write a demos file atomically. Returns the file's metadata."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from rlfleet.platform.multiagent import is_aec_env, is_parallel_env
    from rlfleet.platform.registry import resolve_env

    if hasattr(expert, "make_env"):  # a trained agent brings its own env recipe
        env = expert.make_env()
        env_id, env_kwargs = expert.agent.cfg.env.id, expert.agent.cfg.env.kwargs
    else:
        env = resolve_env(env_id)(**(env_kwargs or {}))
    spaces = _agent_spaces(env)
    parallel, turn_based = is_parallel_env(env), is_aec_env(env)
    cols: dict[str, list] = {k: [] for k in (*SCALAR_COLUMNS, *LIST_COLUMNS)}
    episode, total = 0, 0
    while total < steps:
        if turn_based:
            total += _record_game(env, expert, seed + episode, episode, spaces, cols)
            episode += 1
            continue
        obs, _ = env.reset(seed=seed + episode)
        if hasattr(expert, "begin_episode"):
            expert.begin_episode(env)
        if not parallel:
            obs = {"agent": obs}
        t = 0
        while True:
            act_obs = {a: _observation(o) for a, o in obs.items()}
            masks = {a: _mask(o, spaces[a][1]) for a, o in obs.items()}
            actions = expert(env, obs if parallel else obs["agent"])
            if not parallel:
                actions = {"agent": actions}
            if parallel:
                nxt, rew, term, trunc, _ = env.step(actions)
            else:
                o2, r, te, tr, _ = env.step(actions["agent"])
                nxt, rew, term, trunc = {"agent": o2}, {"agent": r}, {"agent": te}, {"agent": tr}
            if hasattr(expert, "observe"):
                expert.observe(rew if parallel else rew["agent"])
            for a in act_obs:
                cols["episode"].append(episode)
                cols["t"].append(t)
                cols["agent"].append(a)
                cols["obs"].append(act_obs[a].reshape(-1))
                cols["next_obs"].append(_observation(nxt[a]).reshape(-1) if a in nxt else act_obs[a].reshape(-1))
                cols["action"].append(int(actions[a]))
                cols["reward"].append(float(rew.get(a, 0.0)))
                cols["terminated"].append(bool(term.get(a, False)))
                cols["truncated"].append(bool(trunc.get(a, False)))
                cols["action_mask"].append(masks[a])
            total += 1
            t += 1
            live = env.agents if parallel else ([] if (term["agent"] or trunc["agent"]) else ["agent"])
            if not live:
                break
            obs = {a: o for a, o in nxt.items() if a in live}
        episode += 1
    meta = {"format_version": FORMAT_VERSION, "env": env_id, "env_kwargs": env_kwargs or {},
            "agents": list(spaces), "spaces": {a: {"obs_shape": list(s), "num_actions": n} for a, (s, n) in spaces.items()},
            "turn_based": turn_based, "steps": total, "episodes": episode, "expert": expert_name, "seed": seed, "versions": _versions()}
    table = pa.table({
        "episode": pa.array(cols["episode"], pa.int64()), "t": pa.array(cols["t"], pa.int32()),
        "agent": pa.array(cols["agent"], pa.string()),
        "obs": pa.array([o.astype(np.float32) for o in cols["obs"]], pa.list_(pa.float32())),
        "next_obs": pa.array([o.astype(np.float32) for o in cols["next_obs"]], pa.list_(pa.float32())),
        "action": pa.array(cols["action"], pa.int64()), "reward": pa.array(cols["reward"], pa.float32()),
        "terminated": pa.array(cols["terminated"], pa.bool_()), "truncated": pa.array(cols["truncated"], pa.bool_()),
        "action_mask": pa.array(cols["action_mask"], pa.list_(pa.bool_())),
    }).replace_schema_metadata({META_KEY: json.dumps(meta).encode()})
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    pq.write_table(table, tmp)
    os.replace(tmp, out)
    env.close()
    return meta


def _record_game(env, expert, seed: int, episode: int, spaces: dict, cols: dict) -> int:
    """One game of a turn-based (AEC) env, turn by turn (as rlfleet.platform.turnbased.AECBatch
    makes transitions): the expert acts for the acting agent; an agent's row is written when its
    next turn comes or the game ends for it. Returns the number of turns."""
    env.reset(seed=seed)
    if hasattr(expert, "begin_episode"):
        expert.begin_episode(env)
    open_: dict[str, dict] = {}  # agent -> its row from its last turn, waiting for reward and next_obs
    rows: list[dict] = []
    t = 0

    def complete(agent, reward, term, trunc, next_obs) -> None:
        row = open_.pop(agent)
        row.update(reward=float(reward), terminated=bool(term), truncated=bool(trunc), next_obs=next_obs)
        rows.append(row)
        if hasattr(expert, "observe"):
            expert.observe({agent: float(reward)})

    for _ in range(1_000_000):
        if not env.agents:  # game over; agents never stepped dead end without notice
            for agent in list(open_):
                complete(agent, 0.0, True, False, open_[agent]["obs"])
            break
        agent = env.agent_selection
        o, reward, term, trunc, _ = env.last()
        if agent in open_:
            complete(agent, reward, term, trunc, _observation(o).reshape(-1))
        if term or trunc:
            env.step(None)
            continue
        n = spaces[agent][1]
        mask = _mask(o, n)
        action = expert(env, {agent: o})
        if isinstance(action, dict):
            action = action[agent]
        action = int(action)
        if not (0 <= action < n and mask[action]):
            raise UserError(f"expert chose illegal action {action} for {agent!r} at turn {t} of episode {episode} "
                            f"(legal: {[a for a in range(n) if mask[a]]})")
        open_[agent] = {"episode": episode, "t": t, "agent": agent, "obs": _observation(o).reshape(-1),
                        "action": action, "action_mask": mask}
        env.step(action)
        t += 1
    else:
        raise RuntimeError(f"episode {episode}: the game did not end")
    for row in sorted(rows, key=lambda r: r["t"]):
        for k in cols:
            cols[k].append(row[k])
    return t


def _observation(o) -> np.ndarray:
    if isinstance(o, dict):
        o = o["observation"]
    return np.asarray(o, np.float32)


def _mask(o, n: int) -> list[bool]:
    if isinstance(o, dict) and "action_mask" in o:
        return [bool(x) for x in np.asarray(o["action_mask"]).reshape(-1)[:n]]
    return [True] * n


# -- loading -----------------------------------------------------------------------------------------
def read_metadata(path: str | Path) -> dict:
    import pyarrow.parquet as pq

    try:
        schema = pq.read_schema(path)
    except (OSError, ValueError) as e:  # ArrowInvalid is a ValueError
        raise UserError(f"malformed demonstration file {path}: not a readable Parquet file ({e})") from None
    raw = (schema.metadata or {}).get(META_KEY)
    if raw is None:
        raise UserError(f"malformed demonstration file {path}: no '{META_KEY.decode()}' metadata "
                        "(not written by rlfleet demos record)")
    try:
        meta = json.loads(raw)
    except json.JSONDecodeError as e:
        raise UserError(f"malformed demonstration file {path}: metadata is not JSON ({e})") from None
    if meta.get("format_version") != FORMAT_VERSION:
        raise UserError(f"demonstration file {path}: format version {meta.get('format_version')!r}, "
                        f"this rlfleet reads version {FORMAT_VERSION}")
    return meta


def load(path: str | Path, env=None) -> tuple[dict[str, AgentDemos], dict]:
    """Read and validate a demos file. With `env` (a Gymnasium or PettingZoo env), every agent's
    observation shape and action range must match it, and a turn-based file needs a turn-based
    (AEC) env. Returns ({agent: AgentDemos}, meta)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    meta = read_metadata(path)
    table = pq.read_table(path)
    schema = table.schema
    for name, kind in SCALAR_COLUMNS.items():
        _check_type(path, schema, name, kind)
    for name, kind in LIST_COLUMNS.items():
        _check_type(path, schema, name, "list")
        item = schema.field(name).type.value_field
        _check_type(path, pa.schema([item]), item.name, kind, column=f"{name} items")
    spaces = {a: (tuple(s["obs_shape"]), int(s["num_actions"])) for a, s in meta["spaces"].items()}
    turn_based = bool(meta.get("turn_based", False))
    if env is not None:
        from rlfleet.platform.multiagent import is_aec_env

        if is_aec_env(env) != turn_based:
            kind = "turn-based" if turn_based else "simultaneous"
            raise UserError(f"demonstration file {path}: recorded on a {kind} env, the env is "
                            f"{'turn-based (AEC)' if is_aec_env(env) else 'not turn-based'}")
        actual = _agent_spaces(env)
        if set(actual) != set(spaces):
            raise UserError(f"demonstration file {path}: agents {sorted(spaces)} do not match the env's {sorted(actual)}")
        for a, (shape, n) in spaces.items():
            if actual[a] != (shape, n):
                raise UserError(f"demonstration file {path}: agent {a!r} has observation shape {shape} and {n} actions "
                                f"in the file, the env has {actual[a][0]} and {actual[a][1]}")
    agent_col = table.column("agent").to_numpy(zero_copy_only=False)
    out = {}
    for a, (shape, n) in spaces.items():
        rows = np.flatnonzero(agent_col == a)
        sub = table.take(pa.array(rows))
        size = int(np.prod(shape))
        obs = _fixed(path, sub, "obs", size).reshape((len(rows),) + shape)
        nxt = _fixed(path, sub, "next_obs", size).reshape((len(rows),) + shape)
        mask = _fixed(path, sub, "action_mask", n).astype(bool)
        action = sub.column("action").to_numpy()
        bad = np.flatnonzero((action < 0) | (action >= n))
        if bad.size:
            raise UserError(f"demonstration file {path}: agent {a!r} row {int(rows[bad[0]])} has action "
                            f"{int(action[bad[0]])}, outside 0..{n - 1}")
        if turn_based:  # a board game's moves are legal (PettingZoo ends the game on an illegal one)
            bad = np.flatnonzero(~mask[np.arange(len(rows)), action])
            if bad.size:
                raise UserError(f"demonstration file {path}: agent {a!r} row {int(rows[bad[0]])} has action "
                                f"{int(action[bad[0]])}, illegal under its action_mask")
        out[a] = AgentDemos(obs.astype(np.float32), nxt.astype(np.float32), action.astype(np.int64),
                            sub.column("reward").to_numpy().astype(np.float32),
                            sub.column("terminated").to_numpy(zero_copy_only=False).astype(bool),
                            sub.column("truncated").to_numpy(zero_copy_only=False).astype(bool),
                            mask, sub.column("episode").to_numpy(), sub.column("t").to_numpy())
    unknown = sorted(set(agent_col.tolist()) - set(spaces))
    if unknown:
        raise UserError(f"demonstration file {path}: rows for agents {unknown} that the metadata does not list")
    return out, meta


def _check_type(path, schema, name: str, kind: str, column: str | None = None) -> None:
    import pyarrow.types as pt

    col = column or name
    if schema.get_field_index(name) < 0:
        raise UserError(f"malformed demonstration file {path}: missing column {col!r}")
    typ = schema.field(name).type
    ok = {"int64": pt.is_int64, "int32": pt.is_int32, "string": lambda t: pt.is_string(t) or pt.is_large_string(t),
          "float": pt.is_floating, "bool": pt.is_boolean, "list": lambda t: pt.is_list(t) or pt.is_large_list(t)}[kind]
    if not ok(typ):
        raise UserError(f"malformed demonstration file {path}: column {col!r} has type {typ}, expected {kind}")


def _fixed(path, table, name: str, size: int) -> np.ndarray:
    col = table.column(name).combine_chunks()
    lengths = np.diff(col.offsets.to_numpy())
    bad = np.flatnonzero(lengths != size)
    if bad.size:
        raise UserError(f"demonstration file {path}: column {name!r} row {int(bad[0])} has {int(lengths[bad[0]])} "
                        f"values, the agent's space needs {size}")
    return col.values.to_numpy(zero_copy_only=False).reshape(len(col), size)
