"""Historian: every accepted value of a modeled tag is stored, and a QoS 1
value is acknowledged only once its row is durable, so a `kill -9` during
heavy ingest loses nothing that was acknowledged. The history file is read
back with Python's own sqlite3 module (an independent reader) and with the
`gantry history` command line.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from pathlib import Path

import pytest

from brokers import BrokerError, gantry_bin
from clients import V5, V311, ClientFactory, wait_until
from test_contracts import ContractBroker

pytestmark = pytest.mark.gantry_only("the historian is a Gantry feature")

EQUIPMENT = "acme/dallas/packaging/line-1/filler"
TAGS = [f"t{i}" for i in range(12)]


def model_toml() -> str:
    tags = "\n".join(f'[equipment.tags.{t}]\ntype = "int"\n' for t in TAGS)
    return f"""
enterprise = "acme"

[[site]]
name = "dallas"

[[equipment]]
path = "{EQUIPMENT}"
class = "filler"

{tags}
[equipment.tags.speed]
type = "float"

[equipment.tags.state]
type = "enum"
values = ["running", "idle", "faulted"]
"""


@pytest.fixture
def history_broker(tmp_path, request):
    if not gantry_bin().exists():
        pytest.fail(f"gantry binary not found at {gantry_bin()}", pytrace=False)
    # fsync makes each commit slow enough that a crash always catches values
    # in flight between arrival and durability: the window the gate covers.
    b = ContractBroker(tmp_path / "hb", model_toml(), 'unmodeled = "dead-letter"',
                       extra="[historian]\nfsync = true")
    f = ClientFactory(b)
    request.addfinalizer(f.close_all)
    request.addfinalizer(b.stop)
    try:
        b.start()
    except BrokerError as e:
        pytest.fail(str(e), pytrace=False)
    return b, f


def history_db(broker) -> Path:
    return Path(broker.data_dir) / "history" / "history.sqlite"


def stored(broker) -> dict[str, dict[int, tuple]]:
    """topic -> ts_ms -> (value, quality), read with Python's sqlite3."""
    con = sqlite3.connect(history_db(broker))
    try:
        rows = con.execute(
            "SELECT s.topic, p.ts_ms, coalesce(p.txt, p.num), p.quality "
            "FROM points p JOIN series s ON s.id = p.series_id").fetchall()
    finally:
        con.close()
    out: dict[str, dict[int, tuple]] = {}
    for topic, ts, value, quality in rows:
        out.setdefault(topic, {})[ts] = (value, quality)
    return out


def sample(ts: int, value, quality: str | None = None) -> bytes:
    d = {"timestamp_ms": ts, "value": value}
    if quality:
        d["quality"] = quality
    return json.dumps(d).encode()


def test_values_of_modeled_tags_are_recorded_with_their_timestamps(history_broker):
    broker, f = history_broker
    c = f(version=V5)
    base = int(time.time() * 1000) - 60_000
    c.publish(f"{EQUIPMENT}/speed", sample(base, 12.5), 1)
    c.publish(f"{EQUIPMENT}/speed", sample(base + 1000, 13.0, "uncertain"), 1)
    c.publish(f"{EQUIPMENT}/state", b"running", 1)  # bare payload: receive time
    c.publish(f"{EQUIPMENT}/t0", sample(base, 7), 1)
    # Refused by the contract: dead-lettered, never history.
    info = c.publish(f"{EQUIPMENT}/t1", b'{"value": "seven"}', 1, wait=False)
    info.wait_for_publish(5)
    c.publish("acme/dallas/not-modeled", b"1", 1, wait=False).wait_for_publish(5)
    got = stored(broker)
    assert got[f"{EQUIPMENT}/speed"] == {base: (12.5, 0), base + 1000: (13.0, 1)}
    assert list(got[f"{EQUIPMENT}/state"].values()) == [("running", 0)]
    assert got[f"{EQUIPMENT}/t0"] == {base: (7, 0)}
    assert f"{EQUIPMENT}/t1" not in got
    assert not any("_dlq" in t or "not-modeled" in t for t in got)


@pytest.mark.parametrize("version", [V311, V5])
def test_every_acknowledged_qos1_value_survives_kill9_during_heavy_ingest(history_broker, version):
    broker, f = history_broker
    publishers = [f(version=version, connect=False) for _ in range(4)]
    for c in publishers:
        # Many values in flight at once: more of them are between arrival and
        # durability when the crash comes.
        c.c.max_inflight_messages_set(500)
        c.c.max_queued_messages_set(0)
        c.connect()
    base = int(time.time() * 1000) - 3_600_000
    sent: list[list[tuple[str, int, int, object]]] = [[] for _ in publishers]
    stop = threading.Event()

    def pump(k: int):
        c = publishers[k]
        tags = TAGS[k * 3:(k + 1) * 3]
        i = 0
        while not stop.is_set() and i < 200_000:
            for t in tags:
                topic = f"{EQUIPMENT}/{t}"
                try:
                    info = c.c.publish(topic, sample(base + i, i), 1)
                except Exception:  # noqa: BLE001 - the broker is being killed
                    return
                sent[k].append((topic, base + i, i, info))
            i += 1
            if i % 50 == 0:
                time.sleep(0.001)

    threads = [threading.Thread(target=pump, args=(k,), daemon=True) for k in range(len(publishers))]
    for t in threads:
        t.start()
    # Let acknowledgements flow, then crash the broker mid-stream.
    wait_until(lambda: sum(1 for s in sent for (_, _, _, info) in s[:2000] if info.is_published()) > 1000,
               timeout=30)
    time.sleep(1.0)
    broker.kill9()
    stop.set()
    for t in threads:
        t.join(10)
    acked = [(topic, ts, v) for s in sent for (topic, ts, v, info) in s if info.is_published()]
    assert len(acked) > 1000, f"only {len(acked)} values acknowledged before the crash"
    got = stored(broker)
    missing = [(topic, ts) for topic, ts, v in acked if got.get(topic, {}).get(ts) != (v, 0)]
    assert not missing, f"{len(missing)} of {len(acked)} acknowledged values missing after kill -9, e.g. {missing[:3]}"

    # The restart records the crash as a possible gap and keeps recording.
    broker.start()
    c = f(version=V5)
    c.publish(f"{EQUIPMENT}/speed", sample(base, 1.5), 1)
    con = sqlite3.connect(history_db(broker))
    try:
        reasons = [r for (r,) in con.execute("SELECT reason FROM gaps")]
    finally:
        con.close()
    assert any("without a clean shutdown" in r for r in reasons), reasons
    assert stored(broker)[f"{EQUIPMENT}/speed"] == {base: (1.5, 0)}
