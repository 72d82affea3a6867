"""Column names of sequence batches, shared by runners, replay and learners.

A sequence of T steps (T = burn_in + trace) stores T+1 network inputs so the last step can be
bootstrapped: OBS/PREV_ACTION/PREV_REWARD have T+1 entries; ACTION/REWARD/TERMINAL/MASK have T.
STATE_i columns hold the actor's recurrent state at the first step.
"""
from dataclasses import dataclass

OBS = "obs"
PREV_ACTION = "prev_action"
PREV_REWARD = "prev_reward"
ACTION = "action"
REWARD = "reward"
TERMINAL = "terminal"  # 1.0 where the episode terminated after this step (no bootstrap past it)
MASK = "mask"  # 1.0 for real steps, 0.0 for padding after the episode's end
JOINT_ACTION = "joint_action"  # [T, K] multi-agent envs: the actions of all K agents of the slot's env
ACTION_MASK = "action_mask"  # [T+1, A] bool, envs with legal-action masks only: True = allowed
FIRST = "first"  # [] 1.0: the sequence starts at its episode's first step, so its stored state is the
# initial state and its burn-in steps are real steps with nothing before them: they get a loss too
STATE_PREFIX = "state_"

# added by replay when sampling
INDEX = "index"
SHARD = "shard"
WEIGHT = "is_weight"


def state_key(i: int) -> str:
    return f"{STATE_PREFIX}{i}"


def state_keys(batch) -> list[str]:
    return sorted((k for k in batch if k.startswith(STATE_PREFIX)), key=lambda k: int(k[len(STATE_PREFIX):]))


@dataclass(frozen=True)
class SequenceLayout:
    """How runners cut trajectories into stored sequences (R2D2 Sec. 3: burn-in + trace, overlap)."""

    burn_in: int
    trace: int
    period: int  # a new sequence starts every `period` steps

    @property
    def length(self) -> int:
        return self.burn_in + self.trace
