"""smax: family: JaxMARL SMAX battles vectorized with jax.vmap inside one batch (real jaxmarl)."""
import numpy as np
import pytest

pytest.importorskip("jaxmarl")

import rlfleet.envs.smax as smax  # noqa: E402  (registers the smax: family)
from rlfleet.platform import batch as B  # noqa: E402
from rlfleet.platform.errors import UserError  # noqa: E402
from rlfleet.platform.policies import random_legal_actions  # noqa: E402

MAX_STEPS = 12  # short battles so that episode ends (time-outs and decided fights) come quickly


@pytest.fixture(scope="module")
def batch():
    """One batch for the module: each new batch shape costs a JAX compile of several seconds."""
    return smax.SmaxBatch(3, 7, "3m", max_steps=MAX_STEPS)


def _random_run(batch, steps, seed=0):
    rng = np.random.default_rng(seed)
    batch.reset()
    for _ in range(steps):
        actions = random_legal_actions(rng, len(batch), batch.spec.num_actions, batch.action_mask)
        yield actions, batch.step(actions)


def test_spec_slots_and_masks_follow_jaxmarl(batch):
    b = batch
    assert len(b) == 9 and b.spec.agents == 3 and b.spec.num_actions == 8 and b.spec.action_mask
    assert b.spec.obs_shape == (75 + 3,) and b.spec.agent_names == ("ally_0", "ally_1", "ally_2")
    obs = b.reset()
    assert obs.shape == (9, 78) and obs.dtype == np.float32
    # agent one-hot at the end of each slot's observation: slot i is agent i % 3
    np.testing.assert_array_equal(obs[:, -3:].argmax(1), np.tile(np.arange(3), 3))
    # battles start with the armies out of range: moves and stop legal, no attack target
    np.testing.assert_array_equal(b.action_mask, np.tile([True] * 5 + [False] * 3, (9, 1)))
    assert b.world_state.shape == (3, b.state_dim)
    # the mask is exactly JaxMARL's available actions for the current state (env 1)
    import jax

    avail = b.env.get_avail_actions(jax.tree.map(lambda x: x[1], b.battle_state))
    np.testing.assert_array_equal(b.action_mask[3:6], np.stack([np.asarray(avail[a], bool) for a in b.agents]))


def test_masks_respected_dead_agents_sit_out_and_episodes_end_and_reset(batch):
    b = batch
    mask = None
    ends = timeouts = deaths = 0
    for step, (actions, res) in enumerate(_random_run(b, 4 * MAX_STEPS)):
        if mask is not None:  # the actions drawn were legal under the mask the batch gave for `obs`
            assert mask[np.arange(len(actions)), actions].all()
        assert res.action_mask.any(1).all() and res.next_action_mask.any(1).all()
        live = ~res.reset_step
        # a slot that sits out (its agent died earlier in this battle) has no transition
        assert not res.terminated[~live].any() and not res.truncated[~live].any() and (res.reward[~live] == 0).all()
        # a dead agent can only stop (JaxMARL's rule), so the mask forbids everything else
        died = res.terminated & ~np.repeat(b.last_done, 3)
        deaths += died.sum()
        assert (res.next_action_mask[died].sum(1) == 1).all()
        for e in np.flatnonzero(b.last_done):
            ends += 1
            slots = slice(3 * e, 3 * e + 3)
            on = live[slots]
            # every agent still in the battle ends its episode with it, exactly one of term/trunc
            assert (res.terminated[slots] ^ res.truncated[slots])[on].all()
            if res.truncated[slots].any():
                timeouts += 1
                assert not b.last_won[e]
            # the next observation is a fresh battle: attack targets out of range again
            np.testing.assert_array_equal(res.action_mask[slots, 5:], False)
        assert int(np.asarray(b.battle_state.state.step).max()) <= MAX_STEPS
        mask = res.action_mask
    assert ends >= 8 and timeouts >= 1
    assert deaths >= 1
    b.reset()
    assert b._live.all()


def test_vmapped_batch_matches_stepping_each_env_alone(batch):
    import jax

    b, n = batch, 3
    reset_one, step_one = jax.jit(b.reset_one), jax.jit(b.step_one)
    singles = [reset_one(k) for k in smax.env_keys(b.seed, n)]
    obs = b.reset(seed=b.seed)
    np.testing.assert_allclose(obs, np.concatenate([np.asarray(s[2]) for s in singles]), atol=1e-5)
    rng = np.random.default_rng(0)
    saw_reset = False
    for _ in range(2 * MAX_STEPS):
        actions = random_legal_actions(rng, len(b), b.spec.num_actions, b.action_mask)
        res = b.step(actions)
        for e in range(n):
            key, state = singles[e][0], singles[e][1]
            out = step_one(key, state, np.asarray(actions[3 * e:3 * e + 3], np.int32))
            singles[e] = out[:2]
            next_x, next_mask, x, ws, mask, reward, agent_dead, done, won, timeout = map(np.asarray, out[2:])
            s = slice(3 * e, 3 * e + 3)
            np.testing.assert_allclose(res.next_obs[s], next_x, atol=1e-5)
            np.testing.assert_allclose(res.obs[s], x, atol=1e-5)
            np.testing.assert_array_equal(res.action_mask[s], mask)
            np.testing.assert_array_equal(res.next_action_mask[s], next_mask)
            np.testing.assert_allclose(b.world_state[e], ws, atol=1e-5)
            assert b.last_done[e] == done and b.last_won[e] == won
            live = ~res.reset_step[s]
            np.testing.assert_allclose(res.reward[s], reward * live, atol=1e-6)
            saw_reset |= bool(done)
    assert saw_reset


def test_async_step_is_the_same_step_and_misuse_is_refused(batch):
    b = batch
    b.reset(seed=3)
    b.step_async(np.zeros(len(b), np.int64))
    with pytest.raises(RuntimeError, match="twice"):
        b.step_async(np.zeros(len(b), np.int64))
    b.step_wait()
    with pytest.raises(RuntimeError, match="without step_async"):
        b.step_wait()


class Synchronous:
    """A batch without step_async: the runner then calls step(), the synchronous order."""

    def __init__(self, batch):
        self.batch = batch

    def __len__(self):
        return len(self.batch)

    def __getattr__(self, name):
        if name == "step_async":
            raise AttributeError(name)
        return getattr(self.batch, name)


def run_collecting(env_async: bool, n: int = 6) -> list[dict]:
    """The runner's loop on 3 battles with random actions until it has shipped `n` times; returns the shipments."""
    from rlfleet.platform.batch import SequenceLayout
    from rlfleet.platform.envs import EnvMaker
    from rlfleet.platform.policies import RandomPolicy
    from rlfleet.platform.runner import EnvRunner, apex_epsilons

    shipped = []

    class Collecting(EnvRunner):
        def _ship(self, seqs):
            shipped.append(seqs)
            if len(shipped) == n:
                self._stop.set()

    maker = EnvMaker(smax.resolve("3m"), {"max_steps": MAX_STEPS})
    runner = Collecting(0, maker, RandomPolicy, None, SequenceLayout(0, 4, 2), apex_epsilons(9), shards=[],
                        learner=None, weights=(0, {}), ship_interval=20, weight_sync_interval=10**9, seed=5)
    if not env_async:
        runner.groups = [Synchronous(g) for g in runner.groups]
    assert bool(getattr(runner.groups[0], "step_async", None)) == env_async
    runner._run()
    return shipped


def test_runner_stores_the_same_sequences_when_the_env_steps_asynchronously():
    """The loop stores each transition while the next step computes (SmaxBatch.step_async): what
    it ships must be exactly what the synchronous loop ships."""
    sync, overlapped = run_collecting(env_async=False), run_collecting(env_async=True)
    assert len(sync) == len(overlapped) == 6
    for a, b in zip(sync, overlapped):
        assert a.keys() == b.keys()
        for k in a:
            np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    assert sum(s[B.MASK].sum() for s in sync) > 100


class ObsPolicy:
    """Deterministic given the observations (no rng): a lane's trajectory does not depend on what
    the other lane drew. Stops its runner after `limit` act calls."""

    def __init__(self, spec, limit, box):
        self.num_actions, self.limit, self.box, self.calls = spec.num_actions, limit, box, 0
        self.epsilons = []  # what each act call was given

    def initial_state(self, n):
        return (np.zeros((n, 2), np.float32),)

    def load_weights(self, weights):
        pass

    def act(self, obs, prev_action, prev_reward, state, epsilon, rng, action_mask=None):
        self.calls += 1
        self.epsilons.append(np.array(epsilon))
        if self.calls == self.limit:
            self.box[0]._stop.set()
        want = (np.abs(obs).sum(axis=1) * 1000).astype(np.int64) % self.num_actions
        legal = action_mask[np.arange(len(obs)), want]
        actions = np.where(legal, want, action_mask.argmax(axis=1))
        return actions, (state[0] + 1,)


def run_lanes(num_envs, env_groups, seed, ship_interval, iterations):
    from rlfleet.platform.batch import SequenceLayout
    from rlfleet.platform.envs import EnvMaker
    from rlfleet.platform.runner import EnvRunner, apex_epsilons

    shipped, box = [], []

    class Collecting(EnvRunner):
        def _ship(self, seqs):
            shipped.extend({k: v[j] for k, v in seqs.items()} for j in range(len(seqs[B.MASK])))

    lanes = 1 if env_groups == "auto" else env_groups
    maker = EnvMaker(smax.resolve("3m"), {"max_steps": MAX_STEPS})
    runner = Collecting(0, maker, lambda cfg, spec: ObsPolicy(spec, lanes * (iterations + 1), box), None,
                        SequenceLayout(0, 4, 2), apex_epsilons(3 * num_envs), shards=[], learner=None,
                        weights=(0, {}), ship_interval=ship_interval, weight_sync_interval=10**9, seed=seed,
                        env_groups=env_groups)
    box.append(runner)
    runner._run()
    return runner, shipped


def test_two_lanes_ship_what_each_group_alone_would_ship():
    """A runner of 4 battles in 2 lanes (each stepping while the loop serves the other) stores the
    same sequences as two runners of 2 battles each, seeded as the lanes are."""
    key = lambda seq: b"".join(np.ascontiguousarray(seq[k]).tobytes() for k in sorted(seq))  # noqa: E731
    both, shipped = run_lanes(4, 2, seed=11, ship_interval=24, iterations=30)
    assert [len(g) for g in both.groups] == [6, 6]
    # the lanes take turns and each explores with its own slots' Ape-X epsilons
    from rlfleet.platform.runner import apex_epsilons

    eps = apex_epsilons(12)
    for i, got in enumerate(both.policy.epsilons):
        np.testing.assert_array_equal(got, eps[6 * (i % 2):6 * (i % 2) + 6])
    alone = [run_lanes(2, "auto", seed=s, ship_interval=12, iterations=30)[1] for s in (11, 13)]
    assert sorted(map(key, shipped)) == sorted(key(q) for part in alone for q in part)
    assert len(shipped) > 40 and sum(q[B.MASK].sum() for q in shipped) > 200


def test_family_resolves_scenarios_and_explains_bad_names():
    from rlfleet.platform.registry import resolve_env

    factory = resolve_env("smax:2s3z")
    assert hasattr(factory, "make_batch")
    with pytest.raises(UserError, match="did you mean: smax:3m"):
        resolve_env("smax:3n")
    with pytest.raises(UserError, match="make_batch"):
        factory()


def test_global_state_is_appended_when_asked():
    b = smax.SmaxBatch(1, 0, "3m", global_state=True, agent_id=False, max_steps=MAX_STEPS)
    obs = b.reset()
    assert obs.shape == (3, 75 + b.state_dim)
    for k in range(3):
        np.testing.assert_allclose(obs[k, 75:], b.world_state[0])


def test_r2d2_with_parameter_sharing_trains_on_smax_3m_through_ray(ray_session, tiny_config):
    import rlfleet

    tiny_config["env"] = {"id": "smax:3m", "kwargs": {"max_steps": 30}}
    tiny_config["runners"].update(num_runners=1, envs_per_runner=4)  # each JAX process imports and compiles
    tiny_config["stop"] = {"env_steps": 1500}
    tiny_config["eval"] = {"interval_env_steps": 0}  # an evaluator would be one more JAX process to start
    summary = rlfleet.train(tiny_config)
    assert summary["stop_reason"] == "env_steps"
    assert summary["updates"] > 0 and summary["episodes"] > 0
    assert min(summary["runner_weights_versions"]) >= 1
    # battles last at most 30 steps (90 agent steps), one episode per agent each: of the >= 1500
    # agent steps at most 4 battles (one per env) are still running at the end
    assert summary["episodes"] >= 3 * (1500 // 90 - 4)


def test_dead_agents_wait_for_the_battle_end_with_the_team_reward():
    """dead_agents="wait" (JaxMARL's baselines): a dead unit stays in its battle, can only stop,
    and gets the team's (scaled) reward until the battle ends; no slot ever sits out."""
    b = smax.SmaxBatch(3, 7, "3m", max_steps=MAX_STEPS, dead_agents="wait", reward_scale=10.0)
    plain = smax.SmaxBatch(3, 7, "3m", max_steps=MAX_STEPS)
    rng = np.random.default_rng(0)
    b.reset(), plain.reset()
    waited = 0
    for _ in range(6 * MAX_STEPS):
        actions = random_legal_actions(rng, len(b), b.spec.num_actions, b.action_mask)
        res, ref = b.step(actions), plain.step(actions)  # same battles, same actions
        assert not res.reset_step.any()
        done = np.repeat(b.last_done, 3)
        assert not (res.terminated | res.truncated)[~done].any()  # nobody's episode ends before the battle's
        reward = res.reward.reshape(3, 3)
        np.testing.assert_allclose(reward, reward[:, :1].repeat(3, 1))  # every unit gets the team reward
        live = ~ref.reset_step
        np.testing.assert_allclose(res.reward[live], 10.0 * ref.reward[live], rtol=1e-5)
        dead = ~np.asarray(b.battle_state.state.unit_alive)[:, :3].reshape(-1) & ~done
        waited += dead.sum()
        assert (b.action_mask[dead].sum(1) == 1).all()  # the dead can only stop
    assert waited > 0


def test_bad_dead_agents_option_is_a_user_error():
    with pytest.raises(UserError, match="dead_agents"):
        smax.SmaxBatch(1, 0, "3m", dead_agents="respawn")


def test_jax_backend_starts_with_one_intra_op_worker_and_affinity_restored():
    """XLA sizes its CPU pool from the affinity at backend start; its extra workers only spin on
    SMAX's small steps. In a fresh process: at most one pool worker, every thread's affinity back."""
    import os
    import subprocess
    import sys

    code = ("import os\n"
            "from rlfleet.envs.smax import SmaxBatch\n"
            "full = sorted(os.sched_getaffinity(0))\n"
            "b = SmaxBatch(2, 0, '3m'); b.reset()\n"
            "tasks = os.listdir('/proc/self/task')\n"
            "names = [open(f'/proc/self/task/{t}/comm').read().strip() for t in tasks]\n"
            "print(names.count('tf_XLAEigen'), all(sorted(os.sched_getaffinity(int(t))) == full for t in tasks))\n")
    env = {k: v for k, v in os.environ.items() if k != "RLFLEET_JAX_THREADS"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    workers, restored = out.stdout.split()[-2:]
    assert int(workers) <= 1, out.stdout
    assert restored == "True", out.stdout
    if len(os.sched_getaffinity(0)) > 1:  # the default pool has a worker per core (what the start avoids)
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             env=dict(env, RLFLEET_JAX_THREADS="all"), timeout=300)
        assert int(out.stdout.split()[-2]) > 1, out.stdout
