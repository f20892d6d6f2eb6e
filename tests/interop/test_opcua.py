"""The OPC UA client connector against an independent server: Python
`asyncua` (opcua_server.py) in a subprocess on a free loopback port, read by
`gantry run` with `[[opcua]]` servers in its site model; the namespace is
watched with paho-mqtt.

Covers: values of several OPC UA types converted to the tags' contract types
(an enum from an integer index), browse-based mapping (a folder, including a
variable added later and picked up on re-browse), quality `bad` after the
server is killed and `good` after it restarts without duplicated monitored
items, the health topic with the server's BuildInfo, Basic256Sha256
SignAndEncrypt with a username after `gantry opcua trust` (the unknown server
certificate is first rejected and reported), and `gantry check` errors.
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

pytestmark = pytest.mark.gantry_only(reason="the OPC UA connector is Gantry's")

HERE = Path(__file__).resolve().parent
MIXER = "acme/dallas/mixing/line-1/mixer"
TAGS = ["temperature", "count", "running", "recipe", "mode", "good", "scrap"]


def site_model(port: int, secure: bool = False, password_file: Path | None = None) -> str:
    security = ""
    if secure:
        security = f'''security_policy = "Basic256Sha256"
security_mode = "SignAndEncrypt"
username = "operator"
password_file = "{password_file}"
'''
    return f"""enterprise = "acme"

[[site]]
name = "dallas"

[[equipment]]
path = "{MIXER}"

[equipment.tags.temperature]
type = "float"
[equipment.tags.count]
type = "int"
[equipment.tags.running]
type = "bool"
[equipment.tags.recipe]
type = "string"
[equipment.tags.mode]
type = "enum"
values = ["idle", "mixing", "cleaning"]
[equipment.tags.good]
type = "int"
[equipment.tags.scrap]
type = "int"
[equipment.tags.rework]
type = "int"

[[opcua]]
name = "mixer-server"
endpoint = "opc.tcp://127.0.0.1:{port}/gantry/"
{security}equipment = "{MIXER}"
publishing_ms = 200
timeout_ms = 3000

[[opcua.node]]
tag = "temperature"
node_id = "ns=2;s=Mixer.Temperature"
sampling_ms = 100
queue_size = 5
deadband = 0.1

[[opcua.node]]
tag = "count"
node_id = "ns=2;s=Mixer.Count"

[[opcua.node]]
tag = "running"
node_id = "ns=2;s=Mixer.Running"

[[opcua.node]]
tag = "recipe"
node_id = "ns=2;s=Mixer.Recipe"

[[opcua.node]]
tag = "mode"
node_id = "ns=2;s=Mixer.Mode"

[[opcua.browse]]
folder = "ns=2;s=Mixer.Counters"   # Good, Scrap (and Extra, not a model tag)
rebrowse_s = 1
"""


class OpcUaServer:
    """opcua_server.py in a subprocess; stop() kills it, start() brings it back
    (same port, same certificate)."""

    def __init__(self, workdir: Path):
        self.port = free_port()
        self.pki = workdir / "server-pki"
        self.commands = workdir / "server-commands"
        self.log_path = workdir / "opcua_server.log"
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 30.0) -> None:
        self.commands.write_text("")
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, str(HERE / "opcua_server.py"), str(self.port), str(self.pki), str(self.commands)],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("opcua server exited:\n" + self.log_path.read_text())
            if port_open(self.port):
                return
            time.sleep(0.1)
        raise RuntimeError("opcua server did not open its port:\n" + self.log_path.read_text())

    def command(self, line: str) -> None:
        with open(self.commands, "a") as f:
            f.write(line + "\n")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)
        self.proc = None


class ModelBroker(Broker):
    """`gantry run` with a site model file (with [[opcua]] servers)."""

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

    def pump(self, timeout: float = 0.1) -> None:
        m = self.client.get(timeout=timeout)
        while m is not None:
            if m.payload:
                self.latest[m.topic] = json.loads(m.payload)
            m = self.client.get(timeout=0)

    def tag(self, name: str) -> dict | None:
        return self.latest.get(f"{MIXER}/{name}")

    def quality(self, name: str) -> str | None:
        doc = self.tag(name)
        return None if doc is None else doc.get("quality", "good")

    def health(self) -> dict:
        return self.latest.get("acme/_sys/connectors/opcua/mixer-server", {})

    def wait(self, what: str, pred, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            self.pump()
            if pred(self):
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout}s waiting for {what}; "
                                     f"state: {json.dumps(self.latest, indent=1)}")


def all_quality(q: str):
    return lambda ns: all(ns.quality(t) == q for t in TAGS)


@pytest.fixture
def setup(tmp_path, request):
    if not gantry_bin().exists():
        pytest.fail(f"gantry binary not found at {gantry_bin()}", pytrace=False)
    server = OpcUaServer(tmp_path)
    server.start()
    started: list[ModelBroker] = []

    def start_gantry(model: str) -> tuple[ModelBroker, ClientFactory]:
        broker = ModelBroker(tmp_path / "gantry", model)
        try:
            broker.start()
        except BrokerError as e:
            pytest.fail(str(e), pytrace=False)
        started.append(broker)
        return broker, ClientFactory(broker)

    yield server, start_gantry, tmp_path
    server.stop()
    for broker in started:
        code = broker.stop()
        failed = getattr(request.node, "rep_call", None)
        if failed is not None and failed.failed:
            print(f"\n----- {broker} log tail (exit code {code}) -----\n{broker.log_tail(80)}")
            print(f"----- opcua server log -----\n{server.log_path.read_text()[-4000:]}")


def test_values_browse_and_restart(setup):
    server, start_gantry, _ = setup
    _, clients = start_gantry(site_model(server.port))
    sub = clients()
    sub.subscribe("acme/#")
    ns = Namespace(sub)

    ns.wait("every tag good", all_quality("good"), timeout=30)
    v = {t: ns.tag(t)["value"] for t in TAGS}
    assert v["temperature"] == 21.5 and isinstance(v["temperature"], float)
    assert v["count"] == 42 and isinstance(v["count"], int) and not isinstance(v["count"], bool)
    assert v["running"] is True
    assert v["recipe"] == "R-7"
    assert v["mode"] == "mixing", "an Int32 1 is the enum's second value"
    assert v["good"] == 10 and v["scrap"] == 2, "browsed from the Counters folder"
    for t in TAGS:
        assert isinstance(ns.tag(t)["timestamp_ms"], int)
    assert not any(t.endswith("/extra") for t in ns.latest), "Extra has no model tag"

    ns.wait("health with BuildInfo", lambda ns: ns.health().get("items") == 7, timeout=10)
    h = ns.health()
    assert h["connected"] is True and h["insecure"] is True
    assert h["security_policy"] == "None" and h["security_mode"] == "None"
    assert h["server"]["application_uri"] == "urn:gantry:test:server"
    assert h["server"]["build_info"] == {"product_name": "Test Server", "manufacturer_name": "Gantry Interop",
                                         "software_version": "2.1.0", "build_number": "42"}

    # Changes arrive; a change within the deadband (0.1) does not.
    server.command("set Count 43")
    server.command("set Temperature 30.25")
    ns.wait("new values", lambda ns: ns.tag("count")["value"] == 43
            and ns.tag("temperature")["value"] == 30.25, timeout=10)

    # A variable added to the folder is picked up on re-browse.
    server.command("add Rework 5")
    ns.wait("browsed rework", lambda ns: (ns.tag("rework") or {}).get("value") == 5, timeout=15)
    ns.wait("8 items", lambda ns: ns.health().get("items") == 8, timeout=5)

    # The server goes away: every tag bad, last values kept.
    server.stop()
    ns.wait("every tag bad", all_quality("bad"), timeout=30)
    assert ns.tag("count")["value"] == 43
    assert ns.tag("mode")["value"] == "mixing"
    ns.wait("health: disconnected", lambda ns: ns.health().get("connected") is False, timeout=10)
    assert ns.health()["last_error"]

    # It comes back: good again, one monitored item per tag.
    server.start()
    ns.wait("every tag good again", all_quality("good"), timeout=60)
    ns.wait("health: reconnected", lambda ns: ns.health().get("connected") is True
            and ns.health().get("reconnects", 0) >= 1 and ns.health().get("items") == 7, timeout=15)
    assert ns.tag("count")["value"] == 42, "the restarted server starts from its initial values"


def test_secure_endpoint_with_username_after_trust(setup):
    server, start_gantry, tmp_path = setup
    pw = tmp_path / "password"
    pw.write_text("secret\n")
    broker, clients = start_gantry(site_model(server.port, secure=True, password_file=pw))
    sub = clients()
    sub.subscribe("acme/#")
    ns = Namespace(sub)

    # The unknown server certificate is rejected and reported.
    ns.wait("untrusted certificate reported",
            lambda ns: "server certificate not trusted" in (ns.health().get("last_error") or ""), timeout=30)
    assert "gantry opcua trust" in ns.health()["last_error"]
    assert ns.health()["connected"] is False
    assert ns.tag("temperature") is None
    data_dir = broker.data_dir
    certs = subprocess.run([str(gantry_bin()), "opcua", "certs", "--data-dir", str(data_dir)],
                           capture_output=True, text=True, timeout=30)
    assert certs.returncode == 0, certs.stderr
    assert "rejected: 1" in certs.stdout and "trusted: 0" in certs.stdout

    trust = subprocess.run([str(gantry_bin()), "opcua", "trust", "--data-dir", str(data_dir), "--all"],
                           capture_output=True, text=True, timeout=30)
    assert trust.returncode == 0, trust.stderr
    assert trust.stdout.startswith("trusted ")

    ns.wait("every tag good over Basic256Sha256", all_quality("good"), timeout=60)
    assert ns.tag("temperature")["value"] == 21.5
    h = ns.health()
    assert h["connected"] is True and h["insecure"] is False
    assert h["security_policy"] == "Basic256Sha256" and h["security_mode"] == "SignAndEncrypt"


def run_check(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(gantry_bin()), "check", *args], capture_output=True, text=True, timeout=60)


def test_check_reports_opcua_errors_with_positions(tmp_path):
    if not gantry_bin().exists():
        pytest.fail(f"gantry binary not found at {gantry_bin()}", pytrace=False)
    good = site_model(free_port(), secure=True, password_file=tmp_path / "pw")
    path = tmp_path / "site.toml"
    path.write_text(good)
    ok = run_check(str(path))
    assert ok.returncode == 0, ok.stderr
    assert "ok (1 equipment, 8 tags)" in ok.stdout

    bad = (good.replace('security_policy = "Basic256Sha256"', 'security_policy = "Basic256sha256"')
               .replace('node_id = "ns=2;s=Mixer.Count"', 'node_id = "ns=2;q=Mixer.Count"')
               .replace("publishing_ms", "publish_ms"))
    path.write_text(bad)
    lines = bad.splitlines()
    policy_line = next(i for i, l in enumerate(lines, 1) if l.startswith("security_policy"))
    node_line = next(i for i, l in enumerate(lines, 1) if "q=Mixer.Count" in l)
    pub_line = next(i for i, l in enumerate(lines, 1) if l.startswith("publish_ms"))
    out = run_check(str(path))
    assert out.returncode == 1
    assert (f'{path}:{policy_line}:20: opcua[0].security_policy: unknown security policy "Basic256sha256" '
            f'(hint: did you mean "Basic256Sha256"?)') in out.stderr
    assert f'{path}:{node_line}:12: opcua[0].node[1].node_id: "ns=2;q=Mixer.Count" is not a node id' in out.stderr
    assert (f'{path}:{pub_line}:1: opcua[0].publish_ms: unknown field '
            f'(hint: did you mean "publishing_ms"?)') in out.stderr

    path.write_text(good.replace('password_file = ', 'password_fil = '))
    out = run_check(str(path))
    assert out.returncode == 1
    assert 'opcua[0].username: username "operator" has no password source' in out.stderr
