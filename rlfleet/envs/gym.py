"""`gym:<id>`: any registered Gymnasium environment."""
from __future__ import annotations

import functools

from rlfleet.platform.errors import UserError, did_you_mean
from rlfleet.platform.registry import register_env_family


def _make(env_id: str, **kwargs):
    import gymnasium

    return gymnasium.make(env_id, **kwargs)


def resolve(env_id: str):
    import gymnasium

    if env_id not in gymnasium.registry:
        raise UserError(f"unknown env 'gym:{env_id}'"
                        f"{did_you_mean('gym:' + env_id, ['gym:' + k for k in gymnasium.registry])}")
    return functools.partial(_make, env_id)


register_env_family("gym", resolve, "any registered Gymnasium env id, e.g. gym:CartPole-v1")
