"""`smax:<scenario>`: SMAX (JaxMARL's StarCraft micro-management without the game) as runner slots.

`smax:3m`, `smax:2s3z`, `smax:8m`, ... are `HeuristicEnemySMAX` battles: our units are the agents,
the enemy plays JaxMARL's scripted heuristic. Why a batch of its own rather than N env objects:
one SMAX env in a Python loop runs ~1k steps/s and each JAX process costs ~0.6 GB and seconds of
import, so all N envs of a runner live in one `jax.vmap`-ed, jitted step (one XLA call per runner
step, whatever N is). The batch has the same interface as `MultiAgentBatch`: (env, agent) slots,
per-slot legal-action masks (SMAX's available actions), a one-hot agent index appended to each
observation (parameter sharing), dead agents sitting out (`reset_step`) until their battle ends.
The global state (SMAX `world_state`) of each env is `batch.world_state`, and `global_state: true`
appends it to every agent's observation.
"""
from __future__ import annotations

import functools
import os

import numpy as np

from rlfleet.platform.envs import EnvSpec, StepResult
from rlfleet.platform.errors import UserError, did_you_mean
from rlfleet.platform.multiagent import agent_groups
from rlfleet.platform.registry import register_env_family

# SMAC scenarios SMAX ships (jaxmarl.environments.smax.smax_env.MAP_NAME_TO_SCENARIO); listed here
# so that a typo is caught in the driver without importing JAX.
SCENARIOS = ("2s3z", "3s5z", "5m_vs_6m", "10m_vs_11m", "27m_vs_30m", "3s5z_vs_3s6z", "3s_vs_5z",
             "6h_vs_8z", "3m", "8m", "25m", "2s_vs_1sc", "1c3s5z", "MMM", "MMM2",
             "smacv2_5_units", "smacv2_10_units", "smacv2_20_units")


def _setup_jax() -> None:
    """JAX on the CPU with one intra-op worker (not a worker per core of a node shared with other
    actors: the XLA flag keeps Eigen ops inside a program single-threaded, the pool's size is set
    by `_start_backend_with_one_worker`), and compiled steps cached on disk (a restarted runner or
    a new evaluator skips the 5-30 s compile). Set before JAX is first imported in this process;
    the user's own settings win."""
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false")
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", os.path.expanduser("~/.cache/rlfleet/jax"))
    _start_backend_with_one_worker()


def _start_backend_with_one_worker() -> None:
    """Start JAX's CPU backend with a one-thread intra-op pool. XLA sizes that (Eigen) pool from the
    process's CPU affinity when the backend starts, whatever XLA_FLAGS say, and on SMAX's small
    per-step programs its workers mostly spin: on 2 cores, 500 vmapped steps of 64 battles took
    0.67 s with one worker and 0.77 s with two, the second burning half a core that the runner's
    other work and the learner needed. So the backend starts while this thread is pinned to one
    core, and then every thread (the new worker included) gets the process's affinity back.
    `RLFLEET_JAX_THREADS=all` keeps JAX's default pool."""
    if os.environ.get("RLFLEET_JAX_THREADS") == "all" or not hasattr(os, "sched_setaffinity"):
        return
    full = os.sched_getaffinity(0)
    if len(full) == 1:
        return
    os.sched_setaffinity(0, {min(full)})
    try:
        import jax

        jax.devices()  # starts the backend (no-op if an earlier import already did: then its pool stays)
    finally:
        for tid in os.listdir("/proc/self/task"):
            try:
                os.sched_setaffinity(int(tid), full)
            except OSError:  # a thread that ended meanwhile
                pass


@functools.lru_cache(maxsize=None)
def make_smax(scenario: str, max_steps: int = 100, enemy_shoots: bool = True, attack_mode: str = "closest",
              won_battle_bonus: float = 1.0):
    """The raw JaxMARL env (functional API: reset(key), step_env(key, state, actions))."""
    _setup_jax()
    from jaxmarl import make
    from jaxmarl.environments.smax import map_name_to_scenario

    try:
        sc = map_name_to_scenario(scenario)
    except KeyError:
        raise UserError(f"unknown SMAX scenario {scenario!r}{did_you_mean(scenario, list(SCENARIOS))}") from None
    return make("HeuristicEnemySMAX", scenario=sc, max_steps=max_steps, enemy_shoots=enemy_shoots,
                attack_mode=attack_mode, won_battle_bonus=won_battle_bonus)


def env_keys(seed: int, n: int):
    """Env e starts from PRNGKey(seed + e), so env e of a batch seeded s replays a batch of one
    seeded s + e (what the vmap-equals-single-stepping test relies on)."""
    import jax

    return jax.vmap(jax.random.PRNGKey)(np.arange(seed, seed + n, dtype=np.uint32))


@functools.lru_cache(maxsize=None)
def _encoders(env, agent_id: bool, global_state: bool):
    """(batch reset, batch step, reset_one, step_one, unpack). reset_one / step_one are the per-env
    functions, returning the state pytree and encoded slot arrays [K, obs_dim] (the observation, then
    the world state if asked, then the agent one-hot); the batch versions are them vmapped and jitted
    on packed arrays (below); unpack turns a packed batch state back into the pytree. Cached per env
    config so batches of the same config (evaluators, tests) share compilations."""
    import jax
    import jax.numpy as jnp

    agents, K = env.agents, env.num_agents
    n_ally = env.num_allies
    eye = jnp.eye(K, dtype=jnp.float32)

    def encode(obs):
        x = jnp.stack([obs[a] for a in agents]).astype(jnp.float32)
        ws = obs["world_state"].astype(jnp.float32)
        parts = [x] + ([jnp.broadcast_to(ws, (K,) + ws.shape)] if global_state else []) + ([eye] if agent_id else [])
        return jnp.concatenate(parts, axis=-1), ws

    def masks(state):
        avail = env.get_avail_actions(state)
        return jnp.stack([avail[a] for a in agents]).astype(bool)

    def reset(key):
        key, k = jax.random.split(key)
        obs, state = env.reset(k)
        # a reset leaves one heuristic-state leaf weakly typed and a step does not: make the types
        # match, or the second step would compile the step function a second time
        state = jax.tree.map(lambda x: jnp.asarray(x, x.dtype), state)
        x, ws = encode(obs)
        return key, state, x, ws, masks(state)

    def step(key, state, actions):
        key, k_step, k_reset = jax.random.split(key, 3)
        obs, st, rew, dones, _ = env.step_env(k_step, state, {a: actions[i] for i, a in enumerate(agents)})
        next_x, next_ws = encode(obs)
        next_mask = masks(st)
        alive = st.state.unit_alive
        allies_dead, enemies_dead = ~alive[:n_ally].any(), ~alive[n_ally:].any()
        done = dones["__all__"]
        won = enemies_dead & ~allies_dead
        timeout = done & ~allies_dead & ~enemies_dead
        _, state_r, x_r, ws_r, mask_r = reset(k_reset)
        pick = lambda r, s: jax.lax.select(done, r, s)  # noqa: E731  (JaxMARL's own auto-reset rule)
        state_out = jax.tree.map(pick, state_r, st)
        out = (pick(x_r, next_x), pick(ws_r, next_ws), pick(mask_r, next_mask))
        agent_dead = jnp.stack([dones[a] for a in agents])
        reward = jnp.stack([rew[a] for a in agents]).astype(jnp.float32)
        return (key, state_out, next_x, next_mask) + out + (reward, agent_dead, done, won, timeout)

    # The batch's step moves packed arrays: the battle state as one array per dtype and the ten
    # outputs as one float32 array. A jitted call's dispatch costs per argument and per result, and
    # it is on the runner's critical path: 14 arrays in / 23 out took ~125 us per call, 5 / 5 ~70 us
    # (32 battles of 3m); one device->host view instead of ten saves ~20 us more.
    _, state0, *_ = jax.eval_shape(reset, jax.random.PRNGKey(0))
    packer = StatePacker(state0)

    def step_packed(key, packed, actions):
        key, st, *out = step(key, packer.unpack(packed), actions)
        return key, packer.pack(st), jnp.concatenate([x.reshape(-1).astype(jnp.float32) for x in out])

    def reset_packed(key):
        key, st, x, ws, mask = reset(key)
        return key, packer.pack(st), x, ws, mask

    return (jax.jit(jax.vmap(reset_packed)), jax.jit(jax.vmap(step_packed)), reset, step,
            jax.jit(jax.vmap(packer.unpack)))


class StatePacker:
    """A pytree of arrays <-> one flat array per dtype (traced inside jit: the copies fuse)."""

    def __init__(self, tree):
        import jax

        leaves, self.treedef = jax.tree.flatten(tree)
        self.dtypes = sorted({str(leaf.dtype) for leaf in leaves})
        self.layout, offsets = [], dict.fromkeys(self.dtypes, 0)
        for leaf in leaves:
            size = int(np.prod(leaf.shape))
            self.layout.append((self.dtypes.index(str(leaf.dtype)), offsets[str(leaf.dtype)], leaf.shape, size))
            offsets[str(leaf.dtype)] += size

    def pack(self, tree) -> tuple:
        import jax
        import jax.numpy as jnp

        parts = [[] for _ in self.dtypes]
        for leaf, (g, _, _, _) in zip(jax.tree.leaves(tree), self.layout):
            parts[g].append(leaf.reshape(-1))
        return tuple(jnp.concatenate(p) for p in parts)

    def unpack(self, packed: tuple):
        import jax

        return jax.tree.unflatten(self.treedef, [packed[g][o:o + size].reshape(shape)
                                                 for g, o, shape, size in self.layout])


class SmaxBatch:
    """N SMAX battles x K agents = N*K runner slots, stepped by one vmapped XLA call.

    After each step `last_done[e]` / `last_won[e]` say whether battle e ended on that step and
    whether our side won (all enemies dead, one of ours alive): benchmarks count win rates from them.
    """

    def __init__(self, n: int, seed: int, scenario: str, agent_id: bool = True, policy_mapping="shared",
                 global_state: bool = False, max_steps: int = 100, enemy_shoots: bool = True,
                 attack_mode: str = "closest", won_battle_bonus: float = 1.0, dead_agents: str = "sit_out",
                 reward_scale: float = 1.0):
        """`dead_agents`: "sit_out" (a dead unit's episode ends when it dies: no bootstrap past death,
        the TD target of JaxMARL's IQL, which marks a unit done when it dies) or "wait" (it stays in
        the battle until the end with only the stop action legal and keeps receiving the team reward,
        so a unit's value includes the win its death helped: "noble sacrifice"). `reward_scale` multiplies rewards (JaxMARL's IQL/QMIX use 10, SMAC's
        scale: SMAX rewards sum to about 1 + the win bonus per battle)."""
        if dead_agents not in ("sit_out", "wait"):
            raise UserError(f"env.kwargs.dead_agents must be 'sit_out' or 'wait', got {dead_agents!r}")
        self.dead_wait, self.reward_scale = dead_agents == "wait", float(reward_scale)
        self.env = make_smax(scenario, max_steps, enemy_shoots, attack_mode, won_battle_bonus)
        self.scenario, self.num_envs, self.seed = scenario, n, seed
        env = self.env
        self.agents = list(env.agents)
        self.K = K = env.num_agents
        self.n = n * K
        obs_dim = env.observation_space(self.agents[0]).shape[0]
        self.state_dim = int(env.state_size)
        dim = obs_dim + (self.state_dim if global_state else 0) + (K if agent_id else 0)
        num_actions = int(env.action_space(self.agents[0]).n)
        self.spec = EnvSpec((dim,), "float32", num_actions, action_mask=True, agents=K,
                            agent_groups=agent_groups(self.agents, policy_mapping, agent_id),
                            agent_names=tuple(self.agents), agent_id=agent_id)
        self._reset, self._step, self.reset_one, self.step_one, self._unpack = _encoders(env, agent_id, global_state)
        self._keys = None  # created at the first reset (compiling is deferred until then too)
        self._state = None  # the battles' state, packed (see _encoders)
        dims = [("next_obs", K * dim), ("next_mask", K * num_actions), ("obs", K * dim), ("world_state", self.state_dim),
                ("mask", K * num_actions), ("reward", K), ("agent_dead", K), ("done", 1), ("won", 1), ("timeout", 1)]
        ends = np.cumsum([d for _, d in dims])
        self._out_slices = [slice(e - d, e) for e, (_, d) in zip(ends, dims)]
        self._pending = None  # the outputs of a step started by step_async
        self.action_mask = np.ones((self.n, num_actions), bool)
        self.world_state = np.zeros((n, self.state_dim), np.float32)
        self.last_done = np.zeros(n, bool)
        self.last_won = np.zeros(n, bool)
        self._live = np.ones((n, K), bool)

    def __len__(self):
        return self.n

    def reset(self, seed: int | None = None) -> np.ndarray:
        """Seeds the battles on the first reset only (or with `seed` when given), so repeated
        evaluations see new start states."""
        import jax

        if seed is not None or self._keys is None:
            self.seed = self.seed if seed is None else seed
            self._keys = env_keys(self.seed, self.num_envs)
        keys = self._keys
        self._pending = None
        self._keys, self._state, x, ws, mask = self._reset(keys)
        x, ws, mask = jax.device_get((x, ws, mask))
        self.world_state = ws
        self.action_mask = mask.reshape(self.n, -1)
        self._live[:] = True
        return x.reshape(self.n, -1)

    def step(self, actions: np.ndarray) -> StepResult:
        self.step_async(actions)
        return self.step_wait()

    def step_async(self, actions: np.ndarray) -> None:
        """Start the step: XLA computes it on its own thread (JAX's asynchronous dispatch), so the
        caller can do other work (a runner stores and ships the previous transition) until `step_wait`."""
        if self._state is None:
            raise RuntimeError("SmaxBatch.step before reset")
        if self._pending is not None:
            raise RuntimeError("SmaxBatch.step_async twice without step_wait")
        acts = np.asarray(actions, np.int32).reshape(self.num_envs, self.K)
        self._keys, self._state, *self._pending = self._step(self._keys, self._state, acts)

    def step_wait(self) -> StepResult:
        """The started step's result (blocks until XLA is done)."""
        if self._pending is None:
            raise RuntimeError("SmaxBatch.step_wait without step_async")
        (out,), self._pending = self._pending, None
        out = np.asarray(out)  # waits for XLA; a view of the CPU buffer (jax.device_get costs ~100 us more)
        if out.shape[1] != self._out_slices[-1].stop:  # the slices would silently shift
            raise RuntimeError(f"SMAX step output has {out.shape[1]} columns, expected {self._out_slices[-1].stop}")
        next_x, next_mask, x, ws, mask, reward, agent_dead, done, won, timeout = (
            out[:, s] for s in self._out_slices)
        next_mask, mask, agent_dead = next_mask > 0.5, mask > 0.5, agent_dead > 0.5
        done, won, timeout = done[:, 0] > 0.5, won[:, 0] > 0.5, timeout[:, 0] > 0.5
        live = self._live
        sat_out = ~live
        if self.dead_wait:  # every agent's episode is the battle
            agent_dead = np.zeros_like(agent_dead)
        # an agent's episode ends when it dies or the battle ends; a battle that ran out of time
        # truncates the agents still alive (bootstrapping stays valid for them)
        term = live & (agent_dead | (done & ~timeout)[:, None])
        trunc = live & ~term & timeout[:, None]
        self._live = np.where(done[:, None], True, live & ~agent_dead)
        if self.reward_scale != 1.0:
            reward = reward * np.float32(self.reward_scale)
        self.world_state, self.last_done, self.last_won = ws, done, won
        self.action_mask = mask.reshape(self.n, -1)
        return StepResult(next_x.reshape(self.n, -1), (reward * live).reshape(-1), term.reshape(-1),
                          trunc.reshape(-1), sat_out.reshape(-1), x.reshape(self.n, -1),
                          action_mask=self.action_mask, next_action_mask=next_mask.reshape(self.n, -1))

    @property
    def battle_state(self):
        """The battles' JaxMARL state (a pytree with a leading env axis), for tests and inspection."""
        return self._unpack(self._state)

    def close(self):
        self._state = self._pending = None


class SmaxFactory:
    """Picklable factory for one scenario; `make_batch` is what runners call (EnvMaker.batch)."""

    steps_asynchronously = True  # its batches have step_async / step_wait (runners may split them in lanes)

    def __init__(self, scenario: str):
        self.scenario = scenario

    def make_batch(self, n: int, seed: int, **kwargs) -> SmaxBatch:
        return SmaxBatch(n, seed, self.scenario, **kwargs)

    def __call__(self, **kwargs):
        raise UserError(f"smax:{self.scenario} is a vectorized JAX env: it runs through the runner's batch "
                        f"(make_batch), not as a single env object")


def resolve(name: str) -> SmaxFactory:
    if name not in SCENARIOS:
        raise UserError(f"unknown env 'smax:{name}'{did_you_mean('smax:' + name, ['smax:' + s for s in SCENARIOS])}")
    return SmaxFactory(name)


register_env_family("smax", resolve, "SMAX StarCraft micro-management (JaxMARL, heuristic enemy), e.g. smax:3m; "
                    "all envs of a runner in one jax.vmap", requires={"jaxmarl": "smax"})
