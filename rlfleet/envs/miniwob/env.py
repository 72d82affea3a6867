"""A MiniWoB++ task as a Gymnasium env with QWeb's encoding, one headless Chromium per env.

- Reward: the page's raw reward (+1 success, -1 failure, partial credit on some tasks), not
  miniwob's default time-decayed one, so actor and learner latency do not change the task.
- Time limit: `max_steps` actions per episode (truncation), besides the page's own 10 s timer.
- Recovery: any browser or chromedriver failure (crash, killed process, a command that does not
  answer within `command_timeout` s) kills what is left by pid, removes the profile, starts a
  fresh browser and truncates the broken episode; `info["dropped"]` marks that step and
  `dropped_episodes` counts them, so a runner can keep them out of its statistics.
- Options from QWeb (Gur et al. 2019, Sec. 4): potential-based shaping from DOM-vs-instruction
  matching (`shaping`: r + scale (gamma phi(s') - phi(s)), phi = share of fields typed; scale < 1
  keeps the task's own +1 well above what typing alone earns), warm starts near the goal with a scripted solver's first steps
  (`warm_start_episodes`), and a curriculum over a growing subset of the instruction's fields
  (`subgoal_episodes`).
"""
from __future__ import annotations

import logging

import gymnasium as gym
import numpy as np

from rlfleet.envs.miniwob import encoding as enc
from rlfleet.envs.miniwob.browser import launch_browser
from rlfleet.platform.errors import UserError

log = logging.getLogger(__name__)


class BrowserFailure(Exception):
    """The browser or chromedriver stopped answering."""


class MiniWoBEnv(gym.Env):
    metadata = {"render_modes": ["rgb_array"]}

    def __init__(self, task: str, max_elements: int = 32, max_fields: int = 4, max_steps: int = 10,
                 typeable_only: bool = True, shaping: bool = False, shaping_gamma: float = 0.99, shaping_scale: float = 0.25,
                 warm_start_episodes: int = 0, subgoal_episodes: int = 0, command_timeout: float = 20.0,
                 data_mode: str = "train", profile_root: str | None = None, render_mode: str | None = None,
                 click_containers: bool = True):
        if render_mode not in (None, "rgb_array"):
            raise UserError(f"miniwob:{task}: render_mode must be 'rgb_array' (a screenshot), got {render_mode!r}")
        self.task, self.render_mode = task, render_mode
        self.layout = enc.DomLayout(max_elements, max_fields)
        self.max_steps, self.typeable_only, self.click_containers = max_steps, typeable_only, click_containers
        self.shaping, self.shaping_gamma, self.shaping_scale = shaping, shaping_gamma, shaping_scale
        self.warm_start_episodes, self.subgoal_episodes = warm_start_episodes, subgoal_episodes
        self.command_timeout, self.data_mode, self.profile_root = command_timeout, data_mode, profile_root
        if warm_start_episodes:
            from rlfleet.envs.miniwob.solvers import SOLVERS

            if task not in SOLVERS:
                raise UserError(f"miniwob:{task}: warm_start_episodes needs a scripted solver; tasks with one: "
                                f"{', '.join(sorted(SOLVERS))}")
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, self.layout.shape, np.float32)
        self.action_space = gym.spaces.Discrete(self.layout.num_actions)
        self.browser = None
        self.fields: list[tuple[str, str]] = []  # the instruction's fields (all of them)
        self.visible_fields: list[tuple[str, str]] = []  # the ones the agent sees (subgoal curriculum)
        self.elements: list[dict] = []
        self.mask = np.zeros(self.layout.num_actions, bool)
        self.episodes = 0
        self.dropped_episodes = 0
        self.browser_restarts = 0
        self.rng = np.random.default_rng()
        self._obs = np.zeros(self.layout.shape, np.float32)
        self._t = 0
        self._phi = 0.0

    # -- browser -------------------------------------------------------------------------------
    def _ensure_browser(self) -> None:
        if self.browser is None:
            try:
                self.browser = launch_browser(self.task, self.data_mode, self.command_timeout,
                                              profile_root=self.profile_root)
            except Exception as e:  # noqa: BLE001  (Chromium or chromedriver died while starting)
                raise BrowserFailure(f"launch: {type(e).__name__}: {e}") from e

    def _restart_browser(self) -> None:
        if self.browser is not None:
            self.browser.kill()
            self.browser = None
        self.browser_restarts += 1
        for attempt in range(3):
            try:
                self._ensure_browser()
                return
            except BrowserFailure as e:
                log.warning("miniwob:%s: browser start failed (%s), attempt %d", self.task, e, attempt + 1)
        self._ensure_browser()

    def _call(self, fn, *args):
        try:
            return fn(*args)
        except Exception as e:  # noqa: BLE001  (any driver error means the browser is unusable)
            raise BrowserFailure(f"{type(e).__name__}: {e}") from e

    def _observe(self) -> None:
        obs, _ = self._call(self.browser.get_observation, False)
        self.fields = list(obs["fields"])
        self.elements = enc.visible_elements(obs["dom_elements"], self.layout.max_elements)

    def _encode(self) -> np.ndarray:
        enc.encode(self.layout, self.visible_fields, self.elements, self._obs)
        enc.legal_actions(self.layout, len(self.visible_fields), self.elements, self.mask, self.typeable_only,
                          self.click_containers)
        return self._obs.copy()

    # -- gym API -------------------------------------------------------------------------------
    def reset(self, seed=None, options=None):
        super().reset(seed=seed)
        if seed is not None:
            self.rng = np.random.default_rng(seed)
        for attempt in range(3):
            try:
                self._ensure_browser()
                self._begin(seed)
                break
            except BrowserFailure as e:
                log.warning("miniwob:%s: reset failed (%s); restarting the browser", self.task, e)
                if self.browser is not None:
                    self.browser.kill()
                    self.browser = None
                self.browser_restarts += 1
        else:
            self._ensure_browser()
            self._begin(seed)
        return self._encode(), {"fields": self.fields}

    def _begin(self, seed) -> None:
        b = self.browser
        self._call(b.force_stop)
        page_seed = int(seed) if seed is not None else int(self.rng.integers(1 << 30))
        self._call(b.begin_task, page_seed)
        self._observe()
        self.episodes += 1
        self._t = 0
        self.visible_fields = self._field_subset()
        if self.warm_start_episodes and self.episodes <= self.warm_start_episodes:
            self._warm_start()
        self._phi = enc.potential(self.visible_fields, self.elements)

    def _field_subset(self) -> list[tuple[str, str]]:
        """Subgoal curriculum: the first k fields, k growing from 1 to all over `subgoal_episodes`."""
        if not self.subgoal_episodes or self.episodes > self.subgoal_episodes or len(self.fields) <= 1:
            return self.fields
        k = 1 + int((self.episodes - 1) / self.subgoal_episodes * len(self.fields))
        return self.fields[:k]

    def _warm_start(self) -> None:
        """Start near the goal: play a random prefix of the scripted solver's steps, longest at
        first and shrinking to none by `warm_start_episodes` (QWeb's curriculum from the goal)."""
        from rlfleet.envs.miniwob.solvers import SOLVERS

        solver = SOLVERS[self.task]
        longest = solver(self.layout, self.fields, self.elements)[1] - 1
        frac = 1.0 - (self.episodes - 1) / self.warm_start_episodes
        k = int(self.rng.integers(0, int(longest * frac) + 1)) if longest > 0 else 0
        for _ in range(k):
            self._encode()
            self._send(solver(self.layout, self.fields, self.elements)[0])
            if self._call(self.browser.get_metadata)["done"]:  # solved already: start over without help
                self._call(self.browser.force_stop)
                self._call(self.browser.begin_task, int(self.rng.integers(1 << 30)))
                break
            self._observe()

    def _send(self, action: int) -> None:
        """Execute a legal flat action through the browser's element API."""
        e, k = self.layout.decode(action)
        ref = self.elements[e]["ref"]
        if k == 0:
            self._call(self.browser.driver.execute_script, f"return core.elementClick({ref});")
        else:
            from miniwob.selenium_actions import execute_type_text

            self._call(self.browser.driver.execute_script, f"return core.elementClick({ref});")
            self._call(execute_type_text, self.fields[k - 1][1], self.browser.driver)

    def step(self, action):
        action = int(action)
        legal = bool(self.mask[action]) and bool(self.elements)
        try:
            if legal:
                self._send(action)
            meta = self._call(self.browser.get_metadata)
            self._t += 1
            reward, terminated = 0.0, bool(meta["done"])
            if terminated:
                reward = float(meta["raw_reward"])
                self.elements = []
            else:
                self._observe()
                if len(self.visible_fields) < len(self.fields) and enc.potential(self.visible_fields, self.elements) >= 1.0:
                    reward, terminated = 1.0, True  # the subgoal (a subset of the fields) is reached
            if self.shaping:
                phi = 0.0 if terminated else enc.potential(self.visible_fields, self.elements)
                reward += self.shaping_scale * (self.shaping_gamma * phi - self._phi)
                self._phi = phi
            truncated = not terminated and self._t >= self.max_steps
            info = {"raw_reward": reward if terminated else 0.0, "success": terminated and reward > 0,
                    "dropped": False, "illegal": not legal}
            return self._encode(), reward, terminated, truncated, info
        except BrowserFailure as e:
            log.warning("miniwob:%s: browser failed mid-episode (%s); episode dropped, browser restarted",
                        self.task, e)
            self.dropped_episodes += 1
            self._restart_browser()
            obs = self._obs.copy()  # the last observation of the broken episode
            return obs, 0.0, False, True, {"raw_reward": 0.0, "success": False, "dropped": True, "illegal": False}

    def action_mask(self) -> np.ndarray:
        return self.mask.copy()

    def render(self):
        """A screenshot of the page (rgb_array [H, W, 3] uint8), e.g. for `rlfleet eval --render`."""
        if self.render_mode != "rgb_array" or self.browser is None:
            return None
        import io

        from PIL import Image

        png = self.browser.driver.get_screenshot_as_png()
        return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))

    def close(self):
        if self.browser is not None:
            self.browser.close()
            self.browser = None
