"""Will messages (Last Will and Testament), including 5.0 will delay."""

import time

import mqtt_raw as raw
from clients import V5, uniq

# Mosquitto 2.0 checks keep-alives only every ~5 s.
KEEPALIVE_DEADLINE = {"gantry": 3.5, "mosquitto": 7.5}


def _watcher(clients, version, topic, qos=1):
    w = clients(version=version)
    w.subscribe(topic, qos)
    return w


def test_will_sent_on_abrupt_close(clients, mqtt_version):
    topic = uniq("will")
    w = _watcher(clients, mqtt_version, topic, 2)
    c = clients(version=mqtt_version, connect=False)
    c.will_set(topic, b"gone", qos=1)
    c.connect()
    c.kill()  # TCP close without DISCONNECT
    m = w.expect(timeout=3)
    assert (m.topic, m.payload, m.qos, m.retain) == (topic, b"gone", 1, False)
    w.assert_no_message(0.3)


def test_will_sent_on_tcp_reset(clients, mqtt_version):
    topic = uniq("will")
    w = _watcher(clients, mqtt_version, topic)
    r = clients.raw(version=mqtt_version)
    assert r.connect(client_id=uniq(), will={"topic": topic, "payload": b"rst", "qos": 1}).rc == 0
    r.abort()
    assert w.expect(timeout=3).payload == b"rst"


def test_will_not_sent_on_normal_disconnect(clients, mqtt_version):
    topic = uniq("will")
    w = _watcher(clients, mqtt_version, topic)
    w.subscribe(topic + "/sentinel", 1)
    c = clients(version=mqtt_version, connect=False)
    c.will_set(topic, b"gone", qos=1)
    c.connect()
    c.disconnect()
    time.sleep(0.3)
    clients(version=mqtt_version).publish(topic + "/sentinel", b"s", 1)
    assert w.expect().topic == topic + "/sentinel"
    w.assert_no_message(0.3)


def test_will_sent_on_keepalive_timeout(clients, mqtt_version, broker_kind):
    topic = uniq("will")
    w = _watcher(clients, mqtt_version, topic)
    r = clients.raw(version=mqtt_version)
    assert r.connect(client_id=uniq(), keepalive=1,
                     will={"topic": topic, "payload": b"timeout", "qos": 1}).rc == 0
    m = w.expect(timeout=KEEPALIVE_DEADLINE[broker_kind] + 1)
    assert m.payload == b"timeout"


def test_will_sent_when_connection_closed_for_protocol_error(clients, mqtt_version):
    topic = uniq("will")
    w = _watcher(clients, mqtt_version, topic)
    r = clients.raw(version=mqtt_version)
    assert r.connect(client_id=uniq(), will={"topic": topic, "payload": b"err", "qos": 1}).rc == 0
    r.send(bytes([0x00, 0x00]))  # packet type 0 is reserved -> malformed
    closed, _ = r.wait_closed(3)
    assert closed
    assert w.expect(timeout=3).payload == b"err"


def test_retained_will_is_stored_as_retained_message(clients, mqtt_version):
    topic = uniq("will")
    c = clients(version=mqtt_version, connect=False)
    c.will_set(topic, b"offline", qos=1, retain=True)
    c.connect()
    c.kill()
    time.sleep(0.5)
    late = clients(version=mqtt_version)
    late.subscribe(topic, 1)
    m = late.expect(timeout=3)
    assert m.payload == b"offline" and m.retain


def test_will_qos2_delivered_at_qos2(clients, mqtt_version):
    topic = uniq("will")
    w = _watcher(clients, mqtt_version, topic, 2)
    c = clients(version=mqtt_version, connect=False)
    c.will_set(topic, b"q2", qos=2)
    c.connect()
    c.kill()
    m = w.expect(timeout=3)
    assert m.qos == 2


def test_will_with_wildcard_topic_is_rejected(clients, mqtt_version):
    r = clients.raw(version=mqtt_version)
    r.send(raw.build_connect(mqtt_version, uniq(), will={"topic": "a/#", "payload": b"x"}))
    closed, seen = r.wait_closed(3)
    acks = [p for p in seen if p.type == raw.CONNACK]
    assert closed, "CONNECT with wildcard will topic accepted"
    assert not acks or acks[0].rc != 0, acks


# --- MQTT 5.0 -----------------------------------------------------------------

def test_v5_will_delay_not_sent_if_client_reconnects_within_delay(clients):
    topic, cid = uniq("will"), uniq("wd")
    w = _watcher(clients, V5, topic)
    c = clients(version=V5, client_id=cid, clean=True, session_expiry=30, connect=False)
    c.will_set(topic, b"gone", qos=1, WillDelayInterval=2)
    c.connect()
    c.kill()
    time.sleep(0.5)
    c2 = clients(version=V5, client_id=cid, clean=False, session_expiry=30)
    assert c2.session_present
    w.assert_no_message(2.5)


def test_v5_will_delay_sent_after_delay(clients):
    topic = uniq("will")
    w = _watcher(clients, V5, topic)
    c = clients(version=V5, session_expiry=30, connect=False)
    c.will_set(topic, b"late", qos=1, WillDelayInterval=1)
    c.connect()
    c.kill()
    t0 = time.monotonic()
    m = w.expect(timeout=4)
    elapsed = time.monotonic() - t0
    assert m.payload == b"late"
    assert elapsed >= 0.8, f"will published after {elapsed:.2f}s despite 1 s will delay"


def test_v5_will_sent_at_session_end_if_shorter_than_delay(clients):
    topic = uniq("will")
    w = _watcher(clients, V5, topic)
    c = clients(version=V5, session_expiry=1, connect=False)
    c.will_set(topic, b"session-ended", qos=1, WillDelayInterval=30)
    c.connect()
    c.kill()
    m = w.expect(timeout=4)
    assert m.payload == b"session-ended"


def test_v5_disconnect_with_will_message_reason_sends_will(clients):
    topic = uniq("will")
    w = _watcher(clients, V5, topic)
    c = clients(version=V5, connect=False)
    c.will_set(topic, b"asked-for", qos=1)
    c.connect()
    c.disconnect(rc=0x04)  # Disconnect with Will Message
    assert w.expect(timeout=3).payload == b"asked-for"


def test_v5_will_properties_are_forwarded(clients):
    topic = uniq("will")
    w = _watcher(clients, V5, topic)
    c = clients(version=V5, connect=False)
    c.will_set(topic, b'{"state":"offline"}', qos=1, ContentType="application/json",
               PayloadFormatIndicator=1, ResponseTopic="reply/here", CorrelationData=b"\x01\x02",
               UserProperty=[("site", "plant-1"), ("line", "3")])
    c.connect()
    c.kill()
    m = w.expect(timeout=3)
    assert m.props.get("ContentType") == "application/json"
    assert m.props.get("PayloadFormatIndicator") == 1
    assert m.props.get("ResponseTopic") == "reply/here"
    assert m.props.get("CorrelationData") == b"\x01\x02"
    assert m.props.get("UserProperty") == [("site", "plant-1"), ("line", "3")]
