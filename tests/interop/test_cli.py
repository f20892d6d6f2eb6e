"""Interop with the Debian mosquitto command line clients (mosquitto_pub,
mosquitto_sub, mosquitto_rr). Every invocation is bounded (-C / -W / timeout)."""

import shutil
import subprocess
import threading

import pytest

from clients import V5, uniq

pytestmark = pytest.mark.skipif(shutil.which("mosquitto_sub") is None,
                                reason="mosquitto-clients not installed")

VERSIONS = {4: "mqttv311", 5: "mqttv5"}
FMT = "MSG|%t|%q|%r|%p"
STDBUF = ["stdbuf", "-oL"] if shutil.which("stdbuf") else []


class Sub:
    """mosquitto_sub in the background; `ready` is set once its SUBACK arrived."""

    def __init__(self, broker, version, topic, count, qos=1, wait=5, fmt=FMT, extra=()):
        # line-buffer stdout so the SUBACK debug line is seen while it runs
        self.cmd = [*STDBUF, "mosquitto_sub", "-h", broker.host, "-p", str(broker.port),
                    "-V", VERSIONS[version], "-t", topic, "-q", str(qos), "-C", str(count),
                    "-W", str(wait), "-d", "-F", fmt, *extra]
        self.proc = subprocess.Popen(self.cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, text=True)
        self.lines: list[str] = []
        self.ready = threading.Event()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self):
        for line in self.proc.stdout:
            line = line.rstrip("\n")
            self.lines.append(line)
            if "received SUBACK" in line:
                self.ready.set()
        self.ready.set()

    def wait_ready(self, timeout=5):
        assert self.ready.wait(timeout), f"mosquitto_sub did not subscribe: {self.lines}"
        assert self.proc.poll() is None or self.messages(), f"mosquitto_sub exited: {self.lines}"

    def finish(self, timeout=10):
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            rc = self.proc.wait(5)
        self.reader.join(2)
        return rc

    def messages(self):
        return [line.split("|", 1)[1] for line in self.lines if line.startswith("MSG|")]


def pub(broker, version, topic, *args, input=None, timeout=10):
    cmd = ["mosquitto_pub", "-h", broker.host, "-p", str(broker.port), "-V", VERSIONS[version],
           "-t", topic, *args]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, input=input)
    assert r.returncode == 0, f"{cmd} failed: {r.stdout} {r.stderr}"
    return r


def sub_once(broker, version, topic, count=1, wait=3, fmt=FMT, extra=()):
    cmd = ["mosquitto_sub", "-h", broker.host, "-p", str(broker.port), "-V", VERSIONS[version],
           "-t", topic, "-C", str(count), "-W", str(wait), "-F", fmt, *extra]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=wait + 5)
    return r.returncode, [line.split("|", 1)[1] for line in r.stdout.splitlines()
                          if line.startswith("MSG|")]


@pytest.mark.parametrize("qos", [0, 1, 2])
def test_cli_pub_to_cli_sub(broker, mqtt_version, qos):
    topic = uniq("cli")
    s = Sub(broker, mqtt_version, topic, count=3, qos=2)
    s.wait_ready()
    for i in range(3):
        pub(broker, mqtt_version, topic, "-q", str(qos), "-m", f"hello-{i}")
    assert s.finish() == 0
    assert s.messages() == [f"{topic}|{qos}|0|hello-{i}" for i in range(3)]


def test_cli_pub_to_paho_sub(broker, clients, mqtt_version):
    topic = uniq("cli")
    sub = clients(version=mqtt_version)
    sub.subscribe(topic, 2)
    pub(broker, mqtt_version, topic, "-q", "2", "-m", "from-cli")
    m = sub.expect()
    assert (m.payload, m.qos) == (b"from-cli", 2)
    sub.assert_no_message(0.3)


def test_paho_pub_to_cli_sub(broker, clients, mqtt_version):
    topic = uniq("cli")
    s = Sub(broker, mqtt_version, topic, count=1, qos=1)
    s.wait_ready()
    clients(version=mqtt_version).publish(topic, b"from-paho", 1)
    assert s.finish() == 0
    assert s.messages() == [f"{topic}|1|0|from-paho"]


def test_cli_retained_round_trip(broker, mqtt_version):
    topic = uniq("cli")
    pub(broker, mqtt_version, topic, "-r", "-q", "1", "-m", "v1")
    pub(broker, mqtt_version, topic, "-r", "-q", "1", "-m", "v2")
    rc, msgs = sub_once(broker, mqtt_version, topic)
    assert rc == 0 and msgs == [f"{topic}|0|1|v2"]
    pub(broker, mqtt_version, topic, "-r", "-q", "1", "-n")  # empty retained = delete
    rc, msgs = sub_once(broker, mqtt_version, topic, wait=1)
    assert msgs == [], msgs


def test_cli_wildcard_subscription_gets_retained_set(broker, mqtt_version):
    base = uniq("cli")
    for i in range(5):
        pub(broker, mqtt_version, f"{base}/dev{i}/state", "-r", "-q", "1", "-m", f"s{i}")
    rc, msgs = sub_once(broker, mqtt_version, f"{base}/+/state", count=5)
    assert rc == 0
    assert sorted(msgs) == sorted(f"{base}/dev{i}/state|0|1|s{i}" for i in range(5))


def test_cli_pub_lines_from_stdin(broker, mqtt_version):
    topic = uniq("cli")
    s = Sub(broker, mqtt_version, topic, count=50, qos=1)
    s.wait_ready()
    pub(broker, mqtt_version, topic, "-q", "1", "-l",
        input="".join(f"line-{i}\n" for i in range(50)))
    assert s.finish() == 0
    assert s.messages() == [f"{topic}|1|0|line-{i}" for i in range(50)]


def test_cli_v5_properties_to_paho(broker, clients):
    topic = uniq("cli")
    sub = clients(version=V5)
    sub.subscribe(topic, 1)
    pub(broker, 5, topic, "-q", "1", "-m", "{}",
        "-D", "publish", "user-property", "site", "plant-1",
        "-D", "publish", "content-type", "application/json",
        "-D", "publish", "message-expiry-interval", "60")
    m = sub.expect()
    assert m.props.get("UserProperty") == [("site", "plant-1")]
    assert m.props.get("ContentType") == "application/json"
    assert 0 < m.props.get("MessageExpiryInterval", 0) <= 60


def test_paho_v5_properties_to_cli_sub(broker, clients):
    topic = uniq("cli")
    s = Sub(broker, 5, topic, count=1, qos=1, fmt="MSG|%t|%P|%C|%p")
    s.wait_ready()
    clients(version=V5).publish(topic, b"x", 1, UserProperty=[("k", "v")], ContentType="text/plain")
    assert s.finish() == 0
    assert s.messages() == [f"{topic}|k:v|text/plain|x"]


def test_cli_v5_request_response_with_mosquitto_rr(broker, clients):
    if shutil.which("mosquitto_rr") is None:
        pytest.skip("mosquitto_rr not installed")
    req = uniq("rr/req")
    responder = clients(version=V5)
    responder.subscribe(req, 1)

    def respond():
        m = responder.get(8)
        if m is not None:
            responder.publish(m.props["ResponseTopic"], b"pong:" + m.payload, 1,
                              CorrelationData=m.props.get("CorrelationData", b""))

    t = threading.Thread(target=respond, daemon=True)
    t.start()
    r = subprocess.run(["mosquitto_rr", "-h", broker.host, "-p", str(broker.port), "-t", req,
                        "-e", uniq("rr/resp"), "-m", "ping", "-W", "5"],
                       capture_output=True, text=True, timeout=10)
    t.join(5)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "pong:ping"


def test_cli_will_on_killed_subscriber(broker, clients, mqtt_version):
    topic = uniq("cli")
    watcher = clients(version=mqtt_version)
    watcher.subscribe(topic + "/will", 1)
    s = Sub(broker, mqtt_version, topic, count=1, qos=1, wait=30,
            extra=("--will-topic", topic + "/will", "--will-payload", "cli-died",
                   "--will-qos", "1"))
    s.wait_ready()
    s.proc.kill()  # SIGKILL: no DISCONNECT
    s.finish()
    assert watcher.expect(timeout=3).payload == b"cli-died"
