"""`rllib:<module>:<Class>`: an RLlib `MultiAgentEnv` class, run unchanged.

e.g. `rllib:ray.rllib.examples.envs.classes.multi_agent:MultiAgentCartPole` with
`env.kwargs: {num_agents: 2}`. The class is constructed the way RLlib does it, with the kwargs as
its `config` dict, and wrapped as a PettingZoo ParallelEnv so everything multi-agent in rlfleet
(one runner slot per agent, agents that finish early, action masks, policy mapping) applies.
Agents that are done are dropped from `agents`; the episode ends on `__all__`. RLlib envs may
return observations for a subset of the live agents (turn-based games); rlfleet's runner
steps all live agents together, so such an env stops with a clear error.
"""
from __future__ import annotations

import functools
import importlib

from pettingzoo.utils.env import ParallelEnv

from rlfleet.platform.errors import UserError, missing_extra
from rlfleet.platform.registry import register_env_family


class RLlibParallelEnv(ParallelEnv):
    """A PettingZoo ParallelEnv view of an RLlib MultiAgentEnv instance."""

    def __init__(self, env, name: str = "rllib env"):
        self.env, self.name = env, name
        ids = getattr(env, "possible_agents", None) or sorted(env.get_agent_ids())
        self.possible_agents = list(ids)
        self.agents: list = []
        self.metadata = getattr(env, "metadata", {})
        self.render_mode = getattr(env, "render_mode", None)

    def observation_space(self, agent):
        return self.env.get_observation_space(agent)

    def action_space(self, agent):
        return self.env.get_action_space(agent)

    def reset(self, seed=None, options=None):
        obs, infos = self.env.reset(seed=seed, options=options)
        self.agents = [a for a in self.possible_agents if a in obs]
        return obs, infos

    def step(self, actions):
        obs, rewards, terms, truncs, infos = self.env.step(actions)
        over = bool(terms.pop("__all__", False)) | bool(truncs.pop("__all__", False))
        if over:
            self.agents = []
        else:
            done = {a for a in self.agents if terms.get(a, False) or truncs.get(a, False)}
            self.agents = [a for a in self.agents if a not in done]
            waiting = [a for a in self.agents if a not in obs]
            if waiting:
                raise UserError(f"{self.name}: agents {waiting} got no observation while their episode goes on "
                                "(turn-based); rlfleet steps all live agents together, so this env is not supported")
        infos.pop("__common__", None)
        return obs, rewards, terms, truncs, infos

    def render(self):
        return self.env.render()

    def close(self):
        self.env.close()


def _make(module: str, cls: str, **kwargs):
    env_cls = getattr(importlib.import_module(module), cls)
    return RLlibParallelEnv(env_cls(config=dict(kwargs)), f"rllib:{module}:{cls}")


def resolve(name: str):
    module, sep, cls = name.partition(":")
    if not sep or not module or not cls:
        raise UserError(f"env 'rllib:{name}': expected rllib:<module>:<MultiAgentEnv class>, e.g. "
                        "rllib:ray.rllib.examples.envs.classes.multi_agent:MultiAgentCartPole")
    try:
        mod = importlib.import_module(module)
    except ImportError as e:
        raise missing_extra(f"env 'rllib:{name}'", e) or UserError(f"env 'rllib:{name}': cannot import {module!r} "
                                                                    f"({e})") from None
    target = getattr(mod, cls, None)
    from ray.rllib.env.multi_agent_env import MultiAgentEnv

    if not (isinstance(target, type) and issubclass(target, MultiAgentEnv)):
        found = sorted(n for n, v in vars(mod).items() if isinstance(v, type) and issubclass(v, MultiAgentEnv))
        raise UserError(f"env 'rllib:{name}': {cls!r} is not an RLlib MultiAgentEnv class in {module}"
                        + (f" (there: {', '.join(found)})" if found else ""))
    return functools.partial(_make, module, cls)


register_env_family("rllib", resolve, "RLlib MultiAgentEnv class run unchanged, e.g. "
                    "rllib:ray.rllib.examples.envs.classes.multi_agent:MultiAgentCartPole (kwargs = its config)",
                    requires={"tree": "rllib", "lz4": "rllib"})
