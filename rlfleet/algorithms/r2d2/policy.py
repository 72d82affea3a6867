"""R2D2 acting: one batched forward step over all env slots of a runner, eps-greedy per slot."""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from rlfleet.algorithms.r2d2.config import R2D2Config
from rlfleet.algorithms.r2d2.networks import GroupedR2D2Network, MLPTorso, R2D2Network, make_network
from rlfleet.platform.policies import epsilon_greedy


def _linears(module: nn.Module) -> list[tuple[np.ndarray, np.ndarray]]:
    return [(m.weight.detach().numpy().T.copy(), m.bias.detach().numpy().copy())
            for m in module.modules() if isinstance(m, nn.Linear)]


def _mlp(x: np.ndarray, layers, relu_last: bool) -> np.ndarray:
    for k, (w, b) in enumerate(layers):
        x = x @ w + b
        if relu_last or k < len(layers) - 1:
            x = np.maximum(x, 0.0)
    return x


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (np.tanh(0.5 * x) + 1.0)


class NumpyStep:
    """One acting step of an MLP-torso R2D2Network in plain numpy: the same math as
    `R2D2Network.unroll` with T = 1 (checked by a test), without torch's per-op dispatch, which
    dominates for small networks (~3x faster per step on a CPU runner)."""

    def __init__(self, net: R2D2Network):
        self.num_actions = net.num_actions
        self.torso = _linears(net.torso)
        self.use_lstm, self.dueling = net.use_lstm, net.dueling
        if net.use_lstm:
            c = net.core
            self.w_ih = c.weight_ih_l0.detach().numpy().T.copy()
            self.w_hh = c.weight_hh_l0.detach().numpy().T.copy()
            self.b = (c.bias_ih_l0 + c.bias_hh_l0).detach().numpy().copy()
        else:
            self.core = _linears(net.core)
        self.heads = [_linears(net.value), _linears(net.advantage)] if net.dueling else [_linears(net.q)]
        self.eye = np.eye(self.num_actions, dtype=np.float32)

    def __call__(self, obs, prev_action, prev_reward, state):
        f = _mlp(obs.reshape(len(obs), -1).astype(np.float32, copy=False), self.torso, relu_last=True)
        x = np.concatenate([f, self.eye[prev_action], prev_reward.reshape(-1, 1).astype(np.float32)], axis=1)
        if self.use_lstm:  # PyTorch gate order: input, forget, cell, output
            h, c = state
            i, fg, g, o = np.split(x @ self.w_ih + h @ self.w_hh + self.b, 4, axis=1)
            c = _sigmoid(fg) * c + _sigmoid(i) * np.tanh(g)
            out = _sigmoid(o) * np.tanh(c)
            state = (out, c)
        else:
            out = _mlp(x, self.core, relu_last=True)
        if self.dueling:
            v, adv = (_mlp(out, head, relu_last=False) for head in self.heads)
            q = v + adv - adv.mean(axis=-1, keepdims=True)
        else:
            q = _mlp(out, self.heads[0], relu_last=False)
        return q, state


class GroupedNumpyStep:
    """NumpyStep per agent group; each slot routed by its observation's agent one-hot."""

    def __init__(self, net: GroupedR2D2Network):
        self.steps = [NumpyStep(n) for n in net.nets]
        self.groups, self.num_agents = net.groups.numpy(), net.num_agents

    def __call__(self, obs, prev_action, prev_reward, state):
        group = self.groups[obs.reshape(len(obs), -1)[:, -self.num_agents:].argmax(-1)]
        q, new_state = None, tuple(np.empty_like(s) for s in state)
        for g, step in enumerate(self.steps):
            rows = np.flatnonzero(group == g)
            if rows.size == 0:
                continue
            q_g, s_g = step(obs[rows], prev_action[rows], prev_reward[rows], tuple(s[rows] for s in state))
            if q is None:
                q = np.empty((len(obs), q_g.shape[1]), np.float32)
            q[rows] = q_g
            for out, s in zip(new_state, s_g):
                out[rows] = s
        return q, new_state


class R2D2Policy:
    """CPU copy of the online network used by runners. State: tuple of [N, H] numpy arrays."""

    def __init__(self, cfg: R2D2Config, env_spec):
        self.net = make_network(env_spec, cfg).eval()
        self.num_actions = env_spec.num_actions
        self._fast = None
        self._refresh()

    def _refresh(self) -> None:
        nets = self.net.nets if isinstance(self.net, GroupedR2D2Network) else [self.net]
        fast = all(isinstance(n.torso, MLPTorso) for n in nets)
        self._fast = GroupedNumpyStep(self.net) if fast and len(nets) > 1 else NumpyStep(self.net) if fast else None

    def initial_state(self, batch_size: int) -> tuple:
        return tuple(s.numpy() for s in self.net.initial_state(batch_size))

    def load_weights(self, weights: dict) -> None:
        self.net.load_state_dict(weights)
        self._refresh()

    @torch.inference_mode()
    def q_values(self, obs, prev_action, prev_reward, state):
        if self._fast is not None:
            return self._fast(obs, prev_action, prev_reward, state)
        st = tuple(torch.from_numpy(s) for s in state)
        q, st = self.net.unroll(torch.from_numpy(obs).unsqueeze(1), torch.from_numpy(prev_action).unsqueeze(1),
                                torch.from_numpy(prev_reward).unsqueeze(1), st)
        return q[:, 0].numpy(), tuple(s.numpy() for s in st)

    def act(self, obs, prev_action, prev_reward, state, epsilon: np.ndarray, rng: np.random.Generator,
            action_mask: np.ndarray | None = None):
        """Returns (actions [N], next state). Slot i explores with probability epsilon[i]; with an
        action mask, both the greedy and the random choice are among the legal actions only."""
        q, state = self.q_values(obs, prev_action, prev_reward, state)
        return epsilon_greedy(q, epsilon, rng, action_mask), state
