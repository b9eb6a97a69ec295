"""kill -9 of the hub during a publishing load: a device publishes QoS 1
messages to a bridged topic while the hub is killed (SIGKILL) and restarted;
every message reaches the cloud broker (a real mosquitto), duplicates only
within what QoS 1 allows. 10 restarts during 400 messages in `make test`
(about 15 s); 100 during 2000 in `make long` (about 50 s; a restart takes
~0.1 s under the unix port with the firmware built), as in `make bench`
(bridge_kill9_restarts).
"""

import pytest
from blinds_host.bench.broker import bridge_config, kill9_run
from conftest import by_profile
from mqttpeers import password_hash

RESTARTS = by_profile(100, 10)
N_MSGS = max(400, 20 * RESTARTS)  # at 50/s: the load outlasts the restarts
USERS = [{"username": "plug", "password_hash": password_hash("plug-pw"),
          "publish": ["stat/plug/#"], "subscribe": ["cmnd/plug/#"]}]
BRIDGE = {"broker": {"ip": "10.0.0.81", "port": 1883},
          "topics": [{"filter": "stat/plug/#", "policy": "immediate"}],
          "commit_ms": 20}
DEVICE_WINDOW = 20  # paho's max_inflight_messages
BRIDGE_WINDOW = 8  # mqtt.bridge.max_inflight


@pytest.fixture(scope="module")
def cloud_home(home):
    from blinds_host.peers.servers import start_cloud

    start_cloud(home, ["mqtt.vendor.test"])
    yield home
    home.stop_hub()


@pytest.mark.long
def test_kill9_restarts_lose_nothing(cloud_home):
    cfg = bridge_config(cloud_home, BRIDGE, USERS)
    r = kill9_run(cloud_home, cfg, RESTARTS, n_msgs=N_MSGS, rate=50.0)
    assert r["acked"] == r["published"], r
    assert r["lost"] == 0 and r["unexpected"] == 0, r
    # a message is resent only if it was in flight (device -> hub, or hub ->
    # cloud) when the hub died
    assert r["duplicates"] <= RESTARTS * (DEVICE_WINDOW + BRIDGE_WINDOW), r
