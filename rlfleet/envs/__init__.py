"""Built-in env families; importing this package registers them."""
from rlfleet.envs import babyai, gym, miniwob, pettingzoo, rllib, sc2, smax  # noqa: F401
