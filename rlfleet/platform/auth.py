"""Token authentication for clients of a Ray 2.60 cluster.

Ray sends its token (RAY_AUTH_TOKEN, else the file RAY_AUTH_TOKEN_PATH, else ~/.ray/auth_token) only
from processes whose auth mode is "token". A new local Ray and `ray start --head` turn that mode on
whenever a token exists, but a client given an explicit address (ray.init(address=...), the Jobs
SDK) does not, so it is refused by a cluster that has auth on. rlfleet's clients turn the mode on the
same way `ray start` does; RAY_AUTH_MODE, when set, still decides.
"""
from __future__ import annotations

import os


def enable_token_auth_if_available() -> bool:
    """Turn on token mode for this process when RAY_AUTH_MODE is unset and a token is available."""
    if "RAY_AUTH_MODE" in os.environ:
        return os.environ["RAY_AUTH_MODE"].lower() == "token"
    from ray._private.authentication.authentication_token_setup import _enable_token_auth
    from ray._raylet import AuthenticationTokenLoader

    if not AuthenticationTokenLoader.instance().has_token(ignore_auth_mode=True):
        return False
    _enable_token_auth()
    return True
