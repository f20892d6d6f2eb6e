"""Synchronous, timeout-bounded wrapper around paho-mqtt 2.x (callback API v2),
plus small utilities shared by the tests."""

from __future__ import annotations

import queue
import socket
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions

import mqtt_raw

V311 = mqtt.MQTTv311  # 4
V5 = mqtt.MQTTv5      # 5

TIMEOUT = 5.0          # default bound for anything that should happen "now"
QUIET = 0.5            # how long we watch for something that must NOT happen


def uniq(prefix: str = "t") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def wait_until(pred: Callable[[], Any], timeout: float = TIMEOUT, interval: float = 0.02):
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() >= deadline:
            return v
        time.sleep(interval)


def props(packet_type: int, **kw) -> Properties:
    """props(PacketTypes.PUBLISH, MessageExpiryInterval=5, UserProperty=[("a", "b")])"""
    p = Properties(packet_type)
    for k, v in kw.items():
        setattr(p, k, v)
    return p


def props_to_dict(p: Properties | None) -> dict[str, Any]:
    if p is None:
        return {}
    out = {}
    for name in p.names:
        attr = name.replace(" ", "")
        if hasattr(p, attr):
            out[attr] = getattr(p, attr)
    return out


@dataclass
class Msg:
    topic: str
    payload: bytes
    qos: int
    retain: bool
    dup: bool
    mid: int
    props: dict[str, Any] = field(default_factory=dict)
    received_at: float = 0.0

    def __repr__(self) -> str:
        return (f"<Msg {self.topic!r} q{self.qos} r{int(self.retain)} d{int(self.dup)} "
                f"{self.payload[:40]!r} {self.props or ''}>")


class ConnectFailed(AssertionError):
    pass


class Client:
    """paho client running its network loop in a thread, with blocking helpers.

    Automatic reconnect is disabled: a broker-side close is observable via
    `disconnected` / `disconnect_rc`.
    """

    def __init__(self, broker, client_id: str | None = None, version: int = V5,
                 clean: bool = True, session_expiry: int | None = None,
                 transport: str = "tcp", manual_ack: bool = False, keepalive: int = 30,
                 port: int | None = None, connect_props: dict | None = None,
                 username: str | None = None, password: str | bytes | None = None,
                 tls_ca: str | None = None):
        self.broker = broker
        self.version = version
        self.clean = clean
        self.client_id = uniq("c") if client_id is None else client_id
        self.keepalive = keepalive
        self.session_expiry = session_expiry
        self.connect_props = dict(connect_props or {})
        self.transport = transport
        if port is None:
            port = broker.ws_port if transport == "websockets" else broker.port
        self.port = port
        kw = {}
        if version != V5:
            kw["clean_session"] = clean
        self.c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=self.client_id,
                             protocol=version, transport=transport, manual_ack=manual_ack,
                             reconnect_on_failure=False, **kw)
        if username is not None or password is not None:
            self.c.username_pw_set(username, password)
        if tls_ca is not None:
            self.c.tls_set(ca_certs=tls_ca)
        self.c.on_connect = self._on_connect
        self.c.on_message = self._on_message
        self.c.on_subscribe = self._on_subscribe
        self.c.on_unsubscribe = self._on_unsubscribe
        self.c.on_disconnect = self._on_disconnect
        self.messages: "queue.Queue[Msg]" = queue.Queue()
        self.received: list[Msg] = []  # every message ever received, in order
        self.connected = threading.Event()
        self.disconnected = threading.Event()
        self.connack_rc: int | None = None
        self.session_present: bool | None = None
        self.connack_props: dict[str, Any] = {}
        self.disconnect_rc: int | None = None
        self.disconnect_props: dict[str, Any] = {}
        self._acks: dict[int, tuple[list[int], dict]] = {}
        self._acks_cv = threading.Condition()

    # -- callbacks ---------------------------------------------------------
    def _on_connect(self, client, userdata, flags, reason_code, properties):
        self.connack_rc = reason_code.value if isinstance(reason_code, ReasonCode) else int(reason_code)
        self.session_present = bool(flags.session_present)
        self.connack_props = props_to_dict(properties)
        self.connected.set()

    def _on_message(self, client, userdata, m):
        msg = Msg(topic=m.topic, payload=m.payload, qos=m.qos, retain=bool(m.retain),
                  dup=bool(m.dup), mid=m.mid, props=props_to_dict(getattr(m, "properties", None)),
                  received_at=time.monotonic())
        self.received.append(msg)
        self.messages.put(msg)

    def _on_subscribe(self, client, userdata, mid, reason_codes, properties):
        with self._acks_cv:
            self._acks[mid] = ([rc.value for rc in reason_codes], props_to_dict(properties))
            self._acks_cv.notify_all()

    _on_unsubscribe = _on_subscribe

    def _on_disconnect(self, client, userdata, flags, reason_code, properties):
        self.disconnect_rc = reason_code.value if isinstance(reason_code, ReasonCode) else reason_code
        self.disconnect_props = props_to_dict(properties)
        self.disconnected.set()
        self.connected.clear()

    # -- operations ---------------------------------------------------------
    def will_set(self, topic, payload=b"", qos=0, retain=False, **will_props) -> "Client":
        p = props(PacketTypes.WILLMESSAGE, **will_props) if will_props else None
        self.c.will_set(topic, payload, qos, retain, properties=p)
        return self

    def connect(self, timeout: float = TIMEOUT, expect_rc: int | None = 0) -> "Client":
        kw = {}
        if self.version == V5:
            cp = dict(self.connect_props)
            if self.session_expiry is not None:
                cp["SessionExpiryInterval"] = self.session_expiry
            kw["clean_start"] = self.clean
            if cp:
                kw["properties"] = props(PacketTypes.CONNECT, **cp)
        self.c.connect(self.broker.host, self.port, keepalive=self.keepalive, **kw)
        self.c.loop_start()
        if not self.connected.wait(timeout):
            self._stop_loop()
            raise ConnectFailed(f"no CONNACK within {timeout}s (disconnect rc={self.disconnect_rc})")
        if expect_rc is not None and self.connack_rc != expect_rc:
            raise ConnectFailed(f"CONNACK rc=0x{self.connack_rc:02x}, expected 0x{expect_rc:02x}")
        return self

    def _wait_ack(self, mid: int, timeout: float, what: str):
        with self._acks_cv:
            ok = self._acks_cv.wait_for(lambda: mid in self._acks, timeout)
            if not ok:
                raise AssertionError(f"no {what} for mid {mid} within {timeout}s")
            return self._acks.pop(mid)

    def subscribe(self, topic: str, qos: int = 0, no_local: bool = False,
                  retain_as_published: bool = False, retain_handling: int = 0,
                  sub_id: int | None = None, user_props=None, timeout: float = TIMEOUT,
                  with_props: bool = False):
        """Returns the list of SUBACK reason codes (or (codes, props) if with_props)."""
        if self.version == V5:
            opts = SubscribeOptions(qos=qos, noLocal=no_local,
                                    retainAsPublished=retain_as_published,
                                    retainHandling=retain_handling)
            p = None
            if sub_id is not None or user_props:
                kw = {}
                if sub_id is not None:
                    kw["SubscriptionIdentifier"] = sub_id
                if user_props:
                    kw["UserProperty"] = list(user_props)
                p = props(PacketTypes.SUBSCRIBE, **kw)
            rc, mid = self.c.subscribe(topic, options=opts, properties=p)
        else:
            rc, mid = self.c.subscribe(topic, qos)
        assert rc == mqtt.MQTT_ERR_SUCCESS, f"subscribe() returned {rc}"
        codes, p = self._wait_ack(mid, timeout, "SUBACK")
        return (codes, p) if with_props else codes

    def unsubscribe(self, topic: str, timeout: float = TIMEOUT, with_props: bool = False):
        rc, mid = self.c.unsubscribe(topic)
        assert rc == mqtt.MQTT_ERR_SUCCESS, f"unsubscribe() returned {rc}"
        codes, p = self._wait_ack(mid, timeout, "UNSUBACK")
        return (codes, p) if with_props else codes

    def publish(self, topic: str, payload=b"", qos: int = 0, retain: bool = False,
                wait: bool = True, timeout: float = TIMEOUT, **publish_props):
        p = props(PacketTypes.PUBLISH, **publish_props) if publish_props else None
        info = self.c.publish(topic, payload, qos, retain, properties=p)
        if wait:
            info.wait_for_publish(timeout)
            assert info.is_published(), f"publish to {topic!r} (qos {qos}) not completed in {timeout}s"
        return info

    def ack(self, msg: Msg) -> None:
        self.c.ack(msg.mid, msg.qos)

    def get(self, timeout: float = TIMEOUT) -> Msg | None:
        try:
            return self.messages.get(timeout=timeout)
        except queue.Empty:
            return None

    def expect(self, timeout: float = TIMEOUT) -> Msg:
        m = self.get(timeout)
        assert m is not None, f"{self.client_id}: no message within {timeout}s"
        return m

    def wait_for(self, n: int, timeout: float = TIMEOUT) -> list[Msg]:
        """Collect exactly n messages (asserts they arrive within timeout)."""
        out: list[Msg] = []
        deadline = time.monotonic() + timeout
        while len(out) < n:
            m = self.get(max(0.0, deadline - time.monotonic()))
            if m is None:
                raise AssertionError(f"{self.client_id}: got {len(out)}/{n} messages within "
                                     f"{timeout}s: {out[:5]}...")
            out.append(m)
        return out

    def collect(self, duration: float) -> list[Msg]:
        """Everything that arrives within `duration` seconds."""
        out: list[Msg] = []
        deadline = time.monotonic() + duration
        while True:
            m = self.get(max(0.0, deadline - time.monotonic()))
            if m is None:
                return out
            out.append(m)

    def assert_no_message(self, timeout: float = QUIET) -> None:
        m = self.get(timeout)
        assert m is None, f"{self.client_id}: unexpected message {m}"

    def disconnect(self, rc: int | None = None, timeout: float = TIMEOUT, **disconnect_props) -> None:
        reason = ReasonCode(PacketTypes.DISCONNECT, identifier=rc) if rc is not None else None
        p = props(PacketTypes.DISCONNECT, **disconnect_props) if disconnect_props else None
        if self.version == V5:
            self.c.disconnect(reasoncode=reason, properties=p)
        else:
            self.c.disconnect()
        self.disconnected.wait(timeout)
        self._stop_loop()

    def _stop_loop(self) -> None:
        """Like loop_stop(), but wakes the network thread instead of waiting
        for its 1 s select() timeout."""
        t = self.c._thread  # noqa: SLF001
        if t is None:
            return
        self.c._thread_terminate = True  # noqa: SLF001
        w = self.c._sockpairW  # noqa: SLF001
        if w is not None:
            try:
                w.send(b"0")
            except OSError:
                pass
        t.join(5)
        self.c._thread = None  # noqa: SLF001

    def kill(self) -> None:
        """Drop the TCP connection without sending DISCONNECT."""
        self._stop_loop()
        sock = self.c._sock  # noqa: SLF001 -- deliberate: abrupt close
        if sock is not None:
            inner = getattr(sock, "_socket", sock)  # websocket wrapper -> TCP socket
            try:
                inner.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            try:
                sock.close()
            except OSError:
                pass
        self.c._sock = None

    def close_quietly(self) -> None:
        try:
            self._stop_loop()
        except Exception:
            pass
        try:
            if self.c._sock is not None:
                self.c._sock.close()
        except Exception:
            pass


class ClientFactory:
    """Creates clients bound to one broker and tears them all down afterwards."""

    def __init__(self, broker):
        self.broker = broker
        self.clients: list[Client] = []
        self.raws: list[mqtt_raw.RawClient] = []

    def __call__(self, connect: bool = True, **kw) -> Client:
        kw.setdefault("version", V5)
        c = Client(self.broker, **kw)
        self.clients.append(c)
        if connect:
            c.connect()
        return c

    def raw(self, version: int = 5, timeout: float = TIMEOUT, port: int | None = None,
            **kw) -> mqtt_raw.RawClient:
        r = mqtt_raw.RawClient(self.broker.host, port or self.broker.port, version=version,
                               timeout=timeout, **kw)
        self.raws.append(r)
        return r

    def close_all(self) -> None:
        for c in self.clients:
            c.close_quietly()
        for r in self.raws:
            r.close()


def roundtrip_ok(broker, version: int = V5, timeout: float = TIMEOUT) -> bool:
    """A brand-new client pair can subscribe and get a message: the broker is healthy."""
    topic = uniq("health")
    sub = Client(broker, version=version)
    pub = Client(broker, version=version)
    try:
        sub.connect(timeout)
        sub.subscribe(topic, 1, timeout=timeout)
        pub.connect(timeout)
        pub.publish(topic, b"ping", 1, timeout=timeout)
        m = sub.get(timeout)
        return m is not None and m.payload == b"ping"
    finally:
        for c in (sub, pub):
            try:
                c.disconnect(timeout=1)
            except Exception:
                c.close_quietly()
