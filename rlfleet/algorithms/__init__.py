"""Built-in algorithms; importing this package registers them."""
from rlfleet.algorithms import mamql, qweb, r2d2, retrieval  # noqa: F401
