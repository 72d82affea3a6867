"""QWeb-style state and action encoding (Gur et al., ICLR 2019, Sec. 3-4) as fixed-shape arrays.

Observation: one float32 array of shape [F + E, W] (F instruction fields, E DOM elements):
- field row f: [present, key tokens (KEY_TOKENS), value tokens (VALUE_TOKENS), 0...]
- element row e: [present, tag token, text tokens, value tokens, id/class tokens, left, top,
  width, height (scaled to the 160x210 task area), focused, tampered, targeted, is_leaf,
  typeable, then MATCHES (3) per field: share of the field's value words found in the element's
  text, whether the element's value equals the field's value, and share of the field's key words
  found in the element's text or id/classes (the username input of a login form)].
Tokens are hashed words (ids in [1, VOCAB), 0 = padding), so there is no vocabulary to ship;
the network embeds them. Text pseudo-elements (MiniWoB's tag "t", e.g. a checkbox label's text)
are merged into their parent element, which is what a click can target; a checkbox or radio
button with no text of its own takes its label's (so "select HF2" matches the box, whose value
says whether it is ticked), and the label takes the box's value (a click on the label toggles the
box, so a feed-forward agent needs to see the box's state on the label too, or it loops on it).

Action: one flat Discrete index over element x {click, type field f}:
a = e * (1 + F) + k, k = 0: click element e; k = 1 + f: focus element e and type field f's value.
`legal_actions` masks elements beyond the page, typing into elements that take no text, and
fields the instruction does not have, so an invalid action is never sent to the browser.
"""
from __future__ import annotations

import re
import zlib
from dataclasses import dataclass

import numpy as np

VOCAB = 4096
KEY_TOKENS, VALUE_TOKENS = 2, 6
TAG_TOKENS, TEXT_TOKENS, ELEM_VALUE_TOKENS, ATTR_TOKENS = 1, 8, 6, 4
GEOMETRY, FLAGS = 4, 5  # left, top, width, height; focused, tampered, targeted, is_leaf, typeable
MATCHES = 3  # per field: value words in text, value equal, key words in text or id/classes
LABELLED = ("input_checkbox", "input_radio")  # take their parent label's text
TASK_W, TASK_H = 160.0, 210.0
TYPEABLE = ("input_text", "input_password", "input_email", "input_number", "input_search", "input_tel",
            "input_url", "textarea", "input_date", "input_time")

_WORD = re.compile(r"[a-z0-9]+")


def tokens(text: str, n: int) -> list[int]:
    """First n hashed word ids of `text` (lowercased alphanumeric words), padded with 0."""
    ids = [zlib.crc32(w.encode()) % (VOCAB - 1) + 1 for w in _WORD.findall(str(text).lower())[:n]]
    return ids + [0] * (n - len(ids))


@dataclass(frozen=True)
class DomLayout:
    """Column offsets of the observation; E and F are recovered from the env's spec."""

    max_elements: int = 32
    max_fields: int = 4

    # element row
    PRESENT = 0
    TAG = 1
    TEXT = TAG + TAG_TOKENS
    VALUE = TEXT + TEXT_TOKENS
    ATTRS = VALUE + ELEM_VALUE_TOKENS
    GEOM = ATTRS + ATTR_TOKENS
    FLAG = GEOM + GEOMETRY
    MATCH = FLAG + FLAGS  # MATCHES per field
    BASE_WIDTH = MATCH
    # field row
    KEY = 1
    FVALUE = KEY + KEY_TOKENS

    @property
    def width(self) -> int:
        return self.BASE_WIDTH + MATCHES * self.max_fields

    @property
    def rows(self) -> int:
        return self.max_fields + self.max_elements

    @property
    def shape(self) -> tuple[int, int]:
        return (self.rows, self.width)

    @property
    def num_actions(self) -> int:
        return self.max_elements * (1 + self.max_fields)

    @classmethod
    def from_spec(cls, obs_shape, num_actions: int) -> "DomLayout":
        rows, width = obs_shape
        f = (width - cls.BASE_WIDTH) // MATCHES
        layout = cls(rows - f, f)
        if layout.shape != tuple(obs_shape) or layout.num_actions != num_actions:
            raise ValueError(f"observation {obs_shape} / {num_actions} actions is not a MiniWoB DOM layout")
        return layout

    # -- actions -------------------------------------------------------------------------------
    def decode(self, action: int) -> tuple[int, int]:
        """flat action -> (element index, k) with k = 0 click, k = 1 + f type field f."""
        return divmod(int(action), 1 + self.max_fields)

    def encode_action(self, element: int, field: int | None = None) -> int:
        return element * (1 + self.max_fields) + (0 if field is None else 1 + field)


def visible_elements(dom_elements, max_elements: int) -> list[dict]:
    """The elements an action can target, in DOM order: text pseudo-elements merged into their
    parent's text, the page body left out, at most `max_elements`."""
    by_ref = {}
    out = []
    for el in dom_elements:
        if el["tag"] == "t":
            parent = by_ref.get(el["parent"])
            if parent is not None:
                parent["text"] = (parent["text"] + " " + el["text"]).strip()
            continue
        if el["tag"] == "body":
            continue
        item = {"ref": int(el["ref"]), "parent": int(el["parent"]), "tag": el["tag"], "text": el["text"] or "", "value": str(el["value"] or ""),
                "attrs": f"{el['id']} {el['classes']}", "left": float(el["left"][0]), "top": float(el["top"][0]),
                "width": float(el["width"][0]), "height": float(el["height"][0]), "flags": el["flags"]}
        by_ref[item["ref"]] = item
        out.append(item)
    for item in out:
        parent = by_ref.get(item["parent"])
        if item["tag"] in LABELLED and parent is not None and parent["tag"] == "label":
            if not item["text"]:
                item["text"] = parent["text"]
            if not parent["value"]:  # clicking the label toggles its box: it shows the box's state
                parent["value"] = item["value"]
    return out[:max_elements]


def _share(words: list[str], text: str) -> float:
    have = set(_WORD.findall(text.lower()))
    return sum(w in have for w in words) / len(words) if words else 0.0


def field_matches(field_value: str, element: dict, field_key: str = "") -> tuple[float, float, float]:
    """(share of the field's value words in the element's text, element value == field value,
    share of the field's key words in the element's text or id/classes)."""
    words = _WORD.findall(str(field_value).lower())
    equal = float(element["value"].strip().lower() == str(field_value).strip().lower() and bool(words))
    key = _share(_WORD.findall(str(field_key).lower()), element["text"] + " " + element["attrs"].replace("-", " "))
    return _share(words, element["text"]), equal, key


def encode(layout: DomLayout, fields, elements: list[dict], out: np.ndarray | None = None) -> np.ndarray:
    """(instruction fields, visible elements) -> [F + E, W] float32 observation."""
    L = layout
    obs = np.zeros(L.shape, np.float32) if out is None else out
    if out is not None:
        obs[:] = 0.0
    F = L.max_fields
    fields = list(fields)[:F]
    for f, (key, value) in enumerate(fields):
        row = obs[f]
        row[0] = 1.0
        row[L.KEY:L.KEY + KEY_TOKENS] = tokens(key, KEY_TOKENS)
        row[L.FVALUE:L.FVALUE + VALUE_TOKENS] = tokens(value, VALUE_TOKENS)
    for e, el in enumerate(elements[:L.max_elements]):
        row = obs[F + e]
        row[L.PRESENT] = 1.0
        row[L.TAG] = tokens(el["tag"].replace("_", " "), 1)[0]
        row[L.TEXT:L.TEXT + TEXT_TOKENS] = tokens(el["text"], TEXT_TOKENS)
        row[L.VALUE:L.VALUE + ELEM_VALUE_TOKENS] = tokens(el["value"], ELEM_VALUE_TOKENS)
        row[L.ATTRS:L.ATTRS + ATTR_TOKENS] = tokens(el["attrs"].replace("-", " "), ATTR_TOKENS)
        row[L.GEOM:L.GEOM + 4] = (el["left"] / TASK_W, el["top"] / TASK_H, el["width"] / TASK_W, el["height"] / TASK_H)
        row[L.FLAG:L.FLAG + 4] = el["flags"]
        row[L.FLAG + 4] = el["tag"] in TYPEABLE
        for f, (key, value) in enumerate(fields):
            row[L.MATCH + MATCHES * f:L.MATCH + MATCHES * (f + 1)] = field_matches(value, el, key)
    return obs


def is_container(el: dict) -> bool:
    """A layout element: it has child elements (not a DOM leaf) and no text of its own (the task's
    wrapping divs, a form, a paragraph around a label and its input). Clicking one does nothing a
    click on its children would not, and a greedy agent can loop on such no-op clicks."""
    return not el["flags"][3] and not el["text"].strip() and el["tag"] not in TYPEABLE + LABELLED


def legal_actions(layout: DomLayout, num_fields: int, elements: list[dict], out: np.ndarray | None = None,
                  typeable_only: bool = True, click_containers: bool = True) -> np.ndarray:
    """[E * (1 + F)] bool: click any element on the page (but containers, unless `click_containers`);
    type an existing field into a typeable one."""
    F = layout.max_fields
    mask = np.zeros((layout.max_elements, 1 + F), bool) if out is None else out.reshape(layout.max_elements, 1 + F)
    mask[:] = False
    n = min(len(elements), layout.max_elements)
    mask[:n, 0] = True
    if not click_containers:
        mask[:n, 0] = [not is_container(el) for el in elements[:n]]
    nf = min(num_fields, F)
    for e in range(n):
        if not typeable_only or elements[e]["tag"] in TYPEABLE:
            mask[e, 1:1 + nf] = True
    if not mask.any():  # an empty page (between episodes): keep argmax defined; the env ignores the action
        mask[0, 0] = True
    return mask.reshape(-1)


def potential(fields, elements: list[dict]) -> float:
    """QWeb's shaping potential: the share of instruction fields whose value is held by an element
    aligned with the field (DOM-vs-instruction matching: an element whose text or id names the
    field's key when there is one, e.g. the username input; any element otherwise), so a value
    typed into the wrong input earns nothing. F = gamma * phi(s') - phi(s) keeps optimal policies
    (Ng et al. 1999)."""
    fields = list(fields)
    if not fields:
        return 0.0
    held = 0
    for key, value in fields:
        matches = [field_matches(value, el, key) for el in elements]
        aligned = [m for m in matches if m[2] > 0] or matches
        held += any(m[1] for m in aligned)
    return held / len(fields)
