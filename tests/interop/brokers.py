"""Start / stop / restart / crash the broker under test as a subprocess.

Two kinds are supported:
  * gantry     -- `$GANTRY_BIN run --config CONFIG.toml` (default <repo>/target/debug/gantry)
  * mosquitto  -- `/usr/sbin/mosquitto -c <generated conf>`, used to validate the suite itself.

Both listen on loopback only, on free ports picked at creation time and kept
across restarts, with a per-broker temporary data directory.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_GANTRY_BIN = REPO_ROOT / "target" / "debug" / "gantry"
MOSQUITTO_BIN = os.environ.get("MOSQUITTO_BIN", "/usr/sbin/mosquitto")
HOST = "127.0.0.1"
START_TIMEOUT = 15.0
STOP_TIMEOUT = 5.0

# Limits that every broker instance gets unless a test overrides them.
DEFAULT_LIMITS = {"max_packet_size": 1_048_576}

# mapping of our [limits] knobs to mosquitto.conf options
_MOSQ_GLOBAL_LIMITS = {
    "max_packet_size": "max_packet_size",
    "max_queued_messages": "max_queued_messages",
    "max_inflight": "max_inflight_messages",
}
_MOSQ_LISTENER_LIMITS = {"max_connections": "max_connections"}


def gantry_bin() -> Path:
    return Path(os.environ.get("GANTRY_BIN", str(DEFAULT_GANTRY_BIN)))


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def port_open(port: int, timeout: float = 0.2) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=timeout):
            return True
    except OSError:
        return False


class BrokerError(RuntimeError):
    pass


class Broker:
    """One broker instance. `restart()` keeps ports and data dir."""

    def __init__(self, kind: str, workdir: Path, limits: dict | None = None,
                 mosquitto_extra: str = "", gantry_extra: str = ""):
        self.kind = kind
        self.host = HOST
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.data_dir = self.workdir / "data"
        self.data_dir.mkdir(exist_ok=True)
        self.log_path = self.workdir / "broker.log"
        self.limits = dict(DEFAULT_LIMITS)
        self.limits.update(limits or {})
        self.mosquitto_extra = mosquitto_extra
        self.gantry_extra = gantry_extra
        self.port = free_port()
        self.ws_port = free_port()
        while self.ws_port == self.port:
            self.ws_port = free_port()
        self.proc: subprocess.Popen | None = None
        self.starts = 0
        self.config_path = self._write_config()

    # -- configuration --------------------------------------------------------
    def _write_config(self) -> Path:
        if self.kind == "gantry":
            lines = [
                f'data_dir = "{self.data_dir}"',
                "",
                "[mqtt]",
                f'bind = "{HOST}:{self.port}"',
                "",
                "[websocket]",
                f'bind = "{HOST}:{self.ws_port}"',
                "",
                "[auth]",
                "allow_anonymous = true",
                "",
                "[limits]",
            ]
            for k, v in self.limits.items():
                lines.append(f"{k} = {v}")
            if self.gantry_extra:
                lines += ["", self.gantry_extra]
            if "[contracts]" not in self.gantry_extra:
                # The suite publishes to arbitrary topics without a plant model:
                # route them (`gantry run` would dead-letter them by default).
                lines += ["", "[contracts]", 'unmodeled = "allow"']
            path = self.workdir / "gantry.toml"
        elif self.kind == "mosquitto":
            lines = [
                "per_listener_settings false",
                "allow_anonymous true",
                "persistence true",
                f"persistence_location {self.data_dir}/",
                "persistence_file mosquitto.db",
                "autosave_interval 3600",
                "sys_interval 1",
                "log_dest stdout",
                "log_type all",
                "log_timestamp_format %H:%M:%S",
            ]
            if os.geteuid() == 0:
                lines.append("user root")
            for k, v in self.limits.items():
                if k in _MOSQ_GLOBAL_LIMITS:
                    lines.append(f"{_MOSQ_GLOBAL_LIMITS[k]} {v}")
            if self.mosquitto_extra:
                lines.append(self.mosquitto_extra)
            listener_opts = [f"{_MOSQ_LISTENER_LIMITS[k]} {v}" for k, v in self.limits.items()
                             if k in _MOSQ_LISTENER_LIMITS]
            lines += [f"listener {self.port} {HOST}", "protocol mqtt", *listener_opts]
            lines += [f"listener {self.ws_port} {HOST}", "protocol websockets", *listener_opts]
            path = self.workdir / "mosquitto.conf"
        else:
            raise BrokerError(f"unknown broker kind {self.kind!r}")
        path.write_text("\n".join(lines) + "\n")
        return path

    def command(self) -> list[str]:
        if self.kind == "gantry":
            return [str(gantry_bin()), "run", "--config", str(self.config_path)]
        return [MOSQUITTO_BIN, "-c", str(self.config_path)]

    # -- lifecycle -----------------------------------------------------------
    def start(self, timeout: float = START_TIMEOUT) -> "Broker":
        if self.proc is not None and self.proc.poll() is None:
            raise BrokerError("broker already running")
        self.starts += 1
        log = open(self.log_path, "ab")
        log.write(f"\n===== start #{self.starts}: {' '.join(self.command())}\n".encode())
        log.flush()
        env = dict(os.environ)
        env.setdefault("RUST_BACKTRACE", "1")
        self.proc = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, cwd=self.workdir, env=env,
                                     start_new_session=True)
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise BrokerError(f"{self.kind} exited with {self.proc.returncode} during startup:\n"
                                  + self.log_tail())
            if port_open(self.port) and port_open(self.ws_port):
                return self
            time.sleep(0.05)
        self.stop()
        raise BrokerError(f"{self.kind} did not open ports {self.port}/{self.ws_port} within "
                          f"{timeout}s:\n" + self.log_tail())

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float = STOP_TIMEOUT) -> int | None:
        """SIGTERM, then SIGKILL after `timeout`. Returns the exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            try:
                self.proc.send_signal(signal.SIGTERM)
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        return self.proc.returncode

    def kill9(self) -> None:
        """Crash the broker: SIGKILL, no chance to flush anything."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(5)

    def restart(self, crash: bool = False, timeout: float = START_TIMEOUT) -> "Broker":
        """Stop (gracefully, or with kill -9 if crash=True) and start again with
        the same ports and data directory."""
        if crash:
            self.kill9()
        else:
            self.stop()
        return self.start(timeout)

    def log_tail(self, n: int = 60) -> str:
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return "(no log)"
        return "\n".join(lines[-n:])

    def __repr__(self) -> str:
        return f"<Broker {self.kind} mqtt={self.port} ws={self.ws_port} dir={self.workdir}>"
