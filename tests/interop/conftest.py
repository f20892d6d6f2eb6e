"""pytest fixtures for the Gantry interop suite.

Fixtures:
  broker          a freshly started broker (own ports, own temp data dir) per test
  broker_factory  broker_factory(limits={...}) -> another broker with custom limits
  clients         factory for paho clients (clients(version=..)) and raw clients (clients.raw())
  mqtt_version    parametrizes a test over MQTT 3.1.1 (4) and 5.0 (5)
  broker_kind     "gantry" or "mosquitto"

`--broker=mosquitto` runs everything against /usr/sbin/mosquitto instead; tests
marked `gantry_only` are skipped in that mode.
"""

from __future__ import annotations

import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))

from brokers import Broker, BrokerError, gantry_bin  # noqa: E402
from clients import ClientFactory  # noqa: E402


def pytest_addoption(parser):
    group = parser.getgroup("gantry-interop")
    group.addoption("--broker", action="store", default=os.environ.get("INTEROP_BROKER", "gantry"),
                    choices=["gantry", "mosquitto"],
                    help="broker under test (default: gantry; env INTEROP_BROKER)")
    group.addoption("--no-skip-gantry-only", action="store_true", default=False,
                    help="also run gantry_only tests against mosquitto (to see how it deviates)")


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "gantry_only(reason): Gantry-specific behaviour or a feature Mosquitto lacks; "
                   "skipped with --broker=mosquitto")


def pytest_collection_modifyitems(config, items):
    kind = config.getoption("--broker")
    if kind == "gantry" or config.getoption("--no-skip-gantry-only"):
        return
    for item in items:
        m = item.get_closest_marker("gantry_only")
        if m is not None:
            why = m.kwargs.get("reason") or (m.args[0] if m.args else "Gantry-specific")
            item.add_marker(pytest.mark.skip(reason=f"gantry_only: {why}"))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    setattr(item, "rep_" + rep.when, rep)


@pytest.fixture(scope="session")
def broker_kind(pytestconfig) -> str:
    return pytestconfig.getoption("--broker")


@pytest.fixture
def broker_factory(broker_kind, tmp_path, request):
    if broker_kind == "gantry" and not gantry_bin().exists():
        pytest.fail(f"gantry binary not found at {gantry_bin()} (build it with "
                    f"`cargo build -p gantry`, set GANTRY_BIN, or use --broker=mosquitto)",
                    pytrace=False)
    started: list[Broker] = []

    def make(limits: dict | None = None, mosquitto_extra: str = "", gantry_extra: str = "",
             name: str | None = None) -> Broker:
        b = Broker(broker_kind, tmp_path / (name or f"broker{len(started)}"), limits=limits,
                   mosquitto_extra=mosquitto_extra, gantry_extra=gantry_extra)
        started.append(b)
        try:
            b.start()
        except BrokerError as e:
            pytest.fail(str(e), pytrace=False)
        return b

    yield make

    failed = getattr(request.node, "rep_call", None)
    for b in started:
        died = b.proc is not None and b.proc.poll() is not None
        code = b.stop()
        if (failed is not None and failed.failed) or died:
            print(f"\n----- {b} log tail (exit code {code}) -----\n{b.log_tail(80)}")


@pytest.fixture
def broker(broker_factory):
    return broker_factory()


@pytest.fixture
def clients(broker):
    f = ClientFactory(broker)
    yield f
    f.close_all()


@pytest.fixture(params=[4, 5], ids=["mqtt311", "mqtt5"])
def mqtt_version(request) -> int:
    return request.param


# A hard per-test watchdog (no pytest-timeout dependency): every wait in the
# suite is already bounded, this only guards against a hung broker or library.
TEST_HARD_TIMEOUT = int(os.environ.get("INTEROP_TEST_TIMEOUT", "90"))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item):
    import signal

    def on_alarm(signum, frame):
        raise TimeoutError(f"test exceeded the {TEST_HARD_TIMEOUT}s watchdog")

    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(TEST_HARD_TIMEOUT)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
