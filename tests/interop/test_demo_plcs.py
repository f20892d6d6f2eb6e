"""The demo plant's simulated PLCs are real Modbus TCP devices: an independent
client (pymodbus) reads the same registers the Modbus connector polls, and
what it reads agrees with what `gantry demo` publishes over MQTT (paho).
"""

from __future__ import annotations

import json
import struct
import subprocess
import time

import pytest
from pymodbus.client import ModbusTcpClient

from brokers import HOST, free_port, gantry_bin, port_open
from clients import wait_until

pytestmark = pytest.mark.gantry_only(reason="the demo plant is Gantry's")

STATES = ["running", "idle", "starved", "blocked", "faulted", "changeover", "planned-stop"]
FILLER = "acme/dallas/packaging/line-1/filler"
HEALTH = "acme/_sys/connectors/modbus/line-1-filler-plc"


@pytest.fixture
def demo(tmp_path):
    if not gantry_bin().exists():
        pytest.fail(f"gantry binary not found at {gantry_bin()}", pytrace=False)
    mqtt_port, ws_port = free_port(), free_port()
    log = open(tmp_path / "demo.log", "w")
    # The PLCs take free ports (0); the connector's health record says which.
    proc = subprocess.Popen(
        [str(gantry_bin()), "demo", "--data-dir", str(tmp_path / "data"),
         "--mqtt-port", str(mqtt_port), "--ws-port", str(ws_port),
         "--modbus-base-port", "0", "--console-port", "0"],
        stdout=log, stderr=subprocess.STDOUT)
    try:
        assert wait_until(lambda: port_open(mqtt_port), 20), (tmp_path / "demo.log").read_text()
        yield mqtt_port
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


class Mqtt:
    def __init__(self, clients_module_port: int):
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion
        self.values: dict[str, object] = {}
        self.c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="demo-plc-test")
        self.c.on_message = lambda _c, _u, m: self.values.__setitem__(
            m.topic, json.loads(m.payload).get("value") if m.payload.startswith(b"{\"timestamp")
            else json.loads(m.payload))
        # Subscribe once connected (paho does not queue a SUBSCRIBE before).
        self.c.on_connect = lambda c, _u, _f, _rc, _p: c.subscribe(
            [(f"{FILLER}/#", 0), (HEALTH, 0)])
        self.c.connect(HOST, clients_module_port)
        self.c.loop_start()

    def close(self):
        self.c.loop_stop()
        self.c.disconnect()


def test_a_pymodbus_client_reads_what_the_namespace_shows(demo):
    mqtt_port = demo
    watcher = Mqtt(mqtt_port)
    assert wait_until(lambda: HEALTH in watcher.values, 10), watcher.values
    plc = ModbusTcpClient(HOST, port=watcher.values[HEALTH]["port"])
    assert plc.connect()
    try:
        assert wait_until(lambda: f"{FILLER}/state" in watcher.values, 10)
        regs = plc.read_input_registers(0, count=29, device_id=1)
        assert not regs.isError(), regs
        r = regs.registers
        state = STATES[r[0]]
        good = (r[1] << 16) | r[2]
        speed = struct.unpack(">f", struct.pack(">HH", r[5], r[6]))[0]
        energy = struct.unpack(">d", struct.pack(">HHHH", *r[9:13]))[0]
        reason = b"".join(struct.pack(">H", w) for w in r[13:29]).split(b"\0")[0].decode()
        assert energy > 0 and good >= 0 and speed >= 0
        # The namespace follows the registers within a poll or two.
        def agrees():
            v = watcher.values
            return (v.get(f"{FILLER}/state") == state
                    and v.get(f"{FILLER}/state_reason") == reason
                    and isinstance(v.get(f"{FILLER}/good_count"), int)
                    and v.get(f"{FILLER}/good_count") >= good
                    and isinstance(v.get(f"{FILLER}/energy"), float)
                    and v.get(f"{FILLER}/energy") >= energy)
        assert wait_until(agrees, 10), (state, reason, good, energy, watcher.values)
        # Exceptions for addresses past the register bank.
        bad = plc.read_input_registers(127, count=2, device_id=1)
        assert bad.isError()
        # Device identification (43/14), as the asset inventory reads it.
        ident = plc.read_device_information(device_id=1)
        assert not ident.isError(), ident
        assert ident.information[0] == b"Gantry simulated PLC"
        assert ident.information[1] == b"filler"
    finally:
        watcher.close()
        plc.close()
