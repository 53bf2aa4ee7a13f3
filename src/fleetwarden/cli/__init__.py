"""``fleetwarden`` operator commands: thin verbs over the REST API (``/api/v1``)."""

from fleetwarden.cli.app import app, exit_code_for

__all__ = ["app", "exit_code_for"]
