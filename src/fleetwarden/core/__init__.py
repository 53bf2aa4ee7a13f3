"""Pure decisions over plain data: no IO, no clock reads, no framework imports.

Every function here takes what it needs (including ``now``) as parameters and returns a value
or raises a ``fleetwarden.errors`` exception. The shell (server, agent, cli, sim) gathers
state, asks core, and applies the answer.
"""
