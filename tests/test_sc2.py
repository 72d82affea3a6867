"""sc2: family on pysc2's own SC2TestEnv (the game itself is not installed here): spec conversion,
masking of unavailable functions, coordinate checks, real-game selection, R2D2 through Ray."""
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("pysc2")

import rlfleet.envs.sc2  # noqa: E402,F401  (registers the sc2: family)
from rlfleet.envs.sc2.compat import import_pysc2  # noqa: E402
from rlfleet.envs.sc2.env import Sc2Batch, env_class  # noqa: E402
from rlfleet.platform.errors import UserError  # noqa: E402

FUNCTIONS = ["no_op", "select_army", "Move_screen", "Attack_minimap"]


def _batch(n=2, **kw):
    kw = {"screen": 16, "minimap": 12, "functions": FUNCTIONS, "action_resolution": 8, "test_env": True, **kw}
    return Sc2Batch(n, 0, "MoveToBeacon", **kw)


def _set_available(batch, ids):
    """Make the test env's next observations offer these function ids (SC2TestEnv's default
    observation offers only a few camera/select functions); `next_timestep` is its public hook."""
    for env in batch.envs:
        obs = env.next_timestep[0].observation
        obs["available_actions"] = np.array(ids)
        obs["feature_screen"][5, 3, 4] = 4  # player_relative: an enemy at x=4, y=3


def test_spec_conversion_layers_and_functions():
    b = _batch(screen_layers=["player_relative", "selected"], minimap_layers=["camera"])
    s = b.spec
    assert s.screen_shape == (2, 16, 16) and s.minimap_shape == (1, 12, 12) and s.nonspatial_dim == 11
    assert s.obs_shape == (2 * 256 + 144 + 11,) and s.obs_dtype == "float32"
    # F=4 functions, V=2 (queued / select_add), P=8x8 grid
    assert (s.num_functions, s.num_values, s.resolution) == (4, 2, 8) and s.num_actions == 4 * 2 * 64
    full = _batch().spec
    assert full.screen_shape[0] == 27 and full.minimap_shape[0] == 11  # pysc2 4.0's layer counts
    b.reset()
    _set_available(b, [0, 7, 331])
    obs = b.step(np.zeros(2, np.int64)).obs  # no_op
    screen = obs[0, :512].reshape(2, 16, 16)
    assert screen[0, 3, 4] == pytest.approx(4 / 5)  # layers are indexed [layer, y, x], scaled by 1/scale (5 categories)
    with pytest.raises(UserError, match="did you mean: player_relative"):
        _batch(screen_layers=["player_relativ"])
    with pytest.raises(UserError, match="did you mean: Move_screen"):
        _batch(functions=["no_op", "Move_scren"])
    with pytest.raises(UserError, match="at most one point"):
        _batch(functions=["select_rect"])


def test_unavailable_functions_are_masked_and_refused():
    import ray  # noqa: F401  (protobuf already loaded, as in a Ray worker)
    from rlfleet.algorithms.r2d2.config import R2D2Config
    from rlfleet.algorithms.r2d2.policy import R2D2Policy

    b = _batch()
    b.reset()
    codec = b.codec
    # SC2TestEnv offers no_op (0) and select_army (7) but neither Move_screen (331) nor Attack_minimap (13)
    legal = {codec.decode(a) for a in np.flatnonzero(b.action_mask[0])}
    assert legal == {(0, 0, 0), (1, 0, 0), (1, 1, 0)}  # no_op; select_army with select_add 0/1
    move = (2 * codec.V + 0) * codec.P + 5  # Move_screen, queued=0, grid cell 5
    with pytest.raises(ValueError, match="not available"):
        b.step(np.array([move, 0]))
    _set_available(b, [0, 7, 331])
    b.step(np.zeros(2, np.int64))
    mask = b.action_mask[0]
    assert mask[move] and mask.sum() == 1 + 2 + 2 * codec.P  # Move_screen: queued 0/1 x every grid cell
    assert not mask[(3 * codec.V) * codec.P]  # Attack_minimap still unavailable
    assert not mask[1]  # no_op takes no point: only p = 0 encodes it
    call = b.calls(np.array([move, move]))[0]
    assert int(call.function) == 331 and call.arguments[1] == [int(5.5 * 16 / 8), int(0.5 * 16 / 8)]
    # R2D2 acting (greedy and random) keeps to the mask
    policy = R2D2Policy(R2D2Config(lstm_size=16, dueling_hidden=16), b.spec)
    rng = np.random.default_rng(0)
    state = policy.initial_state(2)
    for eps in (0.0, 1.0):
        for _ in range(20):
            a, state = policy.act(np.zeros((2,) + b.spec.obs_shape, np.float32), np.zeros(2, np.int64),
                                  np.zeros(2, np.float32), state, np.full(2, eps), rng, action_mask=b.action_mask)
            assert b.action_mask[np.arange(2), a].all()


def test_out_of_range_coordinates_are_refused_before_sending():
    _, _, actions = import_pysc2()
    b = _batch(n=1)
    b.reset()
    avail = np.array([0, 331])
    spec = b.action_spec
    ok = b.codec.checked(actions.FunctionCall(331, [[0], [15, 15]]), avail, spec)
    assert ok.arguments[1] == [15, 15]
    for bad in ([[0], [16, 3]], [[0], [3, -1]], [[2], [3, 3]], [[0], [3]]):
        with pytest.raises(ValueError, match="outside"):
            b.codec.checked(actions.FunctionCall(331, bad), avail, spec)
    # every grid cell maps inside the layer it addresses
    for p in range(b.codec.P):
        x, y = b.codec.point(p, 16)
        assert 0 <= x < 16 and 0 <= y < 16
        x, y = b.codec.point(p, 12)
        assert 0 <= x < 12 and 0 <= y < 12


def test_real_game_is_chosen_when_installed_and_missing_game_is_a_clear_error(tmp_path, monkeypatch):
    sc2_env, _, _ = import_pysc2()
    game = tmp_path / "StarCraftII"
    (game / "Versions" / "Base75689").mkdir(parents=True)
    (game / "Versions" / "Base75689" / "SC2_x64").write_bytes(b"")
    monkeypatch.setenv("SC2PATH", str(game))
    assert env_class() is sc2_env.SC2Env
    b = Sc2Batch(1, 0, "MoveToBeacon", screen=16, minimap=16)
    assert b.cls is sc2_env.SC2Env and b.envs is None  # the game starts at the first reset, in the actor
    empty = tmp_path / "nothing"
    empty.mkdir()
    monkeypatch.setenv("SC2PATH", str(empty))
    with pytest.raises(UserError, match="StarCraft II not found.*docs/starcraft.md"):
        Sc2Batch(1, 0, "MoveToBeacon")
    monkeypatch.delenv("SC2PATH")
    monkeypatch.setenv("HOME", str(empty))
    with pytest.raises(UserError, match=str(empty / "StarCraftII" / "Versions")):
        env_class()
    assert env_class(test_env=True).__name__ == "SC2TestEnv"  # only when asked for


def test_pysc2_imports_after_protobuf_is_loaded_by_ray():
    code = ("import ray; from google.protobuf.internal import api_implementation as a; assert a.Type() != 'python';"
            "from rlfleet.envs.sc2.compat import import_pysc2; _, f, ac = import_pysc2();"
            "from s2clientprotocol import common_pb2; assert common_pb2.Race.Name(1) == 'Terran';"
            "print(len(ac.FUNCTIONS), f.SCREEN_FEATURES.unit_type.scale)")
    env = {k: v for k, v in __import__("os").environ.items() if k != "PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION"}
    env["PYTHONPATH"] = str(__import__("pathlib").Path(__file__).resolve().parents[1])
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split()[0] == "573"


def test_r2d2_fullyconv_smoke_run_through_ray_on_the_test_env(ray_session, tiny_config):
    import rlfleet

    tiny_config["env"] = {"id": "sc2:MoveToBeacon",
                          "kwargs": {"screen": 8, "minimap": 8, "test_env": True, "action_resolution": 4,
                                     "functions": ["no_op", "select_army", "Move_screen"]}}
    tiny_config["runtime_env"] = {"env_vars": dict(rlfleet.envs.sc2.ENV_VARS)}
    tiny_config["stop"] = {"env_steps": 600}
    tiny_config["eval"] = {"interval_env_steps": 200, "episodes": 2, "num_cpus": 0.25}
    tiny_config["runners"]["weight_sync_interval"] = 4
    summary = rlfleet.train(tiny_config)
    assert summary["stop_reason"] == "env_steps"
    assert summary["updates"] > 0 and summary["episodes"] > 0
    # every runner stepped and pulled newer weights (CI once saw [7, 0] with a 20-step sync interval
    # and 300 steps: a runner importing pysc2 on a busy machine starts late, so it asks every 2 steps)
    assert min(summary["runner_env_steps"]) > 0
    assert min(summary["runner_weights_versions"]) >= 1
    # SC2TestEnv's episodes are 10 steps long
    assert summary["evals"] and summary["evals"][-1]["length_mean"] == pytest.approx(10)


def test_fullyconv_q_is_the_sum_of_its_heads_in_the_codec_layout():
    import torch

    from rlfleet.algorithms.r2d2.config import R2D2Config
    from rlfleet.algorithms.r2d2.networks import make_network
    from rlfleet.algorithms.r2d2.sc2_networks import FullyConvR2D2Network

    b = _batch(n=1, screen=8, minimap=6, action_resolution=8)  # minimap resampled to the screen
    net = make_network(b.spec, R2D2Config(lstm_size=16, dueling_hidden=16))
    assert isinstance(net, FullyConvR2D2Network)
    heads = {}
    for name in ("fn_head", "arg_head", "point_head"):
        getattr(net, name).register_forward_hook(lambda m, i, o, name=name: heads.__setitem__(name, o))
    obs = torch.rand(2, 3, b.spec.obs_shape[0])
    q, _ = net.unroll(obs, torch.zeros(2, 3, dtype=torch.long), torch.zeros(2, 3), net.initial_state(2))
    assert q.shape == (2, 3, b.spec.num_actions)
    a_f, a_v = heads["fn_head"][0], heads["arg_head"][0]
    a_p = heads["point_head"][0].reshape(-1)
    f, v, p = b.codec.decode(int(q[0, 0].argmax()))
    # moving along one part of the composite index changes Q by exactly that head's difference
    q0 = q[0, 0]
    other = (f + 1) % len(b.codec.ids)
    idx = lambda f, v, p: (f * b.codec.V + v) * b.codec.P + p  # noqa: E731
    assert torch.allclose(q0[idx(f, v, p)] - q0[idx(other, v, p)], a_f[f] - a_f[other], atol=1e-5)
    assert torch.allclose(q0[idx(f, 0, p)] - q0[idx(f, 1, p)], a_v[0] - a_v[1], atol=1e-5)
    assert torch.allclose(q0[idx(f, v, 0)] - q0[idx(f, v, 5)], a_p[0] - a_p[5], atol=1e-5)
