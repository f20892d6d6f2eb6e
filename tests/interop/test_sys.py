"""$SYS/broker/... statistics. Gantry publishes them retained every few seconds
(Mosquitto is configured with sys_interval 1 and uses the same topic names)."""

import re
import time

import pytest

from clients import V5, ClientFactory, uniq

UPTIME = "$SYS/broker/uptime"
CONNECTED = "$SYS/broker/clients/connected"
RECEIVED = "$SYS/broker/messages/received"
RETAINED = "$SYS/broker/retained messages/count"
VERSION = "$SYS/broker/version"
REQUIRED = [UPTIME, CONNECTED, RECEIVED, RETAINED, VERSION]
SYS_WAIT = 12.0  # a couple of publication intervals


def _num(payload: bytes) -> int:
    m = re.match(rb"\s*(\d+)", payload)
    assert m, f"not a number: {payload!r}"
    return int(m.group(1))


class SysWatcher:
    def __init__(self, clients):
        self.c = clients(version=V5)
        self.c.subscribe("$SYS/broker/#", 0)
        self.latest: dict[str, bytes] = {}
        self.first_retain: dict[str, bool] = {}

    def pump(self, duration):
        for m in self.c.collect(duration):
            self.latest[m.topic] = m.payload
            self.first_retain.setdefault(m.topic, m.retain)

    def wait_topics(self, topics, timeout=SYS_WAIT):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not all(t in self.latest for t in topics):
            self.pump(0.2)
        missing = [t for t in topics if t not in self.latest]
        assert not missing, f"$SYS topics never published: {missing}; saw {sorted(self.latest)[:20]}"

    def wait_value(self, topic, pred, timeout=SYS_WAIT):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.pump(0.2)
            if topic in self.latest and pred(_num(self.latest[topic])):
                return _num(self.latest[topic])
        raise AssertionError(f"{topic} never satisfied the condition; last={self.latest.get(topic)!r}")


@pytest.fixture
def clients(broker_factory, broker_kind):
    """$SYS tests use a broker that refreshes statistics every second
    (Gantry `[sys] interval_secs`, Mosquitto `sys_interval`, always set)."""
    b = broker_factory(gantry_extra="[sys]\ninterval_secs = 1")
    f = ClientFactory(b)
    yield f
    f.close_all()


def test_sys_broker_statistics_exist(clients):
    w = SysWatcher(clients)
    w.wait_topics(REQUIRED)


def test_sys_values_are_sensible(clients):
    w = SysWatcher(clients)
    w.wait_topics(REQUIRED)
    assert _num(w.latest[UPTIME]) >= 0
    w.wait_value(CONNECTED, lambda v: v >= 1)  # at least the watcher itself, once refreshed
    assert _num(w.latest[RECEIVED]) >= 0
    assert _num(w.latest[RETAINED]) >= 0
    assert w.latest[VERSION].strip(), "empty version"


def test_sys_topics_are_retained(clients):
    w = SysWatcher(clients)
    w.wait_topics(REQUIRED)
    late = clients(version=V5)
    late.subscribe("$SYS/broker/#", 0)
    seen: dict[str, bool] = {}
    for m in late.collect(1.0):
        seen.setdefault(m.topic, m.retain)  # the first copy is the stored retained one
    for t in REQUIRED:
        assert seen.get(t) is True, f"{t} not delivered as a retained message to a new subscriber"


def test_sys_uptime_increases(clients):
    w = SysWatcher(clients)
    w.wait_topics([UPTIME])
    first = _num(w.latest[UPTIME])
    w.wait_value(UPTIME, lambda v: v > first)


def test_sys_clients_connected_tracks_connections(clients):
    w = SysWatcher(clients)
    w.wait_topics([CONNECTED])
    extra = [clients(version=V5) for _ in range(4)]
    w.wait_value(CONNECTED, lambda v: v >= 5)
    for c in extra:
        c.disconnect()
    w.wait_value(CONNECTED, lambda v: v <= 2)


def test_sys_messages_received_increases(clients):
    w = SysWatcher(clients)
    w.wait_topics([RECEIVED])
    before = _num(w.latest[RECEIVED])
    pub = clients(version=V5)
    for i in range(20):
        pub.publish(uniq("stat"), b"x", 1)
    w.wait_value(RECEIVED, lambda v: v >= before + 20)


def test_sys_retained_count_tracks_retained_messages(clients):
    w = SysWatcher(clients)
    w.wait_topics([RETAINED])
    before = _num(w.latest[RETAINED])
    pub = clients(version=V5)
    base = uniq("retcount")
    for i in range(10):
        pub.publish(f"{base}/{i}", b"x", 1, retain=True)
    w.wait_value(RETAINED, lambda v: v >= before + 10)
