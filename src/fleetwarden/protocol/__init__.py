"""Wire schemas shared by server, agent and CLI.

``device`` is the native device API v1 (``/device/v1``); ``api`` is the operator REST API
(``/api/v1``). Models ignore unknown fields so that a newer peer can add fields without
breaking an older one, and bound every string and list so that a hostile peer cannot make
the other side allocate without limit.
"""
