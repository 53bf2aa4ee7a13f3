"""``fleetwarden`` operator commands: thin verbs over the REST API (``/api/v1``)."""

from fleetwarden.cli import ca as _ca  # noqa: F401 - registers `ca`
from fleetwarden.cli import rollouts as _rollouts  # noqa: F401 - registers `rollout` and `window`
from fleetwarden.cli.app import app, exit_code_for

__all__ = ["app", "exit_code_for"]
