"""`babyai:<level>`: the BabyAI levels that ship with the `minigrid` package (Chevalier-Boisvert
et al. 2019), with a compact symbolic observation, and BabyAI's expert bot for demonstrations.

Observation (float32 vector, the same layout for every level, so one network serves them all):
- the 7x7 egocentric view, one-hot per cell: object type (11), colour (6), door state (3);
- the agent's direction, one-hot (4);
- the mission as two bags of words over BabyAI's vocabulary: the words before the first
  "next"/"then"/"after"/"and", and the rest ("put the red ball next to the blue box" keeps
  which object moves apart from which one it goes to).
Names: `babyai:GoToRedBall`, or the full id `babyai:BabyAI-GoToRedBall-v0`.

Demonstrations: `rlfleet demos record --env babyai:GoToRedBall --expert scripted:rlfleet.envs.babyai:bot`
(or `noisy_bot`: a random action with probability 0.25, after which the bot replans from where
it is, so the data also shows recoveries and the value of non-expert actions).
"""
from __future__ import annotations

import contextlib
import functools
import io

import numpy as np

from rlfleet.platform.errors import UserError, did_you_mean
from rlfleet.platform.registry import register_env_family

VOCAB = ("go", "to", "the", "a", "pick", "up", "open", "put", "next", "door", "ball", "box", "key", "red", "green",
         "blue", "purple", "yellow", "grey", "on", "your", "left", "right", "in", "front", "of", "behind", "you",
         "then", "after", "and")
SPLIT = {"next", "then", "after", "and"}
N_OBJ, N_COLOR, N_STATE, VIEW = 11, 6, 3, 7
OBS_SIZE = VIEW * VIEW * (N_OBJ + N_COLOR + N_STATE) + 4 + 2 * len(VOCAB)
_WORD = {w: i for i, w in enumerate(VOCAB)}


def encode_mission(mission: str) -> np.ndarray:
    out = np.zeros(2 * len(VOCAB), np.float32)
    clause = 0
    for word in mission.lower().replace(",", " ").split():
        if word in SPLIT:
            clause = 1
        if word in _WORD:
            out[clause * len(VOCAB) + _WORD[word]] = 1.0
    return out


def encode(obs: dict) -> np.ndarray:
    """minigrid's dict observation -> the compact symbolic vector described above."""
    img = np.asarray(obs["image"], np.int64).reshape(-1, 3)
    cells = np.zeros((len(img), N_OBJ + N_COLOR + N_STATE), np.float32)
    rows = np.arange(len(img))
    cells[rows, img[:, 0]] = 1.0
    cells[rows, N_OBJ + img[:, 1]] = 1.0
    cells[rows, N_OBJ + N_COLOR + img[:, 2]] = 1.0
    direction = np.zeros(4, np.float32)
    direction[int(obs["direction"])] = 1.0
    return np.concatenate([cells.reshape(-1), direction, encode_mission(obs["mission"])])


def _symbolic_wrapper():
    import gymnasium as gym

    class SymbolicObservation(gym.ObservationWrapper):
        """Compact symbolic observation; minigrid's level-sampling chatter on stdout is silenced."""

        def __init__(self, env):
            super().__init__(env)
            self.observation_space = gym.spaces.Box(0.0, 1.0, (OBS_SIZE,), np.float32)
            self.action_space = env.action_space

        def reset(self, **kwargs):
            with contextlib.redirect_stdout(io.StringIO()):
                return super().reset(**kwargs)

        def observation(self, obs):
            return encode(obs)

    return SymbolicObservation


def level_ids() -> list[str]:
    import gymnasium as gym
    import minigrid  # noqa: F401  (registers the BabyAI ids)

    return sorted(k for k in gym.registry if k.startswith("BabyAI-"))


def full_id(name: str) -> str:
    """`GoToRedBall` or `BabyAI-GoToRedBall-v0` -> the registered id (UserError if unknown)."""
    try:
        ids = level_ids()
    except ImportError:
        raise UserError(f"env 'babyai:{name}' needs the optional package 'minigrid': pip install 'rlfleet[babyai]'") from None
    if name in ids:
        return name
    for cand in (f"BabyAI-{name}-v0", f"BabyAI-{name}-v1"):
        if cand in ids:
            return cand
    short = ["babyai:" + i[len("BabyAI-"):].rsplit("-v", 1)[0] for i in ids]
    raise UserError(f"unknown BabyAI level 'babyai:{name}'{did_you_mean('babyai:' + name, short)}")


def make(level: str, max_steps: int | None = None):
    import gymnasium as gym

    kwargs = {} if max_steps is None else {"max_steps": max_steps}
    return _symbolic_wrapper()(gym.make(full_id(level), **kwargs))


def resolve(name: str):
    return functools.partial(make, full_id(name))


register_env_family("babyai", resolve, "BabyAI levels (minigrid) with a compact symbolic observation, e.g. "
                    "babyai:GoToRedBall", requires={"minigrid": "babyai"})


class BabyAIBotExpert:
    """minigrid's BabyAI bot as an rlfleet demonstration expert (`begin_episode` starts a new bot
    on the episode's mission). With `epsilon`, a uniformly random action replaces the bot's with
    that probability and the bot is told what was taken, so it replans from there."""

    def __init__(self, epsilon: float = 0.0, seed: int = 0):
        self.epsilon = epsilon
        self.rng = np.random.default_rng(seed)
        self.bot, self.taken = None, None

    def begin_episode(self, env) -> None:
        from minigrid.utils.baby_ai_bot import BabyAIBot

        self.bot, self.taken = BabyAIBot(env.unwrapped), None
        self.num_actions = int(env.action_space.n)

    def __call__(self, env, observation) -> int:
        try:
            action = int(self.bot.replan(self.taken))
        except Exception:  # noqa: BLE001  (the bot gives up on some states it cannot plan from)
            action = int(self.rng.integers(self.num_actions))
        if self.epsilon > 0 and self.rng.random() < self.epsilon:
            action = int(self.rng.integers(self.num_actions))
        self.taken = action
        return action


bot = BabyAIBotExpert()
noisy_bot = BabyAIBotExpert(epsilon=0.25)
