"""Security: default deny, identities with passwords, the built-in roles'
ACL matrix, failed-login back-off and the audit trail, checked with paho-mqtt
and the mosquitto clients against `gantry run` without anonymous access.

Identities are created with `gantry user add` (the real CLI) before the broker
starts.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest

from brokers import HOST, Broker, BrokerError, free_port, gantry_bin, port_open
from clients import V5, V311, Client, ConnectFailed, ClientFactory, uniq, wait_until

pytestmark = pytest.mark.gantry_only("identities, roles and the audit log are Gantry features")

EQUIPMENT = "acme/dallas/packaging/line-1/filler"
DATA = f"{EQUIPMENT}/speed"
COMMAND = f"{EQUIPMENT}/_cmd/speed"
OTHER_DEVICE_DATA = "acme/dallas/packaging/line-1/capper/speed"

NOT_AUTHORIZED = 0x87
BAD_CREDENTIALS = 0x86
RATE_EXCEEDED = 0x9F
V311_REFUSED_NOT_AUTHORIZED = 5
V311_REFUSED_BAD_CREDENTIALS = 4
V311_SUBACK_FAILURE = 0x80

ROLES = {
    "ada": "admin",
    "otto": "ot-engineer",
    "ida": "it-analyst",
    "sec": "security-officer",
    "filler": "device",
}

# What each built-in role may do, as its description says:
# (publish data, subscribe to data, subscribe to $SYS, command a machine,
#  publish to another device's equipment)
MATRIX = {
    "admin": (True, True, True, True, True),
    "ot-engineer": (True, True, True, True, True),
    "it-analyst": (False, True, True, False, False),
    "security-officer": (False, False, True, False, False),
    "device": (True, True, False, False, False),
}


def password_of(name: str) -> str:
    return f"correct-horse-{name}-battery"


def gantry(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([str(gantry_bin()), *args], input=stdin, capture_output=True,
                          text=True, timeout=60)


PLANT = f"""
enterprise = "acme"

[[site]]
name = "dallas"

[[equipment]]
path = "{EQUIPMENT}"

[equipment.tags.speed]
type = "float"
min = 0.0
max = 1200.0
write = true

[equipment.tags.limited]
type = "float"
write = {{ max_per_minute = 2 }}

[equipment.tags.recipe]
type = "enum"
values = ["cola", "lemon"]
write = {{ approval = "two-person" }}

[[equipment]]
path = "acme/dallas/packaging/line-1/capper"

[equipment.tags.speed]
type = "float"
"""


class SecureBroker(Broker):
    """`gantry run` with no anonymous access, a small plant model (the
    filler's speed is writable), identities made by the CLI, and besides the
    plain listener an MQTT-over-TLS one with certificates from `gantry cert`."""

    def __init__(self, workdir: Path, limits: dict | None = None):
        workdir = Path(workdir)
        self.certs = workdir / "certs"
        for args in (["ca"], ["server", "--ca", str(self.certs)]):
            r = gantry("cert", *args, "--out", str(self.certs))
            assert r.returncode == 0, r.stderr
        self.tls_port = free_port()
        extra = "\n".join([
            "[tls]",
            f'cert = "{self.certs / "server.pem"}"',
            f'key = "{self.certs / "server-key.pem"}"',
            "",
            "[mqtts]",
            f'bind = "{HOST}:{self.tls_port}"',
        ])
        super().__init__("gantry", workdir, limits=limits, gantry_extra=extra)

    @property
    def ca(self) -> str:
        return str(self.certs / "ca.pem")

    def _write_config(self) -> Path:
        path = super()._write_config()
        model = self.workdir / "plant.toml"
        model.write_text(PLANT)
        text = path.read_text().replace("[auth]\nallow_anonymous = true\n", "")
        path.write_text(f'model = "{model}"\n' + text)
        return path

    def add_user(self, name: str, role: str) -> None:
        r = gantry("user", "add", name, "--role", role, "--kind", "device" if role == "device" else "human",
                   "--password-stdin", "--data-dir", str(self.data_dir), stdin=password_of(name) + "\n")
        assert r.returncode == 0, r.stderr


@pytest.fixture
def secure(tmp_path, request):
    if not gantry_bin().exists():
        pytest.fail(f"gantry binary not found at {gantry_bin()}", pytrace=False)
    b = SecureBroker(tmp_path / "secure")
    for name, role in ROLES.items():
        b.add_user(name, role)
    try:
        b.start()
        if not wait_until(lambda: port_open(b.tls_port), 10):
            raise BrokerError("the TLS listener did not open:\n" + b.log_tail())
    except BrokerError as e:
        pytest.fail(str(e), pytrace=False)
    factory = ClientFactory(b)
    yield b, factory
    factory.close_all()
    failed = getattr(request.node, "rep_call", None)
    code = b.stop()
    if failed is not None and failed.failed:
        print(f"\n----- {b} log tail (exit code {code}) -----\n{b.log_tail(80)}")


def login(clients: ClientFactory, name: str, version: int = V5, tls: bool = False,
          **kw) -> Client:
    if tls:
        b = clients.broker
        kw.update(port=b.tls_port, tls_ca=b.ca)
    return clients(version=version, username=name, password=password_of(name),
                   client_id=uniq(name), **kw)


@pytest.mark.parametrize("version", [V5, V311])
def test_nobody_gets_in_without_an_identity(secure, version):
    """Wire-level CONNACK codes: 5.0 reason codes, 3.1.1 return codes."""
    _, clients = secure
    not_authorized = NOT_AUTHORIZED if version == V5 else V311_REFUSED_NOT_AUTHORIZED
    bad_credentials = BAD_CREDENTIALS if version == V5 else V311_REFUSED_BAD_CREDENTIALS

    def connack(**kw) -> int:
        r = clients.raw(version=version)
        try:
            return r.connect(client_id=uniq("raw"), **kw).rc
        finally:
            r.close()

    assert connack() == not_authorized
    assert connack(username="otto", password=b"not-the-password") == bad_credentials
    assert connack(username="mallory", password=b"whatever-it-is") == bad_credentials
    assert connack(username="otto") == bad_credentials
    assert connack(username="otto", password=password_of("otto").encode()) == 0
    # paho sees the same through its own mapping.
    assert login(clients, "otto", version).connack_rc == 0


def test_mosquitto_clients_log_in_with_a_password(secure):
    b, _ = secure
    base = ["-h", b.host, "-p", str(b.port), "-V", "mqttv5"]
    sub = subprocess.Popen(["mosquitto_sub", *base, "-u", "ida", "-P", password_of("ida"),
                            "-t", DATA, "-C", "1", "-W", "10"],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        # Publish until the subscriber (connecting meanwhile) has its copy.
        for _ in range(50):
            pub = subprocess.run(["mosquitto_pub", *base, "-u", "otto", "-P", password_of("otto"),
                                  "-t", DATA, "-m", "42.5", "-q", "1"],
                                 capture_output=True, text=True, timeout=10)
            assert pub.returncode == 0, pub.stderr
            if sub.poll() is not None:
                break
            time.sleep(0.1)
        out, err = sub.communicate(timeout=15)
    finally:
        sub.kill()
    assert "42.5" in out, err
    refused = subprocess.run(["mosquitto_pub", *base, "-u", "ida", "-P", "wrong-password-here",
                              "-t", DATA, "-m", "1"], capture_output=True, text=True, timeout=10)
    assert refused.returncode != 0
    assert "bad user name or password" in (refused.stderr + refused.stdout).lower(), refused.stderr


@pytest.mark.parametrize("transport", ["tcp", "tls"])
@pytest.mark.parametrize("version", [V5, V311])
@pytest.mark.parametrize("name", list(ROLES))
def test_builtin_role_acl_matrix(secure, name, version, transport):
    """Each built-in role can do exactly what its description says, over
    plain TCP and over TLS."""
    _, clients = secure
    can_publish, can_subscribe, can_sys, can_command, can_other = MATRIX[ROLES[name]]
    watcher = login(clients, "ada")
    assert watcher.subscribe("acme/#", 1) == [1]
    me = login(clients, name, version, tls=transport == "tls")

    def published(topic: str, value: float) -> bool:
        me.publish(topic, repr(value).encode(), qos=1)
        # A denied publish is acknowledged (0x87 in 5.0) and never routed.
        # Gantry routes before it acknowledges, so once the watcher has its
        # own later fence message, the probe has arrived or never will.
        fence = uniq("fence").encode()
        watcher.publish("acme/fence", fence, qos=1)
        assert wait_until(lambda: any(m.payload == fence for m in watcher.received))
        return any(m.topic == topic and json.loads(m.payload).get("value") == value
                   for m in watcher.received if m.topic == topic)

    value = float(int(time.monotonic() * 1000) % 1000) + 0.25
    assert published(DATA, value) == can_publish, f"{name}: publish data"
    assert published(COMMAND, value + 0.5) == can_command, f"{name}: command"
    assert published(OTHER_DEVICE_DATA, value) == can_other, f"{name}: other device"

    denied = NOT_AUTHORIZED if version == V5 else V311_SUBACK_FAILURE
    assert me.subscribe(f"{EQUIPMENT}/#", 1) == ([1] if can_subscribe else [denied]), f"{name}: subscribe"
    assert me.subscribe("$SYS/broker/uptime", 0) == ([0] if can_sys else [denied]), f"{name}: $SYS"
    # A shared subscription needs the permission of the filter it shares.
    shared = f"$share/g-{name}/{EQUIPMENT}/#"
    assert me.subscribe(shared, 1) == ([1] if can_subscribe else [denied]), f"{name}: shared"


def test_denied_publish_gets_0x87_with_a_reason_in_v5(secure):
    _, clients = secure
    ida = login(clients, "ida")
    acks = {}

    def on_publish(_c, _u, mid, reason_code, properties):
        acks[mid] = (reason_code.value, getattr(properties, "ReasonString", None))

    ida.c.on_publish = on_publish
    info = ida.publish(DATA, b"1", qos=1)
    assert wait_until(lambda: info.mid in acks)
    assert acks[info.mid][0] == NOT_AUTHORIZED


def test_failed_logins_back_off_then_recover(secure):
    _, clients = secure
    # Three failures are free; the fourth starts the back-off.
    for _ in range(4):
        c = clients(connect=False, username="otto", password="guess-guess-guess")
        with pytest.raises(ConnectFailed):
            c.connect(expect_rc=0)
        assert c.connack_rc == BAD_CREDENTIALS
    # Now even the right password waits its turn...
    c = clients(connect=False, username="otto", password=password_of("otto"))
    with pytest.raises(ConnectFailed):
        c.connect(expect_rc=0)
    assert c.connack_rc == RATE_EXCEEDED
    # ...until the back-off (1 s after the fourth failure) has passed.
    ok = None
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        attempt = clients(connect=False, username="otto", password=password_of("otto"))
        try:
            ok = attempt.connect(expect_rc=0)
            break
        except ConnectFailed:
            assert attempt.connack_rc == RATE_EXCEEDED
            time.sleep(0.3)
    assert ok is not None and ok.connack_rc == 0


def test_decisions_are_in_a_verifiable_audit_log(secure):
    b, clients = secure
    bad = clients(connect=False, username="ida", password="not-her-password")
    with pytest.raises(ConnectFailed):
        bad.connect(expect_rc=0)
    ida = login(clients, "ida")
    assert ida.subscribe(f"{EQUIPMENT}/#", 1) == [1]
    assert ida.subscribe("$admin/#", 0) == [NOT_AUTHORIZED]

    def records() -> list[dict]:
        r = gantry("audit", "export", "--format", "json", "--data-dir", str(b.data_dir))
        assert r.returncode == 0, r.stderr
        return json.loads(r.stdout)

    assert wait_until(lambda: any(x["type"] == "subscribe-denied" for x in records()), timeout=5)
    all_records = records()
    types = [(x["type"], x["actor"]["id"], x["outcome"]["success"]) for x in all_records]
    assert sum(1 for t in types if t[0] == "user-added") == len(ROLES)
    assert ("login-failed", "ida", False) in types
    assert ("login", "ida", True) in types
    denied = next(x for x in all_records if x["type"] == "subscribe-denied")
    assert denied["target"] == "$admin/#"
    assert denied["source"]["client_id"] == ida.client_id
    assert "it-analyst" in denied["outcome"]["reason"]
    verify = gantry("audit", "verify", "--data-dir", str(b.data_dir))
    assert verify.returncode == 0, verify.stdout + verify.stderr


# --- governed write-back -------------------------------------------------------

QUOTA_EXCEEDED = 0x97
PAYLOAD_FORMAT_INVALID = 0x99


def acks_of(client: Client) -> dict[int, tuple[int, str | None]]:
    acks: dict[int, tuple[int, str | None]] = {}

    def on_publish(_c, _u, mid, reason_code, properties):
        acks[mid] = (reason_code.value, getattr(properties, "ReasonString", None))

    client.c.on_publish = on_publish
    return acks


def command(client: Client, acks: dict, topic: str, payload: bytes) -> tuple[int, str | None]:
    info = client.publish(topic, payload, qos=1)
    assert wait_until(lambda: info.mid in acks)
    return acks[info.mid]


def test_writes_pass_the_gate_or_are_refused_with_a_reason(secure):
    b, clients = secure
    machine = login(clients, "ada")
    assert machine.subscribe(f"{EQUIPMENT}/_cmd/#", 1) == [1]
    dlq = login(clients, "ada")
    assert dlq.subscribe("acme/_dlq/#", 1) == [1]
    otto = login(clients, "otto")
    acks = acks_of(otto)

    # Allowed: permission, allow-list, in range. The machine gets the value.
    assert command(otto, acks, COMMAND, b"600")[0] == 0
    m = machine.expect()
    assert m.topic == COMMAND and json.loads(m.payload)["value"] == 600.0

    # Out of the tag's range: 0x99 with the rule, and a dead letter.
    rc, why = command(otto, acks, COMMAND, b"5000")
    assert rc == PAYLOAD_FORMAT_INVALID and "above max 1200" in why, why
    letter = json.loads(dlq.expect().payload)
    assert letter["rule"] == "write-contract" and letter["topic"] == COMMAND

    # Not on the write allow-list: the capper's speed is read-only.
    rc, why = command(otto, acks, "acme/dallas/packaging/line-1/capper/_cmd/speed", b"10")
    assert rc == NOT_AUTHORIZED and "read-only" in why, why
    assert json.loads(dlq.expect().payload)["rule"] == "write-not-allowed"

    # No `command` permission: the analyst is refused before the gate.
    ida = login(clients, "ida")
    rc, _ = command(ida, acks_of(ida), COMMAND, b"500")
    assert rc == NOT_AUTHORIZED

    # Rate limit: two writes per minute on `limited`.
    limited = f"{EQUIPMENT}/_cmd/limited"
    assert command(otto, acks, limited, b"1")[0] == 0
    assert command(otto, acks, limited, b"2")[0] == 0
    rc, why = command(otto, acks, limited, b"3")
    assert rc == QUOTA_EXCEEDED and "2 per minute" in why, why
    got = [json.loads(x.payload)["value"] for x in machine.collect(0.5) if x.topic == limited]
    assert got == [1.0, 2.0]
    machine.assert_no_message(0.2)


def test_two_person_writes_wait_for_a_second_identity(secure):
    b, clients = secure
    machine = login(clients, "ada")
    assert machine.subscribe(f"{EQUIPMENT}/_cmd/#", 1) == [1]
    recipe = f"{EQUIPMENT}/_cmd/recipe"
    otto = login(clients, "otto")
    otto_acks = acks_of(otto)
    rc, why = command(otto, otto_acks, recipe, b"lemon")
    assert rc == 0 and "approval" in why, why
    request = why.split('"approve":"')[1].split('"')[0]
    machine.assert_no_message(0.5)

    # The requester cannot approve their own write.
    rc, why = command(otto, otto_acks, recipe, json.dumps({"approve": request}).encode())
    assert rc == NOT_AUTHORIZED and "second person" in why, why
    machine.assert_no_message(0.3)

    # Someone else with `command` on the tag can.
    ada = login(clients, "ada")
    rc, _ = command(ada, acks_of(ada), recipe, json.dumps({"approve": request}).encode())
    assert rc == 0
    m = machine.expect()
    assert m.topic == recipe and json.loads(m.payload)["value"] == "lemon"

    # An approval is good once.
    rc, why = command(ada, acks_of(ada), recipe, json.dumps({"approve": request}).encode())
    assert rc == NOT_AUTHORIZED and "no pending write" in why, why

    r = gantry("audit", "export", "--format", "json", "--data-dir", str(b.data_dir))
    assert r.returncode == 0, r.stderr
    writes = [(x["type"], x["actor"]["id"]) for x in json.loads(r.stdout) if x["category"] == "write-command"]
    assert ("write-requested", "otto") in writes
    assert ("write-refused", "otto") in writes
    assert ("write-approved", "ada") in writes


# --- per-client limits ---------------------------------------------------------

MESSAGE_RATE_TOO_HIGH = 0x96
CONNECTION_RATE_EXCEEDED = 0x9F


@pytest.fixture
def limited(tmp_path, request):
    """factory(limits) -> (broker, clients) with otto and ada."""
    started = []

    def make(limits: dict):
        b = SecureBroker(tmp_path / f"limited{len(started)}", limits=limits)
        b.add_user("otto", "ot-engineer")
        b.add_user("ada", "admin")
        started.append(b)
        try:
            b.start()
        except BrokerError as e:
            pytest.fail(str(e), pytrace=False)
        f = ClientFactory(b)
        started.append(f)
        return b, f

    yield make
    failed = getattr(request.node, "rep_call", None)
    for x in reversed(started):
        if isinstance(x, ClientFactory):
            x.close_all()
        else:
            code = x.stop()
            if failed is not None and failed.failed:
                print(f"\n----- {x} log tail (exit code {code}) -----\n{x.log_tail(60)}")


def test_a_flooding_client_is_slowed_without_loss_and_others_are_not(limited):
    _, clients = limited({"max_publish_rate": 20})
    watcher = login(clients, "ada")
    assert watcher.subscribe("acme/#", 1) == [1]
    flood = login(clients, "otto")
    for i in range(100):
        flood.publish("acme/flood", str(i).encode(), qos=0, wait=False)
    # 100 messages at 20/s take about four seconds to get through; a quiet
    # client's message meanwhile is not held behind them.
    quiet = login(clients, "ada")
    quiet.publish("acme/quiet", b"hello", qos=1)
    assert wait_until(lambda: any(m.topic == "acme/quiet" for m in watcher.received))
    flooded_before = sum(1 for m in watcher.received if m.topic == "acme/flood")
    assert flooded_before < 100, "the flood was not slowed at all"
    # Slowed, not dropped: every message arrives, in order.
    assert wait_until(lambda: sum(1 for m in watcher.received if m.topic == "acme/flood") == 100,
                      timeout=30)
    got = [int(m.payload) for m in watcher.received if m.topic == "acme/flood"]
    assert got == list(range(100))
    sys_sub = login(clients, "ada")
    sys_sub.subscribe("$SYS/broker/clients/throttled", 0)
    # Retained at the last $SYS update, then refreshed every interval.
    assert wait_until(lambda: any(int(m.payload) >= 1 for m in sys_sub.received), timeout=15)


def test_a_flooding_client_can_be_disconnected_instead(limited):
    _, clients = limited({"max_publish_rate": 5, "rate_limit_action": '"disconnect"'})
    flood = login(clients, "otto")
    bystander = login(clients, "ada")
    for i in range(50):
        if flood.disconnected.is_set():
            break
        flood.publish("acme/flood", str(i).encode(), qos=0, wait=False)
    assert flood.disconnected.wait(10)
    assert flood.disconnect_rc == MESSAGE_RATE_TOO_HIGH
    # Nobody else is affected.
    assert bystander.subscribe("acme/x", 1) == [1]
    bystander.publish("acme/x", b"still here", qos=1)
    assert bystander.expect().payload == b"still here"


def test_connection_rate_is_limited_per_address(limited):
    _, clients = limited({"max_connect_rate_per_address": 3})
    codes = []
    for _ in range(6):
        r = clients.raw(version=5)
        try:
            codes.append(r.connect(client_id=uniq("burst")).rc)
        finally:
            r.close()
    # The first three are judged (and refused: no credentials), the rest of
    # the burst is turned away before authentication.
    assert codes[:3] == [NOT_AUTHORIZED] * 3, codes
    assert CONNECTION_RATE_EXCEEDED in codes[3:], codes
