"""MQTT over WebSocket (subprotocol "mqtt", path "/mqtt"), interoperating with TCP."""

import base64
import hashlib
import os
import socket

from clients import uniq


def _ws(clients, version, **kw):
    return clients(version=version, transport="websockets", **kw)


def test_websocket_connect(clients, mqtt_version):
    c = _ws(clients, mqtt_version)
    assert c.connack_rc == 0


def test_websocket_publish_reaches_tcp_subscriber(clients, mqtt_version):
    topic = uniq("ws")
    tcp = clients(version=mqtt_version)
    tcp.subscribe(topic, 1)
    ws = _ws(clients, mqtt_version)
    ws.publish(topic, b"from-ws", 1)
    m = tcp.expect()
    assert (m.payload, m.qos) == (b"from-ws", 1)


def test_tcp_publish_reaches_websocket_subscriber(clients, mqtt_version):
    topic = uniq("ws")
    ws = _ws(clients, mqtt_version)
    ws.subscribe(topic, 2)
    clients(version=mqtt_version).publish(topic, b"from-tcp", 2)
    m = ws.expect()
    assert (m.payload, m.qos) == (b"from-tcp", 2)


def test_websocket_to_websocket_large_payload(clients, mqtt_version):
    topic = uniq("ws")
    a = _ws(clients, mqtt_version)
    a.subscribe(topic, 1)
    b = _ws(clients, mqtt_version)
    payload = os.urandom(40_000)  # spans several WebSocket frames
    b.publish(topic, payload, 1)
    assert a.expect().payload == payload


def test_websocket_retained_and_will(clients, mqtt_version):
    topic = uniq("ws")
    clients(version=mqtt_version).publish(topic + "/r", b"retained", 1, retain=True)
    ws = _ws(clients, mqtt_version)
    ws.subscribe(topic + "/#", 1)
    assert ws.expect().payload == b"retained"
    dying = _ws(clients, mqtt_version, connect=False)
    dying.will_set(topic + "/will", b"ws-gone", 1)
    dying.connect()
    dying.kill()
    assert ws.expect(timeout=3).payload == b"ws-gone"


def test_websocket_many_messages_in_order(clients, mqtt_version):
    topic = uniq("ws")
    ws = _ws(clients, mqtt_version)
    ws.subscribe(topic, 1)
    pub = clients(version=mqtt_version)
    for i in range(300):
        pub.publish(topic, b"%d" % i, 1, wait=False)
    got = [m.payload for m in ws.wait_for(300, timeout=10)]
    assert got == [b"%d" % i for i in range(300)]


def _handshake(broker, protocols="mqtt", path="/mqtt"):
    key = base64.b64encode(os.urandom(16)).decode()
    req = (f"GET {path} HTTP/1.1\r\nHost: {broker.host}:{broker.ws_port}\r\n"
           "Upgrade: websocket\r\nConnection: Upgrade\r\n"
           f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
           + (f"Sec-WebSocket-Protocol: {protocols}\r\n" if protocols else "") + "\r\n")
    s = socket.create_connection((broker.host, broker.ws_port), timeout=3)
    try:
        s.sendall(req.encode())
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
    finally:
        s.close()
    head = data.split(b"\r\n\r\n")[0].decode("latin-1")
    lines = head.split("\r\n")
    headers = {}
    for line in lines[1:]:
        if ":" in line:
            k, v = line.split(":", 1)
            headers[k.strip().lower()] = v.strip()
    accept = base64.b64encode(hashlib.sha1(
        (key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode()).digest()).decode()
    return lines[0] if lines else "", headers, accept


def test_websocket_handshake_negotiates_mqtt_subprotocol(broker):
    status, headers, accept = _handshake(broker)
    assert " 101 " in status + " ", status
    assert headers.get("sec-websocket-protocol", "").lower() == "mqtt"
    assert headers.get("sec-websocket-accept") == accept


def test_websocket_port_survives_non_websocket_garbage(broker, clients):
    s = socket.create_connection((broker.host, broker.ws_port), timeout=3)
    try:
        s.sendall(b"\x10\x0c\x00\x04MQTT\x04\x02\x00\x3c\x00\x00")  # raw MQTT, no HTTP upgrade
        s.settimeout(3)
        try:
            s.recv(100)
        except (socket.timeout, OSError):
            pass
    finally:
        s.close()
    c = _ws(clients, 5)
    assert c.connack_rc == 0
