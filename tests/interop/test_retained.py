"""Retained messages."""

from clients import uniq


def test_new_subscriber_gets_retained_message_with_retain_flag(clients, mqtt_version):
    topic = uniq("ret")
    clients(version=mqtt_version).publish(topic, b"21.5", 1, retain=True)
    sub = clients(version=mqtt_version)
    sub.subscribe(topic, 1)
    m = sub.expect()
    assert (m.topic, m.payload, m.retain, m.qos) == (topic, b"21.5", True, 1)
    sub.assert_no_message(0.3)


def test_retained_update_replaces_previous_value(clients, mqtt_version):
    topic = uniq("ret")
    pub = clients(version=mqtt_version)
    pub.publish(topic, b"old", 1, retain=True)
    pub.publish(topic, b"new", 1, retain=True)
    sub = clients(version=mqtt_version)
    sub.subscribe(topic, 1)
    assert sub.expect().payload == b"new"
    sub.assert_no_message(0.3)


def test_retained_empty_payload_deletes(clients, mqtt_version):
    topic = uniq("ret")
    pub = clients(version=mqtt_version)
    pub.publish(topic, b"value", 1, retain=True)
    pub.publish(topic, b"", 1, retain=True)
    pub.publish(topic + "/sentinel", b"s", 1, retain=True)
    sub = clients(version=mqtt_version)
    sub.subscribe(topic, 1)
    sub.subscribe(topic + "/sentinel", 1)
    m = sub.expect()
    assert m.topic == topic + "/sentinel", f"deleted retained message was delivered: {m}"
    sub.assert_no_message(0.3)


def test_empty_retained_publish_is_still_forwarded_to_live_subscribers(clients, mqtt_version):
    topic = uniq("ret")
    sub = clients(version=mqtt_version)
    sub.subscribe(topic, 1)
    clients(version=mqtt_version).publish(topic, b"", 1, retain=True)
    m = sub.expect()
    assert m.payload == b""


def test_live_message_to_existing_subscriber_has_retain_flag_cleared(clients, mqtt_version):
    topic = uniq("ret")
    sub = clients(version=mqtt_version)
    sub.subscribe(topic, 1)
    clients(version=mqtt_version).publish(topic, b"live", 1, retain=True)
    m = sub.expect()
    assert m.payload == b"live" and m.retain is False


def test_retained_message_qos_is_downgraded_to_subscription_qos(clients, mqtt_version):
    topic = uniq("ret")
    clients(version=mqtt_version).publish(topic, b"x", 2, retain=True)
    sub = clients(version=mqtt_version)
    sub.subscribe(topic, 0)
    m = sub.expect()
    assert m.retain and m.qos == 0


def test_non_retained_publish_does_not_replace_retained(clients, mqtt_version):
    topic = uniq("ret")
    pub = clients(version=mqtt_version)
    pub.publish(topic, b"kept", 1, retain=True)
    pub.publish(topic, b"transient", 1, retain=False)
    sub = clients(version=mqtt_version)
    sub.subscribe(topic, 1)
    assert sub.expect().payload == b"kept"


def test_wildcard_subscription_gets_all_matching_retained(clients, mqtt_version):
    base = uniq("plant")
    pub = clients(version=mqtt_version)
    topics = [f"{base}/line1/temp", f"{base}/line1/press", f"{base}/line2/temp", f"{base}/other"]
    for i, t in enumerate(topics):
        pub.publish(t, str(i).encode(), 1, retain=True)
    sub = clients(version=mqtt_version)
    sub.subscribe(f"{base}/+/temp", 1)
    got = {m.topic: m.payload for m in sub.wait_for(2)}
    assert got == {topics[0]: b"0", topics[2]: b"2"}
    sub.assert_no_message(0.3)
    sub.subscribe(f"{base}/#", 1)
    got = {m.topic for m in sub.wait_for(4)}
    assert got == set(topics)


def test_resubscribe_sends_retained_again(clients, mqtt_version):
    topic = uniq("ret")
    clients(version=mqtt_version).publish(topic, b"x", 1, retain=True)
    sub = clients(version=mqtt_version)
    sub.subscribe(topic, 1)
    assert sub.expect().retain
    sub.subscribe(topic, 1)  # default retain handling (0 / 3.1.1): sent again
    m = sub.expect()
    assert m.retain and m.payload == b"x"


def test_many_retained_topics(clients, mqtt_version):
    base = uniq("many")
    pub = clients(version=mqtt_version)
    for i in range(300):
        pub.publish(f"{base}/{i}", str(i).encode(), 1, retain=True, wait=False)
    pub.publish(f"{base}/last", b"last", 1, retain=True)
    sub = clients(version=mqtt_version)
    sub.subscribe(f"{base}/#", 1)
    got = {m.topic: m.payload for m in sub.wait_for(301, timeout=10)}
    assert got[f"{base}/last"] == b"last"
    assert all(got[f"{base}/{i}"] == str(i).encode() for i in range(300))
