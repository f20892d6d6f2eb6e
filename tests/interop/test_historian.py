"""Historian: every accepted value of a modeled tag is stored, and a QoS 1
value is acknowledged only once its row is durable, so a `kill -9` during
heavy ingest loses nothing that was acknowledged. The history file is read
back with Python's own sqlite3 module (an independent reader) and with the
`gantry history` command line (`query`, `aggregate`, `snapshot`, `last`,
`export`), run while the broker writes, with exact expected answers.

Values are published by paho and `mosquitto_pub` with explicit timestamps
on whole minutes a few hours in the past, so every answer is known exactly.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import sqlite3
import subprocess
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


def spool_db(broker) -> Path:
    return Path(broker.data_dir) / "history" / "history.spool.sqlite"


def wait_applied(broker, timeout: float = 30) -> None:
    """Waits until the running broker has moved its spool into the store.

    An acknowledgement means the value is durable in the spool; the applier
    thread moves it into history.sqlite moments later.
    """
    def empty() -> bool:
        con = sqlite3.connect(spool_db(broker))
        try:
            (n,) = con.execute("SELECT (SELECT count(*) FROM batches) + (SELECT count(*) FROM gaps)").fetchone()
        finally:
            con.close()
        return n == 0
    wait_until(empty, timeout=timeout)


def stored(broker) -> dict[str, dict[int, tuple]]:
    """topic -> ts_ms -> (value, quality), read with Python's sqlite3 once applied."""
    wait_applied(broker)
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
    # Every acknowledged value is durable in the spool or the store; the
    # restart applies what the crash left in the spool.
    broker.start()
    got = stored(broker)
    missing = [(topic, ts) for topic, ts, v in acked if got.get(topic, {}).get(ts) != (v, 0)]
    assert not missing, f"{len(missing)} of {len(acked)} acknowledged values missing after kill -9, e.g. {missing[:3]}"

    # The restart records the crash as a possible gap and keeps recording.
    c = f(version=V5)
    c.publish(f"{EQUIPMENT}/speed", sample(base, 1.5), 1)
    wait_applied(broker)
    con = sqlite3.connect(history_db(broker))
    try:
        reasons = [r for (r,) in con.execute("SELECT reason FROM gaps")]
    finally:
        con.close()
    assert any("without a clean shutdown" in r for r in reasons), reasons
    assert stored(broker)[f"{EQUIPMENT}/speed"] == {base: (1.5, 0)}


# --------------------------------------------------------------------------
# The `gantry history` command line against the running broker.
# --------------------------------------------------------------------------

SPEED = f"{EQUIPMENT}/speed"
STATE = f"{EQUIPMENT}/state"
MINUTE = 60_000
CLI_TIMEOUT = 30


def past_minute(hours_ago: int = 3) -> int:
    """A whole UTC minute some hours ago (Unix ms): the base of known samples."""
    now = int(time.time() * 1000)
    return now - now % MINUTE - hours_ago * 3_600_000


def gantry_cli(*args: str, env: dict | None = None, input: str | None = None,
               timeout: float = CLI_TIMEOUT) -> subprocess.CompletedProcess:
    e = dict(os.environ)
    e.pop("GANTRY_PASSWORD", None)
    e.update(env or {})
    return subprocess.run([str(gantry_bin()), *args], capture_output=True, text=True,
                          env=e, input=input if input is not None else "", timeout=timeout)


def history(broker, *args: str, ok: bool = True, **kw) -> subprocess.CompletedProcess:
    """`gantry history --config <broker's config> ARGS`; asserts success unless ok=False."""
    r = gantry_cli("history", "--config", str(broker.config_path), *args, **kw)
    if ok:
        assert r.returncode == 0, f"gantry history {' '.join(args)} failed ({r.returncode}):\n{r.stderr}"
        assert "panicked" not in r.stderr, r.stderr
    return r


def history_json(broker, *args: str, **kw):
    return json.loads(history(broker, *args, "--format", "json", **kw).stdout)


def points_of(result: dict, topic: str) -> list[tuple[int, object, str]]:
    [s] = [s for s in result["series"] if s["topic"] == topic]
    return [(p["ts_ms"], p["value"], p["quality"]) for p in s["points"]]


def buckets_of(result: dict, topic: str) -> list[dict]:
    [s] = [s for s in result["series"] if s["topic"] == topic]
    return s["buckets"]


def publish_all(client, samples: list[tuple[str, bytes]], qos: int = 1) -> None:
    """Publishes in order; with QoS 1 each PUBACK means the row is durable."""
    for topic, payload in samples:
        client.publish(topic, payload, qos)


def assert_failed_clearly(r: subprocess.CompletedProcess, *needles: str) -> None:
    assert r.returncode != 0, f"expected a failure, got exit 0:\n{r.stdout}"
    assert "panicked" not in r.stderr and "RUST_BACKTRACE" not in r.stderr, r.stderr
    for n in needles:
        assert n in r.stderr, f"{n!r} not in the error message:\n{r.stderr}"


def mosquitto_pub(broker, topic: str, *args: str, input: str | None = None) -> None:
    r = subprocess.run(["mosquitto_pub", "-h", broker.host, "-p", str(broker.port),
                        "-t", topic, *args], input=input, capture_output=True, text=True,
                       timeout=10)
    assert r.returncode == 0, f"mosquitto_pub failed: {r.stderr}"


@pytest.fixture
def plain_history_broker(tmp_path, request):
    """The test model, default historian settings (no fsync), dead-lettering."""
    b = ContractBroker(tmp_path / "hq", model_toml(), 'unmodeled = "dead-letter"')
    f = ClientFactory(b)
    request.addfinalizer(f.close_all)

    def stop():
        code = b.stop()
        failed = getattr(request.node, "rep_call", None)
        if failed is not None and failed.failed:
            print(f"\n----- {b} log tail (exit code {code}) -----\n{b.log_tail(80)}")

    request.addfinalizer(stop)
    if not gantry_bin().exists():
        pytest.fail(f"gantry binary not found at {gantry_bin()}", pytrace=False)
    try:
        b.start()
    except BrokerError as e:
        pytest.fail(str(e), pytrace=False)
    return b, f


# Known samples. speed (float) over two minutes from `base`:
#   +0s 10, +10s 20, +40s 30, +50s 40 | +90s 100, +105s 999 (bad)
# state (enum): +0s running, +15s idle, +30s running, +45s faulted
# t0 (int): one value at +5s.
def known_samples(base: int) -> list[tuple[str, bytes]]:
    return [
        (SPEED, sample(base, 10.0)),
        (SPEED, sample(base + 10_000, 20.0)),
        (SPEED, sample(base + 40_000, 30.0)),
        (SPEED, sample(base + 50_000, 40.0, "uncertain")),
        (SPEED, sample(base + 90_000, 100.0)),
        (SPEED, sample(base + 105_000, 999.0, "bad")),
        (STATE, sample(base, "running")),
        (STATE, sample(base + 15_000, "idle")),
        (STATE, sample(base + 30_000, "running")),
        (STATE, sample(base + 45_000, "faulted")),
        (f"{EQUIPMENT}/t0", sample(base + 5_000, 3)),
    ]


def test_cli_query_reads_known_values_in_json_csv_and_table(plain_history_broker):
    broker, f = plain_history_broker
    base = past_minute()
    publish_all(f(version=V5), known_samples(base))
    rng = ("--from", str(base), "--to", str(base + 2 * MINUTE))

    result = history_json(broker, "query", SPEED, *rng)
    assert points_of(result, SPEED) == [
        (base, 10.0, "good"), (base + 10_000, 20.0, "good"), (base + 40_000, 30.0, "good"),
        (base + 50_000, 40.0, "uncertain"), (base + 90_000, 100.0, "good"),
        (base + 105_000, 999.0, "bad")]
    assert [s["topic"] for s in result["series"]] == [SPEED]
    assert result["series"][0]["value_type"] == "float"
    assert result["gaps"] == []

    # Half-open range: --to excluded, --from included; RFC 3339 times work too.
    t = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime((base + 10_000) / 1000))
    result = history_json(broker, "query", SPEED, "--from", t, "--to", str(base + 50_000))
    assert [p[0] for p in points_of(result, SPEED)] == [base + 10_000, base + 40_000]

    # A filter: every tag under the equipment, by topic, then in time order.
    r = history(broker, "query", f"{EQUIPMENT}/#", *rng, "--format", "csv")
    rows = list(csv.reader(io.StringIO(r.stdout)))
    assert rows[0] == ["topic", "ts_ms", "time", "value", "quality"]
    assert [(row[0], int(row[1]), row[3], row[4]) for row in rows[1:]] == [
        (SPEED, base, "10.0", "good"), (SPEED, base + 10_000, "20.0", "good"),
        (SPEED, base + 40_000, "30.0", "good"), (SPEED, base + 50_000, "40.0", "uncertain"),
        (SPEED, base + 90_000, "100.0", "good"), (SPEED, base + 105_000, "999.0", "bad"),
        (STATE, base, "running", "good"), (STATE, base + 15_000, "idle", "good"),
        (STATE, base + 30_000, "running", "good"), (STATE, base + 45_000, "faulted", "good"),
        (f"{EQUIPMENT}/t0", base + 5_000, "3", "good")]
    first_time = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(base / 1000))
    assert rows[1][2] == first_time

    # The default table: the same rows, columns separated by spaces.
    r = history(broker, "query", STATE, *rng)
    lines = [line.split() for line in r.stdout.splitlines() if line.strip()]
    assert lines == [[STATE, str(base), first_time, "running", "good"],
                     [STATE, str(base + 15_000), lines[1][2], "idle", "good"],
                     [STATE, str(base + 30_000), lines[2][2], "running", "good"],
                     [STATE, str(base + 45_000), lines[3][2], "faulted", "good"]]

    # --limit: the earliest values, and the series says it was cut.
    result = history_json(broker, "query", SPEED, *rng, "--limit", "2")
    assert [p[1] for p in points_of(result, SPEED)] == [10.0, 20.0]
    assert result["series"][0]["truncated"] is True

    # Nothing in range: an empty answer, not an error.
    r = history(broker, "query", SPEED, "--from", str(base - 2 * MINUTE), "--to", str(base))
    assert r.stdout.strip() == ""
    assert "no history" in r.stderr


def test_cli_aggregate_count_min_max_avg_first_last_twa_and_time_in_state(plain_history_broker):
    broker, f = plain_history_broker
    base = past_minute()
    publish_all(f(version=V5), known_samples(base))
    rng = ("--from", str(base), "--to", str(base + 2 * MINUTE), "--bucket", "1m")

    result = history_json(broker, "aggregate", SPEED, *rng,
                          "--agg", "count,min,max,avg,first,last,twa")
    b1, b2 = buckets_of(result, SPEED)
    assert (b1["start_ms"], b1["end_ms"], b2["start_ms"], b2["end_ms"]) == (
        base, base + MINUTE, base + MINUTE, base + 2 * MINUTE)
    # Minute 1: 10 (10 s), 20 (30 s), 30 (10 s), 40 uncertain (10 s).
    assert {k: b1[k] for k in ("count", "bad_count", "min", "max", "first", "last")} == {
        "count": 4, "bad_count": 0, "min": 10.0, "max": 40.0, "first": 10.0, "last": 40.0}
    assert b1["avg"] == pytest.approx(25.0)
    assert b1["twa"] == pytest.approx((10 * 10 + 20 * 30 + 30 * 10 + 40 * 10) / 60)
    # Minute 2: 40 carried in (30 s), 100 (15 s), then a bad value: unknown (15 s).
    assert {k: b2[k] for k in ("count", "bad_count", "min", "max", "first", "last")} == {
        "count": 1, "bad_count": 1, "min": 100.0, "max": 100.0, "first": 100.0, "last": 100.0}
    assert b2["avg"] == pytest.approx(100.0)
    assert b2["twa"] == pytest.approx((40 * 30 + 100 * 15) / 45)

    # Without twa the same buckets come from the 1-minute rollups: same answers.
    rolled = history_json(broker, "aggregate", SPEED, *rng, "--agg", "count,min,max,avg,first,last")
    assert rolled["series"][0]["source"] == "rollup_1m"
    for got, want in zip(buckets_of(rolled, SPEED), (b1, b2)):
        assert {k: got[k] for k in ("count", "bad_count", "min", "max", "first", "last")} == \
            {k: want[k] for k in ("count", "bad_count", "min", "max", "first", "last")}
        assert got["avg"] == pytest.approx(want["avg"])
        assert "twa" not in got

    # --buckets N: equal buckets over the range.
    two = history_json(broker, "aggregate", SPEED, "--from", str(base), "--to",
                       str(base + 2 * MINUTE), "--buckets", "4", "--agg", "count")
    assert [(b["start_ms"] - base, b["count"]) for b in buckets_of(two, SPEED)] == [
        (0, 2), (30_000, 2), (60_000, 0), (90_000, 1)]

    # Time in state on the enum tag, with "(no data)" before the first value
    # and the last state carried through the minute after it.
    tis = history_json(broker, "aggregate", STATE, "--from", str(base - MINUTE), "--to",
                       str(base + 2 * MINUTE), "--bucket", "1m", "--agg", "time-in-state")
    assert [b["time_in_state"] for b in buckets_of(tis, STATE)] == [
        {"(no data)": 60_000},
        {"running": 30_000, "idle": 15_000, "faulted": 15_000},
        {"faulted": 60_000}]
    assert [b["count"] for b in buckets_of(tis, STATE)] == [0, 4, 0]
    r = history(broker, "aggregate", STATE, *rng, "--agg", "time-in-state")
    lines = r.stdout.splitlines()
    assert lines[0].split() == ["topic", "start", "end", "time-in-state"]
    assert lines[1].split()[3:] == ["faulted=15s", "idle=15s", "running=30s"]
    assert lines[2].split()[3:] == ["faulted=60s"]

    # CSV of the aggregates: one row per bucket, the asked columns in order.
    r = history(broker, "aggregate", SPEED, *rng, "--agg", "count,max", "--format", "csv")
    rows = list(csv.reader(io.StringIO(r.stdout)))
    assert rows[0] == ["topic", "start", "end", "count", "max"]
    assert [row[3:] for row in rows[1:]] == [["4", "40"], ["1", "100"]]


def test_cli_snapshot_last_and_export(plain_history_broker, tmp_path):
    broker, f = plain_history_broker
    base = past_minute()
    c = f(version=V5)
    publish_all(c, known_samples(base))
    at = base + 45_000
    # t1 only has a value after the snapshot instant; t2 has none at all.
    c.publish(f"{EQUIPMENT}/t1", sample(at + 1, 5), 1)

    snap = history_json(broker, "snapshot", "acme/#", "--at", str(at))
    assert snap["at_ms"] == at
    assert [(v["topic"], v["ts_ms"], v["value"], v["quality"], v["age_ms"]) for v in snap["values"]] == [
        (SPEED, base + 40_000, 30.0, "good", 5_000),
        (STATE, base + 45_000, "faulted", "good", 0),         # exactly at T: included
        (f"{EQUIPMENT}/t0", base + 5_000, 3, "good", 40_000),
    ]
    # One millisecond earlier, the state at T is not there yet.
    snap = history_json(broker, "snapshot", "acme/#", "--at", str(at - 1))
    assert {v["topic"]: v["value"] for v in snap["values"]}[STATE] == "running"
    # Table form and a narrower filter.
    r = history(broker, "snapshot", f"{EQUIPMENT}/+", "--at", str(at))
    lines = [line.split() for line in r.stdout.splitlines()]
    assert lines[0] == ["topic", "time", "value", "quality", "age"]
    assert [(line[0], line[2], line[4]) for line in lines[1:]] == [
        (SPEED, "30.0", "5.0s"), (STATE, "faulted", "0.0s"), (f"{EQUIPMENT}/t0", "3", "40.0s")]

    last = history_json(broker, "last", "acme/#")
    assert last["at_ms"] == base + 105_000
    assert [(v["topic"], v["ts_ms"], v["value"], v["quality"]) for v in last["values"]] == [
        (SPEED, base + 105_000, 999.0, "bad"),
        (STATE, base + 45_000, "faulted", "good"),
        (f"{EQUIPMENT}/t0", base + 5_000, 3, "good"),
        (f"{EQUIPMENT}/t1", at + 1, 5, "good"),
    ]

    # Export to a file (CSV), the row count on stderr; then JSON on stdout.
    out = tmp_path / "export.csv"
    rng = ("--from", str(base), "--to", str(base + 2 * MINUTE))
    r = history(broker, "export", "acme/#", *rng, "--format", "csv", "-o", str(out))
    assert r.stdout == ""
    assert re.search(r"exported 12 values", r.stderr), r.stderr
    rows = list(csv.DictReader(out.open(newline="")))
    assert len(rows) == 12
    assert rows[0] == {"topic": SPEED, "ts_ms": str(base),
                       "time": time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(base / 1000)),
                       "value": "10.0", "quality": "good"}
    assert [(row["topic"], int(row["ts_ms"])) for row in rows] == sorted(
        (row["topic"], int(row["ts_ms"])) for row in rows)
    r = history(broker, "export", "acme/#", *rng, "--format", "json")
    exported = json.loads(r.stdout)
    assert "exported 12 values" in r.stderr
    assert [(e["topic"], e["ts_ms"], str(e["value"]), e["quality"]) for e in exported] == [
        (row["topic"], int(row["ts_ms"]), row["value"], row["quality"]) for row in rows]
    assert exported[-1] == {"topic": f"{EQUIPMENT}/t1", "ts_ms": at + 1,
                            "time": exported[-1]["time"], "value": 5, "quality": "good"}
    # An empty export is still valid JSON.
    r = history(broker, "export", "acme/#", "--from", str(base - MINUTE), "--to", str(base),
                "--format", "json")
    assert json.loads(r.stdout) == [] and "exported 0 values" in r.stderr


def test_out_of_order_and_repeated_timestamps_correct_history_and_rollups(plain_history_broker):
    broker, f = plain_history_broker
    base = past_minute()
    tag = f"{EQUIPMENT}/t2"
    c = f(version=V5)
    publish_all(c, [
        (tag, sample(base + 70_000, 7)),   # opens minute 2
        (tag, sample(base + 50_000, 5)),   # older minute after a newer one
        (tag, sample(base + 10_000, 1)),   # out of order within minute 1
        (tag, sample(base + 30_000, 3)),
        (tag, sample(base + 30_000, 4)),   # same timestamp: replaces 3
        (tag, sample(base + 70_000, 8)),   # same timestamp: replaces 7
    ])
    # The same correction through an independent client (mosquitto_pub, QoS 1).
    mosquitto_pub(broker, tag, "-q", "1", "-m",
                  json.dumps({"timestamp_ms": base + 10_000, "value": 2}))
    ok = wait_until(lambda: stored(broker).get(tag, {}).get(base + 10_000) == (2, 0), timeout=10)
    assert ok, stored(broker).get(tag)

    rng = ("--from", str(base), "--to", str(base + 2 * MINUTE))
    assert points_of(history_json(broker, "query", tag, *rng), tag) == [
        (base + 10_000, 2, "good"), (base + 30_000, 4, "good"), (base + 50_000, 5, "good"),
        (base + 70_000, 8, "good")]
    want = [
        {"count": 3, "min": 2.0, "max": 5.0, "first": 2, "last": 5, "avg": 11 / 3},
        {"count": 1, "min": 8.0, "max": 8.0, "first": 8, "last": 8, "avg": 8.0},
    ]
    for aggs in ("count,min,max,avg,first,last", "count,min,max,avg,first,last,twa"):
        result = history_json(broker, "aggregate", tag, *rng, "--bucket", "1m", "--agg", aggs)
        got = buckets_of(result, tag)
        for g, w in zip(got, want, strict=True):
            assert {k: g[k] for k in ("count", "min", "max", "first", "last")} == \
                {k: w[k] for k in ("count", "min", "max", "first", "last")}, (aggs, got)
            assert g["avg"] == pytest.approx(w["avg"]), (aggs, got)
    # The raw pass (twa) holds 2 for 20 s, 4 for 20 s, 5 for 10 s; minute 2
    # carries 5 in for 10 s, then 8 for 50 s.
    assert got[0]["twa"] == pytest.approx((2 * 20 + 4 * 20 + 5 * 10) / 50)
    assert got[1]["twa"] == pytest.approx((5 * 10 + 8 * 50) / 60)

    # The stored rollup rows agree (read with Python's sqlite3).
    con = sqlite3.connect(history_db(broker))
    try:
        rows = con.execute(
            "SELECT r.bucket_ms, r.count, r.min, r.max, r.sum, r.first, r.last FROM rollup_1m r "
            "JOIN series s ON s.id = r.series_id WHERE s.topic = ? ORDER BY r.bucket_ms",
            (tag,)).fetchall()
    finally:
        con.close()
    assert rows == [(base, 3, 2.0, 5.0, 11.0, 2.0, 5.0), (base + MINUTE, 1, 8.0, 8.0, 8.0, 8.0, 8.0)]


MULTI_SITE_MODEL = """
enterprise = "acme"

[[site]]
name = "dallas"

[[site]]
name = "houston"

[[equipment]]
path = "acme/dallas/packaging/line-1/filler"

[equipment.tags.speed]
type = "float"

[equipment.tags.count]
type = "int"

[[equipment]]
path = "acme/houston/packaging/line-1/filler"

[equipment.tags.speed]
type = "float"
"""


def test_cli_history_as_a_user_sees_only_what_the_user_may_subscribe_to(tmp_path, request):
    b = ContractBroker(tmp_path / "hp", MULTI_SITE_MODEL, 'unmodeled = "dead-letter"')
    f = ClientFactory(b)
    request.addfinalizer(f.close_all)
    request.addfinalizer(b.stop)
    b.start()
    dallas = "acme/dallas/packaging/line-1/filler"
    houston = "acme/houston/packaging/line-1/filler"
    base = past_minute()
    publish_all(f(version=V5), [
        (f"{dallas}/speed", sample(base, 1.5)),
        (f"{dallas}/count", sample(base + 1_000, 7)),
        (f"{houston}/speed", sample(base, 2.5)),
    ])
    cfg = str(b.config_path)
    r = gantry_cli("role", "add", "dallas-viewer", "--allow", "subscribe:acme/dallas/#",
                   "--config", cfg)
    assert r.returncode == 0, r.stderr
    password = "dana-has-a-long-password"
    r = gantry_cli("user", "add", "dana", "--role", "dallas-viewer", "--password-stdin",
                   "--config", cfg, input=password + "\n")
    assert r.returncode == 0, r.stderr
    as_dana = {"env": {"GANTRY_PASSWORD": password}}
    rng = ("--from", str(base), "--to", str(base + MINUTE))

    # Without --user: the local operator reads everything.
    everything = history_json(b, "query", "acme/#", *rng)
    assert [s["topic"] for s in everything["series"]] == [
        f"{dallas}/count", f"{dallas}/speed", f"{houston}/speed"]
    # As dana: only the Dallas subtree, in every query type.
    mine = history_json(b, "--user", "dana", "query", "acme/#", *rng, **as_dana)
    assert [(s["topic"], [p["value"] for p in s["points"]]) for s in mine["series"]] == [
        (f"{dallas}/count", [7]), (f"{dallas}/speed", [1.5])]
    snap = history_json(b, "--user", "dana", "snapshot", "acme/#", "--at", str(base + MINUTE),
                        **as_dana)
    assert [v["topic"] for v in snap["values"]] == [f"{dallas}/count", f"{dallas}/speed"]
    last = history_json(b, "--user", "dana", "last", "acme/+/packaging/#", **as_dana)
    assert [v["topic"] for v in last["values"]] == [f"{dallas}/count", f"{dallas}/speed"]
    agg = history_json(b, "--user", "dana", "aggregate", "acme/+/packaging/line-1/filler/speed",
                       *rng, "--bucket", "1m", "--agg", "count", **as_dana)
    assert [(s["topic"], s["buckets"][0]["count"]) for s in agg["series"]] == [(f"{dallas}/speed", 1)]
    r = history(b, "--user", "dana", "export", "acme/#", *rng, "--format", "json", **as_dana)
    assert {e["topic"] for e in json.loads(r.stdout)} == {f"{dallas}/count", f"{dallas}/speed"}
    assert "exported 2 values" in r.stderr
    # The password may also come from standard input.
    r = history(b, "--user", "dana", "query", "acme/#", *rng, "--format", "json",
                input=password + "\n")
    assert json.loads(r.stdout) == mine

    # A refused exact topic: an error naming it, whether or not it has history.
    for q in (("query", f"{houston}/speed", *rng), ("last", f"{houston}/speed"),
              ("aggregate", f"{houston}/speed", *rng), ("snapshot", f"{houston}/nothing")):
        r = history(b, "--user", "dana", *q, ok=False, **as_dana)
        assert_failed_clearly(r, q[1], "dana")
        assert r.stdout.strip() == ""

    # A wrong password, and an unknown user: refused, saying so, nothing shown.
    for user, pw in (("dana", "not-the-password"), ("nobody", password)):
        r = history(b, "--user", user, "query", "acme/#", *rng, ok=False,
                    env={"GANTRY_PASSWORD": pw})
        assert_failed_clearly(r, "login refused", user)
        assert r.stdout.strip() == ""


def test_cli_bad_input_and_missing_store_fail_clearly(plain_history_broker, tmp_path):
    broker, f = plain_history_broker
    f(version=V5).publish(SPEED, sample(past_minute(), 1.0), 1)

    r = history(broker, "query", SPEED, "--from", "garbage", ok=False)
    assert_failed_clearly(r, "--from", "garbage", "RFC 3339", "-15m", "Unix milliseconds", "now")
    r = history(broker, "snapshot", "acme/#", "--at", "2026-13-01", ok=False)
    assert_failed_clearly(r, "--at", "2026-13-01")
    r = history(broker, "aggregate", SPEED, "--agg", "count,bogus", ok=False)
    assert_failed_clearly(r, "--agg", "bogus", "count, min, max, avg, first, last, twa, time-in-state")
    r = history(broker, "aggregate", SPEED, "--bucket", "soon", ok=False)
    assert_failed_clearly(r, "--bucket", "soon")
    r = history(broker, "query", SPEED, "--from", "-1h", "--to", "-2h", ok=False)
    assert_failed_clearly(r, "before")
    r = history(broker, "query", "acme/#/speed", ok=False)
    assert_failed_clearly(r, "acme/#/speed")

    # A data directory without history (Gantry never recorded there), by
    # --data-dir and by a config naming it; and a directory that is not there.
    fresh = tmp_path / "fresh"
    (fresh / "data").mkdir(parents=True)
    (fresh / "gantry.toml").write_text('data_dir = "data"\n')
    for args in (("--data-dir", str(fresh / "data")), ("--config", str(fresh / "gantry.toml"))):
        for q in (("query", "acme/#"), ("last", "acme/#")):
            r = gantry_cli("history", *args, *q)
            assert_failed_clearly(r, "no history database", str(fresh / "data"))
            assert "cannot create" not in r.stderr, r.stderr
            assert not (fresh / "data" / "history").exists(), "a reader must not create the store"
    r = gantry_cli("history", "--data-dir", str(tmp_path / "absent"), "query", "acme/#")
    assert_failed_clearly(r, "no history database", "does not exist")
    r = gantry_cli("history", "query", "acme/#")
    assert_failed_clearly(r, "--config", "--data-dir")


def test_qos0_values_are_recorded_and_unmodeled_or_dead_lettered_ones_are_not(plain_history_broker):
    broker, f = plain_history_broker
    base = past_minute()
    tag = f"{EQUIPMENT}/t3"
    # QoS 0 through mosquitto_pub (one connection, three lines) and paho.
    lines = "\n".join(json.dumps({"timestamp_ms": base + i * 1000, "value": i}) for i in range(3))
    mosquitto_pub(broker, tag, "-q", "0", "-l", input=lines + "\n")
    c = f(version=V5)
    c.publish(tag, sample(base + 3000, 3), 0)
    want = {base + i * 1000: (i, 0) for i in range(4)}
    assert wait_until(lambda: stored(broker).get(tag) == want, timeout=10), stored(broker).get(tag)

    # Refused values at QoS 0 and 1: an unmodeled topic (dead-lettered by
    # this config) and a wrong type on a modeled tag (dead-lettered).
    dlq = f(version=V5)
    dlq.subscribe("acme/_dlq/#", 1)
    unmodeled = "acme/dallas/packaging/line-1/filler/not_a_tag"
    mosquitto_pub(broker, unmodeled, "-q", "0", "-m", json.dumps({"timestamp_ms": base, "value": 1}))
    mosquitto_pub(broker, f"{EQUIPMENT}/t4", "-q", "0", "-m",
                  json.dumps({"timestamp_ms": base, "value": "seven"}))
    c.publish(f"{EQUIPMENT}/t5", b'{"timestamp_ms": 1, "value": [1]}', 1, wait=False).wait_for_publish(5)
    letters = {dlq.expect(10).topic for _ in range(3)}
    assert letters == {f"acme/_dlq/{unmodeled}", f"acme/_dlq/{EQUIPMENT}/t4",
                       f"acme/_dlq/{EQUIPMENT}/t5"}
    # A QoS 1 value after them on the same client: once it is acknowledged,
    # everything the historian took before it is written.
    c.publish(f"{EQUIPMENT}/t6", sample(base, 6), 1)
    got = stored(broker)
    assert got[f"{EQUIPMENT}/t6"] == {base: (6, 0)}
    assert set(got) == {tag, f"{EQUIPMENT}/t6"}, sorted(got)
    r = history(broker, "query", "acme/#", "--from", str(base), "--to", str(base + MINUTE),
                "--format", "json")
    assert [s["topic"] for s in json.loads(r.stdout)["series"]] == [tag, f"{EQUIPMENT}/t6"]
    # Recorded normally: no loss, no gap.
    assert json.loads(r.stdout)["gaps"] == []
    assert "gap" not in r.stderr


def test_clean_restart_keeps_history_and_records_no_gap(plain_history_broker):
    broker, f = plain_history_broker
    base = past_minute()
    sub = f(version=V5)
    sub.subscribe(f"{EQUIPMENT}/#", 0)
    c = f(version=V5)
    publish_all(c, [(SPEED, sample(base + i * 1000, float(i))) for i in range(50)])
    # QoS 0 values seen by a subscriber are queued for the historian; a clean
    # stop right after writes them before exiting.
    publish_all(c, [(f"{EQUIPMENT}/t7", sample(base + i * 1000, i)) for i in range(200)], qos=0)
    sub.wait_for(250, timeout=10)
    for client in (c, sub):
        client.close_quietly()
    assert broker.stop() == 0, broker.log_tail()
    got = stored(broker)
    assert got[SPEED] == {base + i * 1000: (float(i), 0) for i in range(50)}
    assert got[f"{EQUIPMENT}/t7"] == {base + i * 1000: (i, 0) for i in range(200)}

    broker.start()
    c = f(version=V5)
    c.publish(SPEED, sample(base + 50_000, 50.0), 1)
    rng = ("--from", str(base), "--to", str(base + 4 * MINUTE))
    r = history(broker, "query", f"{EQUIPMENT}/#", *rng, "--format", "json")
    result = json.loads(r.stdout)
    assert [p[1] for p in points_of(result, SPEED)] == [float(i) for i in range(51)]
    assert len(points_of(result, f"{EQUIPMENT}/t7")) == 200
    assert result["gaps"] == [] and "gap" not in r.stderr
    con = sqlite3.connect(history_db(broker))
    try:
        assert con.execute("SELECT count(*) FROM gaps").fetchone() == (0,)
    finally:
        con.close()
