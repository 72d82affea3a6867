"""pysc2 4.0.0 on Python 3.11 and protobuf >= 4, fixed inside the project (no edits to site-packages).

1. s2clientprotocol's generated `*_pb2.py` files predate protoc 3.19: protobuf's default (upb)
   implementation refuses them ("Descriptors cannot be created directly"). The usual fix, the
   environment variable PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION=python, only works if it is set
   before protobuf is first imported, which Ray workers and any process that imported Ray already
   did. So: when protobuf is already loaded with a C implementation, an import hook builds each
   `s2clientprotocol.*_pb2` module the way current protoc output does, from the serialized file
   descriptor the old file carries (same messages, same enums, same field numbers). sc2 configs
   also pass the environment variable through the actors' runtime_env (configs/sc2_*.yaml), so
   fresh worker processes take the pure-Python path and never need the hook.
2. `pysc2/lib/colors.py` calls `random.shuffle(x, random_fn)`; Python 3.11 removed the second
   argument. colors' own `random` name is pointed at a shim whose shuffle accepts it (Python
   3.10's algorithm, so the same fixed permutation); the global `random` module is untouched.
3. absl flags must be parsed before pysc2 builds an env; parsed with defaults if nobody did.
"""
from __future__ import annotations

import ast
import importlib.abc
import importlib.machinery
import importlib.util
import os
import random
import sys

_PREFIX = "s2clientprotocol."


def _serialized_descriptor(source: str) -> tuple[bytes, list[str]]:
    """(serialized FileDescriptorProto, imported s2clientprotocol modules) of an old _pb2 file."""
    tree = ast.parse(source)
    deps = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module == "s2clientprotocol":
            deps += [f"{_PREFIX}{a.name}" for a in node.names]
        if isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "FileDescriptor":
            for kw in node.keywords:
                if kw.arg == "serialized_pb":
                    arg = kw.value.args[0] if isinstance(kw.value, ast.Call) else kw.value
                    data = ast.literal_eval(arg)
                    return (data.encode("latin1") if isinstance(data, str) else data), deps
    raise ImportError("no serialized_pb in generated protobuf module")


class _Loader(importlib.abc.Loader):
    def __init__(self, path: str):
        self.path = path

    def create_module(self, spec):
        return None

    def exec_module(self, module):
        from google.protobuf import descriptor_pool
        from google.protobuf.internal import builder

        with open(self.path, encoding="utf-8") as f:
            serialized, deps = _serialized_descriptor(f.read())
        for dep in deps:
            importlib.import_module(dep)
        descriptor = descriptor_pool.Default().AddSerializedFile(serialized)
        module.DESCRIPTOR = descriptor
        builder.BuildMessageAndEnumDescriptors(descriptor, module.__dict__)
        builder.BuildTopDescriptorsAndMessages(descriptor, module.__name__, module.__dict__)


class _Finder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path, target=None):
        if not (fullname.startswith(_PREFIX) and fullname.endswith("_pb2")):
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is None or not spec.origin:
            return None
        return importlib.util.spec_from_file_location(fullname, spec.origin, loader=_Loader(spec.origin))


def _install_protobuf_hook() -> None:
    if "google.protobuf" not in sys.modules:  # nothing loaded yet: the documented switch still works
        os.environ.setdefault("PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION", "python")
        return
    from google.protobuf.internal import api_implementation

    if api_implementation.Type() != "python" and not any(isinstance(f, _Finder) for f in sys.meta_path):
        sys.meta_path.insert(0, _Finder())


class _RandomShim:
    """`random` as pysc2.lib.colors expects it on Python <= 3.10."""

    def __getattr__(self, name):
        return getattr(random, name)

    @staticmethod
    def shuffle(x, random_fn=None):
        if random_fn is None:
            return random.shuffle(x)
        for i in reversed(range(1, len(x))):  # Python 3.10's algorithm with a custom random()
            j = int(random_fn() * (i + 1))
            x[i], x[j] = x[j], x[i]


_READY = False


def import_pysc2():
    """Import pysc2's env modules with the fixes above applied; returns (sc2_env, features, actions)."""
    global _READY
    if not _READY:
        _install_protobuf_hook()
        from pysc2.lib import colors

        colors.random = _RandomShim()
        from absl import flags

        if not flags.FLAGS.is_parsed():
            flags.FLAGS(["rlfleet"], known_only=True)
        _READY = True
    from pysc2.env import sc2_env
    from pysc2.lib import actions, features

    return sc2_env, features, actions
