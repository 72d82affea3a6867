"""The dataset service of the retrieval agent: whole trajectories from recorded demonstrations
(rlfleet/demos.py Parquet), Minari datasets or replay sequences, served as

- uniform retrieval batches (the paper: attend inside a uniformly sampled batch of trajectories),
- episode batches for offline recurrent DQN (the same columns as replay sequences), and
- beyond the paper, `KeyIndex`: a faiss index over the keys of every step of the whole dataset,
  re-embedded in a background thread as the encoder changes, so retrieval candidates come from
  the whole dataset instead of one batch.

Storage is flat (all steps of all episodes concatenated plus offsets), so a dataset costs its
steps and nothing for padding; batches are gathered on demand.
"""
from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import torch

from rlfleet.platform import batch as B
from rlfleet.platform.errors import UserError


class TrajectoryDataset:
    """Episodes e with observations x_0..x_T (T+1, the last one final), actions and rewards (T),
    whether they terminated, and an integer task label (e.g. the BabyAI level); `task_names`
    maps labels to names."""

    def __init__(self, episodes: list[dict], num_actions: int, task_names: dict[int, str] | None = None):
        if not episodes:
            raise UserError("retrieval dataset: no episodes")
        self.num_actions = num_actions
        self.obs_shape = tuple(np.asarray(episodes[0]["obs"]).shape[1:])
        lengths = np.array([len(e["action"]) for e in episodes], np.int64)
        if (lengths < 1).any():
            raise UserError("retrieval dataset: an episode has no steps")
        self.lengths = lengths
        self.obs_start = np.concatenate([[0], np.cumsum(lengths + 1)[:-1]])
        self.act_start = np.concatenate([[0], np.cumsum(lengths)[:-1]])
        self.obs = np.concatenate([np.asarray(e["obs"], np.float32) for e in episodes])
        self.action = np.concatenate([np.asarray(e["action"], np.int64) for e in episodes])
        self.reward = np.concatenate([np.asarray(e["reward"], np.float32) for e in episodes])
        self.terminated = np.array([bool(e.get("terminated", True)) for e in episodes])
        self.task = np.array([int(e.get("task", 0)) for e in episodes], np.int64)
        self.task_names = dict(task_names or {t: str(t) for t in sorted(set(self.task.tolist()))})

    @property
    def name(self) -> str:
        return ",".join(self.task_names[t] for t in sorted(set(self.task.tolist())) if t in self.task_names)

    def __len__(self) -> int:
        return len(self.lengths)

    @property
    def steps(self) -> int:
        return int(self.lengths.sum())

    def subset(self, idx) -> "TrajectoryDataset":
        return TrajectoryDataset([self.episode(i) for i in np.asarray(idx).tolist()], self.num_actions, self.task_names)

    def episode(self, i: int) -> dict:
        o, a, n = self.obs_start[i], self.act_start[i], self.lengths[i]
        return {"obs": self.obs[o:o + n + 1], "action": self.action[a:a + n], "reward": self.reward[a:a + n],
                "terminated": self.terminated[i], "task": self.task[i]}

    @staticmethod
    def concat(datasets: list["TrajectoryDataset"]) -> "TrajectoryDataset":
        """All episodes of several datasets; task labels are kept (give each source its own)."""
        names = {t: n for d in datasets for t, n in d.task_names.items()}
        eps = [d.episode(i) for d in datasets for i in range(len(d))]
        return TrajectoryDataset(eps, datasets[0].num_actions, names)

    # -- sources ----------------------------------------------------------------------------------
    @staticmethod
    def from_demos(path: str | Path, task: int = 0, task_name: str | None = None) -> "TrajectoryDataset":
        """A single-agent demonstrations file written by `rlfleet demos record` (validated on load)."""
        from rlfleet import demos

        per_agent, meta = demos.load(path)
        if len(per_agent) != 1:
            raise UserError(f"retrieval dataset {path}: {len(per_agent)} agents; single-agent demonstrations needed")
        d = next(iter(per_agent.values()))
        n_actions = next(iter(meta["spaces"].values()))["num_actions"]
        episodes = []
        for ep in np.unique(d.episode):
            rows = np.flatnonzero(d.episode == ep)
            rows = rows[np.argsort(d.t[rows])]
            episodes.append({"obs": np.concatenate([d.obs[rows], d.next_obs[rows[-1:]]]), "action": d.action[rows],
                             "reward": d.reward[rows], "terminated": bool(d.terminated[rows[-1]]), "task": task})
        return TrajectoryDataset(episodes, n_actions, {task: task_name or meta.get("env", str(path))})

    @staticmethod
    def from_minari(dataset_id: str, task: int = 0, max_episodes: int | None = None) -> "TrajectoryDataset":
        """A locally available Minari dataset (`minari.load_dataset`; Box observations, Discrete actions)."""
        try:
            import minari
        except ImportError:
            raise UserError("retrieval dataset: Minari sources need the `minari` package (pip install minari)") from None
        try:
            ds = minari.load_dataset(dataset_id)
        except Exception as e:  # noqa: BLE001  (minari raises several kinds for a missing id)
            raise UserError(f"retrieval dataset: cannot load Minari dataset {dataset_id!r} ({e})") from None
        if not hasattr(ds.action_space, "n"):
            raise UserError(f"retrieval dataset: Minari dataset {dataset_id!r} has non-discrete actions {ds.action_space}")
        episodes = []
        for k, ep in enumerate(ds.iterate_episodes()):
            if max_episodes is not None and k >= max_episodes:
                break
            obs = np.asarray(ep.observations, np.float32).reshape(len(ep.actions) + 1, -1)
            episodes.append({"obs": obs, "action": np.asarray(ep.actions), "reward": np.asarray(ep.rewards),
                             "terminated": bool(np.asarray(ep.terminations)[-1]), "task": task})
        return TrajectoryDataset(episodes, int(ds.action_space.n), {task: dataset_id})

    @staticmethod
    def from_sequences(batch: dict, num_actions: int) -> "TrajectoryDataset":
        """Replay sequences (the columns of rlfleet.platform.batch, numpy or torch) as trajectories:
        each sequence's valid steps plus its bootstrap observation."""
        def np_(x):
            return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)

        obs, act, rew, mask = (np_(batch[k]) for k in (B.OBS, B.ACTION, B.REWARD, B.MASK))
        term = np_(batch[B.TERMINAL])
        episodes = []
        for i in range(len(act)):
            n = int(mask[i].sum())
            if n > 0:
                episodes.append({"obs": obs[i, :n + 1], "action": act[i, :n], "reward": rew[i, :n],
                                 "terminated": bool(term[i, :n].any())})
        return TrajectoryDataset(episodes, num_actions)

    # -- batches ----------------------------------------------------------------------------------
    def retrieval_batch(self, idx, max_len: int) -> dict:
        """Episodes `idx` as retrieval trajectories: every observation x_0..x_T with its previous
        action and reward (the final observation carries the final reward, i.e. the outcome), cut
        to `max_len` steps from the start. Returns torch tensors obs [N, L, ...], prev_action,
        prev_reward, valid [N, L]."""
        idx = np.asarray(idx)
        n_steps = np.minimum(self.lengths[idx] + 1, max_len)
        l = int(n_steps.max())
        obs = np.zeros((len(idx), l) + self.obs_shape, np.float32)
        pa, pr = np.zeros((len(idx), l), np.int64), np.zeros((len(idx), l), np.float32)
        valid = np.zeros((len(idx), l), bool)
        for row, (i, n) in enumerate(zip(idx.tolist(), n_steps.tolist())):
            o, a = self.obs_start[i], self.act_start[i]
            obs[row, :n] = self.obs[o:o + n]
            pa[row, 1:n] = self.action[a:a + n - 1]
            pr[row, 1:n] = self.reward[a:a + n - 1]
            valid[row, :n] = True
        return {"obs": torch.from_numpy(obs), "prev_action": torch.from_numpy(pa),
                "prev_reward": torch.from_numpy(pr), "valid": torch.from_numpy(valid)}

    def sample_retrieval(self, n: int, rng: np.random.Generator, max_len: int, exclude=None) -> dict:
        """A uniform retrieval batch of n episodes, none of them in `exclude` (the episodes being
        trained on: an agent must not retrieve its own future)."""
        pool = np.arange(len(self))
        if exclude is not None:
            pool = np.setdiff1d(pool, np.asarray(exclude))
        idx = rng.choice(pool, size=min(n, len(pool)), replace=False)
        out = self.retrieval_batch(idx, max_len)
        out["index"] = idx
        return out

    def sequence_batch(self, idx, max_len: int, rng: np.random.Generator) -> dict:
        """Episodes as training sequences in replay's columns (OBS/PREV_* with T+1 entries,
        ACTION/REWARD/TERMINAL/MASK with T); an episode longer than max_len gives a random window."""
        idx = np.asarray(idx)
        n = len(idx)
        lens = np.minimum(self.lengths[idx], max_len)
        t = int(lens.max())
        obs = np.zeros((n, t + 1) + self.obs_shape, np.float32)
        pa, pr = np.zeros((n, t + 1), np.int64), np.zeros((n, t + 1), np.float32)
        act, rew = np.zeros((n, t), np.int64), np.zeros((n, t), np.float32)
        term, mask = np.zeros((n, t), np.float32), np.zeros((n, t), np.float32)
        for row, (i, k) in enumerate(zip(idx.tolist(), lens.tolist())):
            w = int(rng.integers(0, self.lengths[i] - k + 1))  # window start
            o, a = self.obs_start[i] + w, self.act_start[i] + w
            obs[row, :k + 1] = self.obs[o:o + k + 1]
            act[row, :k], rew[row, :k] = self.action[a:a + k], self.reward[a:a + k]
            pa[row, 1:k + 1], pr[row, 1:k + 1] = act[row, :k], rew[row, :k]
            if w > 0:
                pa[row, 0], pr[row, 0] = self.action[a - 1], self.reward[a - 1]
            mask[row, :k] = 1.0
            if self.terminated[i] and w + k == self.lengths[i]:
                term[row, k - 1] = 1.0
        out = {B.OBS: obs, B.PREV_ACTION: pa, B.PREV_REWARD: pr, B.ACTION: act, B.REWARD: rew,
               B.TERMINAL: term, B.MASK: mask, B.WEIGHT: np.ones(n, np.float32)}
        return {k: torch.from_numpy(v) for k, v in out.items()}


class KeyIndex:
    """Approximate nearest-neighbour retrieval over the whole dataset (beyond the paper).

    Every step of every episode gets its key kappa_ij = h_ij W_e from the current network (the
    past summary); a faiss inner-product index over them answers "which trajectories hold the
    steps with the largest q . kappa" for each query, and those trajectories (keys and values
    from the same embedding pass) become that query's retrieval set. Keys go stale as the encoder
    trains: `start(get_network)` re-embeds the dataset in a background thread every `refresh_s`
    seconds and swaps the new index in atomically; `refresh()` does one pass in the caller.
    Exact search (IndexFlatIP) up to `exact_max` keys, HNSW above.
    """

    def __init__(self, dataset: TrajectoryDataset, max_len: int, candidates: int, refresh_s: float = 5.0,
                 exact_max: int = 200_000, chunk: int = 256):
        self.dataset, self.max_len, self.candidates = dataset, max_len, candidates
        self.refresh_s, self.exact_max, self.chunk = refresh_s, exact_max, chunk
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._tables = None  # (faiss index, step -> episode, keys [E, L, d], values [E, L, v], valid [E, L])
        self.version = 0
        self.last_refresh_s = 0.0

    @torch.no_grad()
    def refresh(self, net) -> None:
        """Re-embed every episode with `net` (a RetrievalAgentNetwork) and swap the index in."""
        import faiss

        t0 = time.perf_counter()
        ks, vs, ok = [], [], []
        everything = np.arange(len(self.dataset))
        l = int(min(self.dataset.lengths.max() + 1, self.max_len))
        for start in range(0, len(everything), self.chunk):
            traj = self.dataset.retrieval_batch(everything[start:start + self.chunk], self.max_len)
            mem = net.summarize(traj)
            pad = l - mem["keys"].shape[2]
            ks.append(torch.nn.functional.pad(mem["keys"][0], (0, 0, 0, pad)))
            vs.append(torch.nn.functional.pad(mem["values"][0], (0, 0, 0, pad)))
            ok.append(torch.nn.functional.pad(mem["valid"][0], (0, pad)))
        keys, values, valid = torch.cat(ks), torch.cat(vs), torch.cat(ok)
        flat = keys[valid].numpy().astype(np.float32)
        owner = np.repeat(np.arange(len(keys)), valid.sum(1).numpy())
        index = faiss.IndexFlatIP(flat.shape[1]) if len(flat) <= self.exact_max else \
            faiss.IndexHNSWFlat(flat.shape[1], 32, faiss.METRIC_INNER_PRODUCT)
        index.add(flat)
        with self._lock:
            self._tables = (index, owner, keys, values, valid)
            self.version += 1
        self.last_refresh_s = time.perf_counter() - t0

    def candidates_for(self, queries: torch.Tensor) -> dict:
        """queries [B, K, d] -> a retrieval set per row: the `candidates` trajectories owning the
        best-matching steps for any of the row's K queries. Returns keys [B, C, L, d], values,
        valid and the episode ids [B, C]."""
        with self._lock:
            index, owner, keys, values, valid = self._tables
        b, k, d = queries.shape
        _, hits = index.search(queries.reshape(b * k, d).detach().numpy().astype(np.float32), 4 * self.candidates)
        hits = owner[np.maximum(hits, 0)].reshape(b, -1)
        ids = np.empty((b, self.candidates), np.int64)
        for row in range(b):  # unique trajectories in order of their best hit
            _, first = np.unique(hits[row], return_index=True)
            uniq = hits[row][np.sort(first)][:self.candidates]
            ids[row] = np.resize(uniq, self.candidates)  # pad by repeating (a repeated trajectory adds nothing new)
        t = torch.from_numpy(ids)
        return {"keys": keys[t], "values": values[t], "valid": valid[t], "episodes": ids}

    def start(self, get_network) -> None:
        """Background re-embedding: `get_network()` returns a network snapshot (not being trained)."""
        def loop():
            while not self._stop.wait(self.refresh_s):
                self.refresh(get_network())

        self._stop.clear()
        self._thread = threading.Thread(target=loop, name="retrieval-reembed", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
