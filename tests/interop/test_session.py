"""Clean start / clean session, persistent sessions, offline queues, 5.0 session expiry."""

import time

import mqtt_raw as raw
from clients import V5, uniq


def _persistent(clients, version, cid, expiry=300, **kw):
    return clients(version=version, client_id=cid, clean=False, session_expiry=expiry, **kw)


def test_persistent_session_keeps_subscriptions(clients, mqtt_version):
    topic, cid = uniq("sess"), uniq("p")
    c = _persistent(clients, mqtt_version, cid)
    c.subscribe(topic, 1)
    c.disconnect()
    c2 = _persistent(clients, mqtt_version, cid)
    assert c2.session_present
    clients(version=mqtt_version).publish(topic, b"still subscribed", 1)
    assert c2.expect().payload == b"still subscribed"


def test_clean_session_discards_subscriptions(clients, mqtt_version):
    topic, cid = uniq("sess"), uniq("p")
    c = _persistent(clients, mqtt_version, cid)
    c.subscribe(topic, 1)
    c.disconnect()
    c2 = clients(version=mqtt_version, client_id=cid, clean=True)
    assert not c2.session_present
    c2.subscribe(topic + "/sentinel", 1)
    pub = clients(version=mqtt_version)
    pub.publish(topic, b"old subscription", 1)
    pub.publish(topic + "/sentinel", b"s", 1)
    assert c2.expect().topic == topic + "/sentinel"
    c2.assert_no_message(0.3)


def test_offline_qos1_and_qos2_messages_delivered_on_reconnect(clients, mqtt_version):
    topic, cid = uniq("offline"), uniq("p")
    c = _persistent(clients, mqtt_version, cid)
    c.subscribe(topic, 2)
    c.disconnect()
    pub = clients(version=mqtt_version)
    for i in range(10):
        pub.publish(topic, b"q1-%d" % i, 1)
    for i in range(5):
        pub.publish(topic, b"q2-%d" % i, 2)
    c2 = _persistent(clients, mqtt_version, cid)
    assert c2.session_present
    got = [m.payload for m in c2.wait_for(15)]
    assert [g for g in got if g.startswith(b"q1")] == [b"q1-%d" % i for i in range(10)]
    assert [g for g in got if g.startswith(b"q2")] == [b"q2-%d" % i for i in range(5)]
    c2.assert_no_message(0.3)


def test_offline_messages_delivered_after_abrupt_disconnect(clients, mqtt_version):
    topic, cid = uniq("offline"), uniq("p")
    c = _persistent(clients, mqtt_version, cid)
    c.subscribe(topic, 1)
    c.kill()
    time.sleep(0.3)
    clients(version=mqtt_version).publish(topic, b"while away", 1)
    c2 = _persistent(clients, mqtt_version, cid)
    assert c2.expect().payload == b"while away"


def test_offline_queue_respects_subscription_qos(clients, mqtt_version):
    topic, cid = uniq("offline"), uniq("p")
    c = _persistent(clients, mqtt_version, cid)
    c.subscribe(topic, 1)
    c.disconnect()
    clients(version=mqtt_version).publish(topic, b"x", 2)
    c2 = _persistent(clients, mqtt_version, cid)
    m = c2.expect()
    assert m.qos == 1


# --- MQTT 5.0 session expiry ------------------------------------------------------

def test_v5_session_resumed_within_expiry(clients):
    topic, cid = uniq("exp"), uniq("p")
    c = _persistent(clients, V5, cid, expiry=5)
    c.subscribe(topic, 1)
    c.disconnect()
    clients(version=V5).publish(topic, b"queued", 1)
    time.sleep(0.5)
    c2 = _persistent(clients, V5, cid, expiry=5)
    assert c2.session_present
    assert c2.expect().payload == b"queued"


def test_v5_session_gone_after_expiry(clients):
    topic, cid = uniq("exp"), uniq("p")
    c = _persistent(clients, V5, cid, expiry=2)
    c.subscribe(topic, 1)
    c.disconnect()
    clients(version=V5).publish(topic, b"queued", 1)
    time.sleep(3.0)
    c2 = _persistent(clients, V5, cid, expiry=2)
    assert not c2.session_present, "session still present after its expiry interval"
    c2.assert_no_message(0.5)


def test_v5_session_gone_after_expiry_following_abrupt_close(clients):
    cid = uniq("p")
    c = _persistent(clients, V5, cid, expiry=1)
    c.subscribe(uniq("exp"), 1)
    c.kill()
    time.sleep(2.2)
    c2 = _persistent(clients, V5, cid, expiry=1)
    assert not c2.session_present


def test_v5_session_expiry_zero_ends_session_at_disconnect(clients):
    cid = uniq("p")
    c = clients(version=V5, client_id=cid, clean=False, session_expiry=0)
    c.subscribe(uniq("exp"), 1)
    c.disconnect()
    c2 = clients(version=V5, client_id=cid, clean=False, session_expiry=0)
    assert not c2.session_present


def test_v5_disconnect_can_reduce_session_expiry_to_zero(clients):
    cid = uniq("p")
    c = _persistent(clients, V5, cid, expiry=300)
    c.subscribe(uniq("exp"), 1)
    c.disconnect(SessionExpiryInterval=0)
    c2 = _persistent(clients, V5, cid, expiry=300)
    assert not c2.session_present


def test_v5_clean_start_discards_existing_session(clients):
    topic, cid = uniq("exp"), uniq("p")
    c = _persistent(clients, V5, cid, expiry=300)
    c.subscribe(topic, 1)
    c.disconnect()
    clients(version=V5).publish(topic, b"queued", 1)
    c2 = clients(version=V5, client_id=cid, clean=True, session_expiry=300)
    assert not c2.session_present
    c2.assert_no_message(0.5)
    c2.disconnect()
    c3 = _persistent(clients, V5, cid)
    assert c3.session_present  # the new (empty) session persisted
    c3.assert_no_message(0.3)


def test_v5_connack_session_expiry_if_server_overrides(clients):
    """If the server sends Session Expiry Interval in CONNACK it overrides the
    client's value; otherwise the client's value stands. Either way the
    resulting session must persist at least briefly when non-zero."""
    cid = uniq("p")
    c = _persistent(clients, V5, cid, expiry=60)
    granted = c.connack_props.get("SessionExpiryInterval", 60)
    c.disconnect()
    if granted > 0:
        c2 = _persistent(clients, V5, cid, expiry=60)
        assert c2.session_present


def test_rapid_persistent_reconnects_always_get_their_suback(broker, mqtt_version):
    """Regression: a SUBACK that waits for the session's subscription to be
    durable must go out even when the store catches up at the very moment the
    connection decides what to wait for. 300 short persistent sessions over 7
    client ids made the race visible before it was fixed. Raw sockets, each
    closed at once: 300 paho clients would exhaust this process's select() fds."""
    props = {"SessionExpiryInterval": 3600} if mqtt_version == V5 else None
    for i in range(300):
        r = raw.RawClient(broker.host, broker.port, version=mqtt_version)
        try:
            ack = r.connect(client_id=f"rapid-{i % 7}", clean=False, props=props)
            assert ack.rc == 0
            suback = r.subscribe(f"rapid/{i}", 1, timeout=5)
            assert suback.codes == [1]
            r.disconnect()
        finally:
            r.close()
