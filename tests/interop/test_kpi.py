"""Harmonized KPIs end to end: values published by paho over MQTT, recorded
by the historian, computed by `gantry kpi` with the ISO 22400 definitions.

- The worked example of kpi-iso22400.md (one 8-hour shift, OEE 74.7 %) is
  published as machine states and counter readings for yesterday's shift
  and `gantry kpi show` reproduces it exactly; `gantry kpi explain` accounts
  for every minute.
- The live engine publishes the current shift's KPIs, retained, under
  `<path>/_kpi/`, where a subscriber sees them and the historian records
  them.
- `--user` needs subscribe permission on the KPI's inputs; bad definitions
  are refused by `gantry check` and at start, naming file, line and field.
"""

from __future__ import annotations

import datetime as dt
import json
import subprocess

import pytest

from brokers import BrokerError, gantry_bin
from clients import V5, ClientFactory, wait_until
from test_contracts import ContractBroker

pytestmark = pytest.mark.gantry_only("KPIs are a Gantry feature")

FILLER = "acme/dallas/packaging/line-1/filler"
CAPPER = "acme/dallas/packaging/line-1/capper"
LINE = "acme/dallas/packaging/line-1"
MIN = 60_000

MACHINE_TAGS = """
[equipment.tags.state]
type = "enum"
values = ["running", "idle", "starved", "blocked", "faulted", "changeover", "planned-stop"]

[equipment.tags.state_reason]
type = "string"

[equipment.tags.good_count]
type = "int"

[equipment.tags.reject_count]
type = "int"

[equipment.tags.energy]
type = "float"
"""

KPI = f"""
[kpi]
default_state_model = "gantry"
publish_every = "1s"

[[kpi.calendar]]
name = "day"
time_zone = "UTC"

[[kpi.calendar.shift]]
name = "day"
start = "06:00"
end = "14:00"
breaks = [{{ start = "10:00", end = "10:30", reason = "break" }}]

[[kpi.calendar]]
name = "always"
time_zone = "UTC"

[[kpi.calendar.shift]]
name = "all-day"
start = "00:00"
end = "00:00"

[[kpi.work_unit]]
path = "{FILLER}"
calendar = "day"
reason = "state_reason"
good = "good_count"
scrap = "reject_count"
ideal_cycle_time = "0.5min"
energy = "energy"

[[kpi.work_unit]]
path = "{CAPPER}"
calendar = "always"
reason = "state_reason"
good = "good_count"
scrap = "reject_count"
ideal_rate = "600/min"
"""


def model_toml(kpi: str = KPI) -> str:
    return f"""
enterprise = "acme"

[[site]]
name = "dallas"

[[equipment]]
path = "{FILLER}"
{MACHINE_TAGS}
[[equipment]]
path = "{CAPPER}"
{MACHINE_TAGS}
{kpi}
"""


@pytest.fixture
def kpi_broker(tmp_path, request):
    if not gantry_bin().exists():
        pytest.fail(f"gantry binary not found at {gantry_bin()}", pytrace=False)
    b = ContractBroker(tmp_path / "kb", model_toml(), 'unmodeled = "dead-letter"')
    f = ClientFactory(b)
    request.addfinalizer(f.close_all)
    request.addfinalizer(b.stop)
    try:
        b.start()
    except BrokerError as e:
        pytest.fail(str(e), pytrace=False)
    return b, f


def gantry(*args: str, env: dict | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    import os
    e = dict(os.environ)
    e.pop("GANTRY_PASSWORD", None)
    e.update(env or {})
    return subprocess.run([str(gantry_bin()), *args], capture_output=True, text=True, env=e,
                          timeout=timeout, input="")


def kpi(broker, *args: str, ok: bool = True, **kw) -> subprocess.CompletedProcess:
    r = gantry("kpi", "--config", str(broker.config_path), *args, **kw)
    if ok:
        assert r.returncode == 0, f"gantry kpi {' '.join(args)} failed:\n{r.stderr}"
        assert "panicked" not in r.stderr, r.stderr
    return r


def sample(ts: int, value) -> bytes:
    return json.dumps({"timestamp_ms": ts, "value": value}).encode()


def yesterday_shift_start() -> tuple[str, int]:
    day = dt.datetime.now(dt.timezone.utc).date() - dt.timedelta(days=1)
    start = dt.datetime(day.year, day.month, day.day, 6, tzinfo=dt.timezone.utc)
    return day.isoformat(), int(start.timestamp() * 1000)


# The worked example's shift: changeover 20 min, breakdowns of 10, 8 and
# 7 min, starved 15 min, running otherwise; the 10:00 break is planned.
STATES = [
    (-30, "idle", ""),
    (0, "changeover", "product change"),
    (20, "running", ""),
    (100, "faulted", "jam"),
    (110, "running", ""),
    (200, "faulted", "motor overload"),
    (208, "running", ""),
    (300, "starved", "no bottles"),
    (315, "running", ""),
    (400, "faulted", "jam"),
    (407, "running", ""),
    (500, "idle", ""),
]


def state_at(minute: int) -> str:
    current = STATES[0][1]
    for m, s, _ in STATES:
        if m <= minute:
            current = s
    return current


def publish_worked_example(client, t0: int) -> None:
    msgs = []
    for m, state, reason in STATES:
        msgs.append((f"{FILLER}/state", sample(t0 + m * MIN, state)))
        msgs.append((f"{FILLER}/state_reason", sample(t0 + m * MIN, reason)))
    good, scrap = 5_000, 100
    msgs.append((f"{FILLER}/good_count", sample(t0 - MIN, good)))
    msgs.append((f"{FILLER}/reject_count", sample(t0 - MIN, scrap)))
    running = [m for m in range(480) if state_at(m) == "running" and not 240 <= m < 270]
    assert len(running) == 390
    for k, m in enumerate(running):
        # 700 units over 390 running minutes; every 25th is scrap.
        for n in range(k * 700 // 390, (k + 1) * 700 // 390):
            if n % 25 == 24:
                scrap += 1
            else:
                good += 1
        ts = t0 + m * MIN + 30_000
        msgs.append((f"{FILLER}/good_count", sample(ts, good)))
        msgs.append((f"{FILLER}/reject_count", sample(ts, scrap)))
    for ts, kwh in ((t0 - MIN, 1000.0), (t0 + 240 * MIN, 1042.0), (t0 + 479 * MIN, 1084.0),
                    (t0 + 480 * MIN, 1090.0)):
        msgs.append((f"{FILLER}/energy", sample(ts, kwh)))
    infos = [client.publish(topic, payload, 1, wait=False) for topic, payload in msgs]
    for info in infos:
        info.wait_for_publish(30)
        assert info.is_published()


def test_the_worked_example_through_mqtt_historian_and_cli(kpi_broker):
    broker, f = kpi_broker
    day, t0 = yesterday_shift_start()
    publish_worked_example(f(version=V5), t0)

    r = kpi(broker, "show", FILLER, "--period", f"shift:{day}/day", "--format", "json")
    report = json.loads(r.stdout)
    values = {k["kpi"]: k["value"] for k in report["kpis"]}
    assert values["oee"] == pytest.approx(336 / 450, abs=1e-12)
    assert f"{values['oee'] * 100:.1f}" == "74.7"
    assert values["availability"] == pytest.approx(390 / 450, abs=1e-12)
    assert values["effectiveness"] == pytest.approx(350 / 390, abs=1e-12)
    assert values["quality"] == pytest.approx(672 / 700, abs=1e-12)
    assert values["mtbf"] == pytest.approx(130.0)
    assert values["mttr"] == pytest.approx(25 / 3)
    assert values["energy_per_good_unit"] == pytest.approx(84 / 672)
    assert values["throughput"] == pytest.approx(700 / 7.5)
    e = report["elements"]
    assert (e["pot_ms"], e["pdot_ms"], e["apt_ms"], e["aust_ms"], e["adet_ms"], e["adot_ms"],
            e["unknown_ms"]) == (480 * MIN, 30 * MIN, 390 * MIN, 20 * MIN, 15 * MIN, 25 * MIN, 0)
    assert (e["produced"], e["good"], e["scrap"], e["failures"]) == (700, 672, 28, 3)

    # The explanation accounts for every minute, interval by interval.
    r = kpi(broker, "explain", FILLER, "--period", f"shift:{day}/day")
    assert "accounted: 480.0 min of 480.0 min" in r.stdout, r.stdout
    assert "oee = Availability × Effectiveness × Quality ratio = 74.7 %" in r.stdout, r.stdout
    assert "10:00:00 - 10:30:00" in r.stdout and "planned in the calendar: break" in r.stdout
    assert "faulted (motor overload)" in r.stdout
    assert "counter good_count (GQ)" in r.stdout and "+672" in r.stdout

    # Text output names every factor and its inputs.
    r = kpi(broker, "show", FILLER, "--period", f"shift:{day}/day")
    for needle in ("oee", "74.7 %", "availability", "86.7 %", "effectiveness", "89.7 %",
                   "quality", "96.0 %", "APT 390.0 min", "PBT 450.0 min", "jam (ADOT)"):
        assert needle in r.stdout, (needle, r.stdout)


def test_live_kpis_are_published_retained_and_recorded(kpi_broker):
    broker, f = kpi_broker
    now = int(dt.datetime.now(dt.timezone.utc).timestamp() * 1000)
    c = f(version=V5)
    for topic, value in ((f"{CAPPER}/state", "running"), (f"{CAPPER}/state_reason", ""),
                         (f"{CAPPER}/good_count", 10), (f"{CAPPER}/reject_count", 0)):
        c.publish(topic, sample(now - 5_000, value), 1)
    for topic, value in ((f"{CAPPER}/good_count", 60), (f"{CAPPER}/reject_count", 1)):
        c.publish(topic, sample(now, value), 1)
    sub = f(version=V5)
    sub.subscribe(f"{CAPPER}/_kpi/#", 1)

    def have_all() -> bool:
        got = {m.topic.rsplit("/", 1)[-1]: m for m in sub.collect(0.5)}
        have_all.seen.update(got)
        return {"oee", "availability", "effectiveness", "quality"} <= set(have_all.seen)
    have_all.seen = {}
    wait_until(have_all, timeout=30)
    quality = json.loads(have_all.seen["quality"].payload)
    assert quality["value"] == pytest.approx(50 / 51, abs=1e-4)
    availability = json.loads(have_all.seen["availability"].payload)["value"]
    assert 0 < availability <= 1
    # Retained: a new subscriber gets the current values at once.
    late = f(version=V5)
    late.subscribe(f"{CAPPER}/_kpi/oee", 1)
    m = late.expect(10)
    assert m.retain and "value" in json.loads(m.payload)
    # The line rolls up its units.
    line = f(version=V5)
    line.subscribe(f"{LINE}/_kpi/quality", 1)
    assert "value" in json.loads(line.expect(10).payload)
    # No client may publish into a _kpi subtree: one author, one value.
    fake = 0.123456
    c.publish(f"{CAPPER}/_kpi/oee", sample(now, fake), 1)
    fence = f(version=V5)
    fence.subscribe(f"{CAPPER}/state_reason", 1)
    c.publish(f"{CAPPER}/state_reason", sample(now + 1, "fence"), 1)
    assert json.loads(fence.expect(10).payload)["value"] == "fence"
    assert all(json.loads(m.payload)["value"] != fake for m in late.collect(1.0))
    # And the historian records KPI results like any tag.

    def recorded() -> bool:
        r = gantry("history", "--config", str(broker.config_path), "last", f"{CAPPER}/_kpi/#",
                   "--format", "json")
        return r.returncode == 0 and "/_kpi/oee" in r.stdout
    wait_until(recorded, timeout=30)


def test_kpis_need_read_permission_on_their_inputs(kpi_broker):
    broker, f = kpi_broker
    day, t0 = yesterday_shift_start()
    f(version=V5).publish(f"{FILLER}/state", sample(t0, "running"), 1)
    cfg = str(broker.config_path)
    r = gantry("role", "add", "capper-viewer", "--allow", f"subscribe:{CAPPER}/#", "--config", cfg)
    assert r.returncode == 0, r.stderr
    password = "a-long-enough-password"
    r = subprocess.run([str(gantry_bin()), "user", "add", "cam", "--role", "capper-viewer",
                        "--password-stdin", "--config", cfg], capture_output=True, text=True,
                       input=password + "\n", timeout=60)
    assert r.returncode == 0, r.stderr
    as_cam = {"env": {"GANTRY_PASSWORD": password}}
    r = kpi(broker, "--user", "cam", "show", FILLER, "--period", f"shift:{day}/day", ok=False,
            **as_cam)
    assert r.returncode != 0 and "may not read" in r.stderr and f"{FILLER}/state" in r.stderr, r.stderr
    assert "oee" not in r.stdout
    r = kpi(broker, "--user", "cam", "show", CAPPER, "--period", "today", **as_cam)
    assert "oee" in r.stdout


def test_bad_kpi_definitions_are_named_by_check_and_at_start(tmp_path):
    bad = KPI.replace('ideal_cycle_time = "0.5min"', 'ideal_cycle_time = "fast"').replace(
        'calendar = "always"', 'calendar = "allways"')
    model = tmp_path / "plant.toml"
    model.write_text(model_toml(bad))
    r = gantry("check", str(model))
    assert r.returncode != 0
    lines = model.read_text().splitlines()
    fast_line = next(i for i, l in enumerate(lines, 1) if '"fast"' in l)
    assert f"{model}:{fast_line}:" in r.stderr and "kpi.work_unit[0].ideal_cycle_time" in r.stderr, r.stderr
    assert 'unknown calendar "allways"' in r.stderr and 'did you mean "always"' in r.stderr, r.stderr
    assert "panicked" not in r.stderr

    b = ContractBroker(tmp_path / "bad", model_toml(bad), 'unmodeled = "dead-letter"')
    with pytest.raises(BrokerError) as err:
        b.start()
    b.stop()
    assert "invalid KPI definitions" in str(err.value) or "invalid KPI definitions" in b.log_tail()


def test_unknown_paths_and_periods_are_explained(kpi_broker):
    broker, _ = kpi_broker
    r = kpi(broker, "show", "acme/dallas/packaging/line-1/filer", ok=False)
    assert r.returncode != 0 and 'did you mean "acme/dallas/packaging/line-1/filler"' in r.stderr, r.stderr
    r = kpi(broker, "show", FILLER, "--period", "fortnight", ok=False)
    assert r.returncode != 0 and "current-shift" in r.stderr and "last-shift" in r.stderr, r.stderr
    r = kpi(broker, "explain", FILLER, "--kpi", "oeee", ok=False)
    assert r.returncode != 0 and "availability" in r.stderr
    r = kpi(broker, "list")
    assert FILLER in r.stdout and "calendar always" in r.stdout
