"""EnvRunner actor: N envs, one batched forward pass per step, sequences shipped in batches.

No remote call per env step: the loop steps its envs locally, hands stacked sequences to its
shipping thread every `ship_interval` steps (platform/shipping.py: one shipment in flight, what
piles up meanwhile goes out together), and asks the learner for newer weights every
`weight_sync_interval` steps (and at most every `weight_sync_min_interval_s`) without waiting for
the answer. Batches that compute a step off the Python thread (`step_async` / `step_wait`, e.g.
SMAX's XLA call) keep computing while the loop serves the rest: with one lane the previous step's
transitions are stored meanwhile, with two lanes (`env_groups`) the other half of the envs is.
"""
from __future__ import annotations

import threading
import time
import traceback
from collections import deque

import numpy as np
import ray

from rlfleet.platform import batch as B
from rlfleet.platform.sequence import SequenceBuilder
from rlfleet.platform.shipping import Shipper


def apex_epsilons(num_slots: int, base: float = 0.4, alpha: float = 7.0) -> np.ndarray:
    """Ape-X per-actor exploration eps_i = base^(1 + alpha i / (N - 1)), i over all env slots."""
    if num_slots == 1:
        return np.array([base])
    i = np.arange(num_slots)
    return base ** (1.0 + alpha * i / (num_slots - 1))


def env_group_sizes(num_envs: int, env_groups: int | str, asynchronous: bool) -> list[int]:
    """How a runner's envs split into lanes (see `Lane`). "auto": two groups when the batch steps
    asynchronously and each group keeps >= 32 envs, else one. SMAX 3m on 2 cores, a runner actor of
    64 envs: 117-143k agent steps/s in 2 lanes, 107k in one; 3 lanes and 8 envs in 2 lanes were
    slower than 2 and 1 (each XLA call and each loop pass has a fixed cost). An odd count gives
    lanes one env apart, each size compiled once (JAX caches compilations on disk)."""
    if env_groups == "auto":
        env_groups = 2 if asynchronous and num_envs >= 64 else 1
    env_groups = max(1, min(int(env_groups), num_envs))
    return [num_envs // env_groups + (g < num_envs % env_groups) for g in range(env_groups)]


class TimeSplit:
    """Where a loop's wall-clock goes (Sample Factory style)."""

    def __init__(self, *names):
        self.totals = dict.fromkeys(names, 0.0)
        self._t = time.perf_counter()

    def mark(self, name: str) -> None:
        now = time.perf_counter()
        self.totals[name] += now - self._t
        self._t = now


def reset_state_rows(state: tuple, init: tuple, rows) -> tuple:
    """Put the recurrent state of slots `rows` back to the policy's initial state (in place)."""
    for s, s0 in zip(state, init):
        s[rows] = s0[0]
    return state


class Lane:
    """One group of a runner's envs: its batch, its slots' loop variables and its sequence builder.
    Why groups: a batch that computes its step off the Python thread (SMAX's XLA call) keeps the
    loop waiting for it; with two groups the loop acts on, stores and ships one group while the
    other's step computes (Sample Factory's double-buffered sampling)."""

    def __init__(self, envs, slots: slice, ship_interval: int):
        self.envs, self.slots, self.ship_interval = envs, slots, ship_interval
        self.step_async = getattr(envs, "step_async", None)
        self.since_ship = 0
        self.builder = None

    def __len__(self):
        return len(self.envs)


class EnvRunner:
    def __init__(self, index: int, env_maker, make_policy, algo_cfg, layout, epsilons, shards, learner,
                 weights, ship_interval: int, weight_sync_interval: int, seed: int, epsilon_warmup_steps: int = 0,
                 epsilon_warmup_done: int = 0, env_groups: int | str = "auto", weight_sync_min_interval_s: float = 0.05):
        import torch

        torch.set_num_threads(1)
        torch.set_flush_denormal(True)  # denormal weights take slow paths (see Learner._guard)
        self.index = index
        num_envs = len(epsilons) // env_maker.agents_per_env()
        groups = env_group_sizes(num_envs, env_groups, getattr(env_maker.factory, "steps_asynchronously", False))
        self.groups = [env_maker.batch(k, seed + sum(groups[:g])) for g, k in enumerate(groups)]
        self.spec = self.groups[0].spec
        self.policy = make_policy(algo_cfg, self.spec)
        self.version = -1
        self._load(weights)
        self.epsilons = np.asarray(epsilons)
        self.epsilon_warmup_steps = epsilon_warmup_steps  # this runner's share of the fleet's warm-up
        self.epsilon_warmup_done = epsilon_warmup_done  # of which a previous incarnation already did this much
        self.shards, self.learner = shards, learner
        self.layout = layout
        self.ship_interval, self.sync_interval = ship_interval, weight_sync_interval
        self.sync_min_s, self._last_sync = weight_sync_min_interval_s, 0.0
        self.rng = np.random.default_rng(seed)
        self.env_steps = 0
        self.episodes: deque[tuple[float, int]] = deque()  # drained by stats() from another thread
        self.shipper = None  # started with the loop
        self.weight_updates = 0
        self.split = TimeSplit("env", "inference", "shipping", "waiting")
        self._stop = threading.Event()
        self._thread = None
        self.error = None
        self._weights_req = None
        self._since_sync = 0

    def _load(self, weights) -> None:
        version, ref = weights
        if version > self.version:
            self.policy.load_weights(ray.get(ref[0]) if isinstance(ref, list) else ref)
            self.version = version

    # -- actor API -----------------------------------------------------------------------------
    def start(self) -> bool:
        if self._thread is None:
            self.shipper = Shipper(self.shards, self.index, self._stop, name=f"shipper-{self.index}")
            self._thread = threading.Thread(target=self._run_guarded, daemon=True, name=f"runner-{self.index}")
            self._thread.start()
        return True

    def stop(self) -> bool:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self.shipper.join()
        if not self._thread or not self._thread.is_alive():  # envs with outside resources (browsers) free them
            for envs in self.groups:
                envs.close()
        return True

    def stats(self) -> dict:
        error = self.error or (self.shipper and self.shipper.error)
        if error:
            raise RuntimeError(f"runner {self.index} loop failed:\n{error}")
        episodes = [self.episodes.popleft() for _ in range(len(self.episodes))]
        return {"index": self.index, "env_steps": self.env_steps, "episodes": episodes,
                "weights_version": self.version, "weight_updates": self.weight_updates,
                "sequences": self.shipper.sequences if self.shipper else 0, "time": dict(self.split.totals),
                "episodes_dropped": sum(getattr(envs, "dropped_episodes", 0) for envs in self.groups)}

    def current_epsilons(self) -> np.ndarray:
        """Ape-X eps per slot, after an optional linear warm-up from 1 (uniformly random acting)."""
        done = self.env_steps + self.epsilon_warmup_done
        if done >= self.epsilon_warmup_steps:
            return self.epsilons
        frac = done / self.epsilon_warmup_steps
        return self.epsilons + (1.0 - self.epsilons) * (1.0 - frac)

    # -- loop ----------------------------------------------------------------------------------
    def _run_guarded(self):
        try:
            self._run()
        except Exception:  # surfaced through stats() so the driver restarts this runner
            self.error = traceback.format_exc()

    def _run(self):
        if self.spec.turn_based:
            return self._run_turns()
        n, start = sum(len(envs) for envs in self.groups), 0
        lanes = []
        for envs in self.groups:
            lane = Lane(envs, slice(start, start + len(envs)), max(1, self.ship_interval * len(envs) // n))
            start += len(envs)
            (lane.obs, lane.legal, lane.init, lane.state, lane.prev_a, lane.prev_r, lane.ep_ret,
             lane.ep_len) = self._start(envs)
            lane.builder = SequenceBuilder(self.layout, len(lane), self._input_columns(),
                                           [s.shape[1:] for s in lane.state],
                                           max_steps_between_takes=2 * max(1, -(-lane.ship_interval // len(lane))),
                                           agents_per_env=self.spec.agents)
            self._act(lane)
            lanes.append(lane)
        while not self._stop.is_set():
            for lane in lanes:
                # a lane whose batch computes asynchronously has had its step running since _act;
                # the others step now
                res = lane.envs.step_wait() if lane.step_async else lane.envs.step(lane.actions)
                self.split.mark("env")
                record = self._advance(lane, res)
                self._act(lane)
                self._record(lane, *record)

    def _act(self, lane: Lane) -> None:
        """Choose the lane's next actions; a batch that steps asynchronously starts computing them."""
        lane.actions, lane.next_state = self.policy.act(lane.obs, lane.prev_a, lane.prev_r, lane.state,
                                                        self.current_epsilons()[lane.slots], self.rng,
                                                        action_mask=lane.legal)
        self.split.mark("inference")
        if lane.step_async:
            lane.step_async(lane.actions)
            self.split.mark("env")

    def _advance(self, lane: Lane, res) -> tuple:
        """Count the step's episodes and move the lane's loop variables on; returns what `_record` stores."""
        resets = res.reset_step  # no transition: NEXT_STEP autoreset, or an agent sitting out
        any_reset = resets.any()
        stepped = ~resets if any_reset else None
        inputs, next_inputs = {B.OBS: lane.obs}, {B.OBS: res.next_obs}
        if lane.legal is not None:
            inputs[B.ACTION_MASK], next_inputs[B.ACTION_MASK] = lane.legal, res.next_action_mask
        record = (stepped, inputs, lane.prev_a, lane.prev_r, lane.state, lane.actions, res, next_inputs,
                  len(resets) - int(resets.sum()) if any_reset else len(resets))
        lane.ep_ret += res.reward if stepped is None else res.reward * stepped
        lane.ep_len += 1 if stepped is None else stepped
        done = np.logical_or(res.terminated, res.truncated)
        if any_reset:
            done &= stepped
        if done.any():
            self._episodes_ended(done, res, lane.ep_ret, lane.ep_len)
        prev_a, prev_r, next_state = lane.actions.copy(), res.reward.astype(np.float32), lane.next_state
        new_episode = done | resets if any_reset else done  # EnvList: res.obs already holds the new first obs
        if new_episode.any():
            if any(a is b for a, b in zip(next_state, lane.state)):  # `record` holds `state`: keep it intact
                next_state = tuple(np.array(s) for s in next_state)
            next_state = reset_state_rows(next_state, lane.init, new_episode)
            prev_a[new_episode], prev_r[new_episode] = 0, 0.0
        lane.state, lane.obs, lane.legal, lane.prev_a, lane.prev_r = next_state, res.obs, res.action_mask, prev_a, prev_r
        return record

    def _record(self, lane: Lane, stepped, inputs, prev_a, prev_r, state, actions, res, next_inputs,
                transitions: int) -> None:
        """Store one iteration's transitions in the lane's sequence builder; ship and sync when due."""
        lane.builder.step(stepped, inputs, prev_a, prev_r, state, actions, res.reward, res.terminated, res.truncated,
                          next_inputs)
        self._after_step(lane, transitions)

    def _run_turns(self):
        """The loop for turn-based envs: only the slots whose turn it is act (one forward pass);
        a slot's transition is written when its next turn or its game's end completes it."""
        from rlfleet.platform.turnbased import TurnSequenceBuilder, act_on_turns

        if len(self.groups) > 1:
            raise ValueError("runners.env_groups must be 1 for turn-based envs (their loop steps one batch)")
        envs = self.groups[0]
        n = len(envs)
        obs, legal, init, state, prev_a, prev_r, ep_ret, ep_len = self._start(envs)
        acting = envs.acting
        lane = Lane(envs, slice(None), self.ship_interval)
        builder = lane.builder = TurnSequenceBuilder(self.layout, n, self._input_columns())
        split = self.split
        while not self._stop.is_set():
            actions, idx, before = act_on_turns(self.policy, acting, obs, prev_a, prev_r, state,
                                                self.current_epsilons(), self.rng, legal)
            split.mark("inference")
            inputs = {B.OBS: obs} if legal is None else {B.OBS: obs, B.ACTION_MASK: legal}
            builder.act(idx, inputs, before, actions)
            prev_a[idx] = actions[idx]
            res = envs.step(actions)
            split.mark("env")
            completed = np.flatnonzero(~res.reset_step)
            next_inputs = {B.OBS: res.next_obs}
            if legal is not None:
                next_inputs[B.ACTION_MASK] = res.next_action_mask
            builder.complete(completed, res.reward, res.terminated, res.truncated, next_inputs)
            prev_r[completed] = res.reward[completed]
            ep_ret[completed] += res.reward[completed]
            ep_len[completed] += 1
            done = np.zeros(n, bool)
            done[completed] = res.terminated[completed] | res.truncated[completed]
            if done.any():
                self._episodes_ended(done, res, ep_ret, ep_len)
                reset_state_rows(state, init, done)
                prev_a[done], prev_r[done] = 0, 0.0
            obs, legal, acting = res.obs, res.action_mask, res.acting
            self._after_step(lane, len(completed))

    def _start(self, envs) -> tuple:
        """Reset a batch and its per-slot loop variables: (obs, legal actions for obs or None, the
        policy's initial state for one slot, recurrent state, prev action, prev reward, episode
        return, episode length)."""
        n = len(envs)
        obs = envs.reset()
        legal = envs.action_mask if self.spec.action_mask else None
        state = self.policy.initial_state(n)
        self.split.mark("waiting")
        return (obs, legal, self.policy.initial_state(1), state, np.zeros(n, np.int64), np.zeros(n, np.float32),
                np.zeros(n), np.zeros(n, np.int64))

    def _input_columns(self) -> dict:
        """Per-step network inputs besides the previous action and reward: name -> (shape, dtype)."""
        spec = self.spec
        inputs = {B.OBS: (spec.obs_shape, spec.obs_dtype)}
        if spec.action_mask:
            inputs[B.ACTION_MASK] = ((spec.num_actions,), bool)
        return inputs

    def _episodes_ended(self, done: np.ndarray, res, ep_ret: np.ndarray, ep_len: np.ndarray) -> None:
        for i in np.flatnonzero(done if res.dropped is None else done & ~res.dropped):
            self.episodes.append((float(ep_ret[i]), int(ep_len[i])))
        ep_ret[done], ep_len[done] = 0.0, 0

    def _after_step(self, lane: Lane, transitions: int) -> None:
        """Count the step's transitions; ship the lane's sequences and sync weights when due."""
        self.env_steps += transitions
        lane.since_ship += transitions
        self._since_sync += transitions
        split = self.split
        split.mark("shipping")
        if lane.since_ship >= lane.ship_interval or lane.builder.must_take():
            seqs = lane.builder.take()
            if seqs is not None:
                self._ship(seqs)
            lane.since_ship = 0
        if (self._since_sync >= self.sync_interval and self._weights_req is None
                and time.monotonic() - self._last_sync >= self.sync_min_s):
            # a concurrent future: polling it each step costs ~0.1 us, ray.wait(timeout=0) ~30 us
            self._weights_req = self.learner.get_weights.remote(self.version).future()
            self._since_sync, self._last_sync = 0, time.monotonic()
        if self._weights_req is not None and self._weights_req.done():
            answer = self._weights_req.result()
            self._weights_req = None
            if answer is not None:
                self._load(answer)
                self.weight_updates += 1
            split.mark("shipping")

    def _ship(self, seqs: dict) -> None:
        """Hand stacked sequences to the shipping thread; blocks only while replay's rate limiter
        holds this runner back (that time counts as waiting)."""
        self.split.mark("shipping")
        self.shipper.put(seqs)
        self.split.mark("waiting")
