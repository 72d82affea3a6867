"""Turn-based (AEC) PettingZoo envs as runner slots: N envs with K agents = N*K slots, of which
one per env acts at each step.

An agent's transition is (its observation at its turn, its action, the reward it accumulated
until its next turn or the game's end, its next turn's observation, terminal if the game ended
for it): when a game ends every agent's last transition ends with its final reward, so the
loser of a board game gets its -1 although the winner made the last move. Waiting agents do not
act: the runner steps only the `acting` slots through the policy (their recurrent state,
previous action and reward stay as they were meanwhile), and a transition is written in two
phases: inputs, state and action at the turn (`TurnSequenceBuilder.act`), reward, terminal and
bootstrap inputs when the agent's next turn comes or its game ends (`complete`). Action masks
come from the observations' `action_mask` (the bootstrap mask is the next turn's).
"""
from __future__ import annotations

import dataclasses

import numpy as np

from rlfleet.platform.envs import StepResult
from rlfleet.platform.multiagent import MultiAgentBatch
from rlfleet.platform.sequence import SlotSequenceBuilder, stack_sequences


class _Out:
    """The arrays of one StepResult, filled env by env."""

    def __init__(self, batch: "AECBatch"):
        n = batch.n
        self.obs, self.mask = batch._empty()
        self.next_obs, self.next_mask = batch._empty()
        if self.mask is not None:
            self.mask[:] = self.next_mask[:] = np.tile(batch._base_mask, (len(batch.envs), 1))
        self.reward = np.zeros(n, np.float32)
        self.term = np.zeros(n, bool)
        self.trunc = np.zeros(n, bool)
        self.completed = np.zeros(n, bool)
        self.acting = np.zeros(n, bool)


class AECBatch(MultiAgentBatch):
    """N PettingZoo AEC envs; each `step` plays one turn in every env (the action of each env's
    acting slot; the other slots' actions are ignored). StepResult: `reset_step` is False for
    the slots whose transition completed during the step (reward, terminated, truncated,
    next_obs, next_action_mask are theirs), `acting` marks the slots to act on `obs` next."""

    turn_based = True

    def __init__(self, envs: list, seed: int, agent_id: bool = True, policy_mapping="shared"):
        super().__init__(envs, seed, agent_id=agent_id, policy_mapping=policy_mapping)
        self.spec = dataclasses.replace(self.spec, turn_based=True)
        self.acting = np.zeros(self.n, bool)
        self._open = np.zeros(self.n, bool)  # the slot acted; its transition is not complete yet

    def reset(self) -> np.ndarray:
        r = _Out(self)
        self._open[:] = False
        for e, env in enumerate(self.envs):
            env.reset(seed=None if self._seeded else self.seed + e)
            self._advance(e, r)
        self._seeded = True
        self.acting, self.action_mask = r.acting, r.mask
        return r.obs

    def step(self, actions: np.ndarray) -> StepResult:
        r = _Out(self)
        acts = actions.tolist()
        for e, env in enumerate(self.envs):
            i = e * self.K + self._index[env.agent_selection]
            a = acts[i]
            if self.action_mask is not None and not self.action_mask[i, a]:
                raise ValueError(f"env {e}, agent {env.agent_selection!r}: illegal action {a} "
                                 f"(legal: {np.flatnonzero(self.action_mask[i]).tolist()})")
            env.step(a)
            self._open[i] = True
            self._advance(e, r)
        self.acting, self.action_mask = r.acting, r.mask
        return StepResult(r.next_obs, r.reward, r.term, r.trunc, ~r.completed, r.obs, action_mask=r.mask,
                          next_action_mask=r.next_mask, acting=r.acting)

    def _advance(self, e: int, r: _Out) -> None:
        """Run env e up to its next live agent's turn: an agent's open transition completes when
        it is selected again (its next turn, or the dead step that removes it at its end); dead
        agents are stepped with None; a finished game is reset."""
        env, K = self.envs[e], self.K
        for _ in range(100 * K + 100):
            if not env.agents:  # game over (agents that were never stepped dead: ended without notice)
                ended = np.flatnonzero(self._open[e * K:(e + 1) * K]) + e * K
                self._open[ended] = False
                r.completed[ended] = r.term[ended] = True
                env.reset()
                continue
            agent = env.agent_selection
            k = self._index[agent]
            i = e * K + k
            o, reward, term, trunc, _ = env.last()
            if self._open[i]:
                self._open[i] = False
                r.completed[i] = True
                r.reward[i], r.term[i], r.trunc[i] = reward, term, trunc
                self._write_slot(i, k, o, r.next_obs, r.next_mask)
            if term or trunc:
                env.step(None)
                continue
            self._write_slot(i, k, o, r.obs, r.mask)
            r.acting[i] = True
            return
        raise RuntimeError(f"env {e}: no agent's turn came after {100 * K + 100} dead steps and resets")


def act_on_turns(policy, acting: np.ndarray, obs, prev_action, prev_reward, state: tuple, epsilon,
                 rng: np.random.Generator, action_mask=None):
    """One forward pass over the slots whose turn it is; the waiting slots' recurrent state (in
    `state`, updated in place for the acting ones) is left as is. Returns (actions [N], 0 for
    waiting slots; the acting slots' indices; their state before acting)."""
    idx = np.flatnonzero(acting)
    before = tuple(s[idx] for s in state)
    a, after = policy.act(obs[idx], prev_action[idx], prev_reward[idx], before, np.asarray(epsilon)[idx], rng,
                          action_mask=None if action_mask is None else action_mask[idx])
    for s, x in zip(state, after):
        s[idx] = x
    actions = np.zeros(len(acting), np.int64)
    actions[idx] = a
    return actions, idx, before


class TurnSequenceBuilder:
    """Per-slot sequences (SlotSequenceBuilder) of turn-based slots, whose steps are their own
    turns however many runner iterations apart. Same interface as SequenceBuilder's take."""

    def __init__(self, layout, num_slots: int, inputs: dict):
        self.slots = [SlotSequenceBuilder(layout, inputs) for _ in range(num_slots)]
        self.in_episode = np.zeros(num_slots, bool)
        self.pending: list[tuple | None] = [None] * num_slots  # (state before acting, action)
        self.finished: list[dict] = []

    def act(self, slots: np.ndarray, inputs: dict, state_before: tuple, actions: np.ndarray) -> None:
        """Slots `slots` acted on `inputs` (columns [N, ...]) from `state_before` (rows of `slots`)."""
        for j, i in enumerate(slots.tolist()):
            if not self.in_episode[i]:
                self.slots[i].begin({k: v[i] for k, v in inputs.items()})
                self.in_episode[i] = True
            self.pending[i] = (tuple(s[j] for s in state_before), int(actions[i]))

    def complete(self, slots: np.ndarray, reward, terminated, truncated, next_inputs: dict) -> None:
        """The transitions of `slots` ended: reward, terminal and the next turn's inputs."""
        for i in slots.tolist():
            state, action = self.pending[i]
            self.pending[i] = None
            done = bool(terminated[i] or truncated[i])
            seq = self.slots[i].step(state, action, float(reward[i]), bool(terminated[i]), bool(truncated[i]),
                                     {k: v[i] for k, v in next_inputs.items()})
            if seq is not None:
                self.finished.append(seq)
            if done:
                self.in_episode[i] = False

    def must_take(self) -> bool:
        return False

    def take(self) -> dict[str, np.ndarray] | None:
        if not self.finished:
            return None
        out, self.finished = stack_sequences(self.finished), []
        return out
