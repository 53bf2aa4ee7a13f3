"""The control plane: the imperative shell around ``fleetwarden.core``.

Public surface: ``create_app`` (the ASGI app factory), ``Settings``, ``serve`` (run it) and
``bootstrap_admin_token`` (used by ``fleetwarden demo``).
"""

from fleetwarden.server.app import create_app
from fleetwarden.server.run import serve
from fleetwarden.server.settings import Settings

__all__ = ["Settings", "create_app", "serve"]
