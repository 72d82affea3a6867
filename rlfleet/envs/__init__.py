"""Built-in env families; importing this package registers them."""
from rlfleet.envs import gym  # noqa: F401
