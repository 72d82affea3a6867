"""Cuts each env slot's trajectory into fixed-length sequences with stored recurrent state.

R2D2 Sec. 3: sequences of burn_in + trace steps, a new one every `period` steps, never crossing
an episode boundary. The final sequence of an episode is the episode's last T steps (padded and
masked only when the episode is shorter than T). A sequence that starts at its episode's first
step is marked FIRST: the learner trains its burn-in steps too (they have no history to warm up
on), so every step, the opening steps of each episode included, is in some sequence's loss.
"""
from __future__ import annotations

import numpy as np

from rlfleet.platform import batch as B
from rlfleet.platform.batch import SequenceLayout


class SlotSequenceBuilder:
    """One slot's sequences. `obs_shape` is the observation's shape, or a dict column name ->
    (shape, dtype) of all per-step network inputs (e.g. OBS and ACTION_MASK); in that case the
    observations given to `begin` and `step` are dicts of those columns."""

    def __init__(self, layout: SequenceLayout, obs_shape, obs_dtype=None):
        if layout.period > layout.trace:
            raise ValueError("sequence period must be <= trace so every step gets a loss")
        self.T = layout.length
        self.period = layout.period
        self.columns = isinstance(obs_shape, dict)
        spec = obs_shape if self.columns else {B.OBS: (obs_shape, obs_dtype)}
        self.inputs = {k: (tuple(shape), np.dtype(dtype)) for k, (shape, dtype) in spec.items()}
        self.hist: list[tuple] = []
        self.since_start = 0  # steps since the current sequence's start
        self.new_steps = 0  # steps not yet in any emitted sequence
        self.ep_steps = 0
        self.obs = None

    def begin(self, obs) -> None:
        """A new episode starts with observation `obs`."""
        self.hist.clear()
        self.obs, self.prev_action, self.prev_reward = obs, 0, 0.0
        self.since_start = self.new_steps = self.ep_steps = 0

    def step(self, state: tuple, action: int, reward: float, terminated: bool, truncated: bool,
             next_obs) -> dict | None:
        """Record a transition; `state` is the recurrent state the actor had before acting.

        Returns a finished sequence (dict of arrays) or None. At an episode end the caller calls
        `begin` with the next episode's first observation.
        """
        self.hist.append((self.obs, self.prev_action, self.prev_reward, state, action, reward, terminated))
        if len(self.hist) > self.T:
            del self.hist[0]
        self.obs, self.prev_action, self.prev_reward = next_obs, action, reward
        self.since_start += 1
        self.new_steps += 1
        self.ep_steps += 1
        if self.since_start == self.T:
            self.since_start -= self.period
            self.new_steps = 0
            out = self._emit(next_obs)
            if terminated or truncated:
                self.hist.clear()
            return out
        if (terminated or truncated) and self.new_steps > 0:
            out = self._emit(next_obs)
            self.hist.clear()
            return out
        return None

    def _emit(self, bootstrap_obs) -> dict:
        n, T = len(self.hist), self.T
        cols = list(zip(*self.hist))
        out = {}
        for k, (shape, dtype) in self.inputs.items():
            x = np.zeros((T + 1,) + shape, dtype)
            x[:n] = np.stack([o[k] for o in cols[0]] if self.columns else cols[0])
            x[n] = bootstrap_obs[k] if self.columns else bootstrap_obs
            out[k] = x
        prev_a = np.zeros(T + 1, np.int64)
        prev_r = np.zeros(T + 1, np.float32)
        prev_a[:n], prev_r[:n] = cols[1], cols[2]
        prev_a[n], prev_r[n] = self.hist[-1][4], self.hist[-1][5]
        action = np.zeros(T, np.int64)
        reward = np.zeros(T, np.float32)
        terminal = np.zeros(T, np.float32)
        mask = np.zeros(T, np.float32)
        action[:n], reward[:n], terminal[:n], mask[:n] = cols[4], cols[5], cols[6], 1.0
        out.update({B.PREV_ACTION: prev_a, B.PREV_REWARD: prev_r, B.ACTION: action,
                    B.REWARD: reward, B.TERMINAL: terminal, B.MASK: mask})
        for i, s in enumerate(self.hist[0][3]):
            out[B.state_key(i)] = np.asarray(s, np.float32)
        out[B.FIRST] = np.float32(self.ep_steps <= T)
        return out


def stack_sequences(seqs: list[dict]) -> dict[str, np.ndarray]:
    return {k: np.stack([s[k] for s in seqs]) for k in seqs[0]}


class SequenceBuilder:
    """The same sequences as one SlotSequenceBuilder per slot, for all slots of a runner at once.

    Why: with cheap envs the per-slot Python of the reference builder costs as much as the env.
    Here iteration t of the runner writes row t % H of time-major ring buffers
    ([H, slots, ...]: one contiguous write per column)
    (the acting inputs: observation and other input columns such as an action mask, previous
    action/reward, recurrent state; and what followed: action, reward, terminal), and a finished
    sequence is only recorded as (slot, last row, length); `take` gathers all pending sequences
    with one fancy-indexing copy per column when the runner ships. An episode's steps are
    consecutive rows; the inputs after a sequence's last step (its bootstrap) are kept aside for
    the slots that finish a sequence or an episode.
    """

    def __init__(self, layout: SequenceLayout, num_slots: int, inputs: dict, state_shapes=(),
                 max_steps_between_takes: int = 64, agents_per_env: int = 1):
        """`inputs`: column name -> (shape, dtype) of each per-step network input besides the
        previous action and reward, e.g. {OBS: ((2,), float32)}. With `agents_per_env` K > 1
        (slots e*K .. e*K+K-1 are the agents of env e), sequences also carry JOINT_ACTION: what
        every agent of the env did at each step (rows of one iteration line up across slots)."""
        self.agents_per_env = agents_per_env
        if layout.period > layout.trace:
            raise ValueError("sequence period must be <= trace so every step gets a loss")
        n, T = num_slots, layout.length
        self.T, self.period, self.n = T, layout.period, n
        self.max_steps_between_takes = max_steps_between_takes
        self.H = H = T + max_steps_between_takes + 1  # a pending sequence's rows survive until `take`
        self.inputs = {k: np.zeros((H, n) + tuple(shape), np.dtype(dtype)) for k, (shape, dtype) in inputs.items()}
        self.boot = {k: np.zeros_like(v) for k, v in self.inputs.items()}  # at rows that end a sequence
        self.prev_action = np.zeros((H, n), np.int64)
        self.prev_reward = np.zeros((H, n), np.float32)
        self.action = np.zeros((H, n), np.int64)
        self.reward = np.zeros((H, n), np.float32)
        self.terminal = np.zeros((H, n), np.float32)
        self.state = [np.zeros((H, n) + tuple(s), np.float32) for s in state_shapes]
        self.t = 0  # iterations so far; row = t % H
        self.since_start = np.zeros(n, np.int64)  # steps since the current sequence's start
        self.new_steps = np.zeros(n, np.int64)  # steps not yet in any recorded sequence
        self.ep_steps = np.zeros(n, np.int64)
        self._pending: list[tuple[np.ndarray, int, np.ndarray, np.ndarray]] = []  # (slots, t, length, first)
        self.steps_since_take = 0

    def step(self, stepped: np.ndarray | None, inputs: dict, prev_action, prev_reward, state: tuple, action,
             reward, terminated, truncated, next_inputs: dict) -> None:
        """One runner iteration: slot i acted on (inputs[k][i], prev_action[i], prev_reward[i],
        state[i]) and got (reward[i], terminated[i], truncated[i], next_inputs[k][i]). `stepped` is a
        bool mask of the slots that made a transition (None: all); the others only reset their env
        (Gymnasium NEXT_STEP autoreset) or sat out (an absent agent), and what they wrote is never read."""
        T = self.T
        row = self.t % self.H
        for k, buf in self.inputs.items():
            buf[row] = inputs[k]
        self.prev_action[row] = prev_action
        self.prev_reward[row] = prev_reward
        for buf, s in zip(self.state, state):
            buf[row] = s
        self.action[row] = action
        self.reward[row] = reward
        self.terminal[row] = terminated
        inc = 1 if stepped is None else stepped
        self.since_start += inc
        self.new_steps += inc
        self.ep_steps += inc
        done = terminated | truncated
        if stepped is not None:
            done = done & stepped
        full = self.since_start == T
        emit = full | (done & (self.new_steps > 0))
        if emit.any():
            e = np.flatnonzero(emit)
            for k, buf in self.boot.items():
                buf[row, e] = next_inputs[k][e]
            self._pending.append((e, self.t, np.minimum(self.ep_steps[e], T), self.ep_steps[e] <= T))
            self.since_start[full] -= self.period
            self.new_steps[full] = 0
        if done.any():  # the slot's next transition starts a new episode
            self.since_start[done] = self.new_steps[done] = self.ep_steps[done] = 0
        self.t += 1
        self.steps_since_take += 1

    def must_take(self) -> bool:
        return self.steps_since_take >= self.max_steps_between_takes

    def take(self) -> dict[str, np.ndarray] | None:
        """All sequences recorded since the last take, stacked ([K, T(+1), ...] per column)."""
        self.steps_since_take = 0
        if not self._pending:
            return None
        slot = np.concatenate([p[0] for p in self._pending])
        last = np.concatenate([np.full(len(p[0]), p[1]) for p in self._pending])
        length = np.concatenate([p[2] for p in self._pending])
        first = np.concatenate([p[3] for p in self._pending])
        self._pending.clear()
        T, H = self.T, self.H
        start = last - length + 1
        rows = (start[:, None] + np.arange(T)) % H  # [K, T]
        s = slot[:, None]
        valid = np.arange(T) < length[:, None]  # steps with a transition (the mask)
        invalid = ~valid if length.min() < T else None  # only episodes' last sequences can be short
        k = np.arange(len(slot))
        last_row = last % H
        flat = rows * self.n + s  # index into a ring buffer viewed as [H * n, ...]
        flat_boot = np.concatenate([flat, flat[:, :1]], axis=1)  # + a placeholder for the bootstrap input

        def gather(buf, boot=None):
            """[K, T] (+ the bootstrap input at index `length`: [K, T+1]); zero past the valid steps.
            One np.take from the flattened ring (a copy per row), then the few short sequences zeroed."""
            x = np.take(buf.reshape((-1,) + buf.shape[2:]), flat if boot is None else flat_boot, axis=0)
            if invalid is not None:
                x[:, :T][invalid] = 0
            if boot is not None:
                x[k, length] = boot
                x[:, T][length < T] = 0  # the placeholder of the short ones (their bootstrap is at `length`)
            return x

        out = {name: gather(buf, self.boot[name][last_row, slot]) for name, buf in self.inputs.items()}
        out.update({B.PREV_ACTION: gather(self.prev_action, self.action[last_row, slot]),
                    B.PREV_REWARD: gather(self.prev_reward, self.reward[last_row, slot]),
                    B.ACTION: gather(self.action),
                    B.REWARD: gather(self.reward),
                    B.TERMINAL: gather(self.terminal),
                    B.MASK: valid.astype(np.float32),
                    B.FIRST: first.astype(np.float32)})
        if self.agents_per_env > 1:
            K = self.agents_per_env
            siblings = (slot // K * K)[:, None] + np.arange(K)  # [N, K]
            joint = self.action[rows[:, :, None], siblings[:, None, :]]  # [N, T, K]
            out[B.JOINT_ACTION] = np.where(valid[..., None], joint, 0)
        for i, buf in enumerate(self.state):
            out[B.state_key(i)] = buf[start % H, slot]
        return out
