"""Publish / subscribe at QoS 0, 1, 2, packet identifiers, redelivery with DUP."""

import pytest

import mqtt_raw as raw
from clients import uniq


@pytest.mark.parametrize("sub_qos", [0, 1, 2])
@pytest.mark.parametrize("pub_qos", [0, 1, 2])
def test_delivered_qos_is_min_of_publish_and_subscription(clients, mqtt_version, pub_qos, sub_qos):
    topic = uniq("qos")
    sub = clients(version=mqtt_version)
    assert sub.subscribe(topic, sub_qos) == [sub_qos]  # granted QoS
    pub = clients(version=mqtt_version)
    pub.publish(topic, b"payload", pub_qos)
    m = sub.expect()
    assert (m.topic, m.payload, m.qos, m.retain, m.dup) == (topic, b"payload", min(pub_qos, sub_qos),
                                                            False, False)
    sub.assert_no_message(0.3)  # exactly once


def test_qos2_messages_arrive_exactly_once_and_in_order(clients, mqtt_version):
    topic = uniq("q2")
    sub = clients(version=mqtt_version)
    sub.subscribe(topic, 2)
    pub = clients(version=mqtt_version)
    for i in range(50):
        pub.publish(topic, str(i).encode(), 2, wait=False)
    msgs = sub.wait_for(50, timeout=10)
    assert [m.payload for m in msgs] == [str(i).encode() for i in range(50)]
    assert all(m.qos == 2 for m in msgs)
    sub.assert_no_message(0.3)


def test_qos1_messages_arrive_in_order(clients, mqtt_version):
    topic = uniq("q1")
    sub = clients(version=mqtt_version)
    sub.subscribe(topic, 1)
    pub = clients(version=mqtt_version)
    for i in range(200):
        pub.publish(topic, str(i).encode(), 1, wait=False)
    msgs = sub.wait_for(200, timeout=10)
    assert [m.payload for m in msgs] == [str(i).encode() for i in range(200)]


def test_fan_out_to_all_subscribers(clients, mqtt_version):
    topic = uniq("fan")
    subs = [clients(version=mqtt_version) for _ in range(3)]
    for s in subs:
        s.subscribe(topic, 1)
    clients(version=mqtt_version).publish(topic, b"x", 1)
    for s in subs:
        assert s.expect().payload == b"x"


def test_empty_binary_and_large_payloads(clients, mqtt_version):
    topic = uniq("payload")
    sub = clients(version=mqtt_version)
    sub.subscribe(topic, 1)
    pub = clients(version=mqtt_version)
    payloads = [b"", bytes(range(256)), b"\x00" * 10, bytes(range(256)) * 1000]
    for p in payloads:
        pub.publish(topic, p, 1)
    assert [m.payload for m in sub.wait_for(len(payloads))] == payloads


def test_unicode_topic_names(clients, mqtt_version):
    topic = "werk/Halle 3/Ölpumpe/温度/" + uniq()
    sub = clients(version=mqtt_version)
    sub.subscribe(topic, 1)
    clients(version=mqtt_version).publish(topic, b"21.5", 1)
    assert sub.expect().topic == topic


def test_unsubscribe_stops_delivery(clients, mqtt_version):
    topic = uniq("unsub")
    sub = clients(version=mqtt_version)
    sub.subscribe(topic, 1)
    sub.subscribe(topic + "/sentinel", 1)
    pub = clients(version=mqtt_version)
    pub.publish(topic, b"before", 1)
    assert sub.expect().payload == b"before"
    sub.unsubscribe(topic)
    pub.publish(topic, b"after", 1)
    pub.publish(topic + "/sentinel", b"s", 1)
    m = sub.expect()
    assert m.payload == b"s", f"got {m} after unsubscribe"
    sub.assert_no_message(0.3)


def test_resubscribe_replaces_qos_without_duplicates(clients, mqtt_version):
    topic = uniq("resub")
    sub = clients(version=mqtt_version)
    sub.subscribe(topic, 0)
    assert sub.subscribe(topic, 2) == [2]
    clients(version=mqtt_version).publish(topic, b"x", 2)
    m = sub.expect()
    assert m.qos == 2
    sub.assert_no_message(0.3)


def test_subscribe_multiple_filters_in_one_packet(clients, mqtt_version):
    base = uniq("multi")
    r = clients.raw(version=mqtt_version)
    assert r.connect(client_id=uniq()).rc == 0
    ack = r.subscribe([(base + "/a", 0), (base + "/b", 1), (base + "/c", 2)])
    assert ack.codes == [0, 1, 2]


# --- packet identifiers --------------------------------------------------------

@pytest.mark.parametrize("pid", [1, 2, 300, 65535])
def test_puback_echoes_packet_identifier(clients, mqtt_version, pid):
    r = clients.raw(version=mqtt_version)
    assert r.connect(client_id=uniq()).rc == 0
    r.send_publish(uniq("pid"), b"x", qos=1, pid=pid)
    ack = r.expect(raw.PUBACK)
    assert ack.pid == pid
    assert ack.rc in (0, 0x10)  # 0x10 = no matching subscribers (5.0)


def test_qos2_flow_echoes_packet_identifier(clients, mqtt_version):
    r = clients.raw(version=mqtt_version)
    assert r.connect(client_id=uniq()).rc == 0
    r.send_publish(uniq("pid2"), b"x", qos=2, pid=4242)
    rec = r.expect(raw.PUBREC)
    assert rec.pid == 4242 and rec.rc in (0, 0x10)
    r.pubrel(4242)
    comp = r.expect(raw.PUBCOMP)
    assert comp.pid == 4242 and comp.rc == 0


def test_packet_identifier_can_be_reused_after_ack(clients, mqtt_version):
    topic = uniq("reuse")
    sub = clients(version=mqtt_version)
    sub.subscribe(topic, 2)
    r = clients.raw(version=mqtt_version)
    assert r.connect(client_id=uniq()).rc == 0
    for i in range(3):
        r.send_publish(topic, b"q1-%d" % i, qos=1, pid=7)
        assert r.expect(raw.PUBACK).pid == 7
        r.send_publish(topic, b"q2-%d" % i, qos=2, pid=7)
        assert r.expect(raw.PUBREC).pid == 7
        r.pubrel(7)
        assert r.expect(raw.PUBCOMP).pid == 7
    got = [m.payload for m in sub.wait_for(6)]
    # order is only guaranteed within one QoS level
    assert [g for g in got if g.startswith(b"q1")] == [b"q1-0", b"q1-1", b"q1-2"]
    assert [g for g in got if g.startswith(b"q2")] == [b"q2-0", b"q2-1", b"q2-2"]
    sub.assert_no_message(0.3)


def test_qos2_duplicate_publish_before_pubrel_is_delivered_once(clients, mqtt_version):
    topic = uniq("q2dup")
    sub = clients(version=mqtt_version)
    sub.subscribe(topic, 2)
    r = clients.raw(version=mqtt_version)
    assert r.connect(client_id=uniq()).rc == 0
    r.send_publish(topic, b"once", qos=2, pid=9)
    assert r.expect(raw.PUBREC).pid == 9
    r.send_publish(topic, b"once", qos=2, pid=9, dup=True)  # retransmission
    assert r.expect(raw.PUBREC).pid == 9
    r.pubrel(9)
    assert r.expect(raw.PUBCOMP).pid == 9
    assert sub.expect().payload == b"once"
    sub.assert_no_message(0.5)


def test_outgoing_inflight_messages_have_distinct_nonzero_packet_ids(clients, mqtt_version):
    topic = uniq("ids")
    r = clients.raw(version=mqtt_version)
    assert r.connect(client_id=uniq()).rc == 0
    r.subscribe(topic, qos=1)
    pub = clients(version=mqtt_version)
    for i in range(5):
        pub.publish(topic, b"%d" % i, 1)
    got = [r.recv_publish(3) for _ in range(5)]
    assert all(p is not None for p in got), got
    pids = [p.pid for p in got]
    assert all(1 <= p <= 65535 for p in pids)
    assert len(set(pids)) == 5, f"in-flight packet ids not distinct: {pids}"
    for p in got:
        r.ack(p)


# --- redelivery -------------------------------------------------------------------

def _persistent_raw(clients, version, cid, expect_sp):
    r = clients.raw(version=version)
    ack = r.connect(client_id=cid, clean=False,
                    props={"SessionExpiryInterval": 300} if version == 5 else None)
    assert ack.rc == 0
    assert ack.session_present is expect_sp, ack
    return r


def test_unacked_qos1_is_redelivered_with_dup_on_reconnect(clients, mqtt_version):
    topic, cid = uniq("redeliver"), uniq("sub")
    r = _persistent_raw(clients, mqtt_version, cid, False)
    r.subscribe(topic, qos=1)
    clients(version=mqtt_version).publish(topic, b"unacked", 1)
    first = r.recv_publish(3)
    assert first is not None and first.payload == b"unacked" and not first.dup
    r.disconnect()  # without PUBACK

    r2 = _persistent_raw(clients, mqtt_version, cid, True)
    again = r2.recv_publish(3)
    assert again is not None, "unacknowledged QoS 1 message not redelivered"
    assert again.payload == b"unacked" and again.topic == topic
    assert again.dup is True, f"redelivered without DUP: {again}"
    assert again.qos == 1
    assert again.pid == first.pid, "redelivery must reuse the original packet identifier"
    r2.ack(again)
    assert r2.recv_publish(0.5) is None


def test_unacked_qos1_redelivered_to_paho_manual_ack_client(clients, mqtt_version):
    topic, cid = uniq("redeliver"), uniq("sub")
    sub = clients(version=mqtt_version, client_id=cid, clean=False, session_expiry=300,
                  manual_ack=True)
    sub.subscribe(topic, 1)
    clients(version=mqtt_version).publish(topic, b"m", 1)
    m = sub.expect()
    assert not m.dup
    sub.disconnect()  # never acked
    sub2 = clients(version=mqtt_version, client_id=cid, clean=False, session_expiry=300,
                   manual_ack=True)
    assert sub2.session_present
    m2 = sub2.expect()
    assert (m2.payload, m2.dup, m2.qos) == (b"m", True, 1)
    sub2.ack(m2)


def test_unacked_qos2_publish_is_redelivered_with_dup(clients, mqtt_version):
    topic, cid = uniq("redeliver2"), uniq("sub")
    r = _persistent_raw(clients, mqtt_version, cid, False)
    r.subscribe(topic, qos=2)
    clients(version=mqtt_version).publish(topic, b"q2", 2)
    first = r.recv_publish(3)
    assert first is not None and first.qos == 2 and not first.dup
    r.disconnect()  # no PUBREC
    r2 = _persistent_raw(clients, mqtt_version, cid, True)
    again = r2.recv_publish(3)
    assert again is not None and again.payload == b"q2"
    assert again.dup and again.qos == 2 and again.pid == first.pid
    r2.pubrec(again.pid)
    rel = r2.expect(raw.PUBREL)
    assert rel.pid == again.pid
    r2.pubcomp(rel.pid)


def test_pubrel_is_resent_on_reconnect_when_pubcomp_missing(clients, mqtt_version):
    topic, cid = uniq("pubrel"), uniq("sub")
    r = _persistent_raw(clients, mqtt_version, cid, False)
    r.subscribe(topic, qos=2)
    clients(version=mqtt_version).publish(topic, b"q2", 2)
    p = r.recv_publish(3)
    assert p is not None
    r.pubrec(p.pid)
    rel = r.expect(raw.PUBREL)
    assert rel.pid == p.pid
    r.disconnect()  # no PUBCOMP
    r2 = _persistent_raw(clients, mqtt_version, cid, True)
    nxt = r2.recv_packet(3)
    assert nxt is not None, "nothing resent after reconnect"
    assert nxt.type == raw.PUBREL and nxt.pid == p.pid, f"expected PUBREL resend, got {nxt}"
    r2.pubcomp(p.pid)
    assert r2.recv_publish(0.5) is None, "QoS 2 message delivered twice"


def test_acked_messages_are_not_redelivered(clients, mqtt_version):
    topic, cid = uniq("acked"), uniq("sub")
    r = _persistent_raw(clients, mqtt_version, cid, False)
    r.subscribe(topic, qos=1)
    clients(version=mqtt_version).publish(topic, b"m", 1)
    p = r.recv_publish(3)
    r.ack(p)
    r.ping()  # make sure the PUBACK was processed before we go
    r.disconnect()
    r2 = _persistent_raw(clients, mqtt_version, cid, True)
    assert r2.recv_publish(0.7) is None
