"""A tiny, dependency-free MQTT 3.1.1 / 5.0 packet codec and raw socket client.

Used by the interop tests when they need byte-level control that a real client
library would hide: not acknowledging messages, sending malformed packets,
observing DUP flags, topic aliases, exact reason codes, or simply closing the
socket without a DISCONNECT.

Every blocking call takes a timeout; nothing here waits forever.
"""

from __future__ import annotations

import socket
import struct
import time
from dataclasses import dataclass, field
from typing import Any, Iterable

# Packet types
CONNECT, CONNACK, PUBLISH, PUBACK, PUBREC, PUBREL, PUBCOMP = 1, 2, 3, 4, 5, 6, 7
SUBSCRIBE, SUBACK, UNSUBSCRIBE, UNSUBACK, PINGREQ, PINGRESP, DISCONNECT, AUTH = (
    8, 9, 10, 11, 12, 13, 14, 15)

PACKET_NAMES = {
    1: "CONNECT", 2: "CONNACK", 3: "PUBLISH", 4: "PUBACK", 5: "PUBREC",
    6: "PUBREL", 7: "PUBCOMP", 8: "SUBSCRIBE", 9: "SUBACK", 10: "UNSUBSCRIBE",
    11: "UNSUBACK", 12: "PINGREQ", 13: "PINGRESP", 14: "DISCONNECT", 15: "AUTH",
}

# MQTT 5.0 property identifiers: id -> (name, type)
_BYTE, _U16, _U32, _VARINT, _STR, _BIN, _PAIR = range(7)
PROPERTIES = {
    0x01: ("PayloadFormatIndicator", _BYTE),
    0x02: ("MessageExpiryInterval", _U32),
    0x03: ("ContentType", _STR),
    0x08: ("ResponseTopic", _STR),
    0x09: ("CorrelationData", _BIN),
    0x0B: ("SubscriptionIdentifier", _VARINT),
    0x11: ("SessionExpiryInterval", _U32),
    0x12: ("AssignedClientIdentifier", _STR),
    0x13: ("ServerKeepAlive", _U16),
    0x15: ("AuthenticationMethod", _STR),
    0x16: ("AuthenticationData", _BIN),
    0x17: ("RequestProblemInformation", _BYTE),
    0x18: ("WillDelayInterval", _U32),
    0x19: ("RequestResponseInformation", _BYTE),
    0x1A: ("ResponseInformation", _STR),
    0x1C: ("ServerReference", _STR),
    0x1F: ("ReasonString", _STR),
    0x21: ("ReceiveMaximum", _U16),
    0x22: ("TopicAliasMaximum", _U16),
    0x23: ("TopicAlias", _U16),
    0x24: ("MaximumQoS", _BYTE),
    0x25: ("RetainAvailable", _BYTE),
    0x26: ("UserProperty", _PAIR),
    0x27: ("MaximumPacketSize", _U32),
    0x28: ("WildcardSubscriptionAvailable", _BYTE),
    0x29: ("SubscriptionIdentifierAvailable", _BYTE),
    0x2A: ("SharedSubscriptionAvailable", _BYTE),
}
PROPERTY_IDS = {name: (pid, typ) for pid, (name, typ) in PROPERTIES.items()}
MULTI_VALUED = {"UserProperty", "SubscriptionIdentifier"}


class ConnectionClosed(Exception):
    """The peer closed (or reset) the connection."""


class MalformedPacket(Exception):
    pass


# ---------------------------------------------------------------------------
# Primitive encoders / decoders
# ---------------------------------------------------------------------------

def encode_varint(n: int) -> bytes:
    if n < 0 or n > 268_435_455:
        raise ValueError(f"varint out of range: {n}")
    out = bytearray()
    while True:
        b = n % 128
        n //= 128
        if n:
            b |= 0x80
        out.append(b)
        if not n:
            return bytes(out)


def decode_varint(buf: bytes, pos: int = 0) -> tuple[int, int]:
    """Returns (value, new_pos). Raises MalformedPacket on >4 bytes."""
    mult, value = 1, 0
    for i in range(4):
        if pos >= len(buf):
            raise IndexError("incomplete varint")
        b = buf[pos]
        pos += 1
        value += (b & 0x7F) * mult
        if not b & 0x80:
            return value, pos
        mult *= 128
    raise MalformedPacket("varint longer than 4 bytes")


def encode_bin(b: bytes) -> bytes:
    return struct.pack("!H", len(b)) + b


def encode_str(s: str | bytes) -> bytes:
    if isinstance(s, str):
        s = s.encode("utf-8")
    return encode_bin(s)


def _to_bytes(x: str | bytes | bytearray | None) -> bytes:
    if x is None:
        return b""
    if isinstance(x, str):
        return x.encode("utf-8")
    return bytes(x)


def encode_properties(props: dict[str, Any] | Iterable[tuple[str, Any]] | None) -> bytes:
    """Encode MQTT 5 properties. `props` is a dict name->value (UserProperty:
    list of (k, v); SubscriptionIdentifier: int or list) or a list of pairs."""
    if not props:
        return encode_varint(0)
    items = props.items() if isinstance(props, dict) else props
    body = bytearray()
    for name, value in items:
        pid, typ = PROPERTY_IDS[name]
        values = value if (name in MULTI_VALUED and isinstance(value, list)) else [value]
        for v in values:
            body += encode_varint(pid)
            if typ == _BYTE:
                body += struct.pack("!B", v)
            elif typ == _U16:
                body += struct.pack("!H", v)
            elif typ == _U32:
                body += struct.pack("!I", v)
            elif typ == _VARINT:
                body += encode_varint(v)
            elif typ == _STR:
                body += encode_str(v)
            elif typ == _BIN:
                body += encode_bin(_to_bytes(v))
            elif typ == _PAIR:
                k, val = v
                body += encode_str(k) + encode_str(val)
    return encode_varint(len(body)) + bytes(body)


def decode_properties(buf: bytes, pos: int) -> tuple[dict[str, Any], int]:
    length, pos = decode_varint(buf, pos)
    end = pos + length
    if end > len(buf):
        raise MalformedPacket("property length exceeds packet")
    props: dict[str, Any] = {}
    while pos < end:
        pid, pos = decode_varint(buf, pos)
        if pid not in PROPERTIES:
            raise MalformedPacket(f"unknown property id 0x{pid:02x}")
        name, typ = PROPERTIES[pid]
        if typ == _BYTE:
            v = buf[pos]
            pos += 1
        elif typ == _U16:
            (v,) = struct.unpack_from("!H", buf, pos)
            pos += 2
        elif typ == _U32:
            (v,) = struct.unpack_from("!I", buf, pos)
            pos += 4
        elif typ == _VARINT:
            v, pos = decode_varint(buf, pos)
        elif typ in (_STR, _BIN):
            (n,) = struct.unpack_from("!H", buf, pos)
            raw = buf[pos + 2:pos + 2 + n]
            pos += 2 + n
            v = raw.decode("utf-8") if typ == _STR else bytes(raw)
        else:  # pair
            (n,) = struct.unpack_from("!H", buf, pos)
            k = buf[pos + 2:pos + 2 + n].decode("utf-8")
            pos += 2 + n
            (n,) = struct.unpack_from("!H", buf, pos)
            val = buf[pos + 2:pos + 2 + n].decode("utf-8")
            pos += 2 + n
            v = (k, val)
        if name in MULTI_VALUED:
            props.setdefault(name, []).append(v)
        else:
            props[name] = v
    return props, end


def fixed_header(ptype: int, flags: int, body_len: int) -> bytes:
    return bytes([(ptype << 4) | (flags & 0x0F)]) + encode_varint(body_len)


def packet(ptype: int, flags: int, body: bytes) -> bytes:
    return fixed_header(ptype, flags, len(body)) + body


# ---------------------------------------------------------------------------
# Packet builders (return raw bytes, so tests can also corrupt them)
# ---------------------------------------------------------------------------

def build_connect(version: int = 5, client_id: str | bytes = "", clean: bool = True,
                  keepalive: int = 60, props: dict | None = None,
                  will: dict | None = None, username: str | None = None,
                  password: bytes | None = None, protocol_name: bytes = b"MQTT",
                  level: int | None = None, flags_override: int | None = None) -> bytes:
    """will = dict(topic=..., payload=..., qos=0, retain=False, props={...})"""
    level = version if level is None else level
    flags = 0
    if clean:
        flags |= 0x02
    if will:
        flags |= 0x04 | ((will.get("qos", 0) & 3) << 3)
        if will.get("retain"):
            flags |= 0x20
    if password is not None:
        flags |= 0x40
    if username is not None:
        flags |= 0x80
    if flags_override is not None:
        flags = flags_override
    body = encode_str(protocol_name) + bytes([level, flags]) + struct.pack("!H", keepalive)
    v5 = version == 5
    if v5:
        body += encode_properties(props)
    body += encode_str(client_id)
    if will:
        if v5:
            body += encode_properties(will.get("props"))
        body += encode_str(will["topic"]) + encode_bin(_to_bytes(will.get("payload", b"")))
    if username is not None:
        body += encode_str(username)
    if password is not None:
        body += encode_bin(_to_bytes(password))
    return packet(CONNECT, 0, body)


def build_publish(version: int, topic: str | bytes, payload: bytes | str = b"", qos: int = 0,
                  retain: bool = False, dup: bool = False, pid: int | None = None,
                  props: dict | None = None) -> bytes:
    flags = (0x08 if dup else 0) | ((qos & 3) << 1) | (0x01 if retain else 0)
    body = encode_str(topic)
    if qos > 0:
        body += struct.pack("!H", pid if pid is not None else 1)
    if version == 5:
        body += encode_properties(props)
    body += _to_bytes(payload)
    return packet(PUBLISH, flags, body)


def build_ack(version: int, ptype: int, pid: int, rc: int = 0, props: dict | None = None) -> bytes:
    flags = 0x02 if ptype == PUBREL else 0
    body = struct.pack("!H", pid)
    if version == 5 and (rc != 0 or props):
        body += bytes([rc])
        if props:
            body += encode_properties(props)
    return packet(ptype, flags, body)


def build_subscribe(version: int, pid: int, filters: list, props: dict | None = None) -> bytes:
    """filters: list of (filter, options_byte) or (filter, qos) for 3.1.1."""
    body = struct.pack("!H", pid)
    if version == 5:
        body += encode_properties(props)
    for f, opts in filters:
        body += encode_str(f) + bytes([opts])
    return packet(SUBSCRIBE, 0x02, body)


def sub_options(qos: int = 0, no_local: bool = False, retain_as_published: bool = False,
                retain_handling: int = 0) -> int:
    return (qos & 3) | (0x04 if no_local else 0) | (0x08 if retain_as_published else 0) | (
        (retain_handling & 3) << 4)


def build_unsubscribe(version: int, pid: int, filters: list[str], props: dict | None = None) -> bytes:
    body = struct.pack("!H", pid)
    if version == 5:
        body += encode_properties(props)
    for f in filters:
        body += encode_str(f)
    return packet(UNSUBSCRIBE, 0x02, body)


def build_disconnect(version: int, rc: int = 0, props: dict | None = None) -> bytes:
    if version == 5 and (rc != 0 or props):
        body = bytes([rc]) + (encode_properties(props) if props else b"")
        return packet(DISCONNECT, 0, body)
    return packet(DISCONNECT, 0, b"")


PINGREQ_BYTES = bytes([0xC0, 0x00])


# ---------------------------------------------------------------------------
# Decoded packets
# ---------------------------------------------------------------------------

@dataclass
class Packet:
    type: int
    flags: int
    body: bytes
    # decoded fields (populated depending on type)
    pid: int | None = None
    rc: int | None = None
    codes: list[int] = field(default_factory=list)
    props: dict[str, Any] = field(default_factory=dict)
    session_present: bool | None = None
    topic: str | None = None
    topic_bytes: bytes | None = None
    payload: bytes | None = None
    qos: int = 0
    dup: bool = False
    retain: bool = False

    @property
    def name(self) -> str:
        return PACKET_NAMES.get(self.type, f"type{self.type}")

    def __repr__(self) -> str:  # compact, useful in assertion messages
        parts = [self.name]
        if self.type == PUBLISH:
            parts.append(f"topic={self.topic!r} qos={self.qos} dup={int(self.dup)} "
                         f"retain={int(self.retain)} pid={self.pid} payload={self.payload[:40]!r}")
        else:
            if self.pid is not None:
                parts.append(f"pid={self.pid}")
            if self.rc is not None:
                parts.append(f"rc=0x{self.rc:02x}")
            if self.codes:
                parts.append("codes=[" + ",".join(f"0x{c:02x}" for c in self.codes) + "]")
            if self.session_present is not None:
                parts.append(f"sp={int(self.session_present)}")
        if self.props:
            parts.append(f"props={self.props}")
        return "<" + " ".join(parts) + ">"


def decode_packet(version: int, first: int, body: bytes) -> Packet:
    ptype, flags = first >> 4, first & 0x0F
    p = Packet(ptype, flags, body)
    v5 = version == 5
    if ptype == CONNACK:
        p.session_present = bool(body[0] & 0x01)
        p.rc = body[1]
        if v5 and len(body) > 2:
            p.props, _ = decode_properties(body, 2)
    elif ptype == PUBLISH:
        p.qos = (flags >> 1) & 3
        p.dup = bool(flags & 0x08)
        p.retain = bool(flags & 0x01)
        (n,) = struct.unpack_from("!H", body, 0)
        p.topic_bytes = bytes(body[2:2 + n])
        try:
            p.topic = p.topic_bytes.decode("utf-8")
        except UnicodeDecodeError:
            p.topic = None
        pos = 2 + n
        if p.qos > 0:
            (p.pid,) = struct.unpack_from("!H", body, pos)
            pos += 2
        if v5:
            p.props, pos = decode_properties(body, pos)
        p.payload = bytes(body[pos:])
    elif ptype in (PUBACK, PUBREC, PUBREL, PUBCOMP):
        (p.pid,) = struct.unpack_from("!H", body, 0)
        p.rc = 0
        if v5 and len(body) > 2:
            p.rc = body[2]
            if len(body) > 3:
                p.props, _ = decode_properties(body, 3)
    elif ptype in (SUBACK, UNSUBACK):
        (p.pid,) = struct.unpack_from("!H", body, 0)
        pos = 2
        if v5:
            p.props, pos = decode_properties(body, pos)
        p.codes = list(body[pos:])
    elif ptype == DISCONNECT:
        p.rc = 0
        if v5 and len(body) >= 1:
            p.rc = body[0]
            if len(body) > 1:
                p.props, _ = decode_properties(body, 1)
    elif ptype == AUTH:
        p.rc = body[0] if body else 0
        if len(body) > 1:
            p.props, _ = decode_properties(body, 1)
    return p


# ---------------------------------------------------------------------------
# Raw client
# ---------------------------------------------------------------------------

class RawClient:
    """A blocking socket MQTT client with explicit, timeout-bounded operations.

    PUBLISH packets that arrive while waiting for something else are kept in
    `self.inbox` and returned (in order) by `recv_publish`.
    """

    def __init__(self, host: str, port: int, version: int = 5, timeout: float = 5.0,
                 rcvbuf: int | None = None):
        self.version = version
        self.timeout = timeout
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf is not None:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(timeout)
        self.sock.connect((host, port))
        self.buf = bytearray()
        self.inbox: list[Packet] = []
        self.others: list[Packet] = []
        self._next_pid = 0
        self.closed = False

    # -- low level -----------------------------------------------------
    def send(self, data: bytes) -> None:
        try:
            self.sock.sendall(data)
        except OSError as e:  # EPIPE / ECONNRESET
            self.closed = True
            raise ConnectionClosed(str(e)) from e

    def next_pid(self) -> int:
        self._next_pid = self._next_pid % 65535 + 1
        return self._next_pid

    def _fill(self, deadline: float) -> bool:
        """Read more bytes. Returns False on timeout; raises ConnectionClosed on EOF."""
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        self.sock.settimeout(remaining)
        try:
            chunk = self.sock.recv(65536)
        except socket.timeout:
            return False
        except OSError as e:  # ECONNRESET etc.
            self.closed = True
            raise ConnectionClosed(str(e)) from e
        if not chunk:
            self.closed = True
            raise ConnectionClosed("EOF")
        self.buf += chunk
        return True

    def _try_parse(self) -> Packet | None:
        if len(self.buf) < 2:
            return None
        try:
            length, pos = decode_varint(self.buf, 1)
        except IndexError:
            return None
        if len(self.buf) < pos + length:
            return None
        first = self.buf[0]
        body = bytes(self.buf[pos:pos + length])
        del self.buf[:pos + length]
        return decode_packet(self.version, first, body)

    def recv_packet(self, timeout: float | None = None) -> Packet | None:
        """Next packet from the wire (ignores inbox). None on timeout."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while True:
            p = self._try_parse()
            if p is not None:
                return p
            if not self._fill(deadline):
                return None

    def expect(self, ptype: int, timeout: float | None = None) -> Packet:
        """Wait for a packet of `ptype`; PUBLISHes seen meanwhile go to inbox,
        anything else to `others`. Raises AssertionError on timeout."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while True:
            p = self.recv_packet(max(0.0, deadline - time.monotonic()))
            if p is None:
                raise AssertionError(f"timed out waiting for {PACKET_NAMES[ptype]}")
            if p.type == ptype:
                return p
            if p.type == PUBLISH:
                self.inbox.append(p)
            else:
                self.others.append(p)

    def recv_publish(self, timeout: float | None = None) -> Packet | None:
        if self.inbox:
            return self.inbox.pop(0)
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while True:
            p = self.recv_packet(max(0.0, deadline - time.monotonic()))
            if p is None:
                return None
            if p.type == PUBLISH:
                return p
            self.others.append(p)

    def wait_closed(self, timeout: float) -> tuple[bool, list[Packet]]:
        """Read (and collect) packets until the peer closes the connection.
        Returns (closed, packets_seen)."""
        seen: list[Packet] = []
        deadline = time.monotonic() + timeout
        try:
            while True:
                p = self.recv_packet(max(0.0, deadline - time.monotonic()))
                if p is None:
                    if time.monotonic() >= deadline:
                        return False, seen
                    continue
                seen.append(p)
        except ConnectionClosed:
            return True, seen
        except MalformedPacket:
            return False, seen

    def first_response(self, timeout: float) -> Packet | None:
        """The next packet, or None if the connection was closed (or nothing
        arrived within timeout; check `self.closed` to tell the two apart)."""
        try:
            return self.recv_packet(timeout)
        except ConnectionClosed:
            return None

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass
        self.closed = True

    def abort(self) -> None:
        """Close abruptly with a TCP RST (SO_LINGER 0), no DISCONNECT."""
        try:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
        self.close()

    # -- MQTT operations ----------------------------------------------------
    def connect(self, client_id: str = "", clean: bool = True, keepalive: int = 60,
                props: dict | None = None, will: dict | None = None,
                timeout: float | None = None, **kw) -> Packet:
        self.send(build_connect(self.version, client_id, clean, keepalive, props, will, **kw))
        return self.expect(CONNACK, timeout)

    def subscribe(self, filters, qos: int = 0, props: dict | None = None,
                  timeout: float | None = None) -> Packet:
        """filters: str, or list of str, or list of (filter, options_byte)."""
        if isinstance(filters, str):
            filters = [filters]
        norm = [(f, qos) if isinstance(f, str) else f for f in filters]
        pid = self.next_pid()
        self.send(build_subscribe(self.version, pid, norm, props))
        ack = self.expect(SUBACK, timeout)
        assert ack.pid == pid, f"SUBACK pid {ack.pid} != {pid}"
        return ack

    def unsubscribe(self, filters, props: dict | None = None, timeout: float | None = None) -> Packet:
        if isinstance(filters, str):
            filters = [filters]
        pid = self.next_pid()
        self.send(build_unsubscribe(self.version, pid, filters, props))
        ack = self.expect(UNSUBACK, timeout)
        assert ack.pid == pid, f"UNSUBACK pid {ack.pid} != {pid}"
        return ack

    def send_publish(self, topic, payload=b"", qos=0, retain=False, dup=False, pid=None,
                     props=None) -> int | None:
        if qos > 0 and pid is None:
            pid = self.next_pid()
        self.send(build_publish(self.version, topic, payload, qos, retain, dup, pid, props))
        return pid

    def publish(self, topic, payload=b"", qos=0, retain=False, props=None,
                timeout: float | None = None) -> Packet | None:
        """Publish and complete the QoS flow. Returns PUBACK / PUBCOMP (or None for QoS 0)."""
        pid = self.send_publish(topic, payload, qos, retain, props=props)
        if qos == 1:
            ack = self.expect(PUBACK, timeout)
            assert ack.pid == pid
            return ack
        if qos == 2:
            rec = self.expect(PUBREC, timeout)
            assert rec.pid == pid
            if rec.rc is not None and rec.rc >= 0x80:
                return rec
            self.send(build_ack(self.version, PUBREL, pid))
            comp = self.expect(PUBCOMP, timeout)
            assert comp.pid == pid
            return comp
        return None

    def ack(self, p: Packet) -> None:
        """Acknowledge a received PUBLISH (PUBACK for QoS1, PUBREC for QoS2)."""
        if p.qos == 1:
            self.send(build_ack(self.version, PUBACK, p.pid))
        elif p.qos == 2:
            self.send(build_ack(self.version, PUBREC, p.pid))

    def puback(self, pid): self.send(build_ack(self.version, PUBACK, pid))
    def pubrec(self, pid): self.send(build_ack(self.version, PUBREC, pid))
    def pubrel(self, pid): self.send(build_ack(self.version, PUBREL, pid))
    def pubcomp(self, pid): self.send(build_ack(self.version, PUBCOMP, pid))

    def ping(self, timeout: float | None = None) -> Packet:
        self.send(PINGREQ_BYTES)
        return self.expect(PINGRESP, timeout)

    def disconnect(self, rc: int = 0, props: dict | None = None) -> None:
        try:
            self.send(build_disconnect(self.version, rc, props))
        except ConnectionClosed:
            pass
        self.close()
