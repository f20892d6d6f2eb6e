"""CONNECT / CONNACK, client identifiers, session-present, keep-alive."""

import time

import pytest

import mqtt_raw as raw
from clients import V5, uniq


def test_connect_returns_connack_success(clients, mqtt_version):
    c = clients(version=mqtt_version)
    assert c.connack_rc == 0
    assert c.session_present is False


def test_raw_connect_connack_success(clients, mqtt_version):
    r = clients.raw(version=mqtt_version)
    ack = r.connect(client_id=uniq("raw"))
    assert ack.type == raw.CONNACK
    assert ack.rc == 0
    assert ack.session_present is False
    if mqtt_version == 5:
        # properties must decode cleanly (the codec raises otherwise); sanity on a few
        assert ack.props.get("MaximumQoS", 2) in (0, 1) or "MaximumQoS" not in ack.props
        assert ack.props.get("ReceiveMaximum", 65535) >= 1
        assert ack.props.get("MaximumPacketSize", 1 << 28) >= 1024


def test_session_present_after_reconnect_with_persistent_session(clients, mqtt_version):
    cid = uniq("persist")
    c = clients(version=mqtt_version, client_id=cid, clean=False, session_expiry=300)
    assert c.session_present is False
    c.subscribe("a/b", 1)
    c.disconnect()
    c2 = clients(version=mqtt_version, client_id=cid, clean=False, session_expiry=300)
    assert c2.session_present is True


def test_clean_session_reconnect_has_no_session_present(clients, mqtt_version):
    cid = uniq("clean")
    c = clients(version=mqtt_version, client_id=cid, clean=False, session_expiry=300)
    c.subscribe("a/b", 1)
    c.disconnect()
    c2 = clients(version=mqtt_version, client_id=cid, clean=True)
    assert c2.session_present is False


def test_v5_assigned_client_identifier_for_empty_client_id(clients):
    r = clients.raw(version=5)
    ack = r.connect(client_id="", clean=True)
    assert ack.rc == 0
    assigned = ack.props.get("AssignedClientIdentifier")
    assert assigned, f"CONNACK lacks AssignedClientIdentifier: {ack}"
    # the assigned identifier works as a normal client id afterwards
    r.disconnect()
    r2 = clients.raw(version=5)
    assert r2.connect(client_id=assigned).rc == 0


def test_v311_empty_client_id_with_clean_session_accepted(clients):
    r = clients.raw(version=4)
    ack = r.connect(client_id="", clean=True)
    assert ack.rc == 0


def test_v311_empty_client_id_without_clean_session_rejected(clients):
    r = clients.raw(version=4)
    ack = r.connect(client_id="", clean=False)
    assert ack.rc == 0x02, ack  # identifier rejected
    closed, _ = r.wait_closed(3)
    assert closed


def test_same_client_id_takes_over_existing_connection(clients, mqtt_version):
    cid = uniq("dup")
    first = clients.raw(version=mqtt_version)
    assert first.connect(client_id=cid).rc == 0
    second = clients.raw(version=mqtt_version)
    assert second.connect(client_id=cid).rc == 0
    closed, seen = first.wait_closed(3)
    assert closed, "first connection not closed on client-id takeover"
    if mqtt_version == 5:
        discs = [p for p in seen if p.type == raw.DISCONNECT]
        if discs:
            assert discs[0].rc == 0x8E, discs  # Session taken over
    # the new connection works
    assert second.ping().type == raw.PINGRESP


@pytest.mark.gantry_only(reason="Mosquitto 2.0.11 closes the old connection without a DISCONNECT")
def test_v5_takeover_sends_disconnect_0x8e(clients):
    cid = uniq("dup")
    first = clients.raw(version=5)
    assert first.connect(client_id=cid).rc == 0
    second = clients.raw(version=5)
    assert second.connect(client_id=cid).rc == 0
    closed, seen = first.wait_closed(3)
    assert closed
    assert [p.rc for p in seen if p.type == raw.DISCONNECT] == [0x8E], seen


# Mosquitto 2.0 only checks keep-alives every ~5 s, so it gets a wider window;
# Gantry must close a silent keep-alive=1 client within ~1.5-3 s.
KEEPALIVE_DEADLINE = {"gantry": 3.5, "mosquitto": 7.5}


def test_keepalive_silent_client_is_disconnected(clients, mqtt_version, broker_kind):
    deadline = KEEPALIVE_DEADLINE[broker_kind]
    r = clients.raw(version=mqtt_version)
    assert r.connect(client_id=uniq("ka"), keepalive=1).rc == 0
    t0 = time.monotonic()
    closed, _ = r.wait_closed(deadline + 0.5)
    elapsed = time.monotonic() - t0
    assert closed, f"silent client with keep-alive 1 s still connected after {deadline + 0.5}s"
    assert 0.9 <= elapsed <= deadline, f"disconnected after {elapsed:.2f}s (expected ~1.5 s)"


def test_keepalive_pingreq_keeps_connection_alive(clients, mqtt_version):
    r = clients.raw(version=mqtt_version)
    assert r.connect(client_id=uniq("ka"), keepalive=1).rc == 0
    t_end = time.monotonic() + 2.2
    while time.monotonic() < t_end:
        assert r.ping(timeout=2).type == raw.PINGRESP
        time.sleep(0.5)
    assert r.ping(timeout=2).type == raw.PINGRESP


def test_v5_server_keep_alive_is_assigned_and_enforced(broker_factory, broker_kind):
    """A broker with a keep-alive ceiling answers a longer client keep-alive with
    Server Keep Alive in CONNACK, and then enforces that value."""
    if broker_kind == "gantry":
        ceiling = 2
        b = broker_factory(limits={"max_keep_alive": ceiling})
    else:
        ceiling = 10  # mosquitto's smallest allowed max_keepalive
        b = broker_factory(mosquitto_extra=f"max_keepalive {ceiling}")
    r = raw.RawClient(b.host, b.port, version=5)
    try:
        ack = r.connect(client_id=uniq("ska"), keepalive=600)
        assert ack.rc == 0
        assert ack.props.get("ServerKeepAlive") == ceiling, ack
        if ceiling > 5:
            return  # value checked; enforcement would take too long to observe here
        t0 = time.monotonic()
        closed, _ = r.wait_closed(ceiling * 1.5 + 2.5)
        assert closed, f"not disconnected after server keep alive {ceiling}s"
        assert time.monotonic() - t0 >= ceiling * 0.9
    finally:
        r.close()


def test_v5_keep_alive_within_ceiling_is_not_overridden(broker_factory, broker_kind):
    if broker_kind == "gantry":
        b = broker_factory(limits={"max_keep_alive": 30})
    else:
        b = broker_factory(mosquitto_extra="max_keepalive 30")
    r = raw.RawClient(b.host, b.port, version=5)
    try:
        ack = r.connect(client_id=uniq("ska"), keepalive=20)
        assert ack.rc == 0
        assert ack.props.get("ServerKeepAlive", 20) == 20, ack
    finally:
        r.close()


def test_v5_connect_properties_are_accepted(clients):
    c = clients(version=V5, connect_props={"ReceiveMaximum": 10, "MaximumPacketSize": 65536,
                                           "TopicAliasMaximum": 5,
                                           "UserProperty": [("site", "plant-1")]},
                session_expiry=10)
    assert c.connack_rc == 0


def test_second_connect_on_same_connection_is_protocol_error(clients, mqtt_version):
    r = clients.raw(version=mqtt_version)
    assert r.connect(client_id=uniq("twice")).rc == 0
    r.send(raw.build_connect(mqtt_version, uniq("twice")))
    closed, _ = r.wait_closed(3)
    assert closed, "second CONNECT did not close the connection"
