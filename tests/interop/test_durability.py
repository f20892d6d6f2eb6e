"""Durability across broker restarts: retained messages and persistent sessions
with queued QoS 1 messages must survive a graceful restart (both brokers) and a
`kill -9` (Gantry only: Mosquitto only persists on shutdown/autosave)."""

import time

import pytest

from clients import V5, ClientFactory, uniq

N_RETAINED = 200
N_QUEUED = 50


class State:
    def __init__(self, version):
        self.version = version
        self.base = uniq("dur")
        self.sub_id = uniq("offline-sub")
        self.queue_topic = f"{self.base}/queue"

    def persistent(self, f, expect_sp):
        c = f(version=self.version, client_id=self.sub_id, clean=False, session_expiry=3600)
        assert c.session_present is expect_sp
        return c

    def fill(self, f):
        sub = self.persistent(f, False)
        sub.subscribe(self.queue_topic, 1)
        sub.disconnect()
        pub = f(version=self.version)
        for i in range(N_RETAINED):
            pub.publish(f"{self.base}/retained/{i}", b"r%d" % i, 1, retain=True, wait=False)
        for i in range(N_QUEUED):
            pub.publish(self.queue_topic, b"q%d" % i, 1, wait=False)
        # wait for every PUBACK: from here on the broker has accepted everything
        last = pub.publish(f"{self.base}/retained/last", b"last", 1, retain=True)
        assert last.is_published()
        pub.disconnect()

    def check(self, f):
        sub = self.persistent(f, True)
        got = [m.payload for m in sub.wait_for(N_QUEUED, timeout=10)]
        assert got == [b"q%d" % i for i in range(N_QUEUED)], "queued QoS 1 messages lost/reordered"
        sub.assert_no_message(0.3)
        # the subscription itself survived too
        f(version=self.version).publish(self.queue_topic, b"after-restart", 1)
        assert sub.expect().payload == b"after-restart"
        reader = f(version=self.version)
        reader.subscribe(f"{self.base}/retained/#", 1)
        msgs = reader.wait_for(N_RETAINED + 1, timeout=10)
        got = {m.topic: m.payload for m in msgs}
        assert all(m.retain for m in msgs)
        assert got[f"{self.base}/retained/last"] == b"last"
        missing = [i for i in range(N_RETAINED) if got.get(f"{self.base}/retained/{i}") != b"r%d" % i]
        assert not missing, f"{len(missing)} retained messages lost, e.g. {missing[:5]}"
        reader.assert_no_message(0.3)


def _factory(request, broker):
    f = ClientFactory(broker)
    request.addfinalizer(f.close_all)
    return f


def test_retained_and_queued_messages_survive_graceful_restart(broker, request, mqtt_version):
    f = _factory(request, broker)
    s = State(mqtt_version)
    s.fill(f)
    f.close_all()
    broker.restart(crash=False)
    s.check(f)


@pytest.mark.gantry_only(reason="kill -9 durability; Mosquitto only persists on shutdown/autosave")
def test_retained_and_queued_messages_survive_kill9(broker, request, mqtt_version):
    f = _factory(request, broker)
    s = State(mqtt_version)
    s.fill(f)
    broker.restart(crash=True)  # SIGKILL right after the last PUBACK
    s.check(f)


@pytest.mark.gantry_only(reason="kill -9 durability")
def test_state_survives_repeated_kill9(broker, request):
    f = _factory(request, broker)
    base, cid = uniq("rep"), uniq("sub")
    sub = f(version=V5, client_id=cid, clean=False, session_expiry=3600)
    sub.subscribe(f"{base}/q", 1)
    sub.disconnect()
    for round_ in range(3):
        pub = f(version=V5)
        pub.publish(f"{base}/r/{round_}", b"%d" % round_, 1, retain=True)
        pub.publish(f"{base}/q", b"%d" % round_, 1)
        broker.restart(crash=True)
    sub = f(version=V5, client_id=cid, clean=False, session_expiry=3600)
    assert sub.session_present
    assert [m.payload for m in sub.wait_for(3)] == [b"0", b"1", b"2"]
    reader = f(version=V5)
    reader.subscribe(f"{base}/r/#", 1)
    assert sorted(m.payload for m in reader.wait_for(3)) == [b"0", b"1", b"2"]


def _deleted_retained_stays_deleted(broker, request, crash):
    f = _factory(request, broker)
    t = uniq("del")
    pub = f(version=V5)
    pub.publish(t, b"value", 1, retain=True)
    pub.publish(t, b"", 1, retain=True)  # delete
    pub.publish(t + "/other", b"other", 1, retain=True)
    broker.restart(crash=crash)
    reader = f(version=V5)
    reader.subscribe(t, 1)
    reader.subscribe(t + "/other", 1)
    assert reader.expect().payload == b"other"
    reader.assert_no_message(0.5)


def test_deleted_retained_message_stays_deleted_after_restart(broker, request):
    _deleted_retained_stays_deleted(broker, request, crash=False)


@pytest.mark.gantry_only(reason="kill -9 durability")
def test_deleted_retained_message_stays_deleted_after_kill9(broker, request):
    _deleted_retained_stays_deleted(broker, request, crash=True)


def test_unacked_inflight_message_redelivered_after_restart(broker, request, mqtt_version):
    f = _factory(request, broker)
    t, cid = uniq("inflight"), uniq("sub")
    sub = f(version=mqtt_version, client_id=cid, clean=False, session_expiry=3600, manual_ack=True)
    sub.subscribe(t, 1)
    f(version=mqtt_version).publish(t, b"never-acked", 1)
    assert sub.expect().payload == b"never-acked"
    sub.kill()
    time.sleep(0.2)
    broker.restart(crash=False)
    sub2 = f(version=mqtt_version, client_id=cid, clean=False, session_expiry=3600)
    assert sub2.session_present
    m = sub2.expect()
    assert m.payload == b"never-acked" and m.qos == 1


def test_expired_session_not_resurrected_by_restart(broker, request):
    f = _factory(request, broker)
    cid = uniq("short")
    c = f(version=V5, client_id=cid, clean=False, session_expiry=1)
    c.subscribe(uniq("x"), 1)
    c.disconnect()
    time.sleep(2.0)
    broker.restart(crash=False)
    c2 = f(version=V5, client_id=cid, clean=False, session_expiry=1)
    assert not c2.session_present


def test_clean_session_state_not_persisted(broker, request, mqtt_version):
    f = _factory(request, broker)
    cid = uniq("clean")
    c = f(version=mqtt_version, client_id=cid, clean=True)
    c.subscribe(uniq("x"), 1)
    c.disconnect()
    broker.restart(crash=False)
    c2 = f(version=mqtt_version, client_id=cid, clean=False, session_expiry=60)
    assert not c2.session_present
