"""A fleet across a network that fails: agents in their own network namespaces, each joined to
the broker by a veth link the test cuts and restores (root only; traffic stays on the machine)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import bundled
from mqtt_env import (
    AgentProcess,
    CollectorProcess,
    Mosquitto,
    make_netns_links,
    remove_netns_links,
    stored_rows,
    wait_until,
)

from device_agent.connection import Broker, make_client
from device_agent.protocol import encode, topic
from edgeq.errors import DeviceUnreachable
from edgeq.fleet.deploy import DeployConfig, deploy

KEEPALIVE = 2
pytestmark = pytest.mark.skipif(os.geteuid() != 0 and not os.environ.get("EDGEQ_REQUIRE_NETNS"),
                                reason="network namespaces need root (CI runs this as root)")


class StatusWatch:
    """Records when each device's retained status changes state (monotonic time)."""

    def __init__(self, url: str) -> None:
        self.changes: list[tuple[float, str, str]] = []
        self.client = make_client(Broker.from_url(url), f"watch-{os.getpid()}")
        self.client.on_message = lambda c, u, m: self.changes.append(
            (time.monotonic(), m.topic.split("/")[2], json.loads(m.payload)["state"]))
        self.client.connect(Broker.from_url(url).host, Broker.from_url(url).port)
        self.client.loop_start()
        self.client.subscribe("edgeq/v1/+/status", 1)

    def state(self, device: str) -> str | None:
        states = [s for _, d, s in self.changes if d == device]
        return states[-1] if states else None

    def when(self, device: str, state: str, after: float) -> float | None:
        return next((t for t, d, s in self.changes if d == device and s == state and t >= after),
                    None)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture()
def fleet(tmp_path: Path, signing_keys):
    """Three agents (ns1..ns3), each in its own namespace, on one broker; plus a collector."""
    try:
        links = make_netns_links(3)
    except subprocess.CalledProcessError as e:
        pytest.fail(f"cannot make network namespaces: {e.stderr.strip()}")
    listeners = "\n".join(f"listener PORT {link.host_ip}" for link in links)
    broker = Mosquitto(tmp_path / "broker")
    broker.extra_conf = listeners.replace("PORT", str(broker.port))
    broker.start()
    agents = [AgentProcess(f"mqtt://{link.host_ip}:{broker.port}", f"ns{k}", tmp_path / f"ns{k}",
                           signing_keys[1], ("--keepalive", str(KEEPALIVE)),
                           python=(*link.prefix, sys.executable)).start()
              for k, link in enumerate(links, 1)]
    collector = CollectorProcess(broker.url, tmp_path / "r.sqlite").start()
    watch = StatusWatch(broker.url)
    try:
        wait_until(lambda: all(watch.state(f"ns{k}") == "online" for k in (1, 2, 3)), 30,
                   "three agents online through their links")
        wait_until(lambda: "subscribed" in collector.log(), 20, "collector subscribed")
        yield broker, links, agents, watch, tmp_path / "r.sqlite"
    finally:
        watch.close()
        for process in (*agents, collector):
            process.stop()
        broker.stop()
        remove_netns_links(links)


def test_cut_link_lwt_then_reconnect_delivers_spooled_results_once(fleet, cnn_int8, signing_keys,
                                                                   record_property) -> None:
    broker, links, agents, watch, db = fleet
    host = Broker.from_url(broker.url)
    for k in (1, 2, 3):
        assert deploy(DeployConfig(cnn_int8, f"ns{k}", host, signing_keys[0],
                                   eval=bundled("digits_cnn")[2], eval_samples=40,
                                   show_progress=False))["state"] == "activated"
    n = 4
    pub = make_client(host, "cmds")
    pub.connect(host.host, host.port)
    pub.loop_start()
    for k in range(n):  # ns2 takes them all, then keeps producing results with its link cut
        pub.publish(topic("ns2", "cmd"), encode({"id": f"b{k}", "type": "benchmark", "runs": 5,
                                                 "min_seconds": 1.0, "power": False}),
                    qos=1).wait_for_publish(5)
    pub.disconnect()
    pub.loop_stop()
    wait_until(lambda: len(stored_rows(db)) >= 1, 30, "the first result stored")
    cut_at = time.monotonic()
    links[1].cut()
    offline_at = wait_until(lambda: watch.when("ns2", "offline", cut_at), 6 * KEEPALIVE + 10,
                            "ns2's last will")
    record_property("lwt_after_cut_s", round(offline_at - cut_at, 2))
    assert watch.state("ns1") == watch.state("ns3") == "online"  # only ns2's link is down
    with pytest.raises(DeviceUnreachable, match="'ns2' is offline \\(connection lost"):
        deploy(DeployConfig(cnn_int8, "ns2", host, signing_keys[0], show_progress=False))
    wait_until(lambda: list((agents[1].data_dir / "spool").glob("*.json")), 30,
               "results spooled on ns2 while its link is down")
    restored_at = time.monotonic()
    links[1].restore()
    online_at = wait_until(lambda: watch.when("ns2", "online", restored_at), 60, "ns2 back online")
    record_property("online_after_restore_s", round(online_at - restored_at, 2))
    rows = wait_until(lambda: (r := stored_rows(db)) and len(r) >= n and r, 60, f"{n} results")
    assert len(rows) == n and len({r[0] for r in rows}) == n and {d for _, d in rows} == {"ns2"}
    time.sleep(1.5)  # anything resent late would show up as an extra row here
    assert len(stored_rows(db)) == n


def test_deploy_to_a_device_whose_link_just_died_times_out_and_leaves_nothing(
        fleet, cnn_int8, signing_keys) -> None:
    broker, links, agents, watch, _ = fleet
    host = Broker.from_url(broker.url)
    good = deploy(DeployConfig(cnn_int8, "ns3", host, signing_keys[0], show_progress=False))
    links[2].cut()  # the broker still believes ns3 is online for a few seconds
    assert watch.state("ns3") == "online"
    started = time.monotonic()
    with pytest.raises(DeviceUnreachable, match="timed out after 3 s waiting for device 'ns3' "
                                                "to accept the deploy"):
        deploy(DeployConfig(cnn_int8, "ns3", host, signing_keys[0], name="other",
                            show_progress=False, timeout_s=3))
    assert time.monotonic() - started < 10
    wait_until(lambda: watch.when("ns3", "offline", started), 30, "ns3's last will")
    restored = time.monotonic()
    links[2].restore()
    wait_until(lambda: watch.when("ns3", "online", restored), 60, "ns3 back online")
    time.sleep(3)  # time for a late delivery of the expired command, if the broker kept it
    assert "receiving other" not in agents[2].log()  # the expired deploy never started
    assert not any((agents[2].data_dir / "incoming").iterdir())
    assert (agents[2].data_dir / "active").resolve().name == good["bundle"]["sha256"]
