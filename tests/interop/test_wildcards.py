"""Topic filters: `+`, `#`, `$SYS` exclusion, shared subscriptions."""

import time

import pytest

import mqtt_raw as raw
from clients import V5, roundtrip_ok, uniq


def _deliveries(clients, version, filt, topics):
    """Subscribe with `filt`, publish one message to each topic, then a sentinel.
    Returns the topics (in `topics`) that were delivered."""
    sentinel = uniq("sentinel")
    sub = clients(version=version)
    sub.subscribe(filt, 1)
    sub.subscribe(sentinel, 1)
    pub = clients(version=version)
    for t in topics:
        pub.publish(t, t.encode(), 1)
    pub.publish(sentinel, b"end", 1)
    got = []
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        m = sub.expect()
        if m.topic == sentinel:
            break
        got.append(m.topic)
    got += [m.topic for m in sub.collect(0.2)]
    return got


def test_single_level_wildcard(clients, mqtt_version):
    b = uniq("w")
    topics = [f"{b}/a/x", f"{b}/b/x", f"{b}//x", f"{b}/a/b/x", f"{b}/a", f"{b}/a/y"]
    got = _deliveries(clients, mqtt_version, f"{b}/+/x", topics)
    assert sorted(got) == sorted([f"{b}/a/x", f"{b}/b/x", f"{b}//x"])


def test_multi_level_wildcard(clients, mqtt_version):
    b = uniq("w")
    topics = [f"{b}", f"{b}/a", f"{b}/a/b/c", f"{b}x/a", f"other/{b}"]
    got = _deliveries(clients, mqtt_version, f"{b}/#", topics)
    # `b/#` also matches the parent level `b`
    assert sorted(got) == sorted([f"{b}", f"{b}/a", f"{b}/a/b/c"])


def test_plus_at_start_and_combined_with_hash(clients, mqtt_version):
    b = uniq("w")
    topics = [f"x/{b}/1/z", f"y/{b}/2", f"x/{b}", f"x/other/1"]
    got = _deliveries(clients, mqtt_version, f"+/{b}/#", topics)
    assert sorted(got) == sorted([f"x/{b}/1/z", f"y/{b}/2", f"x/{b}"])


def test_exact_filter_is_case_sensitive(clients, mqtt_version):
    b = uniq("w")
    got = _deliveries(clients, mqtt_version, f"{b}/Temp", [f"{b}/temp", f"{b}/Temp", f"{b}/TEMP"])
    assert got == [f"{b}/Temp"]


def test_hash_alone_matches_everything_but_sys(clients, mqtt_version):
    b = uniq("w")
    topics = [f"{b}", f"{b}/a/b", f"/{b}"]
    got = _deliveries(clients, mqtt_version, "#", topics)
    assert set(topics) <= set(got)
    assert not [t for t in got if t.startswith("$")], got


def test_overlapping_subscriptions_deliver_at_least_once_with_max_qos(clients, mqtt_version):
    b = uniq("w")
    sub = clients(version=mqtt_version)
    sub.subscribe(f"{b}/#", 0)
    sub.subscribe(f"{b}/+", 1)
    sub.subscribe(f"{b}/x", 2)
    clients(version=mqtt_version).publish(f"{b}/x", b"m", 2)
    msgs = [sub.expect()] + sub.collect(0.4)
    assert 1 <= len(msgs) <= 3
    assert max(m.qos for m in msgs) == 2  # delivered at the highest granted QoS


def test_sys_topics_not_matched_by_hash_or_plus_but_by_sys_hash(clients, mqtt_version):
    wild = clients(version=mqtt_version)
    wild.subscribe("#", 0)
    wild.subscribe("+/broker/#", 0)
    wild.subscribe("+/+", 0)
    wild.subscribe("+/+/+", 0)
    sys_sub = clients(version=mqtt_version)
    sys_sub.subscribe("$SYS/#", 0)
    m = sys_sub.expect(timeout=8)  # retained / periodic $SYS updates
    assert m.topic.startswith("$SYS/")
    time.sleep(1.5)  # at least one more $SYS publication interval
    leaked = [x for x in wild.collect(0.1) if x.topic.startswith("$")]
    assert not leaked, f"$SYS topics matched by a wildcard filter: {leaked[:3]}"


def test_sys_plus_filter_matches_sys_topics(clients, mqtt_version):
    sub = clients(version=mqtt_version)
    sub.subscribe("$SYS/broker/+", 0)
    m = sub.expect(timeout=8)
    assert m.topic.startswith("$SYS/broker/") and m.topic.count("/") == 2


# --- shared subscriptions (MQTT 5.0) -------------------------------------------

def test_shared_subscription_splits_messages_between_members(clients):
    b = uniq("shared")
    members = [clients(version=V5) for _ in range(2)]
    for m in members:
        assert m.subscribe(f"$share/grp/{b}/#", 1) == [1]
    pub = clients(version=V5)
    n = 40
    for i in range(n):
        pub.publish(f"{b}/{i % 3}", str(i).encode(), 1)
    got: list = []
    deadline = time.monotonic() + 5
    while len(got) < n and time.monotonic() < deadline:
        for m in members:
            got += [(id(m), x.payload) for x in m.collect(0.05)]
    time.sleep(0.3)
    for m in members:
        got += [(id(m), x.payload) for x in m.collect(0.05)]
    payloads = sorted(int(p) for _, p in got)
    assert payloads == list(range(n)), "each message must reach exactly one group member"
    per_member = {id(m): sum(1 for who, _ in got if who == id(m)) for m in members}
    assert all(c > 0 for c in per_member.values()), f"not split between members: {per_member}"


def test_shared_and_normal_subscriptions_coexist(clients):
    b = uniq("shared")
    shared = [clients(version=V5) for _ in range(2)]
    for m in shared:
        m.subscribe(f"$share/g1/{b}", 1)
    normal = clients(version=V5)
    normal.subscribe(b, 1)
    pub = clients(version=V5)
    for i in range(10):
        pub.publish(b, str(i).encode(), 1)
    assert sorted(int(m.payload) for m in normal.wait_for(10)) == list(range(10))
    time.sleep(0.3)
    total = sum(len(m.collect(0.05)) for m in shared)
    assert total == 10


def test_two_share_groups_each_get_every_message(clients):
    b = uniq("shared")
    g1 = clients(version=V5)
    g1.subscribe(f"$share/g1/{b}", 1)
    g2 = clients(version=V5)
    g2.subscribe(f"$share/g2/{b}", 1)
    pub = clients(version=V5)
    for i in range(5):
        pub.publish(b, str(i).encode(), 1)
    assert len(g1.wait_for(5)) == 5
    assert len(g2.wait_for(5)) == 5


def test_shared_subscription_member_leaving_does_not_lose_messages(clients):
    b = uniq("shared")
    a = clients(version=V5)
    a.subscribe(f"$share/g/{b}", 1)
    c = clients(version=V5)
    c.subscribe(f"$share/g/{b}", 1)
    a.disconnect()
    pub = clients(version=V5)
    for i in range(10):
        pub.publish(b, str(i).encode(), 1)
    assert sorted(int(m.payload) for m in c.wait_for(10)) == list(range(10))


@pytest.mark.gantry_only(reason="Mosquitto 2.0 sends retained messages to new shared "
                                "subscriptions; MQTT 5.0 3.3.1.3 says only non-shared ones get them")
def test_shared_subscription_does_not_get_retained_messages(clients):
    b = uniq("shared")
    clients(version=V5).publish(b, b"retained", 1, retain=True)
    m = clients(version=V5)
    m.subscribe(f"$share/g/{b}", 1)
    m.assert_no_message(0.5)


def test_invalid_shared_subscription_filter_rejected(clients, broker):
    r = clients.raw(version=5)
    assert r.connect(client_id=uniq()).rc == 0
    # a share name must not contain wildcards
    r.send(raw.build_subscribe(5, 1, [("$share/g+x/abc", 1)]))
    p = r.first_response(3)
    if p is not None and p.type == raw.DISCONNECT:
        assert p.rc >= 0x80
        p = r.first_response(3)
    if p is None:
        assert r.closed, "invalid shared subscription neither rejected nor closed"
    else:
        assert p.type == raw.SUBACK and p.codes[0] >= 0x80, p
    assert roundtrip_ok(broker)
