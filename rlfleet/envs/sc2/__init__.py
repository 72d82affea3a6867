"""`sc2:<map>`: StarCraft II through pysc2, e.g. `sc2:MoveToBeacon` (mini-games) or `sc2:Simple64`
(ladder maps, against a built-in bot). Env kwargs: screen, minimap, step_mul,
game_steps_per_episode, functions (the action subset), screen_layers, minimap_layers,
action_resolution, race, bot_race, bot_difficulty; `test_env: true` swaps in pysc2's SC2TestEnv
(tests only: fixed observations, zero reward). The game is started lazily inside the runner actor.
"""
from __future__ import annotations

from rlfleet.platform.errors import UserError
from rlfleet.platform.registry import register_env_family

# what sc2 configs put into runtime_env.env_vars (see compat.py for why)
ENV_VARS = {"PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION": "python"}


class Sc2Factory:
    """Picklable factory for one map; runners call `make_batch` (EnvMaker.batch)."""

    def __init__(self, map_name: str):
        self.map_name = map_name

    def make_batch(self, n: int, seed: int, **kwargs):
        from rlfleet.envs.sc2.env import Sc2Batch

        return Sc2Batch(n, seed, self.map_name, **kwargs)

    def __call__(self, **kwargs):
        raise UserError(f"sc2:{self.map_name} runs through the runner's batch (make_batch), not as a single env object")


def resolve(name: str) -> Sc2Factory:
    if not name:
        raise UserError("sc2: needs a map name, e.g. sc2:MoveToBeacon")
    return Sc2Factory(name)


register_env_family("sc2", resolve, "StarCraft II via pysc2, e.g. sc2:MoveToBeacon (needs the game: docs/starcraft.md)",
                    requires={"pysc2": "sc2"})
