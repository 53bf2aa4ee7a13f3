"""The whole path with real processes: enroll a real agent, deploy .debs installed by real dpkg
into a scratch root, upgrade, and roll back a release whose health check fails."""

from __future__ import annotations

import pytest

from tests.conftest import require_tool
from tests.debs import build_deb, init_dpkg_root, installed_version
from tests.e2e.conftest import start_agent, wait_for
from tests.helpers import deploy, release, upload

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

SELFTEST = "sh -c '\"$FLEETWARDEN_ROOT\"/usr/lib/hello-app/selftest'"


def hello(tmp_path, version: str, healthy: bool = True):
    return build_deb(
        tmp_path,
        "hello-app",
        version,
        {
            "/usr/lib/hello-app/VERSION": f"{version}\n".encode(),
            "/usr/lib/hello-app/selftest": b"#!/bin/sh\nexit 0\n"
            if healthy
            else b"#!/bin/sh\necho broken >&2\nexit 1\n",
        },
        modes={"/usr/lib/hello-app/selftest": 0o755},
    )


def installed(root) -> str | None:
    return installed_version(root, "hello-app")


def test_enroll_deploy_upgrade_and_roll_back(server_process, tmp_path):
    require_tool("dpkg", "dpkg-deb", "dpkg-query")
    root = init_dpkg_root(tmp_path / "device-root")
    (root / "etc/os-release").write_text('ID=debian\nVERSION_ID="12"\n')
    with server_process.api() as api:
        token = api.post("/api/v1/enrollment-tokens", json={"labels": {"ring": "e2e"}}).json()[
            "token"
        ]
        agent = start_agent(server_process, tmp_path / "agent", root, token)
        try:
            device = wait_for(
                lambda: (api.get("/api/v1/devices").json()["items"] or [None])[0],
                what=f"enrollment\n{agent.output()}",
            )
            wait_for(
                lambda: api.get(f"/api/v1/devices/{device['id']}").json()["inventory"],
                what="inventory",
            )

            def roll(version: str, healthy: bool = True) -> dict:
                art = upload(
                    api,
                    hello(tmp_path, version, healthy).read_bytes(),
                    name="hello-app",
                    version=version,
                    type_="deb",
                )
                rel = release(
                    api,
                    "hello",
                    version,
                    [art["id"]],
                    health_checks=[{"command": ["sh", "-c", SELFTEST]}],
                )
                deploy(api, rel["id"], selector="ring=e2e")

                def finished():
                    a = api.get("/api/v1/assignments", params={"device": device["id"]}).json()[0]
                    return a if a["state"] in {"succeeded", "failed", "rolled_back"} else None

                return wait_for(
                    finished, timeout=90, what=f"assignment of {version}\n{agent.output()}"
                )

            assert roll("1.0")["state"] == "succeeded"
            assert installed(root) == "1.0"
            assert roll("2.0")["state"] == "succeeded"
            assert installed(root) == "2.0"
            failed = roll("3.0", healthy=False)
            assert failed["state"] == "rolled_back", failed
            assert "health check" in failed["detail"]
            assert installed(root) == "2.0"
            assert (root / "usr/lib/hello-app/VERSION").read_text() == "2.0\n"
            dev = api.get(f"/api/v1/devices/{device['id']}").json()
            assert dev["installed_release"] == "hello@2.0"
            packages = wait_for(
                lambda: {
                    p["name"]: p["version"]
                    for p in api.get(f"/api/v1/devices/{device['id']}").json()["inventory"][
                        "inventory"
                    ]["packages"]
                }.get("hello-app"),
                what="package inventory",
            )
            assert packages == "2.0"
        finally:
            agent.stop()
