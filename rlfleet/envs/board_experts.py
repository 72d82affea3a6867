"""Scripted experts for turn-based (AEC) board games, for `rlfleet demos record`.

A turn-based expert is called on the acting agent only: `fn(env, {agent: observation}) ->
{agent: action}` (the observation as PettingZoo gives it, a dict with `observation` and
`action_mask`). Referenced as `scripted:rlfleet.envs.board_experts:<fn>`, e.g.

    rlfleet demos record --env pz:pettingzoo.classic.tictactoe_v3 \
        --expert scripted:rlfleet.envs.board_experts:tictactoe_varied --steps 2000 --out ttt.parquet

`tictactoe`: win, else block, else the first legal cell (deterministic: against itself it plays
the same game every time); `tictactoe_varied`: the same with a random legal cell instead of the
first, for demonstrations that cover more positions.
"""
from __future__ import annotations

import numpy as np

# cells are action indices 0..8; the set of lines is the same whether PettingZoo's cells are
# numbered by rows or by columns (it is closed under transposition)
TICTACTOE_LINES = ((0, 1, 2), (3, 4, 5), (6, 7, 8), (0, 3, 6), (1, 4, 7), (2, 5, 8), (0, 4, 8), (2, 4, 6))


def tictactoe_move(own: np.ndarray, other: np.ndarray, legal: np.ndarray, fallback: int | None = None) -> int:
    """Win if a line can be completed, else block the opponent's, else `fallback` (default: the
    first legal cell). `own`, `other`: [9] occupied cells by action index; `legal`: [9] bool."""
    for pieces in (own, other):
        for line in TICTACTOE_LINES:
            cells = list(line)
            if pieces[cells].sum() == 2:
                free = [c for c in cells if legal[c]]
                if free:
                    return int(free[0])
    return int(np.flatnonzero(legal)[0]) if fallback is None else int(fallback)


def tictactoe(env, observations) -> dict:
    """PettingZoo tictactoe_v3 (observation [3, 3, 2]: own pieces, opponent's pieces; cell i of
    the flattened board is action i): win, else block, else the first legal cell."""
    out = {}
    for agent, o in observations.items():
        board = np.asarray(o["observation"]).reshape(9, 2)
        out[agent] = tictactoe_move(board[:, 0] > 0, board[:, 1] > 0, np.asarray(o["action_mask"]) > 0)
    return out


class TicTacToeExpert:
    """`tictactoe` with varied games: where neither a win nor a block is on, a uniformly random
    legal cell instead of the first (PettingZoo's tic-tac-toe ignores reset seeds, so the
    deterministic expert against itself plays one game over and over). The generator is reseeded
    from (seed, episode count) at each `begin_episode`: a fresh expert records the same games."""

    def __init__(self, seed: int = 0):
        self.seed, self.episodes = seed, 0
        self.rng = np.random.default_rng(seed)

    def begin_episode(self, env) -> None:
        self.rng = np.random.default_rng([self.seed, self.episodes])
        self.episodes += 1

    def __call__(self, env, observations) -> dict:
        out = {}
        for agent, o in observations.items():
            board = np.asarray(o["observation"]).reshape(9, 2)
            legal = np.asarray(o["action_mask"]) > 0
            out[agent] = tictactoe_move(board[:, 0] > 0, board[:, 1] > 0, legal,
                                        fallback=self.rng.choice(np.flatnonzero(legal)))
        return out


tictactoe_varied = TicTacToeExpert()
