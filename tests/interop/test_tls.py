"""Transport security with Python's ssl module under paho-mqtt 2.x: MQTT 3.1.1
and 5.0 over TLS (mqtts) and over secure WebSocket (wss), server-only TLS and
client certificates (mutual TLS) mapped to identities.

Certificates come from `gantry cert` ($GANTRY_BIN); the broker is `gantry run`
with [tls], [mqtts] and [wss] beside the suite's usual plain listeners. Every
wait is bounded.
"""

from __future__ import annotations

import queue
import ssl
import subprocess
import threading

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from brokers import HOST, Broker, BrokerError, free_port, gantry_bin, port_open
from clients import TIMEOUT, uniq, wait_until

pytestmark = pytest.mark.gantry_only(reason="TLS listeners configured the Gantry way")


def gantry(*args: str) -> str:
    out = subprocess.run([str(gantry_bin()), *args], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, f"gantry {args}: {out.stderr}"
    return out.stdout


class TlsSite:
    def __init__(self, workdir):
        self.certs = workdir / "certs"
        self.other = workdir / "other-ca"
        gantry("cert", "ca", "--out", str(self.certs))
        gantry("cert", "server", "--ca", str(self.certs), "--out", str(self.certs))
        for name in ("plc-1", "stranger"):
            gantry("cert", "client", "--ca", str(self.certs), "--out", str(self.certs),
                   "--name", name)
        gantry("cert", "ca", "--out", str(self.other), "--name", "Some other CA")
        self.mqtts_port = free_port()
        self.wss_port = free_port()
        extra = "\n".join([
            "[tls]",
            f'cert = "{self.certs / "server.pem"}"',
            f'key = "{self.certs / "server-key.pem"}"',
            f'client_ca = "{self.certs / "ca.pem"}"',
            "",
            "[mqtts]",
            f'bind = "{HOST}:{self.mqtts_port}"',
            "",
            "[wss]",
            f'bind = "{HOST}:{self.wss_port}"',
        ])
        self.broker = Broker("gantry", workdir / "broker", gantry_extra=extra)
        # plc-1 may log in with its certificate (common name = identity).
        gantry("user", "add", "plc-1", "--role", "admin", "--kind", "device", "--certificate",
               "--no-password", "--config", str(self.broker.config_path))

    def start(self):
        self.broker.start()
        ok = wait_until(lambda: port_open(self.mqtts_port) and port_open(self.wss_port), 10)
        if not ok:
            raise BrokerError("TLS listeners did not open:\n" + self.broker.log_tail())

    def cert(self, name: str) -> str:
        return str(self.certs / name)


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    if not gantry_bin().exists():
        pytest.fail(f"gantry binary not found at {gantry_bin()}", pytrace=False)
    s = TlsSite(tmp_path_factory.mktemp("tls"))
    try:
        s.start()
    except BrokerError as e:
        pytest.fail(str(e), pytrace=False)
    yield s
    s.broker.stop()


class Client:
    """A paho client over TLS: connect() returns the CONNACK reason code."""

    def __init__(self, site: TlsSite, version: int, transport: str = "tcp",
                 identity: str | None = None, ca: str | None = None):
        self.site = site
        self.transport = transport
        self.c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=uniq("tls"),
                             protocol=version, transport=transport)
        if transport == "websockets":
            self.c.ws_set_options(path="/mqtt")
        certfile = site.cert(f"{identity}.pem") if identity else None
        keyfile = site.cert(f"{identity}-key.pem") if identity else None
        self.c.tls_set(ca_certs=ca or site.cert("ca.pem"), certfile=certfile, keyfile=keyfile)
        self.connack: queue.Queue = queue.Queue()
        self.messages: queue.Queue = queue.Queue()
        self.subscribed = threading.Event()
        self.c.on_connect = lambda c, u, flags, rc, props: self.connack.put(rc)
        self.c.on_message = lambda c, u, m: self.messages.put(m)
        self.c.on_subscribe = lambda c, u, mid, rcs, props: self.subscribed.set()

    def connect(self):
        port = self.site.wss_port if self.transport == "websockets" else self.site.mqtts_port
        self.c.connect(HOST, port, keepalive=30)
        self.c.loop_start()
        return self.connack.get(timeout=TIMEOUT)

    def close(self):
        try:
            self.c.disconnect()
        finally:
            self.c.loop_stop()


def connected(site, version, **kw) -> Client:
    c = Client(site, version, **kw)
    rc = c.connect()
    assert not rc.is_failure, f"CONNACK {rc}"
    return c


@pytest.mark.parametrize("version", [mqtt.MQTTv311, mqtt.MQTTv5], ids=["mqtt311", "mqtt5"])
@pytest.mark.parametrize("transport", ["tcp", "websockets"], ids=["mqtts", "wss"])
def test_delivery_over_tls_with_and_without_client_certificate(site, version, transport):
    topic = "acme/dallas/" + uniq("tls")
    # The subscriber logs in with its certificate (identity plc-1), the
    # publisher with server-only TLS (anonymous, allowed by the suite config).
    sub = connected(site, version, transport=transport, identity="plc-1")
    pub = connected(site, version, transport=transport)
    try:
        sub.c.subscribe(topic, qos=1)
        assert sub.subscribed.wait(TIMEOUT), "no SUBACK"
        info = pub.c.publish(topic, b"secure", qos=1)
        info.wait_for_publish(TIMEOUT)
        m = sub.messages.get(timeout=TIMEOUT)
        assert (m.topic, m.payload, m.qos) == (topic, b"secure", 1)
    finally:
        sub.close()
        pub.close()


@pytest.mark.parametrize("version", [mqtt.MQTTv311, mqtt.MQTTv5], ids=["mqtt311", "mqtt5"])
def test_certificate_without_an_identity_is_refused_at_connect(site, version):
    c = Client(site, version, identity="stranger")
    try:
        rc = c.connect()
        assert rc.is_failure, f"CONNACK {rc}"
    finally:
        c.c.loop_stop()


def test_client_refuses_a_server_from_another_ca(site):
    c = Client(site, mqtt.MQTTv5, ca=str(site.other / "ca.pem"))
    with pytest.raises(ssl.SSLCertVerificationError):
        c.c.connect(HOST, site.mqtts_port, keepalive=30)
    # ... and the broker goes on serving everyone else.
    connected(site, mqtt.MQTTv5, identity="plc-1").close()
