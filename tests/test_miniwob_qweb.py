"""QWeb: Q-head composition, masked acting, and training through Ray on a real browser task with
a chromedriver killed mid-run."""
import copy
import json
import os
import signal
import threading
import time

import numpy as np
import pytest
import torch

pytest.importorskip("miniwob", reason="needs the web extra (pip install 'rlfleet[web]')")

import rlfleet  # noqa: E402
import rlfleet.algorithms.qweb  # noqa: E402,F401  (registers qweb)
import rlfleet.envs.miniwob  # noqa: E402,F401  (registers miniwob:)
from rlfleet.algorithms.qweb import QWebConfig, QWebPolicy  # noqa: E402
from rlfleet.algorithms.qweb.networks import QWebNetwork  # noqa: E402
from rlfleet.envs.miniwob import encoding as enc  # noqa: E402
from rlfleet.platform.envs import EnvSpec  # noqa: E402


def _page(n: int):
    flags = np.array([0, 0, 0, 1], np.int8)
    return [{"ref": i + 2, "parent": 1, "tag": "input_text" if i == 0 else "button", "text": f"word{i}",
             "value": "", "attrs": f"id{i}", "left": 2.0, "top": 50.0 + 20 * i, "width": 60.0, "height": 20.0,
             "flags": flags} for i in range(n)]


def test_q_heads_sum_into_the_flat_composite_action():
    L = enc.DomLayout(6, 2)
    net = QWebNetwork(L.shape, L.num_actions, QWebConfig(hidden=16, embed_dim=8, lstm_size=16))
    fields = [("target", "word1"), ("other", "zzz")]
    obs = torch.from_numpy(enc.encode(L, fields, _page(4)))[None, None]
    with torch.no_grad():
        q, _ = net.unroll(obs, torch.zeros(1, 1, dtype=torch.long), torch.zeros(1, 1), ())
        e, ctx, z, summary = net.encode(obs[0])
        x = torch.cat([summary, torch.eye(L.num_actions)[:1], torch.zeros(1, 1)], -1)  # prev action 0, reward 0
        s = torch.relu(net.core(x)).unsqueeze(1).expand(-1, L.max_elements, -1)
        es = torch.cat([e, ctx, s], -1)
        q_elem, q_type = net.q_elem(es)[0, :, 0], net.q_type(es)[0]
        q_field = net.q_field(torch.cat([z[0], s[0].unsqueeze(1).expand(-1, 2, -1)], -1))[..., 0]
    q = q[0, 0]
    for el in range(L.max_elements):
        assert torch.allclose(q[L.encode_action(el)], q_elem[el] + q_type[el, 0], atol=1e-5)
        for f in range(2):
            assert torch.allclose(q[L.encode_action(el, f)], q_elem[el] + q_type[el, 1] + q_field[el, f], atol=1e-5)


def test_policy_acts_only_on_legal_actions():
    L = enc.DomLayout(8, 2)
    spec = EnvSpec(L.shape, "float32", L.num_actions, action_mask=True)
    policy = QWebPolicy(QWebConfig(hidden=16, embed_dim=8, lstm_size=16), spec)
    obs = np.stack([enc.encode(L, [("target", "word1")], _page(n)) for n in (1, 3, 5)])
    mask = np.stack([enc.legal_actions(L, 1, _page(n)) for n in (1, 3, 5)])
    rng = np.random.default_rng(0)
    for eps in (0.0, 1.0):
        for _ in range(20):
            a, _ = policy.act(obs, np.zeros(3, np.int64), np.zeros(3, np.float32), (), np.full(3, eps), rng,
                              action_mask=mask)
            assert mask[np.arange(3), a].all()


def _browser_pids(root: str) -> dict[str, int]:
    """chromedriver pid of each live browser whose profile is under `root` (profile -> pid)."""
    import psutil

    out = {}
    for p in psutil.process_iter(["cmdline", "ppid"]):
        cmd = p.info["cmdline"] or []
        flag = next((c for c in cmd if c.startswith(f"--user-data-dir={root}")), None)
        if flag and "--type=" not in " ".join(cmd):  # Chromium's main process; its parent is chromedriver
            out[flag.split("=", 1)[1]] = p.info["ppid"]
    return out


def test_qweb_trains_through_ray_and_survives_a_killed_chromedriver(ray_session, tiny_config, tmp_path):
    profiles = tmp_path / "profiles"
    profiles.mkdir()
    cfg = copy.deepcopy(tiny_config)
    cfg["env"] = {"id": "miniwob:click-test", "kwargs": {"max_elements": 8, "max_fields": 2, "max_steps": 4,
                                                        "profile_root": str(profiles)}}
    cfg["algorithm"] = {"name": "qweb", "trace": 4, "period": 2, "n_step": 2, "batch_size": 8, "hidden": 16,
                        "embed_dim": 8, "lstm_size": 16, "use_lstm": True}
    cfg["runners"].update(num_runners=1, envs_per_runner=2, ship_interval=8, weight_sync_interval=16)
    cfg["replay"].update(num_shards=1, min_size=4)
    cfg["stop"] = {"env_steps": 100}
    cfg["eval"]["interval_env_steps"] = 0
    seen, killed = set(), []

    def killer():  # once both runner browsers are up, kill one chromedriver
        t_end = time.time() + 90
        while time.time() < t_end and not killed:
            pids = _browser_pids(str(profiles))
            seen.update(pids)
            if len(pids) >= 2:
                time.sleep(1.0)
                os.kill(next(iter(pids.values())), signal.SIGKILL)
                killed.append(True)
            time.sleep(0.2)
        while time.time() < t_end and thread_alive[0]:
            seen.update(_browser_pids(str(profiles)))
            time.sleep(0.2)

    thread_alive = [True]
    t = threading.Thread(target=killer, daemon=True)
    t.start()
    try:
        summary = rlfleet.train(cfg)
    finally:
        thread_alive[0] = False
        t.join()
    assert killed, "no browser to kill was found"
    assert summary["env_steps"] >= 100 and summary["updates"] > 0 and summary["runner_restarts"] == 0
    assert len(seen) >= 3  # the killed browser was replaced inside the same runner
    records = [json.loads(line) for line in open(os.path.join(summary["run_dir"], "metrics.jsonl"))]
    assert any(r.get("episodes", 0) > 0 for r in records)
    assert list(profiles.iterdir()) == []  # every browser's profile removed, the killed one's too
    from rlfleet.platform.agent import load_agent

    agent = load_agent(summary["run_dir"])
    assert isinstance(agent.policy, QWebPolicy)
