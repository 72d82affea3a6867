"""pysc2 (StarCraft II Learning Environment) as runner slots, with SC2LE's composite action flattened.

An SC2 action is a function id plus its arguments (Vinyals et al. 2017, Sec. 3.3). R2D2 picks one
discrete action per step, so a composite action is one index over (function, value, point):

    a = (f * V + v) * P + p

f: position in the configured function subset; v: the value of the function's non-spatial
argument (e.g. `queued`), V the largest such argument size in the subset; p: a point on an R x R
grid mapped onto the screen (or minimap) for the function's spatial argument, P = R * R. Legal
actions: f available this step (pysc2's `available_actions`), v below its argument's size, and
p = 0 / v = 0 for functions without such an argument, so each call has exactly one index. The
FullyConv network (rlfleet/algorithms/r2d2/sc2_networks.py) scores the three parts with separate
heads and adds them. Every call is checked against the action spec before it is sent: an
unavailable function or an out-of-range coordinate raises instead of reaching the game.

Observations: the selected screen and minimap feature layers, each divided by its scale
(categorical layers by their category count), and log(1 + player features), flattened into one
float32 vector; `Sc2Spec` carries the shapes the network unflattens with.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rlfleet.envs.sc2.compat import import_pysc2
from rlfleet.platform.envs import EnvSpec, StepResult
from rlfleet.platform.errors import UserError, did_you_mean

MINI_GAMES = ("MoveToBeacon", "CollectMineralShards", "FindAndDefeatZerglings", "DefeatRoaches",
              "DefeatZerglingsAndBanelings", "CollectMineralsAndGas", "BuildMarines")
DEFAULT_FUNCTIONS = ("no_op", "select_army", "Move_screen", "Attack_screen")
INSTALL_HINT = ("install the StarCraft II Linux package (SC2.4.10.zip, Blizzard's s2client-proto downloads) "
                "into ~/StarCraftII with pysc2's mini_games.zip in its Maps folder, or set SC2PATH to where "
                "they are (docs/starcraft.md)")


def game_dir() -> Path:
    """The StarCraft II install pysc2 will use: $SC2PATH, else ~/StarCraftII (pysc2's own rule)."""
    return Path(os.environ.get("SC2PATH") or os.path.expanduser("~/StarCraftII"))


def env_class(test_env: bool = False):
    """pysc2's real SC2Env when a game install is present; pysc2's SC2TestEnv (fixed observations,
    zero reward, 10-step episodes) only when `test_env` asks for it, never as a silent fallback."""
    sc2_env, _, _ = import_pysc2()
    if test_env:
        from pysc2.env import mock_sc2_env

        return mock_sc2_env.SC2TestEnv
    versions = game_dir() / "Versions"
    if not versions.is_dir() or not any(p.name.startswith("Base") for p in versions.iterdir()):
        raise UserError(f"StarCraft II not found: {versions} has no Base<build> folder; {INSTALL_HINT}")
    return sc2_env.SC2Env


@dataclass(frozen=True)
class Sc2Spec(EnvSpec):
    """EnvSpec plus the layout the SC2 network needs to unflatten observations and actions."""

    screen_shape: tuple = ()  # (C, S, S)
    minimap_shape: tuple = ()  # (C, M, M)
    nonspatial_dim: int = 0
    num_functions: int = 0  # F
    num_values: int = 1  # V
    resolution: int = 0  # R (P = R * R)
    network: str = "sc2_fullyconv"


class ActionCodec:
    """Composite action index <-> pysc2 FunctionCall, with the static part of the legal mask."""

    def __init__(self, functions, names, resolution: int, screen: int, minimap: int):
        by_name = {f.name: f for f in functions}
        unknown = [n for n in names if n not in by_name]
        if unknown:
            raise UserError(f"sc2 functions: unknown {unknown[0]!r}{did_you_mean(unknown[0], list(by_name))}")
        self.functions = [by_name[n] for n in names]
        self.ids = np.array([int(f.id) for f in self.functions])
        self.R, self.P, self.screen, self.minimap = resolution, resolution * resolution, screen, minimap
        self.layout = []  # per function: (spatial arg name or None, non-spatial arg size or None)
        for f in self.functions:
            spatial = [a.name for a in f.args if a.name in ("screen", "minimap", "screen2")]
            other = [a for a in f.args if a.name not in ("screen", "minimap", "screen2")]
            if len(spatial) > 1 or len(other) > 1:
                raise UserError(f"sc2 function {f.name!r} takes {[a.name for a in f.args]}: supported functions take "
                                f"at most one point and one non-spatial argument")
            self.layout.append((spatial[0] if spatial else None, int(other[0].sizes[0]) if other else None))
        self.V = max([size for _, size in self.layout if size] + [1])
        F, V, P = len(self.functions), self.V, self.P
        self.static = np.zeros((F, V, P), bool)
        for k, (spatial, size) in enumerate(self.layout):
            self.static[k, :size or 1, :P if spatial else 1] = True
        self.num_actions = F * V * P

    def mask(self, available: list[np.ndarray]) -> np.ndarray:
        """[N, A] legal composite actions from each env's available function ids."""
        avail = np.stack([np.isin(self.ids, a) for a in available])  # [N, F]
        return (avail[:, :, None, None] & self.static[None]).reshape(len(available), -1)

    def decode(self, a: int) -> tuple[int, int, int]:
        fv, p = divmod(int(a), self.P)
        f, v = divmod(fv, self.V)
        return f, v, p

    def point(self, p: int, size: int) -> list[int]:
        """Grid cell p -> [x, y] at the centre of that cell in a size x size layer."""
        gy, gx = divmod(p, self.R)
        return [int((gx + 0.5) * size / self.R), int((gy + 0.5) * size / self.R)]

    def call(self, a: int, available: np.ndarray, action_spec):
        """The FunctionCall for index a, refused (ValueError) unless legal and within the spec."""
        from pysc2.lib import actions

        f, v, p = self.decode(a)
        if not 0 <= f < len(self.functions):
            raise ValueError(f"sc2 action {a}: function index {f} outside the {len(self.functions)} configured")
        fn = self.functions[f]
        if int(fn.id) not in set(np.asarray(available).tolist()):
            raise ValueError(f"sc2 action {a}: function {fn.name} is not available this step")
        spatial, size = self.layout[f]
        if (size is None and v) or (size is not None and v >= size) or (spatial is None and p):
            raise ValueError(f"sc2 action {a}: not a legal encoding for {fn.name} (value {v}, point {p})")
        args = []
        for arg in fn.args:
            if arg.name in ("screen", "minimap", "screen2"):
                args.append(self.point(p, self.screen if arg.name != "minimap" else self.minimap))
            else:
                args.append([v])
        return self.checked(actions.FunctionCall(fn.id, args), available, action_spec)

    @staticmethod
    def checked(call, available, action_spec):
        """Bounds-check a FunctionCall's arguments against pysc2's action spec before it is sent
        (pysc2's transform_action checks availability but not coordinates)."""
        if int(call.function) not in set(np.asarray(available).tolist()):
            raise ValueError(f"sc2 function {int(call.function)} is not available this step")
        spec_fn = action_spec.functions[int(call.function)]
        if len(call.arguments) != len(spec_fn.args):
            raise ValueError(f"sc2 function {spec_fn.name} takes {len(spec_fn.args)} arguments, got {len(call.arguments)}")
        for value, arg in zip(call.arguments, spec_fn.args):
            sizes = action_spec.types[arg.id].sizes
            if len(value) != len(sizes) or any(not 0 <= int(x) < s for x, s in zip(value, sizes)):
                raise ValueError(f"sc2 function {spec_fn.name}: argument {arg.name}={list(value)} outside {list(sizes)}")
        return call


class Sc2Batch:
    """N pysc2 games (one SC2 process each) as N runner slots. Games start at the first reset."""

    def __init__(self, n: int, seed: int, map_name: str, screen: int = 32, minimap: int = 32,
                 step_mul: int = 8, game_steps_per_episode: int | None = None, functions=DEFAULT_FUNCTIONS,
                 screen_layers=None, minimap_layers=None, action_resolution: int | None = None,
                 race: str = "terran", bot_race: str = "random", bot_difficulty: str = "very_easy",
                 test_env: bool = False, agent_id: bool = False, policy_mapping="shared"):
        sc2_env, features, actions = import_pysc2()
        if policy_mapping not in (None, "shared"):
            raise UserError("sc2 envs have one agent: env.policy_mapping must be 'shared'")
        self.sc2_env, self.features, self.test_env = sc2_env, features, test_env
        self.cls = env_class(test_env)
        self.n, self.seed, self.map_name = n, seed, map_name
        self.step_mul, self.game_steps_per_episode = step_mul, game_steps_per_episode
        self.race, self.bot_race, self.bot_difficulty = race, bot_race, bot_difficulty
        self.aif = features.AgentInterfaceFormat(feature_dimensions=features.Dimensions(screen=screen, minimap=minimap))
        self.action_spec = features.Features(self.aif).action_spec()
        self.screen_idx = self._layers(features.SCREEN_FEATURES, screen_layers, "screen_layers")
        self.minimap_idx = self._layers(features.MINIMAP_FEATURES, minimap_layers, "minimap_layers")
        self.screen_scale = np.array([features.SCREEN_FEATURES[i].scale for i in self.screen_idx], np.float32)
        self.minimap_scale = np.array([features.MINIMAP_FEATURES[i].scale for i in self.minimap_idx], np.float32)
        self.codec = ActionCodec(actions.FUNCTIONS, list(functions), action_resolution or screen, screen, minimap)
        self.nonspatial_dim = len(features.Player)
        self.screen_shape = (len(self.screen_idx), screen, screen)
        self.minimap_shape = (len(self.minimap_idx), minimap, minimap)
        dim = int(np.prod(self.screen_shape) + np.prod(self.minimap_shape)) + self.nonspatial_dim
        self.spec = Sc2Spec((dim,), "float32", self.codec.num_actions, action_mask=True,
                            screen_shape=self.screen_shape, minimap_shape=self.minimap_shape,
                            nonspatial_dim=self.nonspatial_dim, num_functions=len(self.codec.functions),
                            num_values=self.codec.V, resolution=self.codec.R)
        self.envs = None
        self.available = [np.zeros(0, np.int64)] * n
        self.action_mask = np.zeros((n, self.codec.num_actions), bool)

    @staticmethod
    def _layers(all_layers, names, key: str) -> list[int]:
        if names is None:
            return list(range(len(all_layers)))
        known = [f.name for f in all_layers]
        bad = [x for x in names if x not in known]
        if bad:
            raise UserError(f"sc2 {key}: unknown layer {bad[0]!r}{did_you_mean(bad[0], known)}")
        return [known.index(x) for x in names]

    def __len__(self):
        return self.n

    # -- games -----------------------------------------------------------------------------------
    def _players(self):
        sc2_env = self.sc2_env
        race = getattr(sc2_env.Race, self.race)
        if self.test_env:
            return [sc2_env.Agent(race)]
        from pysc2 import maps

        try:
            players = maps.get(self.map_name).players
        except Exception:  # pysc2 raises NoMapError (a plain Exception subclass)
            raise UserError(f"unknown sc2 map {self.map_name!r}"
                            f"{did_you_mean(self.map_name, list(maps.get_maps()))}") from None
        out = [sc2_env.Agent(race)]
        if players and players >= 2:
            out.append(sc2_env.Bot(getattr(sc2_env.Race, self.bot_race),
                                   getattr(sc2_env.Difficulty, self.bot_difficulty)))
        return out

    def _make(self, i: int):
        return self.cls(map_name=self.map_name, players=self._players(), agent_interface_format=self.aif,
                        step_mul=self.step_mul, game_steps_per_episode=self.game_steps_per_episode,
                        random_seed=self.seed + i, visualize=False)

    # -- encoding --------------------------------------------------------------------------------
    def encode(self, observation) -> np.ndarray:
        screen = np.asarray(observation["feature_screen"], np.float32)[self.screen_idx] / self.screen_scale[:, None, None]
        minimap = (np.asarray(observation["feature_minimap"], np.float32)[self.minimap_idx]
                   / self.minimap_scale[:, None, None])
        player = np.log1p(np.maximum(np.asarray(observation["player"], np.float32), 0.0))
        return np.concatenate([screen.ravel(), minimap.ravel(), player])

    def _take(self, i: int, ts, obs, mask) -> None:
        obs[i] = self.encode(ts.observation)
        self.available[i] = np.asarray(ts.observation["available_actions"], np.int64)
        mask[i] = self.codec.mask([self.available[i]])[0]

    # -- batch API -------------------------------------------------------------------------------
    def reset(self) -> np.ndarray:
        if self.envs is None:
            self.envs = [self._make(i) for i in range(self.n)]
        obs = np.zeros((self.n,) + self.spec.obs_shape, np.float32)
        mask = np.zeros_like(self.action_mask)
        for i, env in enumerate(self.envs):
            self._take(i, env.reset()[0], obs, mask)
        self.action_mask = mask
        return obs

    def calls(self, actions: np.ndarray) -> list:
        """Validated FunctionCalls for one composite action per env (ValueError if any is illegal)."""
        return [self.codec.call(a, self.available[i], self.action_spec) for i, a in enumerate(actions.tolist())]

    def step(self, actions: np.ndarray) -> StepResult:
        calls = self.calls(actions)  # all checked before any game moves
        n = self.n
        next_obs = np.zeros((n,) + self.spec.obs_shape, np.float32)
        next_mask = np.zeros_like(self.action_mask)
        reward = np.zeros(n, np.float32)
        term, trunc = np.zeros(n, bool), np.zeros(n, bool)
        obs, mask = next_obs, next_mask
        for i, (env, call) in enumerate(zip(self.envs, calls)):
            ts = env.step([call])[0]
            self._take(i, ts, next_obs, next_mask)
            reward[i] = ts.reward
            if ts.last():
                # pysc2 ends an episode with discount 0 when the game ends, 1 on a time limit
                term[i], trunc[i] = ts.discount == 0, ts.discount != 0
                if obs is next_obs:
                    obs, mask = next_obs.copy(), next_mask.copy()
                self._take(i, env.reset()[0], obs, mask)
        self.action_mask = mask
        return StepResult(next_obs, reward, term, trunc, np.zeros(n, bool), obs, action_mask=mask,
                          next_action_mask=next_mask)

    def close(self):
        for env in self.envs or []:
            env.close()
        self.envs = None
