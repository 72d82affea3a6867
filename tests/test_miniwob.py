"""miniwob: family against a real headless Chromium (Debian's chromium + chromium-driver)."""
import os
import signal
import tempfile

import numpy as np
import pytest

pytest.importorskip("miniwob", reason="needs the web extra (pip install 'rlfleet[web]')")

import rlfleet.envs.miniwob  # noqa: E402,F401  (registers the family)
from rlfleet.envs.miniwob import encoding as enc  # noqa: E402
from rlfleet.envs.miniwob.solvers import SOLVERS  # noqa: E402
from rlfleet.platform.errors import UserError  # noqa: E402
from rlfleet.platform.registry import resolve_env  # noqa: E402


@pytest.fixture
def profile_root(tmp_path, monkeypatch):
    """Browser profiles go to a folder of this test's own, so 'none left behind' is checkable."""
    root = tmp_path / "profiles"
    root.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(root))
    return root


def _solve(env, episodes: int, seed: int = 0) -> list[float]:
    rewards = []
    for ep in range(episodes):
        env.reset(seed=seed + ep)
        for _ in range(env.max_steps):
            action, _ = SOLVERS[env.task](env.layout, env.fields, env.elements)
            assert env.action_mask()[action]
            _, r, term, trunc, info = env.step(action)
            assert not info["illegal"]
            if term or trunc:
                break
        rewards.append(r)
    return rewards


def test_unknown_task_is_a_user_error():
    with pytest.raises(UserError, match="did you mean: miniwob:click-button"):
        resolve_env("miniwob:click-buton")


def test_reset_step_and_no_profile_left(profile_root):
    env = resolve_env("miniwob:click-test")(max_elements=16, max_fields=2)
    try:
        obs, info = env.reset(seed=1)
        assert obs.shape == (18, enc.DomLayout.BASE_WIDTH + 2 * enc.MATCHES) and obs.dtype == np.float32
        assert len(list(profile_root.iterdir())) == 1  # a fresh profile for this browser
        mask = env.action_mask()
        assert mask.shape == (16 * 3,) and mask.any()
        button = next(i for i, el in enumerate(env.elements) if el["tag"] == "button")
        _, r, term, trunc, info = env.step(env.layout.encode_action(button))
        assert term and not trunc and r == 1.0 and info["success"]
        obs, _ = env.reset()  # next episode in the same browser
        assert obs[2:, enc.DomLayout.PRESENT].sum() == len(env.elements) > 0
    finally:
        env.close()
    assert list(profile_root.iterdir()) == []


def test_render_is_a_screenshot_of_the_page(profile_root):
    env = resolve_env("miniwob:click-button")(render_mode="rgb_array")
    try:
        env.reset(seed=2)
        frame = env.render()  # what `rlfleet eval --render` saves, one frame per step
        assert frame.ndim == 3 and frame.shape[2] == 3 and frame.dtype == np.uint8
        assert frame.shape[0] >= 150 and frame.shape[1] >= 150 and len(np.unique(frame.reshape(-1, 3), axis=0)) > 5
    finally:
        env.close()


def test_dom_extraction_and_action_mapping(profile_root):
    env = resolve_env("miniwob:login-user")(max_elements=16, max_fields=3, max_steps=6)
    L = env.layout
    try:
        obs, _ = env.reset(seed=3)
        keys = [k for k, _ in env.fields]
        assert keys == ["username", "password"]
        user = next(i for i, el in enumerate(env.elements) if el["attrs"].split()[:1] == ["username"])
        label = next(i for i, el in enumerate(env.elements) if el["text"] == "Username")
        row = obs[L.max_fields + user]
        assert row[L.FLAG + 4] == 1.0 and obs[L.max_fields + label, L.FLAG + 4] == 0.0  # typeable flag
        assert row[L.ATTRS] == enc.tokens("username", 1)[0]
        assert obs[0, L.KEY] == enc.tokens("username", 1)[0] and obs[2, 0] == 0.0  # 2 fields present, 3rd padded
        mask = env.action_mask().reshape(L.max_elements, 1 + L.max_fields)
        n = len(env.elements)
        assert mask[:n, 0].all() and not mask[n:].any()  # elements beyond the page: masked
        assert mask[user, 1:3].all() and not mask[user, 3]  # only existing fields can be typed
        assert not mask[label, 1:].any()  # no typing into a label
        # an illegal action (element beyond the page) is never sent: the page is unchanged
        before = [el["value"] for el in env.elements]
        _, r, term, trunc, info = env.step(L.encode_action(L.max_elements - 1))
        assert info["illegal"] and not term and [el["value"] for el in env.elements] == before
        # type field 0 (the username) into the username input: value and match features follow
        obs, r, term, _, info = env.step(L.encode_action(user, 0))
        assert not info["illegal"] and not term
        assert env.elements[user]["value"] == env.fields[0][1]
        m = obs[L.max_fields + user, L.MATCH:L.MATCH + 2 * enc.MATCHES].reshape(2, enc.MATCHES)
        assert m[0, 1] == 1.0 and m[1, 1] == 0.0  # holds the username's value, not the password's
        assert m[0, 2] == 1.0 and m[1, 2] == 0.0  # its id names the username field's key
        assert obs[L.max_fields + label, L.MATCH + 2] == 1.0  # so does the label's text
        assert enc.potential(env.fields, env.elements) == 0.5
    finally:
        env.close()


@pytest.mark.parametrize("task", ["click-checkboxes", "login-user", "focus-text", "login-user-popup"])
def test_scripted_solver_succeeds_through_the_action_api(task, profile_root):
    env = resolve_env(f"miniwob:{task}")(max_elements=24, max_fields=4)
    episodes = 6 if task == "login-user-popup" else 3  # half of its episodes open the popup
    try:
        rewards = _solve(env, episodes)
    finally:
        env.close()
    assert rewards == [1.0] * episodes


def test_killed_chromedriver_is_recovered(profile_root):
    factory = resolve_env("miniwob:click-button")
    batch = factory.make_batch(2, 0, max_elements=16, max_fields=2)
    try:
        batch.reset()
        victim = batch.envs[1].browser
        os.kill(victim.service.process.pid, signal.SIGKILL)  # chromedriver dies mid-episode
        res = batch.step(np.zeros(2, np.int64))
        assert res.dropped.tolist() == [False, True] and res.truncated[1]
        assert batch.dropped_episodes == 1 and batch.envs[1].browser is not victim
        assert res.action_mask[1].any()
        # the recreated browser plays on: the solver wins the next episodes on both slots
        wins = np.zeros(2)
        for _ in range(6):
            actions = np.array([SOLVERS["click-button"](e.layout, e.fields, e.elements)[0] for e in batch.envs])
            res = batch.step(actions)
            assert not res.dropped.any()
            wins += res.reward > 0
        assert (wins >= 5).all()
    finally:
        batch.close()
    assert list(profile_root.iterdir()) == []  # the killed browser's profile too


def test_curriculum_switches(profile_root):
    """Subgoals: the first episode shows only the first field and ends with +1 once it is typed.
    Warm starts: early episodes begin with part of the solver's plan done (a field typed)."""
    env = resolve_env("miniwob:login-user")(max_elements=16, max_fields=3, subgoal_episodes=4)
    try:
        obs, _ = env.reset(seed=5)
        assert [k for k, _ in env.visible_fields] == ["username"] and obs[1, 0] == 0.0
        user = next(i for i, el in enumerate(env.elements) if el["attrs"].split()[:1] == ["username"])
        assert not env.action_mask()[env.layout.encode_action(user, 1)]  # the hidden field cannot be typed
        _, r, term, _, _ = env.step(env.layout.encode_action(user, 0))
        assert term and r == 1.0
    finally:
        env.close()
    env = resolve_env("miniwob:enter-text")(max_elements=8, max_fields=2, warm_start_episodes=50)
    try:
        typed = 0
        for ep in range(6):
            env.reset(seed=ep)
            typed += any(el["value"] and el["value"] == env.fields[0][1] for el in env.elements)
        assert typed >= 1  # some episodes started with the text already typed
    finally:
        env.close()


def test_shaping_potential_counts_values_in_aligned_inputs_only():
    def el(tag, attrs, value="", text=""):
        return {"tag": tag, "attrs": attrs, "value": value, "text": text}

    fields = [("username", "kim"), ("password", "x9")]
    right = [el("label", "bold", text="Username"), el("input_text", "username", "kim"), el("input_password", "password")]
    wrong = [el("label", "bold", text="Username"), el("input_text", "username"), el("input_password", "password", "kim")]
    assert enc.potential(fields, right) == 0.5
    assert enc.potential(fields, wrong) == 0.0  # the username typed into the password box
    # no element names the field's key (enter-text's "target"): any element holding the value counts
    assert enc.potential([("target", "kim")], [el("input_text", "tt", "kim")]) == 1.0
    # a checkbox takes its label's text, so the instruction's word matches the box itself
    dom = [{"ref": 5, "parent": 4, "tag": "label", "text": "", "value": None, "id": "", "classes": "",
            "left": [0], "top": [0], "width": [9], "height": [9], "flags": [0, 0, 0, 0]},
           {"ref": 6, "parent": 5, "tag": "input_checkbox", "text": "", "value": False, "id": "ch0", "classes": "",
            "left": [0], "top": [0], "width": [9], "height": [9], "flags": [0, 0, 0, 0]},
           {"ref": 7, "parent": 5, "tag": "t", "text": "HF2", "value": None, "id": "", "classes": "",
            "left": [0], "top": [0], "width": [9], "height": [9], "flags": [0, 0, 0, 1]}]
    label, box = enc.visible_elements(dom, 8)
    assert box["tag"] == "input_checkbox" and box["text"] == "HF2"
    assert enc.field_matches("HF2", box, "target 0")[0] == 1.0
    # and the label shows the box's state (clicking it toggles the box): ticked and unticked differ
    assert label["value"] == box["value"] == ""
    dom[1]["value"] = True
    label, box = enc.visible_elements(dom, 8)
    assert label["value"] == box["value"] == "True"


def test_containers_can_be_masked_out_of_clicks(profile_root):
    env = resolve_env("miniwob:login-user")(max_elements=16, max_fields=2, click_containers=False)
    L = env.layout
    try:
        env.reset(seed=4)
        mask = env.action_mask().reshape(L.max_elements, 1 + L.max_fields)
        clickable = sorted(el["tag"] for el, ok in zip(env.elements, mask[:, 0]) if ok)
        # the wrapping divs, the form and the paragraphs around each label + input are not clickable
        assert clickable == ["button", "input_password", "input_text", "label", "label"]
        assert mask[:, 1:].sum() == 4  # typing is unchanged: 2 fields x 2 inputs
    finally:
        env.close()
