from tests.helpers import enroll


def test_enroll_and_poll(api):
    dev = enroll(api)
    r = api.get("/device/v1/poll", headers={"Authorization": f"Bearer {dev['token']}"})
    assert r.status_code == 200
    assert r.json()["device_id"] == dev["device_id"]
