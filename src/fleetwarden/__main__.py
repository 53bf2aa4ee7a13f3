"""``python -m fleetwarden`` is the ``fleetwarden`` command."""

from fleetwarden.main import main

main()
