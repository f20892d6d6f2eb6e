"""Data contracts: every publish to a modeled path is validated against the
plant model before routing; invalid and unmodeled messages are refused or
dead-lettered to `<enterprise>/_dlq/<topic>`, never routed nor retained, and
the model can be reloaded with SIGHUP without dropping connections.

Each test starts its own `gantry run` with a plant model written into the
test's temp dir (fixture `contract_broker`).
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import pytest

from brokers import Broker, BrokerError, gantry_bin
from clients import V5, V311, ClientFactory, uniq, wait_until

pytestmark = pytest.mark.gantry_only("data contracts are a Gantry feature")

EQUIPMENT = "acme/dallas/packaging/line-1/filler"
SPEED = f"{EQUIPMENT}/speed"
COUNT = f"{EQUIPMENT}/count"
RUNNING = f"{EQUIPMENT}/running"
STATE = f"{EQUIPMENT}/state"
NOTE = f"{EQUIPMENT}/note"
DLQ_FILTER = "acme/_dlq/#"
STATS_TOPIC = "$SYS/broker/contracts"

PAYLOAD_FORMAT_INVALID = 0x99
TOPIC_NAME_INVALID = 0x90


def model_toml(speed_max: float = 1200.0) -> str:
    return f"""
enterprise = "acme"

[[site]]
name = "dallas"

[[equipment]]
path = "{EQUIPMENT}"
class = "filler"

[equipment.tags.speed]
type = "float"
min = 0.0
max = {speed_max!r}

[equipment.tags.count]
type = "int"

[equipment.tags.running]
type = "bool"

[equipment.tags.note]
type = "string"

[equipment.tags.state]
type = "enum"
values = ["running", "idle", "faulted"]
"""


class ContractBroker(Broker):
    """A gantry broker whose config names a plant model file in its workdir."""

    def __init__(self, workdir: Path, model: str, contracts: str, extra: str = ""):
        workdir = Path(workdir)
        workdir.mkdir(parents=True, exist_ok=True)
        self.model_path = workdir / "plant.toml"
        self.model_path.write_text(model)
        extra_tables = "[contracts]\n" + contracts + ("\n\n" + extra if extra else "")
        super().__init__("gantry", workdir, gantry_extra=extra_tables)

    def _write_config(self) -> Path:
        path = super()._write_config()
        path.write_text(f'model = "{self.model_path}"\n' + path.read_text())
        return path

    def write_model(self, text: str) -> None:
        self.model_path.write_text(text)

    def sighup(self) -> None:
        assert self.proc is not None and self.proc.poll() is None
        self.proc.send_signal(signal.SIGHUP)


@pytest.fixture
def contract_broker(tmp_path, request):
    if not gantry_bin().exists():
        pytest.fail(f"gantry binary not found at {gantry_bin()}", pytrace=False)
    started: list[ContractBroker] = []
    factories: list[ClientFactory] = []

    def make(contracts: str = 'unmodeled = "dead-letter"', model: str | None = None,
             extra: str = "") -> tuple[ContractBroker, ClientFactory]:
        b = ContractBroker(tmp_path / f"cb{len(started)}", model or model_toml(), contracts, extra)
        started.append(b)
        try:
            b.start()
        except BrokerError as e:
            pytest.fail(str(e), pytrace=False)
        f = ClientFactory(b)
        factories.append(f)
        return b, f

    yield make

    for f in factories:
        f.close_all()
    failed = getattr(request.node, "rep_call", None)
    for b in started:
        code = b.stop()
        if failed is not None and failed.failed:
            print(f"\n----- {b} log tail (exit code {code}) -----\n{b.log_tail(80)}")


def track_acks(client) -> dict[int, tuple[int, dict]]:
    """Records PUBACK/PUBCOMP reason codes and properties of a paho client by mid."""
    acks: dict[int, tuple[int, dict]] = {}

    def on_publish(_c, _u, mid, reason_code, properties):
        value = reason_code.value if hasattr(reason_code, "value") else int(reason_code)
        reason = getattr(properties, "ReasonString", None) if properties is not None else None
        acks[mid] = (value, {"ReasonString": reason})

    client.c.on_publish = on_publish
    return acks


def dead_letter(dlq_sub, topic: str, timeout: float = 5.0) -> dict:
    """The next dead letter for `topic` (skipping any other)."""
    deadline = time.monotonic() + timeout
    while True:
        m = dlq_sub.get(max(0.0, deadline - time.monotonic()))
        assert m is not None, f"no dead letter for {topic} within {timeout}s"
        if m.topic == f"acme/_dlq/{topic}":
            body = json.loads(m.payload)
            body["_retain"] = m.retain
            return body


def latest_stats(sub, pred, timeout: float = 8.0) -> dict:
    """Waits for a `$SYS/broker/contracts` update satisfying `pred`."""
    last = None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        m = sub.get(max(0.0, deadline - time.monotonic()))
        if m is None:
            break
        if m.topic == STATS_TOPIC:
            last = json.loads(m.payload)
            if pred(last):
                return last
    raise AssertionError(f"no matching {STATS_TOPIC} update within {timeout}s; last: {last}")


# --- refusals -------------------------------------------------------------------

def test_v5_out_of_range_gets_0x99_with_reason_and_never_reaches_state(contract_broker):
    _, clients = contract_broker()
    sub = clients(version=V5)
    sub.subscribe(SPEED, 1)
    dlq = clients(version=V5)
    dlq.subscribe(DLQ_FILTER, 1)
    pub = clients(version=V5, client_id=uniq("press"))
    acks = track_acks(pub)

    info = pub.publish(SPEED, b"100", qos=1, retain=True)
    assert wait_until(lambda: info.mid in acks)
    assert acks[info.mid][0] == 0
    good = json.loads(sub.expect().payload)
    assert good["value"] == 100.0

    info = pub.publish(SPEED, b"1500.0", qos=1, retain=True)
    assert wait_until(lambda: info.mid in acks)
    rc, p = acks[info.mid]
    assert rc == PAYLOAD_FORMAT_INVALID
    assert p["ReasonString"] == f"{SPEED}: value 1500.0 above max 1200.0 (contract filler)"

    body = dead_letter(dlq, SPEED)
    assert body["payload"] == "1500.0"
    assert body["rule"] == "range"
    assert body["client_id"] == pub.client_id
    assert body["reason"] == p["ReasonString"]
    assert body["topic"] == SPEED
    assert body["qos"] == 1 and body["retain"] is True
    assert abs(body["received_ms"] - time.time() * 1000) < 10_000

    sub.assert_no_message()
    # The retained state is still the last valid value.
    late = clients(version=V5)
    late.subscribe(SPEED, 1)
    state = late.expect()
    assert state.retain and json.loads(state.payload)["value"] == 100.0
    late.assert_no_message()
    # The last violation per path stays visible (retained dead letter).
    late_dlq = clients(version=V5)
    late_dlq.subscribe(f"acme/_dlq/{SPEED}", 1)
    kept = late_dlq.expect()
    assert kept.retain and json.loads(kept.payload)["payload"] == "1500.0"


@pytest.mark.parametrize("version", [V311, V5], ids=["mqtt311", "mqtt5"])
@pytest.mark.parametrize("qos", [0, 1, 2])
def test_every_qos_and_protocol_is_dead_lettered(contract_broker, version, qos):
    _, clients = contract_broker()
    sub = clients(version=V5)
    sub.subscribe(SPEED, 2)
    dlq = clients(version=V5)
    dlq.subscribe(DLQ_FILTER, 1)
    raw = clients.raw(version=5 if version == V5 else 4)
    cid = uniq("raw")
    raw.connect(client_id=cid)

    ack = raw.publish(SPEED, b"fast", qos=qos)
    if qos == 0:
        assert ack is None
    elif version == V5:
        # PUBACK (QoS 1) or PUBREC (QoS 2) carries the refusal.
        assert ack.rc == PAYLOAD_FORMAT_INVALID, ack
        assert "expected float, got string" in ack.props["ReasonString"], ack
        assert SPEED in ack.props["ReasonString"]
    else:
        # 3.1.1 has no refusal codes: the flow completes normally.
        assert (ack.rc or 0) == 0, ack

    body = dead_letter(dlq, SPEED)
    assert body["rule"] == "type"
    assert body["qos"] == qos
    assert body["client_id"] == cid
    assert body["payload"] == "fast"
    sub.assert_no_message()
    # The connection is still usable.
    ok = raw.publish(SPEED, b"10", qos=1)
    assert (ok.rc or 0) == 0
    assert json.loads(sub.expect().payload)["value"] == 10.0


def test_binary_payload_is_base64_in_the_dead_letter(contract_broker):
    _, clients = contract_broker()
    dlq = clients(version=V5)
    dlq.subscribe(DLQ_FILTER, 1)
    raw = clients.raw(version=5)
    raw.connect(client_id="bin-writer")
    ack = raw.publish(COUNT, b"\xff\x00\x41", qos=1)
    assert ack.rc == PAYLOAD_FORMAT_INVALID
    assert "UTF-8" in ack.props["ReasonString"]
    body = dead_letter(dlq, COUNT)
    assert body["payload_base64"] == "/wBB"
    assert "payload" not in body
    assert body["rule"] == "shape"
    assert body["client_id"] == "bin-writer"


@pytest.mark.parametrize("topic,payload,rule,needle", [
    (STATE, b"sleeping", "enum", 'value "sleeping" is not one of running, idle, faulted'),
    (COUNT, b"1.5", "type", "expected int, got float 1.5"),
    (RUNNING, b"1", "type", "expected bool, got int 1"),
    (SPEED, b'{"value": 5, "timestamp_ms": 99999999999999}', "timestamp", "ahead of the broker clock"),
    (SPEED, b'{"value": 5, "timestamp_ms": 1000}', "timestamp", "before the earliest"),
    (SPEED, b'{"valeu": 5}', "shape", 'did you mean "value"'),
    (SPEED, b"", "shape", "empty"),
], ids=["enum", "int", "bool", "future", "past", "shape", "empty"])
def test_each_rule_is_named(contract_broker, topic, payload, rule, needle):
    _, clients = contract_broker()
    dlq = clients(version=V5)
    dlq.subscribe(DLQ_FILTER, 1)
    raw = clients.raw(version=5)
    raw.connect(client_id=uniq("r"))
    ack = raw.publish(topic, payload, qos=1)
    assert ack.rc == PAYLOAD_FORMAT_INVALID, ack
    assert needle in ack.props["ReasonString"], ack
    assert ack.props["ReasonString"].startswith(topic + ": ")
    body = dead_letter(dlq, topic)
    assert body["rule"] == rule
    assert needle in body["reason"]


def test_invalid_will_is_dead_lettered_not_routed(contract_broker):
    _, clients = contract_broker()
    sub = clients(version=V5)
    sub.subscribe(STATE, 1)
    dlq = clients(version=V5)
    dlq.subscribe(DLQ_FILTER, 1)
    dying = clients(connect=False, version=V5, client_id=uniq("dying"))
    dying.will_set(STATE, b"exploded", qos=1, retain=True)
    dying.connect()
    dying.kill()
    body = dead_letter(dlq, STATE)
    assert body["rule"] == "enum"
    assert body["client_id"] == dying.client_id
    assert body["payload"] == "exploded"
    sub.assert_no_message()


# --- canonical form -------------------------------------------------------------

def test_bare_and_json_payloads_are_routed_canonically(contract_broker):
    _, clients = contract_broker()
    sub = clients(version=V5)
    sub.subscribe(f"{EQUIPMENT}/#", 1)
    pub = clients(version=V311)
    cases = [
        (SPEED, b"42", 42.0),
        (SPEED, b" 42.5 ", 42.5),
        (COUNT, b"7", 7),
        (COUNT, b"7.0", 7),
        (RUNNING, b"true", True),
        (STATE, b"idle", "idle"),
        (STATE, b'"faulted"', "faulted"),
        (NOTE, b"hello world", "hello world"),
        (NOTE, b"42", "42"),
        (SPEED, b'{"value": 3}', 3.0),
    ]
    for topic, payload, expected in cases:
        before = int(time.time() * 1000)
        pub.publish(topic, payload, qos=1)
        m = sub.expect()
        after = int(time.time() * 1000)
        assert m.topic == topic
        body = json.loads(m.payload)
        assert body["value"] == expected and type(body["value"]) is type(expected), (payload, body)
        assert before - 50 <= body["timestamp_ms"] <= after + 50, (payload, body)
        assert list(body) == ["timestamp_ms", "value"], body
    # Given timestamps and quality are kept; a float tag always carries a float.
    pub.publish(SPEED, b'{"timestamp_ms": 1700000000000, "value": 9, "quality": "bad"}', qos=1)
    assert sub.expect().payload == b'{"timestamp_ms":1700000000000,"value":9.0,"quality":"bad"}'


# --- unmodeled paths ------------------------------------------------------------

@pytest.mark.parametrize("policy", [None, "dead-letter", "allow", "reject"])
def test_unmodeled_policy(contract_broker, policy):
    contracts = "enabled = true" if policy is None else f'unmodeled = "{policy}"'
    _, clients = contract_broker(contracts=contracts)
    topic = f"{EQUIPMENT}/{uniq('undeclared')}"
    sub = clients(version=V5)
    sub.subscribe(topic, 1)
    dlq = clients(version=V5)
    dlq.subscribe(DLQ_FILTER, 1)
    raw = clients.raw(version=5)
    cid = uniq("u")
    raw.connect(client_id=cid)
    ack = raw.publish(topic, b"raw data", qos=1)
    effective = policy or "dead-letter"  # the default of `gantry run`
    if effective == "allow":
        assert ack.rc in (None, 0), ack
        m = sub.expect()
        assert m.payload == b"raw data"
        assert "UserProperty" not in m.props, m.props
        dlq.assert_no_message()
        return
    if effective == "reject":
        assert ack.rc == TOPIC_NAME_INVALID, ack
        assert "not in the plant model" in ack.props["ReasonString"]
    else:
        assert ack.rc in (None, 0), ack
    body = dead_letter(dlq, topic)
    assert body["rule"] == "unmodeled"
    assert body["payload"] == "raw data"
    assert body["client_id"] == cid
    assert f"unmodeled policy {effective}" in body["reason"]
    sub.assert_no_message()


def test_system_subtrees_are_not_validated(contract_broker):
    _, clients = contract_broker(contracts='unmodeled = "reject"')
    sub = clients(version=V5)
    sub.subscribe("acme/dallas/_meta/#", 1)
    raw = clients.raw(version=5)
    raw.connect()
    ack = raw.publish("acme/dallas/_meta/anything", b"\xff free form", qos=1)
    assert (ack.rc or 0) in (0, 0x10), ack
    assert sub.expect().payload == b"\xff free form"


def test_mosquitto_pub_v5_sees_the_refusal(contract_broker):
    broker, clients = contract_broker()
    dlq = clients(version=V5)
    dlq.subscribe(DLQ_FILTER, 1)
    r = subprocess.run(["mosquitto_pub", "-V", "5", "-h", broker.host, "-p", str(broker.port),
                        "-q", "1", "-i", "mosq-cli", "-t", SPEED, "-m", "5000"],
                       capture_output=True, text=True, timeout=10)
    out = r.stdout + r.stderr
    assert "payload format invalid" in out.lower(), (r.returncode, out)
    body = dead_letter(dlq, SPEED)
    assert body["client_id"] == "mosq-cli"
    assert body["payload"] == "5000"
    assert body["rule"] == "range"


# --- counters -------------------------------------------------------------------

def test_counters_per_path_and_client(contract_broker):
    _, clients = contract_broker(extra="[sys]\ninterval_secs = 1")
    raw = clients.raw(version=5)
    cid = uniq("counted")
    raw.connect(client_id=cid)
    for _ in range(3):
        raw.publish(SPEED, b"-5", qos=1)
    raw.publish(STATE, b"nope", qos=1)
    raw.publish(SPEED, b"5", qos=1)
    stats_sub = clients(version=V5)
    stats_sub.subscribe(STATS_TOPIC, 0)
    s = latest_stats(stats_sub, lambda s: s["by_client"].get(cid) == 4)
    assert s["by_path"][SPEED] == 3
    assert s["by_path"][STATE] == 1
    assert s["by_rule"]["range"] == 3 and s["by_rule"]["enum"] == 1
    assert s["accepted"] >= 1 and s["invalid"] == 4
    assert s["unmodeled_policy"] == "dead-letter"
    assert s["model_generation"] == 1 and s["model_tags"] == 5


# --- reload ---------------------------------------------------------------------

def test_sighup_reload_applies_good_and_refuses_bad_models(contract_broker):
    broker, clients = contract_broker()
    sub = clients(version=V5)
    sub.subscribe(SPEED, 1)
    stats = clients(version=V5)
    stats.subscribe(STATS_TOPIC, 0)
    pub = clients(version=V5)
    raw = clients.raw(version=5)
    raw.connect()

    assert raw.publish(SPEED, b"1500", qos=1).rc == PAYLOAD_FORMAT_INVALID

    broker.write_model(model_toml(speed_max=2000.0))
    broker.sighup()
    latest_stats(stats, lambda s: s["model_generation"] == 2 and s["last_reload"]["ok"])
    assert (raw.publish(SPEED, b"1500", qos=1).rc or 0) == 0
    assert json.loads(sub.expect().payload)["value"] == 1500.0

    # A broken model: refused with its errors, generation 2 stays in force.
    broker.write_model(model_toml(speed_max=2000.0).replace('type = "int"', 'type = "integer"')
                       + "\n[[equipment]\n")
    broker.sighup()
    s = latest_stats(stats, lambda s: s["last_reload"] and not s["last_reload"]["ok"])
    assert s["model_generation"] == 2
    assert s["last_reload"]["errors"], s
    assert all(str(broker.model_path) in e for e in s["last_reload"]["errors"]), s
    assert wait_until(lambda: "reload refused" in broker.log_tail(200))
    assert (raw.publish(SPEED, b"1999", qos=1).rc or 0) == 0
    assert raw.publish(SPEED, b"2500", qos=1).rc == PAYLOAD_FORMAT_INVALID
    assert json.loads(sub.expect().payload)["value"] == 1999.0
    sub.assert_no_message()

    # Nobody was disconnected along the way.
    assert broker.alive()
    for c in (sub, stats, pub):
        assert c.connected.is_set() and not c.disconnected.is_set()
    pub.publish(SPEED, b"7", qos=1)
    assert json.loads(sub.expect().payload)["value"] == 7.0
