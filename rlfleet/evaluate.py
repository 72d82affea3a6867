"""Greedy evaluation of a saved agent (`rlfleet eval RUN_DIR|CHECKPOINT`), optionally rendered.

Runs the checkpoint's policy with epsilon 0 on fresh envs built from the run's own env recipe
(observation mask, scaling, agent index included), prints and writes mean/std of the return (per
agent for multi-agent envs: `agent_returns`), episode length and, when a threshold is given, the
success rate. Turn-based games (PettingZoo AEC envs) also get each agent's mean return against
uniformly random opponents (`agent_returns_vs_random`, as the training evaluator reports it).
`render` saves the first episode (turn-based games: one whole game, from the empty board to the
final position) as an animated GIF of the env's rgb frames.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from rlfleet.platform.agent import load_agent
from rlfleet.platform.errors import UserError
from rlfleet.platform.evaluation import episode_report


def evaluate(path: str | Path, episodes: int = 20, num_envs: int = 8, seed: int = 1_000_003,
             success_threshold: float | None = None, render: bool = False, out: str | Path | None = None) -> dict:
    agent = load_agent(path)
    n = max(1, min(num_envs, episodes))
    envs = agent.env_maker.batch(n, seed)
    try:
        stats, returns = episode_report(agent.policy, envs, episodes * agent.env_spec.agents, 0.0,
                                        np.random.default_rng(seed))
    finally:
        envs.close()
    report = {"checkpoint": str(agent.checkpoint), "env": agent.cfg.env.id, **stats, "episodes": episodes,
              "agents": agent.env_spec.agents, "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    if success_threshold is not None:
        report["success_threshold"] = success_threshold
        report["success_rate"] = float(np.mean(returns >= success_threshold))
    if render:
        report["video"] = str(render_episode(agent, seed, Path(out or agent.checkpoint.parent.parent)))
    target = Path(out or agent.checkpoint.parent.parent) / f"eval-{agent.checkpoint.name}.json"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(report, indent=1))
    report["written_to"] = str(target)
    return report


class _FrameBeforeReset:
    """An env whose every reset first renders the position it leaves (a turn-based batch resets
    a finished game inside its step, before the final board could be rendered)."""

    def __init__(self, env):
        self._env, self.frame = env, None

    def __getattr__(self, name):
        return getattr(self._env, name)

    def reset(self, *args, **kwargs):
        self.frame = self._env.render()
        return self._env.reset(*args, **kwargs)


def render_episode(agent, seed: int, out_dir: Path, max_steps: int = 2000) -> Path:
    """One greedy episode on a single env created with render_mode="rgb_array", saved as a GIF.
    Turn-based games: one whole game, a frame per turn (only the acting agent acts, as in training)."""
    try:
        from PIL import Image  # noqa: F401
    except ImportError:
        raise UserError("--render needs Pillow: pip install 'rlfleet[render]'") from None
    maker = agent.env_maker
    maker.kwargs = {**maker.kwargs, "render_mode": "rgb_array"}
    try:
        batch = maker.batch(1, seed)
    except TypeError as e:
        raise UserError(f"env {agent.cfg.env.id!r} cannot render rgb frames ({e})") from None
    env = batch.envs[0] if hasattr(batch, "envs") else None
    if env is None:
        raise UserError(f"env {agent.cfg.env.id!r}: rendering needs env.vectorization: none")
    policy, rng = agent.policy, np.random.default_rng(seed)
    obs = batch.reset()
    n = len(batch)
    state, prev_a, prev_r = policy.initial_state(n), np.zeros(n, np.int64), np.zeros(n, np.float32)
    legal = batch.action_mask if agent.env_spec.action_mask else None
    frames = [env.render()]
    if agent.env_spec.turn_based:
        frames += _play_game(batch, policy, rng, obs, state, prev_a, prev_r, legal, max_steps)
        return _save_gif(agent, batch, frames, out_dir, duration=600)
    for _ in range(max_steps):
        actions, state = policy.act(obs, prev_a, prev_r, state, np.zeros(n), rng, action_mask=legal)
        res = batch.step(actions)
        if (res.terminated | res.truncated | res.reset_step).all():  # the episode is over for every slot
            break
        frames.append(env.render())
        obs, prev_a, prev_r, legal = res.obs, actions, res.reward.astype(np.float32), res.action_mask
    return _save_gif(agent, batch, frames, out_dir, duration=40)


def _play_game(batch, policy, rng, obs, state, prev_a, prev_r, legal, max_steps: int) -> list:
    """Turns of one game of a turn-based batch of one env, a frame after each; ends with the final position."""
    from rlfleet.platform.turnbased import act_on_turns

    env = batch.envs[0] = _FrameBeforeReset(batch.envs[0])
    acting, frames = batch.acting, []
    for _ in range(max_steps):
        actions, idx, _ = act_on_turns(policy, acting, obs, prev_a, prev_r, state, np.zeros(len(acting)), rng, legal)
        prev_a[idx] = actions[idx]
        env.frame = None
        res = batch.step(actions)
        if env.frame is not None:  # the game ended (and the batch started the next one)
            frames.append(env.frame)
            break
        frames.append(env.render())
        done = ~res.reset_step
        prev_r[done] = res.reward[done]
        obs, legal, acting = res.obs, res.action_mask, res.acting
    return frames


def _save_gif(agent, batch, frames: list, out_dir: Path, duration: int) -> Path:
    from PIL import Image

    frames = [f for f in frames if f is not None]
    if not frames:
        raise UserError(f"env {agent.cfg.env.id!r} returned no rgb frames from render()")
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"eval-{agent.checkpoint.name}.gif"
    images = [Image.fromarray(np.asarray(f, np.uint8)) for f in frames]
    images[0].save(path, save_all=True, append_images=images[1:], duration=duration, loop=0)
    batch.close()
    return path
