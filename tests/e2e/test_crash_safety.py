"""kill -9 the agent at each step boundary of an install; after a restart it completes or
rolls back, the device matches what the server says, and no state is reported twice."""

from __future__ import annotations

import pytest

from tests.conftest import require_tool
from tests.debs import build_deb, init_dpkg_root, installed_version
from tests.e2e.conftest import start_agent, wait_for
from tests.helpers import deploy, release, upload

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

# Each step is journalled before its work begins; "installing" means installers may have run
# half-way, so the agent rolls back (journal rule 2). Every other boundary completes.
OUTCOMES = {
    "downloading": "succeeded",
    "downloaded": "succeeded",
    "verified": "succeeded",
    "prepared": "succeeded",
    "installing": "rolled_back",
    "installed": "succeeded",
    "verifying": "succeeded",
    "committing": "succeeded",
    "committed": "succeeded",
}


@pytest.fixture
def database_url(tmp_path):
    """Crash safety is the agent's property; one database backend is enough here."""
    return f"sqlite:///{tmp_path / 'fleetwarden.db'}"


@pytest.mark.parametrize("step", list(OUTCOMES))
def test_kill_at_step_boundary(server_process, tmp_path, step):
    require_tool("dpkg", "dpkg-deb")
    root = init_dpkg_root(tmp_path / "root")
    data = tmp_path / "agent"
    v1 = build_deb(tmp_path, "crashy", "1.0", {"/opt/crashy/VERSION": b"1.0\n"})
    v2 = build_deb(tmp_path, "crashy", "2.0", {"/opt/crashy/VERSION": b"2.0\n"})
    with server_process.api() as api:
        token = api.post("/api/v1/enrollment-tokens", json={"labels": {"crash": "yes"}}).json()[
            "token"
        ]

        def final_state():
            rows = api.get("/api/v1/assignments").json()
            return (
                rows[0]
                if rows and rows[0]["state"] in {"succeeded", "rolled_back", "failed"}
                else None
            )

        agent = start_agent(server_process, data, root, token)
        try:
            wait_for(lambda: api.get("/api/v1/devices").json()["total"] == 1, what="enrollment")
            rel1 = release(
                api,
                "crashy",
                "1.0",
                [upload(api, v1.read_bytes(), name="crashy", version="1.0", type_="deb")["id"]],
            )
            deploy(api, rel1["id"], selector="crash=yes")
            wait_for(final_state, what=f"v1\n{agent.output()}")
        finally:
            agent.stop()
        assert installed_pkg(root) == "1.0"

        agent = start_agent(server_process, data, root, hold_at=step)
        rel2 = release(
            api,
            "crashy",
            "2.0",
            [upload(api, v2.read_bytes(), name="crashy", version="2.0", type_="deb")["id"]],
        )
        deploy(api, rel2["id"], selector="crash=yes")
        try:
            wait_for(
                lambda: any(f"holding at step {step}" in line for line in agent.lines),
                what=f"hold at {step}\n{agent.output()}",
            )
        finally:
            agent.kill9()

        agent = start_agent(server_process, data, root)
        try:

            def v2_final():
                a = final_state()
                return a if a and a["release"] == "crashy@2.0" else None

            result = wait_for(v2_final, what=f"outcome after kill at {step}\n{agent.output()}")
        finally:
            agent.stop()
        assert result["state"] == OUTCOMES[step], result
        assert installed_pkg(root) == ("2.0" if OUTCOMES[step] == "succeeded" else "1.0")
        assert (root / "opt/crashy/VERSION").read_text() == installed_pkg(root) + "\n"
        device = api.get("/api/v1/devices").json()["items"][0]
        assert device["installed_release"] == (
            "crashy@2.0" if OUTCOMES[step] == "succeeded" else "crashy@1.0"
        )
        states = [
            e["after"]["state"]
            for e in reversed(
                api.get(
                    "/api/v1/audit",
                    params={"target_type": "assignment", "target_id": str(result["id"])},
                ).json()
            )
        ]
        assert len(states) == len(set(states)), f"a state was reported twice: {states}"
        assert states[-1] == OUTCOMES[step]


def installed_pkg(root):
    return installed_version(root, "crashy")
