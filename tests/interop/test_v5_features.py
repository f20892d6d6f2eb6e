"""MQTT 5.0 specific features: reason codes, topic aliases, message expiry, flow
control, maximum packet size, subscription identifiers, subscription options,
properties forwarding, request / response."""

import time

import pytest

import mqtt_raw as raw
from clients import V5, roundtrip_ok, uniq


def _raw5(clients, cid=None, **connect_kw):
    r = clients.raw(version=5)
    ack = r.connect(client_id=cid or uniq("raw"), **connect_kw)
    assert ack.rc == 0, ack
    r.connack = ack
    return r


# --- reason codes ---------------------------------------------------------------

@pytest.mark.gantry_only(reason="Mosquitto 2.0 closes the connection on an invalid topic filter "
                                "instead of answering SUBACK 0x8F")
@pytest.mark.parametrize("bad", ["a/#/b", "a+", "a/b#", "$share/g+x/abc"])
def test_v5_invalid_filter_gets_suback_0x8f(clients, bad):
    r = _raw5(clients)
    ack = r.subscribe([(bad, 1), ("valid/" + uniq(), 1)])
    assert ack.codes == [0x8F, 0x01], ack
    assert r.ping().type == raw.PINGRESP  # connection still usable


@pytest.mark.parametrize("bad", ["a/#/b", "a+", ""])
def test_invalid_filter_is_rejected_and_broker_keeps_serving(clients, broker, mqtt_version, bad):
    r = clients.raw(version=mqtt_version)
    assert r.connect(client_id=uniq()).rc == 0
    r.send(raw.build_subscribe(mqtt_version, 1, [(bad, 1)]))
    p = r.first_response(3)
    if p is not None and p.type == raw.DISCONNECT:
        assert p.rc >= 0x80
        p = r.first_response(3)
    if p is None:
        assert r.closed, "invalid filter neither refused in SUBACK nor connection closed"
    else:
        assert p.type == raw.SUBACK and p.codes[0] >= 0x80, p
    assert roundtrip_ok(broker, mqtt_version)


def test_v5_unsubscribe_nonexistent_gets_0x11(clients):
    r = _raw5(clients)
    topic = uniq("u")
    r.subscribe(topic, qos=1)
    ack = r.unsubscribe([topic, "never/subscribed/" + uniq()])
    assert ack.codes == [0x00, 0x11], ack


def test_v5_suback_grants_requested_qos(clients):
    r = _raw5(clients)
    b = uniq("s")
    ack = r.subscribe([(b + "/0", 0), (b + "/1", 1), (b + "/2", 2)])
    assert ack.codes == [0, 1, 2]


def test_v5_request_problem_information_zero_suppresses_reason_string(clients):
    r = _raw5(clients, props={"RequestProblemInformation": 0})
    ack = r.unsubscribe(["never/" + uniq()])
    assert ack.codes == [0x11]
    assert "ReasonString" not in ack.props and "UserProperty" not in ack.props, ack


@pytest.mark.gantry_only(reason="reason strings are optional; Mosquitto sends none")
def test_v5_error_responses_carry_reason_strings(clients, broker):
    r = _raw5(clients)
    ack = r.subscribe([("a/#/b", 1)])
    assert ack.codes == [0x8F]
    assert ack.props.get("ReasonString"), f"SUBACK 0x8F without a reason string: {ack}"
    bad = _raw5(clients)
    bad.send_publish("a/+", b"x", qos=1)
    closed, seen = bad.wait_closed(3)
    discs = [p for p in seen if p.type == raw.DISCONNECT]
    assert closed and discs and discs[0].props.get("ReasonString"), seen


def test_v5_reason_strings_are_valid_utf8_when_present(clients):
    r = _raw5(clients)
    acks = [r.unsubscribe(["never/" + uniq()]), r.subscribe("ok/" + uniq(), qos=1)]
    for a in acks:  # the codec raises on invalid UTF-8
        rs = a.props.get("ReasonString")
        assert rs is None or isinstance(rs, str)


def test_v5_connack_capabilities(clients):
    ack = _raw5(clients).connack
    p = ack.props
    assert p.get("RetainAvailable", 1) == 1
    assert p.get("WildcardSubscriptionAvailable", 1) == 1
    assert p.get("SubscriptionIdentifierAvailable", 1) == 1
    assert p.get("SharedSubscriptionAvailable", 1) == 1
    assert p.get("TopicAliasMaximum", 0) >= 1, "broker should accept topic aliases"


# --- topic aliases --------------------------------------------------------------

def test_v5_client_to_server_topic_alias(clients):
    topic = uniq("alias")
    sub = clients(version=V5)
    sub.subscribe(topic, 1)
    pub = clients(version=V5)
    assert pub.connack_props.get("TopicAliasMaximum", 0) >= 1
    pub.publish(topic, b"first", 1, TopicAlias=1)
    pub.publish("", b"second", 1, TopicAlias=1)
    pub.publish("", b"third", 1, TopicAlias=1)
    got = sub.wait_for(3)
    assert [(m.topic, m.payload) for m in got] == [(topic, b"first"), (topic, b"second"),
                                                   (topic, b"third")]


def test_v5_client_topic_alias_can_be_remapped(clients):
    a, b = uniq("alias-a"), uniq("alias-b")
    sub = clients(version=V5)
    sub.subscribe(a, 1)
    sub.subscribe(b, 1)
    r = _raw5(clients)
    r.publish(a, b"1", qos=1, props={"TopicAlias": 1})
    r.publish("", b"2", qos=1, props={"TopicAlias": 1})
    r.publish(b, b"3", qos=1, props={"TopicAlias": 1})
    r.publish("", b"4", qos=1, props={"TopicAlias": 1})
    got = [(m.topic, m.payload) for m in sub.wait_for(4)]
    assert got == [(a, b"1"), (a, b"2"), (b, b"3"), (b, b"4")]


@pytest.mark.parametrize("case", ["above_maximum", "zero", "unknown_alias"])
def test_v5_invalid_client_topic_alias_closes_connection(clients, broker, case):
    r = _raw5(clients)
    maximum = r.connack.props.get("TopicAliasMaximum", 0)
    if case == "above_maximum":
        r.send_publish("t/" + uniq(), b"x", props={"TopicAlias": maximum + 1})
    elif case == "zero":
        r.send_publish("t/" + uniq(), b"x", props={"TopicAlias": 0})
    else:
        r.send_publish("", b"x", props={"TopicAlias": 1})  # never established
    closed, seen = r.wait_closed(3)
    assert closed, f"invalid topic alias ({case}) did not close the connection"
    discs = [p for p in seen if p.type == raw.DISCONNECT]
    if discs:
        assert discs[0].rc in (0x94, 0x82, 0x81), discs  # alias invalid / protocol error
    assert roundtrip_ok(broker)


def _resolve_aliases(msgs, maximum):
    table, out = {}, []
    for p in msgs:
        alias = p.props.get("TopicAlias")
        if alias is not None:
            assert 1 <= alias <= maximum, f"alias {alias} exceeds client maximum {maximum}"
            if p.topic:
                table[alias] = p.topic
            else:
                assert alias in table, f"server used unestablished alias {alias}"
        else:
            assert p.topic, "empty topic without alias"
        out.append(p.topic or table[alias])
    return out


def test_v5_server_to_client_topic_aliases_resolve_correctly(clients):
    t1, t2 = uniq("sa"), uniq("sb")
    r = _raw5(clients, props={"TopicAliasMaximum": 2})
    r.subscribe([(t1, 1), (t2, 1)])
    pub = clients(version=V5)
    expected = []
    for i in range(6):
        t = t1 if i % 2 == 0 else t2
        pub.publish(t, b"%d" % i, 1)
        expected.append(t)
    msgs = []
    for _ in range(6):
        p = r.recv_publish(3)
        assert p is not None
        r.ack(p)
        msgs.append(p)
    assert _resolve_aliases(msgs, 2) == expected


@pytest.mark.gantry_only(reason="Mosquitto 2.0 never assigns outgoing topic aliases")
def test_v5_server_uses_topic_alias_when_client_allows(clients):
    topic = "a/rather/long/topic/name/for/aliasing/" + uniq()
    r = _raw5(clients, props={"TopicAliasMaximum": 4})
    r.subscribe(topic, qos=1)
    pub = clients(version=V5)
    for i in range(4):
        pub.publish(topic, b"%d" % i, 1)
    msgs = []
    for _ in range(4):
        p = r.recv_publish(3)
        assert p is not None
        r.ack(p)
        msgs.append(p)
    assert _resolve_aliases(msgs, 4) == [topic] * 4
    assert any(p.topic == "" for p in msgs), f"server never used a topic alias: {msgs}"


def test_v5_no_server_topic_alias_without_client_maximum(clients):
    topic = uniq("noalias")
    r = _raw5(clients)  # TopicAliasMaximum absent = 0
    r.subscribe(topic, qos=0)
    pub = clients(version=V5)
    for i in range(3):
        pub.publish(topic, b"x", 0)
    for _ in range(3):
        p = r.recv_publish(3)
        assert p is not None and p.topic == topic and "TopicAlias" not in p.props


# --- message expiry --------------------------------------------------------------

def test_v5_retained_message_expires(clients):
    topic = uniq("exp")
    pub = clients(version=V5)
    pub.publish(topic, b"short-lived", 1, retain=True, MessageExpiryInterval=1)
    pub.publish(topic + "/keep", b"kept", 1, retain=True)
    time.sleep(2.0)
    sub = clients(version=V5)
    sub.subscribe(topic, 1)
    sub.subscribe(topic + "/keep", 1)
    m = sub.expect()
    assert m.payload == b"kept", f"expired retained message delivered: {m}"
    sub.assert_no_message(0.3)


def test_v5_queued_message_expires_for_offline_client(clients):
    topic, cid = uniq("exp"), uniq("p")
    c = clients(version=V5, client_id=cid, clean=False, session_expiry=60)
    c.subscribe(topic, 1)
    c.disconnect()
    pub = clients(version=V5)
    pub.publish(topic, b"expires", 1, MessageExpiryInterval=1)
    pub.publish(topic, b"stays", 1)
    time.sleep(2.0)
    c2 = clients(version=V5, client_id=cid, clean=False, session_expiry=60)
    assert c2.expect().payload == b"stays"
    c2.assert_no_message(0.3)


def test_v5_forwarded_expiry_is_decremented(clients):
    topic = uniq("exp")
    clients(version=V5).publish(topic, b"x", 1, retain=True, MessageExpiryInterval=20)
    time.sleep(1.6)
    sub = clients(version=V5)
    sub.subscribe(topic, 1)
    m = sub.expect()
    mei = m.props.get("MessageExpiryInterval")
    assert mei is not None, "message expiry interval not forwarded"
    assert 1 <= mei <= 19, f"expiry not decremented: {mei}"


def test_v5_live_message_expiry_forwarded(clients):
    topic = uniq("exp")
    sub = clients(version=V5)
    sub.subscribe(topic, 1)
    clients(version=V5).publish(topic, b"x", 1, MessageExpiryInterval=60)
    m = sub.expect()
    assert 58 <= m.props.get("MessageExpiryInterval", -1) <= 60


def test_v5_message_without_expiry_has_no_expiry_property(clients):
    topic = uniq("exp")
    sub = clients(version=V5)
    sub.subscribe(topic, 1)
    clients(version=V5).publish(topic, b"x", 1)
    assert "MessageExpiryInterval" not in sub.expect().props


# --- flow control / receive maximum ---------------------------------------------

def test_v5_receive_maximum_limits_unacked_inflight(clients):
    topic = uniq("rm")
    r = _raw5(clients, props={"ReceiveMaximum": 1})
    r.subscribe(topic, qos=1)
    pub = clients(version=V5)
    for i in range(5):
        pub.publish(topic, b"%d" % i, 1)
    got = []
    for i in range(5):
        p = r.recv_publish(3)
        assert p is not None, f"message {i} not delivered after previous ack"
        got.append(p.payload)
        extra = r.recv_publish(0.25)
        assert extra is None, f"second unacked QoS 1 message in flight with ReceiveMaximum=1: {extra}"
        r.ack(p)
    assert got == [b"%d" % i for i in range(5)]


@pytest.mark.gantry_only(reason="Mosquitto 2.0.11 sends two new messages per PUBACK when "
                                "ReceiveMaximum > 1, exceeding the client's receive maximum")
def test_v5_receive_maximum_with_paho_manual_ack(clients):
    topic = uniq("rm")
    sub = clients(version=V5, manual_ack=True, connect_props={"ReceiveMaximum": 2})
    sub.subscribe(topic, 1)
    pub = clients(version=V5)
    for i in range(6):
        pub.publish(topic, b"%d" % i, 1)
    unacked, received = [], []
    while len(received) < 6:
        new = sub.collect(0.3)
        if not new and not unacked:
            raise AssertionError(f"stalled after {received}")
        unacked += new
        received += [m.payload for m in new]
        assert len(unacked) <= 2, f"{len(unacked)} unacked QoS 1 messages with ReceiveMaximum=2"
        if unacked:
            sub.ack(unacked.pop(0))  # ack one at a time, the oldest first
    assert received == [b"%d" % i for i in range(6)]


def test_v5_receive_maximum_does_not_limit_qos0(clients):
    topic = uniq("rm")
    r = _raw5(clients, props={"ReceiveMaximum": 1})
    r.subscribe(topic, qos=0)
    pub = clients(version=V5)
    for i in range(5):
        pub.publish(topic, b"%d" % i, 0)
    got = [r.recv_publish(3) for _ in range(5)]
    assert all(p is not None and p.qos == 0 for p in got)


# --- maximum packet size (client side) ------------------------------------------

def test_v5_client_maximum_packet_size_respected(clients):
    topic = uniq("mps")
    sub = clients(version=V5, connect_props={"MaximumPacketSize": 256})
    sub.subscribe(topic, 1)
    pub = clients(version=V5)
    pub.publish(topic, b"s" * 50, 1)
    pub.publish(topic, b"L" * 1000, 1)  # would exceed the subscriber's maximum
    pub.publish(topic, b"t" * 60, 1)
    got = [m.payload for m in sub.wait_for(2)]
    assert got == [b"s" * 50, b"t" * 60]
    sub.assert_no_message(0.3)
    assert sub.connected.is_set(), "subscriber was disconnected instead of skipping the message"


def test_v5_oversized_retained_not_sent_to_small_client(clients):
    topic = uniq("mps")
    pub = clients(version=V5)
    pub.publish(topic + "/big", b"B" * 2000, 1, retain=True)
    pub.publish(topic + "/small", b"s", 1, retain=True)
    sub = clients(version=V5, connect_props={"MaximumPacketSize": 512})
    sub.subscribe(topic + "/#", 1)
    m = sub.expect()
    assert m.payload == b"s"
    sub.assert_no_message(0.3)


# --- subscription identifiers ---------------------------------------------------

def test_v5_subscription_identifier_delivered(clients):
    b = uniq("sid")
    sub = clients(version=V5)
    sub.subscribe(f"{b}/+", 1, sub_id=1)
    sub.subscribe(f"{b}/x", 1, sub_id=2)
    sub.subscribe(f"{b}/none", 1)  # no identifier
    pub = clients(version=V5)
    pub.publish(f"{b}/x", b"both", 1)
    msgs = [sub.expect()] + sub.collect(0.3)
    ids = sorted(i for m in msgs for i in m.props.get("SubscriptionIdentifier", []))
    assert ids == [1, 2], msgs
    pub.publish(f"{b}/y", b"one", 1)
    m = sub.expect()
    assert m.props.get("SubscriptionIdentifier") == [1]
    sub.unsubscribe(f"{b}/+")
    pub.publish(f"{b}/none", b"no-id", 1)
    m = sub.expect()
    assert "SubscriptionIdentifier" not in m.props, m


def test_v5_subscription_identifier_on_retained_delivery(clients):
    topic = uniq("sid")
    clients(version=V5).publish(topic, b"r", 1, retain=True)
    sub = clients(version=V5)
    sub.subscribe(topic, 1, sub_id=4242)
    m = sub.expect()
    assert m.retain and m.props.get("SubscriptionIdentifier") == [4242]


def test_v5_subscription_identifier_updated_on_resubscribe(clients):
    topic = uniq("sid")
    sub = clients(version=V5)
    sub.subscribe(topic, 1, sub_id=5)
    sub.subscribe(topic, 1, sub_id=268435455)  # maximum value
    clients(version=V5).publish(topic, b"x", 1)
    assert sub.expect().props.get("SubscriptionIdentifier") == [268435455]


def test_v5_subscription_identifier_zero_is_protocol_error(clients, broker):
    r = _raw5(clients)
    r.send(raw.build_subscribe(5, 1, [("a/" + uniq(), 1)], props={"SubscriptionIdentifier": 0}))
    closed, _ = r.wait_closed(3)
    assert closed
    assert roundtrip_ok(broker)


# --- subscription options -------------------------------------------------------

def test_v5_no_local(clients):
    topic = uniq("nl")
    me = clients(version=V5)
    me.subscribe(topic, 1, no_local=True)
    me.publish(topic, b"mine", 1)
    clients(version=V5).publish(topic, b"theirs", 1)
    assert me.expect().payload == b"theirs"
    me.assert_no_message(0.3)


def test_v5_without_no_local_own_messages_are_received(clients):
    topic = uniq("nl")
    me = clients(version=V5)
    me.subscribe(topic, 1)
    me.publish(topic, b"mine", 1)
    assert me.expect().payload == b"mine"


@pytest.mark.parametrize("rap", [False, True], ids=["rap0", "rap1"])
def test_v5_retain_as_published(clients, rap):
    topic = uniq("rap")
    sub = clients(version=V5)
    sub.subscribe(topic, 1, retain_as_published=rap)
    clients(version=V5).publish(topic, b"live", 1, retain=True)
    m = sub.expect()
    assert m.retain is rap
    # retained messages sent because of a subscription always carry the flag
    sub2 = clients(version=V5)
    sub2.subscribe(topic, 1, retain_as_published=rap)
    assert sub2.expect().retain is True


def test_v5_retain_handling_0_sends_on_every_subscribe(clients):
    topic = uniq("rh")
    clients(version=V5).publish(topic, b"r", 1, retain=True)
    sub = clients(version=V5)
    sub.subscribe(topic, 1, retain_handling=0)
    assert sub.expect().retain
    sub.subscribe(topic, 1, retain_handling=0)
    assert sub.expect().retain


def test_v5_retain_handling_1_sends_only_for_new_subscription(clients):
    topic = uniq("rh")
    clients(version=V5).publish(topic, b"r", 1, retain=True)
    sub = clients(version=V5)
    sub.subscribe(topic, 1, retain_handling=1)
    assert sub.expect().retain
    sub.subscribe(topic, 1, retain_handling=1)  # already exists: nothing
    sub.assert_no_message(0.5)


def test_v5_retain_handling_2_never_sends_retained(clients):
    topic = uniq("rh")
    pub = clients(version=V5)
    pub.publish(topic, b"r", 1, retain=True)
    sub = clients(version=V5)
    sub.subscribe(topic, 1, retain_handling=2)
    sub.assert_no_message(0.5)
    pub.publish(topic, b"live", 1)
    assert sub.expect().payload == b"live"  # live messages still flow


def test_v5_retain_handling_3_is_protocol_error(clients, broker):
    r = _raw5(clients)
    r.send(raw.build_subscribe(5, 1, [("a/" + uniq(), 0x31)]))  # qos1 + retain handling 3
    closed, _ = r.wait_closed(3)
    assert closed
    assert roundtrip_ok(broker)


# --- properties forwarded --------------------------------------------------------

def test_v5_user_properties_forwarded_in_order(clients):
    topic = uniq("up")
    sub = clients(version=V5)
    sub.subscribe(topic, 1)
    up = [("unit", "degC"), ("site", "plant-1"), ("unit", "again"), ("ümlaut", "✓")]
    clients(version=V5).publish(topic, b"x", 1, UserProperty=up)
    assert sub.expect().props.get("UserProperty") == up


def test_v5_payload_format_indicator_and_content_type_forwarded(clients):
    topic = uniq("ct")
    sub = clients(version=V5)
    sub.subscribe(topic, 1)
    pub = clients(version=V5)
    pub.publish(topic, b'{"v": 1}', 1, PayloadFormatIndicator=1, ContentType="application/json")
    m = sub.expect()
    assert m.props.get("PayloadFormatIndicator") == 1
    assert m.props.get("ContentType") == "application/json"
    pub.publish(topic, b"\x00\xff", 1, PayloadFormatIndicator=0)
    m = sub.expect()
    assert m.props.get("PayloadFormatIndicator", 0) == 0


def test_v5_properties_forwarded_on_retained_delivery(clients):
    topic = uniq("ct")
    clients(version=V5).publish(topic, b"{}", 1, retain=True, ContentType="application/json",
                                UserProperty=[("k", "v")])
    sub = clients(version=V5)
    sub.subscribe(topic, 1)
    m = sub.expect()
    assert m.props.get("ContentType") == "application/json"
    assert m.props.get("UserProperty") == [("k", "v")]


def test_v5_request_response_round_trip(clients):
    req_topic = uniq("svc/req")
    responder = clients(version=V5)
    responder.subscribe(req_topic, 1)
    requester = clients(version=V5)
    reply_topic = uniq("svc/reply")
    requester.subscribe(reply_topic, 1)
    requester.publish(req_topic, b"get-temp", 1, ResponseTopic=reply_topic,
                      CorrelationData=b"\x00corr-42\xff")
    req = responder.expect()
    assert req.props.get("ResponseTopic") == reply_topic
    assert req.props.get("CorrelationData") == b"\x00corr-42\xff"
    responder.publish(req.props["ResponseTopic"], b"21.5", 1,
                      CorrelationData=req.props["CorrelationData"])
    resp = requester.expect()
    assert resp.topic == reply_topic and resp.payload == b"21.5"
    assert resp.props.get("CorrelationData") == b"\x00corr-42\xff"


def test_v5_properties_not_leaked_to_v311_subscriber(clients):
    topic = uniq("mixed")
    old = clients.raw(version=4)
    assert old.connect(client_id=uniq()).rc == 0
    old.subscribe(topic, qos=1)
    clients(version=V5).publish(topic, b"payload", 1, UserProperty=[("k", "v")],
                                ContentType="text/plain", MessageExpiryInterval=30)
    p = old.recv_publish(3)
    assert p is not None and p.payload == b"payload"  # 3.1.1 framing: no property bytes
