"""The Modbus TCP connector against an independent device: a pymodbus server
(modbus_server.py) in a subprocess on a free loopback port, polled by
`gantry run` with `[[modbus]]` devices in its site model; the namespace is
watched with paho-mqtt.

Covers: values with the right JSON types and scaling, an exception range
that publishes nothing, quality `bad` within two poll intervals of the
device going away and `good` after it returns, the health topic, and the
`gantry check` errors for a bad configuration.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from brokers import Broker, BrokerError, free_port, gantry_bin, port_open
from clients import ClientFactory

pytestmark = pytest.mark.gantry_only(reason="the Modbus connector is Gantry's")

HERE = Path(__file__).resolve().parent
FILLER = "acme/dallas/packaging/line-1/filler"
HEALTH = "acme/_sys/connectors/modbus/filler-plc"
POLL_MS = 1000
TAGS = ["speed", "count", "state", "batch", "alarm", "temperature", "running"]


def site_model(modbus_port: int, poll_ms: int = POLL_MS) -> str:
    return f"""enterprise = "acme"

[[site]]
name = "dallas"

[[equipment]]
path = "{FILLER}"

[equipment.tags.speed]
type = "float"
unit = "units/min"
[equipment.tags.count]
type = "int"
[equipment.tags.state]
type = "enum"
values = ["stopped", "running", "faulted"]
[equipment.tags.batch]
type = "string"
[equipment.tags.alarm]
type = "bool"
[equipment.tags.temperature]
type = "float"
unit = "degC"
[equipment.tags.running]
type = "bool"
[equipment.tags.pressure]
type = "float"

[[modbus]]
name = "filler-plc"
host = "127.0.0.1"
port = {modbus_port}
unit_id = 1
poll_ms = {poll_ms}
timeout_ms = 500
max_gap = 4                   # bridges the unused register 7
equipment = "{FILLER}"

[[modbus.point]]
tag = "speed"
table = "holding"
address = 0
type = "float32"
scale = 0.5

[[modbus.point]]
tag = "count"
table = "holding"
address = 2
type = "uint32"
scale = 10

[[modbus.point]]
tag = "state"
table = "holding"
address = 4
type = "uint16"
enum = {{ 0 = "stopped", 1 = "running", 2 = "faulted" }}

[[modbus.point]]
tag = "batch"
table = "holding"
address = 5
type = "string"
length = 2

[[modbus.point]]
tag = "alarm"
table = "holding"
address = 8
type = "bit"
bit = 2

[[modbus.point]]
tag = "pressure"              # not defined on the device: illegal data address
table = "holding"
address = 50
type = "int16"

[[modbus.point]]
tag = "temperature"
table = "input"
address = 0
type = "int16"
scale = 0.1
offset = -40

[[modbus.point]]
tag = "running"
table = "coil"
address = 3
type = "bool"
"""


class ModbusServer:
    """modbus_server.py in a subprocess; stop() kills it, start() brings it back."""

    def __init__(self, workdir: Path):
        self.port = free_port()
        self.log_path = workdir / "modbus_server.log"
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 15.0) -> None:
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen([sys.executable, str(HERE / "modbus_server.py"), str(self.port)],
                                     stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     start_new_session=True)
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("modbus server exited:\n" + self.log_path.read_text())
            if port_open(self.port):
                return
            time.sleep(0.05)
        raise RuntimeError("modbus server did not open its port:\n" + self.log_path.read_text())

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)
        self.proc = None


class ModelBroker(Broker):
    """`gantry run` with a site model file (with [[modbus]] devices)."""

    def __init__(self, workdir: Path, model: str):
        workdir.mkdir(parents=True, exist_ok=True)
        self.model_path = workdir / "site.toml"
        self.model_path.write_text(model)
        super().__init__("gantry", workdir, gantry_extra='[contracts]\nunmodeled = "dead-letter"')

    def _write_config(self) -> Path:
        path = super()._write_config()
        path.write_text(f'model = "{self.model_path}"\n' + path.read_text())
        return path


class Namespace:
    """Latest retained state per topic, from one subscription to acme/#."""

    def __init__(self, client):
        self.client = client
        self.latest: dict[str, dict] = {}
        self.seen: dict[str, list[dict]] = {}

    def pump(self, timeout: float = 0.1) -> None:
        m = self.client.get(timeout=timeout)
        while m is not None:
            if m.payload:
                doc = json.loads(m.payload)
                self.latest[m.topic] = doc
                self.seen.setdefault(m.topic, []).append(doc)
            m = self.client.get(timeout=0)

    def tag(self, name: str) -> dict | None:
        return self.latest.get(f"{FILLER}/{name}")

    def quality(self, name: str) -> str | None:
        doc = self.tag(name)
        return None if doc is None else doc.get("quality", "good")

    def wait(self, what: str, pred, timeout: float) -> float:
        """Waits (bounded) until pred(self); returns the seconds it took."""
        start = time.monotonic()
        deadline = start + timeout
        while True:
            self.pump()
            if pred(self):
                return time.monotonic() - start
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout}s waiting for {what}; "
                                     f"state: {json.dumps(self.latest, indent=1)}")


@pytest.fixture
def plant(tmp_path, request):
    if not gantry_bin().exists():
        pytest.fail(f"gantry binary not found at {gantry_bin()}", pytrace=False)
    server = ModbusServer(tmp_path)
    server.start()
    broker = ModelBroker(tmp_path / "gantry", site_model(server.port))
    try:
        broker.start()
    except BrokerError as e:
        server.stop()
        pytest.fail(str(e), pytrace=False)
    factory = ClientFactory(broker)
    yield server, broker, factory
    factory.close_all()
    server.stop()
    code = broker.stop()
    failed = getattr(request.node, "rep_call", None)
    if failed is not None and failed.failed:
        print(f"\n----- {broker} log tail (exit code {code}) -----\n{broker.log_tail(80)}")
        print(f"----- modbus server log -----\n{server.log_path.read_text()[-4000:]}")


def all_quality(q: str):
    return lambda ns: all(ns.quality(t) == q for t in TAGS)


def test_values_quality_and_health_follow_the_device(plant):
    server, broker, clients = plant
    sub = clients()
    sub.subscribe("acme/#")
    ns = Namespace(sub)

    ns.wait("every tag good", all_quality("good"), timeout=20)
    v = {t: ns.tag(t)["value"] for t in TAGS}
    assert v["speed"] == 600.25 and isinstance(v["speed"], float)
    assert v["count"] == 655380 and isinstance(v["count"], int) and not isinstance(v["count"], bool)
    assert v["state"] == "running"
    assert v["batch"] == "B-42"
    assert v["alarm"] is True
    assert v["running"] is True
    assert isinstance(v["temperature"], float) and abs(v["temperature"] - 25.3) < 1e-9
    for t in TAGS:
        assert isinstance(ns.tag(t)["timestamp_ms"], int)
        assert "quality" not in ns.tag(t), "good quality is omitted in the canonical form"

    # The point in the exception range never gets a made-up value.
    ns.wait("an exception counted in the health record",
            lambda ns: ns.latest.get(HEALTH, {}).get("errors", {}).get("exception", 0) >= 1, timeout=10)
    assert ns.tag("pressure") is None
    health = ns.latest[HEALTH]
    assert health["device"] == "filler-plc"
    assert health["connected"] is True
    assert health["requests_per_poll"] == 4
    assert health["points"] == 8
    assert isinstance(health["last_success_ms"], int)
    assert isinstance(health["poll_duration_ms"], int)
    assert health["identity"] == {"vendor_name": "Gantry Interop", "product_code": "PYM-1",
                                  "revision": "3.16"}
    assert set(health["errors"]) >= {"timeout", "transport", "exception"}

    # The device goes away: bad within two poll intervals, values kept.
    server.stop()
    took = ns.wait("every tag bad", all_quality("bad"), timeout=2 * POLL_MS / 1000 + 1.0)
    print(f"tags bad {took:.2f}s after the device went away (poll {POLL_MS} ms)")
    assert ns.tag("speed")["value"] == 600.25
    assert ns.tag("state")["value"] == "running"
    ns.wait("health: disconnected", lambda ns: ns.latest.get(HEALTH, {}).get("connected") is False,
            timeout=10)
    assert ns.latest[HEALTH]["last_error"]

    # It comes back: good again.
    server.start()
    ns.wait("every tag good again", all_quality("good"), timeout=40)
    ns.wait("health: connected after a reconnect",
            lambda ns: ns.latest.get(HEALTH, {}).get("connected") is True
            and ns.latest[HEALTH].get("reconnects", 0) >= 1, timeout=10)
    assert ns.tag("speed")["value"] == 600.25


def run_check(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(gantry_bin()), "check", *args], capture_output=True, text=True,
                          timeout=60)


def test_check_reports_modbus_errors_with_positions(tmp_path):
    if not gantry_bin().exists():
        pytest.fail(f"gantry binary not found at {gantry_bin()}", pytrace=False)
    good = site_model(free_port())
    path = tmp_path / "site.toml"
    path.write_text(good)
    ok = run_check(str(path))
    assert ok.returncode == 0, ok.stderr
    assert "ok (1 equipment, 8 tags)" in ok.stdout

    bad = (good.replace('type = "float32"', 'type = "float33"')
               .replace('host = "127.0.0.1"', 'host = "no-such-host.invalid"')
               .replace("address = 2\n", "address = 1\n"))
    path.write_text(bad)
    lines = bad.splitlines()
    type_line = next(i for i, l in enumerate(lines, 1) if l == 'type = "float33"')
    host_line = next(i for i, l in enumerate(lines, 1) if l.startswith("host ="))
    out = run_check(str(path))
    assert out.returncode == 1
    assert (f'{path}:{type_line}:8: modbus[0].point[0].type: unknown point type "float33" '
            f'(hint: did you mean "float32"?)') in out.stderr
    assert f'{path}:{host_line}:9: modbus[0].host: cannot resolve host "no-such-host.invalid"' in out.stderr

    js = run_check(str(path), "--format", "json")
    assert js.returncode == 1
    doc = json.loads(js.stdout)
    assert doc["ok"] is False
    fields = [e["field"] for e in doc["errors"]]
    assert "modbus[0].point[0].type" in fields and "modbus[0].host" in fields

    # Overlap (speed is float32 at 0..1, count now starts at 1) is reported
    # once the type is fixed.
    path.write_text(bad.replace('type = "float33"', 'type = "float32"'))
    out = run_check(str(path))
    assert "overlaps modbus[0].point[0]" in out.stderr, out.stderr


def test_check_probe_reports_unreachable_devices(tmp_path):
    if not gantry_bin().exists():
        pytest.fail(f"gantry binary not found at {gantry_bin()}", pytrace=False)
    path = tmp_path / "site.toml"
    path.write_text(site_model(free_port()))
    assert run_check(str(path)).returncode == 0
    out = run_check(str(path), "--probe")
    assert out.returncode == 1
    assert 'device "filler-plc" is unreachable at 127.0.0.1:' in out.stderr, out.stderr


def test_released_writes_reach_the_device_and_are_audited(tmp_path, request):
    """A write that passes the gate (command permission, allow-list, range)
    is performed on the device (an independent pymodbus server) and audited
    as executed; a refused one never reaches it."""
    if not gantry_bin().exists():
        pytest.fail(f"gantry binary not found at {gantry_bin()}", pytrace=False)
    from pymodbus.client import ModbusTcpClient

    from clients import V5, uniq, wait_until

    server = ModbusServer(tmp_path)
    server.start()
    model = site_model(server.port)
    # The site allows writes to speed (float32 with scale 0.5), state (an
    # enum register) and running (a coil); alarm stays read-only.
    for tag in ("speed", "state", "running"):
        model = model.replace(f"[equipment.tags.{tag}]\n", f"[equipment.tags.{tag}]\nwrite = true\n", 1)
    broker = ModelBroker(tmp_path / "gantry", model)
    user = subprocess.run([str(gantry_bin()), "user", "add", "otto", "--role", "ot-engineer",
                           "--password-stdin", "--data-dir", str(broker.data_dir)],
                          input="correct-horse-otto\n", capture_output=True, text=True, timeout=60)
    assert user.returncode == 0, user.stderr
    broker.start()
    clients = ClientFactory(broker)
    device = ModbusTcpClient("127.0.0.1", port=server.port)
    try:
        sub = clients()
        sub.subscribe("acme/#")
        ns = Namespace(sub)
        ns.wait("every tag good", all_quality("good"), timeout=20)
        assert device.connect()
        otto = clients(version=V5, username="otto", password="correct-horse-otto",
                       client_id=uniq("otto"))

        otto.publish(f"{FILLER}/_cmd/speed", b"700.5", qos=1)
        # 700.5 / scale 0.5 = 1401.0 as float32 in holding 0-1.
        def speed_register():
            r = device.read_holding_registers(0, count=2, device_id=1)
            return device.convert_from_registers(r.registers, device.DATATYPE.FLOAT32)
        assert wait_until(lambda: speed_register() == 1401.0, timeout=10), speed_register()
        ns.wait("the new speed in the namespace", lambda ns: ns.tag("speed")["value"] == 700.5, 10)

        otto.publish(f"{FILLER}/_cmd/state", b"faulted", qos=1)
        assert wait_until(
            lambda: device.read_holding_registers(4, count=1, device_id=1).registers == [2], 10)
        otto.publish(f"{FILLER}/_cmd/running", b"false", qos=1)
        assert wait_until(
            lambda: device.read_coils(3, count=1, device_id=1).bits[0] is False, 10)

        # Refused by the gate (alarm is not on the allow-list): the refusal
        # is the PUBACK the publish waited for, so the write was never
        # routed, and the device keeps its bit.
        otto.publish(f"{FILLER}/_cmd/alarm", b"false", qos=1)
        assert device.read_holding_registers(8, count=1, device_id=1).registers == [0b100]

        def audit_types():
            r = subprocess.run([str(gantry_bin()), "audit", "export", "--format", "json",
                                "--data-dir", str(broker.data_dir)],
                               capture_output=True, text=True, timeout=60)
            assert r.returncode == 0, r.stderr
            return [(x["type"], x.get("target")) for x in json.loads(r.stdout)
                    if x["category"] == "write-command"]
        assert wait_until(lambda: ("write-executed", f"{FILLER}/running") in audit_types(), 10), \
            audit_types()
        types = audit_types()
        assert ("write-executed", f"{FILLER}/speed") in types
        assert ("write-executed", f"{FILLER}/state") in types
        assert ("write-refused", f"{FILLER}/alarm") in types
    finally:
        device.close()
        clients.close_all()
        server.stop()
        code = broker.stop()
        failed = getattr(request.node, "rep_call", None)
        if failed is not None and failed.failed:
            print(f"\n----- {broker} log tail (exit code {code}) -----\n{broker.log_tail(80)}")
