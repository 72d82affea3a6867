"""Scripted solvers: reactive experts that read the same (fields, elements) the agent is encoded
from and answer with a flat action of the env's own action space. They prove the encoding and
the action mapping solve the task end to end (tests), and give QWeb's warm-start curriculum the
steps that lead to the goal.

Each solver: (layout, fields, elements) -> (flat action, steps left including this one).
"""
from __future__ import annotations

from rlfleet.envs.miniwob.encoding import TYPEABLE, DomLayout


def _find(elements, pred) -> int:
    for i, el in enumerate(elements):
        if pred(el):
            return i
    raise LookupError("no element matches")


def _button(elements, text: str | None = None) -> int:
    return _find(elements, lambda el: el["tag"] == "button" and (text is None or el["text"].strip() == text))


def _fill_then_submit(layout: DomLayout, fields, elements, input_for) -> tuple[int, int]:
    """Type each field into its input (once its value differs), then click the submit button."""
    todo = []
    for f, (key, value) in enumerate(fields):
        e = input_for(key, elements)
        if e is not None and elements[e]["value"] != value:
            todo.append(layout.encode_action(e, f))
    submit = layout.encode_action(_button(elements))
    return (todo[0], len(todo) + 1) if todo else (submit, 1)


def click_test(layout, fields, elements):
    return layout.encode_action(_button(elements)), 1


def click_button(layout, fields, elements):
    return layout.encode_action(_button(elements, dict(fields)["target"])), 1


def focus_text(layout, fields, elements):
    return layout.encode_action(_find(elements, lambda el: el["tag"] in TYPEABLE)), 1


def enter_text(layout, fields, elements):
    def input_for(key, els):
        return _find(els, lambda el: el["tag"] in TYPEABLE) if key == "target" else None

    return _fill_then_submit(layout, fields, elements, input_for)


def login_user(layout, fields, elements):
    def input_for(key, els):
        return _find(els, lambda el: el["attrs"].split()[:1] == [key]) if key in ("username", "password") else None

    return _fill_then_submit(layout, fields, elements, input_for)


def click_checkboxes(layout, fields, elements):
    """Tick the box of every label named by a `target i` field (and only those), then submit."""
    targets = {v for k, v in fields if k.startswith("target")}
    todo = []
    for i, el in enumerate(elements):
        if el["tag"] != "input_checkbox":
            continue
        label = next((x for x in elements if x["ref"] == el["parent"]), None)
        wanted = label is not None and label["text"].strip() in targets
        checked = el["value"].lower() == "true"
        if wanted != checked:
            todo.append(layout.encode_action(i))
    submit = layout.encode_action(_button(elements))
    return (todo[0], len(todo) + 1) if todo else (submit, 1)


def login_user_popup(layout, fields, elements):
    """login-user, but focusing a field may open a popup that disables the form: Cancel closes
    it (OK ends the episode with -1); then fill the form as login-user."""
    cancel = next((i for i, el in enumerate(elements) if el["attrs"].split()[:1] == ["popup-cancel"]), None)
    action, left = login_user(layout, fields, elements)
    return (layout.encode_action(cancel), left + 1) if cancel is not None else (action, left)


SOLVERS = {"click-test": click_test, "click-button": click_button, "focus-text": focus_text,
           "enter-text": enter_text, "login-user": login_user, "click-checkboxes": click_checkboxes,
           "login-user-popup": login_user_popup}
