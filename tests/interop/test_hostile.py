"""Hostile / malformed input on raw sockets: each case must close only the
offending connection, and the broker must keep serving fresh clients."""

import os
import random
import socket
import struct
import time

import pytest

import mqtt_raw as raw
from clients import roundtrip_ok, uniq

CLOSE_TIMEOUT = 3.0

# deterministic "random" bytes; the first byte is not a CONNECT header so that a
# broker cannot legitimately wait for a huge announced CONNECT body
_RANDOM_GARBAGE = b"\xa7" + random.Random(20240601).randbytes(4095)


@pytest.fixture(autouse=True)
def bystander(clients):
    """A well-behaved client connected before the hostile input; it must be
    unaffected (still connected and receiving) afterwards."""
    topic = uniq("bystander")
    c = clients(version=5)
    c.subscribe(topic, 1)
    yield c
    assert c.connected.is_set(), "a well-behaved client was disconnected by another's bad input"
    clients(version=5).publish(topic, b"still-here", 1)
    m = c.get(3)
    assert m is not None and m.payload == b"still-here", "bystander stopped receiving"


def _assert_closed_and_healthy(r, broker, version=5, allowed_rc=None):
    try:
        closed, seen = r.wait_closed(CLOSE_TIMEOUT)
    except raw.MalformedPacket:
        closed, seen = False, []
    assert closed, f"broker did not close the offending connection within {CLOSE_TIMEOUT}s"
    discs = [p for p in seen if p.type == raw.DISCONNECT]
    if discs and allowed_rc is not None:
        assert discs[0].rc in allowed_rc, discs
    for p in discs:
        assert p.rc >= 0x80, f"error disconnect with non-error reason code: {p}"
    assert broker.alive(), "broker process died"
    assert roundtrip_ok(broker, version), "broker no longer serves a fresh client"
    return seen


def _connected(clients, version):
    r = clients.raw(version=version)
    ack = r.connect(client_id=uniq("hostile"))
    assert ack.rc == 0
    return r


# --- before CONNECT ------------------------------------------------------------------

@pytest.mark.parametrize("garbage", [
    b"\xde\xad\xbe\xef" * 64,
    b"GET /mqtt HTTP/1.1\r\nHost: x\r\n\r\n",
    b"\x00" * 100,
    b"\x10\xff\xff\xff\xff\xff",  # CONNECT with a 5-byte remaining length
    _RANDOM_GARBAGE,
], ids=["deadbeef", "http", "zeros", "bad-varint", "random"])
def test_garbage_before_connect(clients, broker, garbage):
    r = clients.raw()
    try:
        r.send(garbage)
    except raw.ConnectionClosed:
        pass
    _assert_closed_and_healthy(r, broker)


@pytest.mark.parametrize("first", [
    raw.build_publish(4, "a/b", b"x"),
    raw.build_subscribe(4, 1, [("a/b", 0)]),
    raw.PINGREQ_BYTES,
    raw.build_disconnect(4),
], ids=["publish", "subscribe", "pingreq", "disconnect"])
def test_first_packet_not_connect(clients, broker, first):
    r = clients.raw(version=4)
    r.send(first)
    seen = _assert_closed_and_healthy(r, broker)
    assert not [p for p in seen if p.type in (raw.PINGRESP, raw.SUBACK)], seen


@pytest.mark.parametrize("level", [3, 6, 0, 255])
@pytest.mark.parametrize("fmt", [4, 5], ids=["v311-layout", "v5-layout"])
def test_wrong_protocol_level(clients, broker, level, fmt):
    r = clients.raw(version=fmt)
    r.send(raw.build_connect(fmt, uniq(), level=level))
    seen = _assert_closed_and_healthy(r, broker)
    acks = [p for p in seen if p.type == raw.CONNACK]
    if acks:
        # 3.1.1 answers 0x01 (unacceptable protocol version), 5.0 answers 0x84
        assert acks[0].rc in (0x01, 0x84), acks


@pytest.mark.gantry_only(reason="Mosquitto answers 0x01 to every unsupported level")
@pytest.mark.parametrize("level,code", [(3, 0x01), (6, 0x84)])
def test_wrong_protocol_level_exact_connack(clients, broker, level, code):
    """Level 3 (an older 3.x client) gets the 3.1.1 code 0x01; level 6 (a newer
    client) gets the 5.0 code 0x84 Unsupported Protocol Version."""
    r = clients.raw(version=5)
    r.send(raw.build_connect(5, uniq(), level=level))
    seen = _assert_closed_and_healthy(r, broker)
    assert [p.rc for p in seen if p.type == raw.CONNACK] == [code], seen


def test_wrong_protocol_name(clients, broker):
    r = clients.raw(version=4)
    r.send(raw.build_connect(4, uniq(), protocol_name=b"MQTX"))
    seen = _assert_closed_and_healthy(r, broker)
    acks = [p for p in seen if p.type == raw.CONNACK]
    assert not acks or acks[0].rc != 0, acks


def test_connect_reserved_flag_set(clients, broker, mqtt_version):
    r = clients.raw(version=mqtt_version)
    r.send(raw.build_connect(mqtt_version, uniq(), flags_override=0x03))  # clean + reserved bit
    seen = _assert_closed_and_healthy(r, broker, mqtt_version)
    acks = [p for p in seen if p.type == raw.CONNACK]
    assert not acks or acks[0].rc != 0, acks


def test_connect_with_invalid_utf8_client_id(clients, broker, mqtt_version):
    r = clients.raw(version=mqtt_version)
    r.send(raw.build_connect(mqtt_version, b"bad\xff\xfeid"))
    seen = _assert_closed_and_healthy(r, broker, mqtt_version)
    acks = [p for p in seen if p.type == raw.CONNACK]
    assert not acks or acks[0].rc != 0, acks


def test_truncated_connect_then_close(clients, broker):
    r = clients.raw()
    r.send(raw.build_connect(5, uniq())[:7])
    r.close()
    time.sleep(0.2)
    assert roundtrip_ok(broker)


def test_idle_connections_without_connect_do_not_block_others(broker):
    idle = []
    try:
        for _ in range(30):
            s = socket.create_connection((broker.host, broker.port), timeout=2)
            idle.append(s)
        assert roundtrip_ok(broker)
    finally:
        for s in idle:
            s.close()


# --- after CONNECT ---------------------------------------------------------------------

@pytest.mark.parametrize("topic", ["a/+/c", "a/#", "#", "+"])
def test_publish_with_wildcard_topic(clients, broker, mqtt_version, topic):
    watcher = clients(version=mqtt_version)
    watcher.subscribe("#", 0)
    r = _connected(clients, mqtt_version)
    r.send(raw.build_publish(mqtt_version, topic, b"evil", qos=1, pid=1))
    seen = _assert_closed_and_healthy(r, broker, mqtt_version, allowed_rc=(0x90, 0x81, 0x82))
    assert not [p for p in seen if p.type == raw.PUBACK], "wildcard publish acknowledged"
    assert not [m for m in watcher.collect(0.3) if m.payload == b"evil"]


@pytest.mark.gantry_only(reason="Mosquitto answers 0x82 Protocol Error instead of 0x90")
def test_v5_wildcard_publish_gets_disconnect_0x90(clients, broker):
    r = _connected(clients, 5)
    r.send(raw.build_publish(5, "a/+/c", b"evil", qos=1, pid=1))
    seen = _assert_closed_and_healthy(r, broker, 5)
    assert [p.rc for p in seen if p.type == raw.DISCONNECT] == [0x90], seen


@pytest.mark.parametrize("topic", [b"bad\xff\xfe", b"\xc0\xaf", b"a/\xed\xa0\x80", b"nul\x00byte"],
                         ids=["ff-fe", "overlong", "surrogate", "nul"])
def test_publish_with_invalid_utf8_topic(clients, broker, mqtt_version, topic):
    r = _connected(clients, mqtt_version)
    r.send(raw.build_publish(mqtt_version, topic, b"x", qos=1, pid=1))
    seen = _assert_closed_and_healthy(r, broker, mqtt_version)
    assert not [p for p in seen if p.type == raw.PUBACK]


def test_v311_publish_with_empty_topic(clients, broker):
    r = _connected(clients, 4)
    r.send(raw.build_publish(4, "", b"x", qos=1, pid=1))
    _assert_closed_and_healthy(r, broker, 4)


def test_publish_with_qos3(clients, broker, mqtt_version):
    r = _connected(clients, mqtt_version)
    body = raw.encode_str("a/b") + struct.pack("!H", 1) + (b"\x00" if mqtt_version == 5 else b"") + b"x"
    r.send(raw.packet(raw.PUBLISH, 0x06, body))  # QoS bits = 3
    _assert_closed_and_healthy(r, broker, mqtt_version)


def test_publish_qos1_with_packet_id_zero(clients, broker, mqtt_version):
    r = _connected(clients, mqtt_version)
    r.send(raw.build_publish(mqtt_version, "a/b", b"x", qos=1, pid=0))
    _assert_closed_and_healthy(r, broker, mqtt_version)


def test_oversized_remaining_length_varint(clients, broker, mqtt_version):
    r = _connected(clients, mqtt_version)
    r.send(b"\x30\xff\xff\xff\xff\x7f" + b"x" * 32)  # 5-byte remaining length
    _assert_closed_and_healthy(r, broker, mqtt_version)


def test_subscribe_with_wrong_fixed_header_flags(clients, broker, mqtt_version):
    r = _connected(clients, mqtt_version)
    good = raw.build_subscribe(mqtt_version, 1, [("a/b", 0)])
    r.send(bytes([0x80]) + good[1:])  # flags must be 0b0010
    seen = _assert_closed_and_healthy(r, broker, mqtt_version)
    assert not [p for p in seen if p.type == raw.SUBACK]


def test_subscribe_without_filters(clients, broker, mqtt_version):
    r = _connected(clients, mqtt_version)
    r.send(raw.build_subscribe(mqtt_version, 1, []))
    _assert_closed_and_healthy(r, broker, mqtt_version)


def test_subscribe_with_invalid_qos(clients, broker, mqtt_version):
    r = _connected(clients, mqtt_version)
    r.send(raw.build_subscribe(mqtt_version, 1, [("a/b", 3)]))
    _assert_closed_and_healthy(r, broker, mqtt_version)


def test_reserved_packet_type(clients, broker, mqtt_version):
    r = _connected(clients, mqtt_version)
    r.send(b"\x00\x00")
    _assert_closed_and_healthy(r, broker, mqtt_version)


def test_length_mismatch_inside_packet(clients, broker, mqtt_version):
    r = _connected(clients, mqtt_version)
    # SUBSCRIBE whose topic filter length field runs past the end of the packet
    body = struct.pack("!H", 1) + (b"\x00" if mqtt_version == 5 else b"") + struct.pack("!H", 500) + b"a/b\x00"
    r.send(raw.packet(raw.SUBSCRIBE, 0x02, body))
    _assert_closed_and_healthy(r, broker, mqtt_version)


def test_v5_malformed_property(clients, broker):
    r = _connected(clients, 5)
    # PUBLISH whose property block contains unknown property id 0x7F
    body = raw.encode_str("a/b") + b"\x02\x7f\x00" + b"x"
    r.send(raw.packet(raw.PUBLISH, 0, body))
    _assert_closed_and_healthy(r, broker, 5)


def test_v5_duplicate_single_valued_property(clients, broker):
    r = _connected(clients, 5)
    props = b"\x01\x01" + b"\x01\x00"  # PayloadFormatIndicator twice
    body = raw.encode_str("a/b") + raw.encode_varint(len(props)) + props + b"x"
    r.send(raw.packet(raw.PUBLISH, 0, body))
    _assert_closed_and_healthy(r, broker, 5)


def test_unexpected_pubrel_does_not_crash(clients, broker, mqtt_version):
    r = _connected(clients, mqtt_version)
    r.pubrel(777)  # unknown packet id: 5.0 answers PUBCOMP 0x92, 3.1.1 PUBCOMP
    p = r.recv_packet(2)
    if p is not None:
        assert p.type == raw.PUBCOMP and p.pid == 777
    assert roundtrip_ok(broker, mqtt_version)


def test_hostile_burst_then_normal_traffic(clients, broker):
    for i in range(20):
        r = clients.raw()
        try:
            r.send(os.urandom(64 + i * 13))
        except raw.ConnectionClosed:
            pass
        r.abort()
    assert roundtrip_ok(broker)
