"""Acting: epsilon-greedy over Q. Runner actors call `act` once per step for all their env slots."""
import numpy as np
import torch

from rlfleet.platform.policies import epsilon_greedy
from rlfleet_example.dqn.networks import QNetwork


class DQNPolicy:
    def __init__(self, cfg, env_spec):
        self.net = QNetwork(int(np.prod(env_spec.obs_shape)), env_spec.num_actions, cfg.hidden).eval()
        self.num_actions = env_spec.num_actions

    def initial_state(self, batch_size: int) -> tuple:
        return ()  # feed-forward: no recurrent state

    def load_weights(self, weights: dict) -> None:
        self.net.load_state_dict(weights)

    @torch.inference_mode()
    def act(self, obs, prev_action, prev_reward, state, epsilon, rng, action_mask=None):
        q = self.net(torch.from_numpy(np.asarray(obs, np.float32))).numpy()
        # per-slot epsilons (Ape-X), set by the runner; masks honoured in both choices
        return epsilon_greedy(q, epsilon, rng, action_mask), state
