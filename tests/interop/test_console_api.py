"""The web console's JSON API (crates/gantry-console) against the real binary.

One `gantry demo` (module-scoped: the demo plant, its simulated PLCs, the
historian, live KPIs and the console on a free loopback port) serves most
tests. Besides the demo's four logins (admin, operator = ot-engineer,
analyst = it-analyst, officer = security-officer) the fixture creates, with
the real CLI before the demo starts, a device identity `filler` (role
`device`), `speedy` and `visitor`, holding a site role that may subscribe to
one tag only, and `spare` for the administration examples. Small `gantry run` instances of their own cover HTTPS, the failed-login
back-off (it is per address, and every test logs in from 127.0.0.1) and the
`[console]` config errors.

HTTP is the standard library only (urllib, http.client, http.cookiejar,
ssl); MQTT publishes use paho-mqtt. Every wait is a bounded loop; no test
asserts a wall-clock duration. The OpenAPI document drives the coverage:
each documented operation is called (with the example parameters below), and
each one that needs a login is refused without one.
"""

from __future__ import annotations

import http.client
import http.cookiejar
import json
import re
import socket
import ssl
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from brokers import HOST, REPO_ROOT, Broker, BrokerError, free_port, gantry_bin, port_open
from clients import uniq, wait_until

pytestmark = pytest.mark.gantry_only(reason="the web console and its API are Gantry's")

LINE1 = "acme/dallas/packaging/line-1"
LINE2 = "acme/dallas/packaging/line-2"
FILLER = f"{LINE1}/filler"
SPEED = f"{FILLER}/speed"
CAPPER = f"{LINE1}/capper"
CAPPER_SPEED = f"{CAPPER}/speed"
CAPPER_TEMPERATURE = f"{CAPPER}/temperature"
FILLER_TAGS = {"state", "state_reason", "good_count", "reject_count", "speed", "temperature",
               "energy"}
UNITS = [f"{line}/{machine}" for line in (LINE1, LINE2) for machine in ("filler", "capper", "labeler")]

# Identities the fixture adds to the demo's own logins: a device named after
# its equipment, one that may read a single tag, one whose denials only the
# audit test causes, and one the administration examples may change.
SPEED_ROLE = "speed-only"
EXTRA_USERS = {"filler": ("device", "device"), "speedy": (SPEED_ROLE, "human"),
               "visitor": (SPEED_ROLE, "human"), "spare": ("it-analyst", "human")}
ROLES = ["admin", "operator", "analyst", "officer", "filler"]

# Example query parameters for the documented operations; an operation with
# a required parameter that has no example here fails the coverage test.
EXAMPLES: dict[str, dict[str, object]] = {
    "/api/v1/namespace": {"path": FILLER, "limit": "5"},
    "/api/v1/namespace/search": {"q": "filler speed", "limit": "5"},
    "/api/v1/tag": {"path": SPEED},
    "/api/v1/history/raw": {"path": SPEED, "from": "-1m"},
    "/api/v1/history/aggregate": {"path": SPEED, "from": "-5m", "bucket": "auto", "agg": "min,max,avg"},
    "/api/v1/history/snapshot": {"path": SPEED, "at": "now"},
    "/api/v1/kpi": {"path": LINE1, "period": "current-shift"},
    "/api/v1/kpi/explain": {"path": LINE1, "kpi": "oee"},
    "/api/v1/dead-letters": {"limit": "10"},
    "/api/v1/audit": {"limit": "5"},
    "/api/v1/live": {"path": [FILLER]},
}
# Values for `{name}` segments of documented paths, and bodies for POST
# operations whose request body is required (login and logout aside).
PATH_EXAMPLES = {"name": "spare"}
BODIES: dict[str, object] = {}

SECURITY_HEADERS = {
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
}


def password_of(name: str) -> str:
    return f"console-{name}-correct-horse-battery"


def gantry(*args: str, stdin: str | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([str(gantry_bin()), *args], input=stdin, capture_output=True,
                          text=True, timeout=timeout)


def add_user(data_dir: Path, name: str, role: str, kind: str = "human") -> None:
    r = gantry("user", "add", name, "--role", role, "--kind", kind, "--password-stdin",
               "--data-dir", str(data_dir), stdin=password_of(name) + "\n")
    assert r.returncode == 0, r.stderr


def now_ms() -> int:
    return int(time.time() * 1000)


# --------------------------------------------------------------------------
# HTTP with the standard library


class Answer:
    def __init__(self, status: int, headers, body: bytes):
        self.status = status
        self.headers = headers
        self.body = body

    @property
    def content_type(self) -> str:
        return self.headers.get("Content-Type") or ""

    def json(self):
        return json.loads(self.body)

    def error(self) -> dict:
        """The documented error shape; fails the test if it is not that."""
        assert self.content_type.startswith("application/json"), (self.status, self.content_type, self.body)
        doc = self.json()
        assert set(doc) == {"error"}, doc
        err = doc["error"]
        assert err["status"] == self.status, doc
        assert isinstance(err["message"], str) and err["message"], doc
        return err

    def __repr__(self) -> str:
        return f"<{self.status} {self.content_type} {self.body[:300]!r}>"


class Api:
    """A client of one console: `get`/`post` with an optional bearer token or
    cookie jar, answering `Answer`s for every status (no exceptions)."""

    def __init__(self, base: str, context: ssl.SSLContext | None = None):
        self.base = base
        self.context = context

    def opener(self, jar: http.cookiejar.CookieJar | None = None):
        handlers: list = [urllib.request.ProxyHandler({})]  # never via a proxy
        if self.context is not None:
            handlers.append(urllib.request.HTTPSHandler(context=self.context))
        if jar is not None:
            handlers.append(urllib.request.HTTPCookieProcessor(jar))
        return urllib.request.build_opener(*handlers)

    def url(self, path: str, params: dict | None = None) -> str:
        query = f"?{urllib.parse.urlencode(params, doseq=True)}" if params else ""
        return f"{self.base}{path}{query}"

    def request(self, method: str, path: str, params: dict | None = None, body=None,
                token: str | None = None, headers: dict | None = None,
                jar: http.cookiejar.CookieJar | None = None, raw_body: bytes | None = None,
                timeout: float = 15) -> Answer:
        h = dict(headers or {})
        data = raw_body
        if body is not None:
            data = json.dumps(body).encode()
            h.setdefault("Content-Type", "application/json")
        if token is not None:
            h["Authorization"] = f"Bearer {token}"
        req = urllib.request.Request(self.url(path, params), data=data, method=method, headers=h)
        try:
            resp = self.opener(jar).open(req, timeout=timeout)
        except urllib.error.HTTPError as e:
            with e:
                return Answer(e.code, e.headers, e.read())
        with resp:
            return Answer(resp.status, resp.headers, resp.read())

    def get(self, path: str, params: dict | None = None, **kw) -> Answer:
        return self.request("GET", path, params, **kw)

    def post(self, path: str, body=None, **kw) -> Answer:
        return self.request("POST", path, body=body, **kw)

    def login_answer(self, user: str, password: str, **kw) -> Answer:
        return self.post("/api/v1/login", {"username": user, "password": password}, **kw)

    def login(self, user: str, password: str) -> str:
        a = self.login_answer(user, password)
        assert a.status == 200, a
        return a.json()["token"]


class Sse:
    """A Server-Sent Events stream read with http.client, for a bounded time."""

    def __init__(self, port: int, paths: list[str], token: str, read_timeout: float = 3.0):
        query = urllib.parse.urlencode([("path", p) for p in paths])
        self.conn = http.client.HTTPConnection(HOST, port, timeout=read_timeout)
        self.conn.request("GET", f"/api/v1/live?{query}",
                          headers={"Authorization": f"Bearer {token}", "Accept": "text/event-stream"})
        self.resp = self.conn.getresponse()
        self.status = self.resp.status
        self.headers = self.resp.headers

    def events(self, duration: float, max_events: int = 1000) -> list[tuple[str, dict | None, float]]:
        """(event name, data, monotonic arrival) read during about `duration` s."""
        out: list[tuple[str, dict | None, float]] = []
        deadline = time.monotonic() + duration
        name, data = None, []
        while time.monotonic() < deadline and len(out) < max_events:
            try:
                line = self.resp.readline()
            except (TimeoutError, socket.timeout, OSError):
                break
            if not line:
                break
            text = line.decode("utf-8").rstrip("\r\n")
            if text == "":
                if name is not None or data:
                    payload = json.loads("\n".join(data)) if data else None
                    out.append((name or "message", payload, time.monotonic()))
                name, data = None, []
                continue
            if text.startswith(":"):
                continue  # a comment (keep-alive)
            field, _, value = text.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if field == "event":
                name = value
            elif field == "data":
                data.append(value)
        return out

    def close(self) -> None:
        self.resp.close()
        self.conn.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


# --------------------------------------------------------------------------
# MQTT (anonymous from loopback is allowed in the demo)


def mqtt_client(port: int):
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=uniq("console-api"))
    c.connect(HOST, port)
    c.loop_start()
    return c


def mqtt_publish(port: int, messages: list[tuple[str, str, bool]]) -> None:
    """Publishes at QoS 1 and waits for each acknowledgement."""
    c = mqtt_client(port)
    try:
        for topic, payload, retain in messages:
            info = c.publish(topic, payload, qos=1, retain=retain)
            info.wait_for_publish(10)
            assert info.is_published(), f"no PUBACK for {topic}"
    finally:
        c.disconnect()
        c.loop_stop()


# --------------------------------------------------------------------------
# The demo


class Demo:
    def __init__(self, workdir: Path):
        self.workdir = workdir
        self.data_dir = workdir / "data"
        self.log_path = workdir / "demo.log"
        ports: set[int] = set()
        while len(ports) < 3:
            ports.add(free_port())
        self.mqtt_port, self.ws_port, self.console_port = sorted(ports)
        self.proc: subprocess.Popen | None = None
        self.passwords: dict[str, str] = {}
        self.tokens: dict[str, str] = {}
        self.api = Api(f"http://{HOST}:{self.console_port}")

    def start(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        r = gantry("role", "add", SPEED_ROLE, "--allow", f"subscribe:{SPEED}",
                   "--description", "one tag only (console API tests)", "--data-dir", str(self.data_dir))
        assert r.returncode == 0, r.stderr
        for name, (role, kind) in EXTRA_USERS.items():
            add_user(self.data_dir, name, role, kind)
        log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [str(gantry_bin()), "demo", "--data-dir", str(self.data_dir),
             "--mqtt-port", str(self.mqtt_port), "--ws-port", str(self.ws_port),
             "--modbus-base-port", "0", "--console-port", str(self.console_port)],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        log.close()
        up = wait_until(lambda: self.proc.poll() is not None
                        or (port_open(self.console_port) and port_open(self.mqtt_port)), 30, 0.05)
        if not up or self.proc.poll() is not None:
            raise BrokerError(f"gantry demo did not start:\n{self.log_tail()}")
        logins = (self.data_dir / "console-logins.txt").read_text().split("\n")
        self.passwords = dict(line.split(" ", 1) for line in logins if " " in line)
        assert set(self.passwords) == {"admin", "operator", "analyst", "officer"}, self.passwords
        self.passwords.update({name: password_of(name) for name in EXTRA_USERS})
        self.tokens = {user: self.api.login(user, pw) for user, pw in self.passwords.items()}
        # The PLCs are polled once a second: wait for the first values.
        ok = wait_until(lambda: (self.get("/api/v1/tag", {"path": SPEED}).json().get("live") or {})
                        .get("value") is not None, 20, 0.2)
        if not ok:
            raise BrokerError(f"no live value of {SPEED}:\n{self.log_tail()}")

    def get(self, path: str, params: dict | None = None, user: str = "admin", **kw) -> Answer:
        return self.api.get(path, params, token=self.tokens[user], **kw)

    def stop(self) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        return self.proc.returncode

    def log_tail(self, n: int = 60) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return "(no log)"


@pytest.fixture(scope="module")
def demo(tmp_path_factory, request):
    if not gantry_bin().exists():
        pytest.fail(f"gantry binary not found at {gantry_bin()} (cargo build -p gantry)", pytrace=False)
    d = Demo(tmp_path_factory.mktemp("console-demo"))
    failed_before = request.session.testsfailed
    try:
        d.start()
    except BrokerError as e:
        d.stop()
        pytest.fail(str(e), pytrace=False)
    except BaseException:
        d.stop()
        raise
    try:
        yield d
    finally:
        code = d.stop()
        if request.session.testsfailed > failed_before:
            print(f"\n----- gantry demo log tail (exit code {code}) -----\n{d.log_tail(80)}")


@pytest.fixture(scope="module")
def openapi(demo) -> dict:
    a = demo.api.get("/api/v1/openapi.json")
    assert a.status == 200, a
    assert a.content_type.startswith("application/json"), a
    return a.json()


def operations(doc: dict):
    for path, item in sorted(doc["paths"].items()):
        for method, op in sorted(item.items()):
            yield method, path, op


@pytest.fixture(scope="module")
def dead_letters(demo) -> dict:
    """Two values that break their contracts, published over MQTT: the
    filler's speed as text, then (later) the capper's temperature as text."""
    first = {"topic": SPEED, "payload": json.dumps({"timestamp_ms": now_ms(), "value": "fast"})}
    mqtt_publish(demo.mqtt_port, [(first["topic"], first["payload"], False)])
    time.sleep(0.05)  # distinct received_ms, so "newest first" is decidable
    second = {"topic": CAPPER_TEMPERATURE,
              "payload": json.dumps({"timestamp_ms": now_ms(), "value": "hot"})}
    mqtt_publish(demo.mqtt_port, [(second["topic"], second["payload"], False)])

    def both():
        entries = demo.get("/api/v1/dead-letters").json()["entries"]
        topics = {e["topic"] for e in entries}
        return entries if {SPEED, CAPPER_TEMPERATURE} <= topics else None

    entries = wait_until(both, 10, 0.1)
    assert entries, demo.get("/api/v1/dead-letters")
    return {"first": first, "second": second}


# --------------------------------------------------------------------------
# 1. The OpenAPI document drives the coverage


def test_openapi_document_is_openapi_3(openapi):
    doc = openapi
    assert str(doc["openapi"]).startswith("3."), doc.get("openapi")
    assert doc["info"]["title"] and doc["info"]["version"]
    assert isinstance(doc["paths"], dict) and doc["paths"]
    error = doc["components"]["schemas"]["Error"]
    assert error["required"] == ["error"]
    inner = error["properties"]["error"]
    assert set(inner["required"]) == {"status", "code", "message"}
    assert set(inner["properties"]["code"]["enum"]) >= {
        "bad_request", "unauthorized", "forbidden", "not_found", "too_many_requests"}
    schemes = doc["components"]["securitySchemes"]
    assert schemes["session"] == {"type": "apiKey", "in": "cookie", "name": "gantry_session"}
    assert schemes["bearer"]["scheme"] == "bearer"
    # The endpoints the guide (docs/api.md) lists are all in the document.
    documented = {(m.upper(), p) for m, p, _ in operations(doc)}
    for expected in [("POST", "/api/v1/login"), ("POST", "/api/v1/logout"), ("GET", "/api/v1/me"),
                     ("GET", "/api/v1/namespace"), ("GET", "/api/v1/namespace/search"),
                     ("GET", "/api/v1/tag"), ("GET", "/api/v1/history/raw"),
                     ("GET", "/api/v1/history/aggregate"), ("GET", "/api/v1/history/snapshot"),
                     ("GET", "/api/v1/kpi/units"), ("GET", "/api/v1/kpi"), ("GET", "/api/v1/kpi/explain"),
                     ("GET", "/api/v1/dead-letters"), ("GET", "/api/v1/connectors"),
                     ("GET", "/api/v1/broker"), ("GET", "/api/v1/clients"), ("GET", "/api/v1/users"),
                     ("GET", "/api/v1/roles"), ("GET", "/api/v1/audit"), ("GET", "/api/v1/live"),
                     ("GET", "/metrics"), ("GET", "/api/v1/openapi.json"), ("GET", "/healthz")]:
        assert expected in documented, expected
    guide = (REPO_ROOT / "docs" / "api.md").read_text()
    op_ids = set()
    for method, path, op in operations(doc):
        where = f"{method.upper()} {path}"
        assert re.search(re.escape(where) + r"(?![\w/-])", guide), f"{where} is not in docs/api.md"
        assert op["operationId"] not in op_ids, op["operationId"]
        op_ids.add(op["operationId"])
        assert op["summary"] and op["description"].startswith("Permission:"), where
        ok = [code for code in op["responses"] if code.startswith("2")]
        assert len(ok) == 1 and op["responses"][ok[0]]["content"], where
        for param in op["parameters"]:
            assert param["in"] == "query" and param["name"] and "type" in param["schema"], (where, param)
        public = op.get("security") == []
        if not public:
            assert "401" in op["responses"], f"{where}: needs a login but documents no 401"
        for code, response in op["responses"].items():
            if not code.startswith("2"):
                ref = response["content"]["application/json"]["schema"]["$ref"]
                assert ref == "#/components/schemas/Error", (where, code)


def concrete(path: str) -> tuple[str, list[str]]:
    """The path with its `{name}` segments filled from PATH_EXAMPLES, and
    the template names that have no example."""
    missing: list[str] = []

    def fill(m: re.Match) -> str:
        if m.group(1) not in PATH_EXAMPLES:
            missing.append(m.group(1))
            return m.group(0)
        return urllib.parse.quote(PATH_EXAMPLES[m.group(1)], safe="")

    return re.sub(r"\{(\w+)\}", fill, path), missing


def test_every_documented_operation_answers_an_admin(demo, openapi):
    """Data-driven from the document: each operation, called by an admin with
    the example parameters, answers its documented success status with the
    documented content type (JSON that parses, an event stream, text)."""
    admin = demo.tokens["admin"]
    problems: list[str] = []
    called = 0
    for method, path, op in operations(openapi):
        where = f"{method.upper()} {path}"
        params = EXAMPLES.get(path, {})
        required = [p["name"] for p in op["parameters"] if p.get("required")]
        missing = [name for name in required if name not in params]
        url, missing_segments = concrete(path)
        if missing or missing_segments:
            problems.append(f"{where}: add example values for {missing} to EXAMPLES "
                            f"or {missing_segments} to PATH_EXAMPLES")
            continue
        needs_body = (op.get("requestBody") or {}).get("required", False)
        special = path in ("/api/v1/login", "/api/v1/logout")
        if method != "get" and needs_body and not special and path not in BODIES:
            problems.append(f"{where}: add an example request body to BODIES")
            continue
        ok_code = next(code for code in op["responses"] if code.startswith("2"))
        content = op["responses"][ok_code].get("content", {})
        media = next(iter(content), None)
        called += 1
        if media == "text/event-stream":
            with Sse(demo.console_port, list(params["path"]), admin) as sse:
                if sse.status != int(ok_code):
                    problems.append(f"{where}: {sse.status}, expected {ok_code}")
                    continue
                if not (sse.headers.get("Content-Type") or "").startswith(media):
                    problems.append(f"{where}: content type {sse.headers.get('Content-Type')}")
                events = sse.events(5, max_events=1)
                if not events or events[0][0] != "hello":
                    problems.append(f"{where}: no hello event first ({events})")
            continue
        if method == "post" and path == "/api/v1/login":
            a = demo.api.login_answer("admin", demo.passwords["admin"])
        elif method == "post" and path == "/api/v1/logout":
            # A session of its own, so the shared admin token lives on.
            throwaway = demo.api.login("admin", demo.passwords["admin"])
            a = demo.api.post(url, {}, token=throwaway)
        elif method == "get":
            a = demo.api.get(url, params, token=admin)
        else:
            a = demo.api.request(method.upper(), url, params, body=BODIES.get(path, {}), token=admin)
        if a.status != int(ok_code):
            problems.append(f"{where}: {a!r}, expected {ok_code}")
            continue
        if media is None or a.status == 204:
            # (The document gives the 204 of logout a JSON content; a 204
            # has no body, which is what counts.)
            if a.body:
                problems.append(f"{where}: documented without content but answered {a!r}")
            continue
        if not a.content_type.startswith(media):
            problems.append(f"{where}: content type {a.content_type!r}, documented {media}")
            continue
        if media == "application/json":
            try:
                a.json()
            except ValueError as e:
                problems.append(f"{where}: not JSON ({e}): {a!r}")
    assert not problems, "\n".join(problems)
    assert called >= 20, called


def test_every_operation_that_needs_a_login_refuses_without_one(demo, openapi):
    """Data-driven: no credentials, or a token nobody was given, is 401 with
    the JSON error shape for every operation not marked public."""
    problems: list[str] = []
    checked = 0
    for method, path, op in operations(openapi):
        if op.get("security") == []:
            continue
        checked += 1
        params = EXAMPLES.get(path, {})
        url = re.sub(r"\{(\w+)\}", lambda m: PATH_EXAMPLES.get(m.group(1), "x"), path)
        for token in (None, "0" * 64):
            if method == "get":
                a = demo.api.get(url, params, token=token)
            else:
                a = demo.api.request(method.upper(), url, params, body=BODIES.get(path, {}), token=token)
            try:
                assert a.status == 401, a
                err = a.error()
                assert err["code"] == "unauthorized", err
                assert "Bearer" in (a.headers.get("WWW-Authenticate") or ""), a.headers
            except AssertionError as e:
                problems.append(f"{method.upper()} {path} (token={token is not None}): {e}")
    assert checked >= 15, checked
    assert not problems, "\n".join(problems)


def test_public_endpoints_answer_without_a_login(demo, openapi):
    public = [(m, p) for m, p, op in operations(openapi) if op.get("security") == []]
    assert ("post", "/api/v1/login") in public and ("get", "/healthz") in public
    a = demo.api.get("/healthz")
    assert a.status == 200 and a.body.strip() == b"ok", a
    assert demo.api.get("/api/v1/openapi.json").status == 200


# --------------------------------------------------------------------------
# 2. Logging in


def test_login_sets_a_strict_http_only_cookie_that_opens_the_api(demo):
    jar = http.cookiejar.CookieJar()
    a = demo.api.login_answer("analyst", demo.passwords["analyst"], jar=jar)
    assert a.status == 200, a
    body = a.json()
    assert body["identity"] == "analyst" and body["roles"] == ["it-analyst"], body
    assert isinstance(body["token"], str) and len(body["token"]) >= 32
    assert body["expires_ms"] > now_ms()
    cookie = a.headers.get("Set-Cookie") or ""
    attrs = [part.strip() for part in cookie.split(";")]
    assert attrs[0].startswith("gantry_session=") and attrs[0].split("=", 1)[1], cookie
    assert "HttpOnly" in attrs and "SameSite=Strict" in attrs, cookie
    assert "Secure" not in attrs, f"plain HTTP console marks its cookie Secure: {cookie}"
    assert [c.name for c in jar] == ["gantry_session"]
    me = demo.api.get("/api/v1/me", jar=jar)
    assert me.status == 200, me
    assert me.json()["identity"] == "analyst"
    assert me.json()["can"] == {"read": True, "command": False, "sys": True,
                                "users": False, "roles": False, "audit": False}
    # Logging out through the cookie ends that session and clears the cookie.
    out = demo.api.post("/api/v1/logout", {}, jar=jar)
    assert out.status == 204, out
    assert "Max-Age=0" in (out.headers.get("Set-Cookie") or "")
    jar.set_cookie(http.cookiejar.Cookie(
        0, "gantry_session", body["token"], None, False, HOST, False, False, "/", True,
        False, None, False, None, None, {}))
    again = demo.api.get("/api/v1/me", jar=jar)
    assert again.status == 401 and again.error()["code"] == "unauthorized", again


def test_bearer_token_flow_and_logout(demo):
    token = demo.api.login("operator", demo.passwords["operator"])
    me = demo.api.get("/api/v1/me", token=token)
    assert me.status == 200, me
    assert me.json()["identity"] == "operator" and me.json()["roles"] == ["ot-engineer"]
    assert demo.api.post("/api/v1/logout", {}, token=token).status == 204
    after = demo.api.get("/api/v1/me", token=token)
    assert after.status == 401, after
    err = after.error()
    assert err["code"] == "unauthorized" and "log in" in err["message"], err
    # Other sessions of the same identity live on.
    assert demo.get("/api/v1/me", user="operator").status == 200


def test_bad_credentials_are_401_and_look_alike(demo):
    wrong = demo.api.login_answer("analyst", "not-the-password")
    unknown = demo.api.login_answer("nobody-" + uniq(), "whatever-it-is")
    try:
        for a in (wrong, unknown):
            assert a.status == 401, a
            err = a.error()
            assert err["code"] == "unauthorized", err
            assert "token" not in a.json() and not a.headers.get("Set-Cookie"), a
        # The same message for a wrong password and an unknown user (no
        # user enumeration), apart from the name itself.
        w, u = wrong.error()["message"], unknown.error()["message"]
        assert w.replace('"analyst"', "NAME") == re.sub(r'"nobody-[^"]*"', "NAME", u), (w, u)
    finally:
        # A success resets the failed-login count of 127.0.0.1 (the other
        # tests log in from there too).
        assert demo.api.login_answer("analyst", demo.passwords["analyst"]).status == 200


def test_login_needs_a_json_body(demo):
    creds = json.dumps({"username": "admin", "password": demo.passwords["admin"]}).encode()
    # No Content-Type at all (http.client sends none unless told).
    conn = http.client.HTTPConnection(HOST, demo.console_port, timeout=10)
    try:
        conn.request("POST", "/api/v1/login", body=creds)
        resp = conn.getresponse()
        a = Answer(resp.status, resp.headers, resp.read())
    finally:
        conn.close()
    assert a.status == 400, a
    assert "Content-Type" in a.error()["message"]
    for ctype in ("application/x-www-form-urlencoded", "text/plain"):
        a = demo.api.post("/api/v1/login", raw_body=creds, headers={"Content-Type": ctype})
        assert a.status == 400 and a.error()["code"] == "bad_request", (ctype, a)
        assert not a.headers.get("Set-Cookie")
    # JSON, but not the login object.
    a = demo.api.post("/api/v1/login", raw_body=b'{"user": "admin"}',
                      headers={"Content-Type": "application/json"})
    assert a.status == 400 and a.error()["code"] == "bad_request", a


def test_anonymous_mqtt_access_does_not_open_the_console(demo):
    a = demo.api.get("/api/v1/me")
    assert a.status == 401 and "log in" in a.error()["message"], a


# --------------------------------------------------------------------------
# 3. Permissions per role


def row(*statuses: int) -> dict[str, int]:
    return dict(zip(ROLES, statuses))


#                 label                 path                    params                    admin oper anal offi fill
PERMISSIONS = [
    ("users", "/api/v1/users", {}, row(200, 403, 403, 200, 403)),
    ("roles", "/api/v1/roles", {}, row(200, 403, 403, 200, 403)),
    ("audit", "/api/v1/audit", {"limit": "1", "verify": "false"}, row(200, 403, 403, 200, 403)),
    ("broker", "/api/v1/broker", {}, row(200, 200, 200, 200, 403)),
    ("clients", "/api/v1/clients", {}, row(200, 200, 200, 200, 403)),
    ("metrics", "/metrics", {}, row(200, 200, 200, 200, 403)),
    ("connectors", "/api/v1/connectors", {}, row(200, 200, 200, 403, 403)),
    ("browse site", "/api/v1/namespace", {"path": "acme/dallas"}, row(200, 200, 200, 403, 200)),
    ("own tag", "/api/v1/tag", {"path": SPEED}, row(200, 200, 200, 403, 200)),
    ("other equipment's tag", "/api/v1/tag", {"path": CAPPER_SPEED}, row(200, 200, 200, 403, 403)),
    ("history of own tag", "/api/v1/history/raw", {"path": SPEED, "from": "-1m"},
     row(200, 200, 200, 403, 200)),
    ("history of a forbidden tag", "/api/v1/history/raw", {"path": CAPPER_SPEED, "from": "-1m"},
     row(200, 200, 200, 403, 403)),
    ("aggregate of a forbidden tag", "/api/v1/history/aggregate", {"path": CAPPER_SPEED},
     row(200, 200, 200, 403, 403)),
    ("snapshot of a forbidden tag", "/api/v1/history/snapshot", {"path": CAPPER_SPEED},
     row(200, 200, 200, 403, 403)),
    ("KPI of a line", "/api/v1/kpi", {"path": LINE1}, row(200, 200, 200, 403, 403)),
    ("KPI of own unit", "/api/v1/kpi", {"path": FILLER}, row(200, 200, 200, 403, 200)),
    ("KPI explained", "/api/v1/kpi/explain", {"path": LINE1}, row(200, 200, 200, 403, 403)),
    ("dead letters", "/api/v1/dead-letters", {}, row(200, 200, 200, 200, 200)),
    ("KPI units", "/api/v1/kpi/units", {}, row(200, 200, 200, 200, 200)),
    ("search", "/api/v1/namespace/search", {"q": "speed"}, row(200, 200, 200, 200, 200)),
    ("me", "/api/v1/me", {}, row(200, 200, 200, 200, 200)),
]

CAN = {
    "admin": dict(read=True, command=True, sys=True, users=True, roles=True, audit=True),
    "operator": dict(read=True, command=True, sys=True, users=False, roles=False, audit=False),
    "analyst": dict(read=True, command=False, sys=True, users=False, roles=False, audit=False),
    "officer": dict(read=True, command=False, sys=True, users=True, roles=True, audit=True),
    "filler": dict(read=True, command=False, sys=False, users=False, roles=False, audit=False),
}


@pytest.mark.parametrize("user", ROLES)
def test_permissions_per_role(demo, user):
    problems = []
    for label, path, params, expected in PERMISSIONS:
        a = demo.get(path, params, user=user)
        if a.status != expected[user]:
            problems.append(f"{label} ({path} {params}): {a!r}, expected {expected[user]}")
            continue
        if a.status == 403:
            err = a.error()
            if err["code"] != "forbidden" or f'"{user}"' not in err["message"]:
                problems.append(f"{label}: a 403 should name the identity: {err}")
    assert not problems, f"{user}:\n" + "\n".join(problems)
    assert demo.get("/api/v1/me", user=user).json()["can"] == CAN[user]


def test_a_wildcard_history_query_is_narrowed_to_readable_series(demo):
    """A filter is not refused: the series the caller may not read are left out."""
    def topics(user):
        a = demo.get("/api/v1/history/raw", {"path": f"{LINE1}/+/speed", "from": "-5m"}, user=user)
        assert a.status == 200, a
        return {s["topic"] for s in a.json()["series"]}

    assert wait_until(lambda: topics("analyst") >= {SPEED, CAPPER_SPEED}, 10, 0.2), topics("analyst")
    assert topics("filler") == {SPEED}
    assert topics("officer") == set()


def test_namespace_as_the_security_officer_and_as_a_device(demo, dead_letters):
    def names(user, path):
        a = demo.get("/api/v1/namespace", {"path": path}, user=user)
        assert a.status == 200, (user, path, a)
        return [c["name"] for c in a.json()["children"]]

    # The officer reads dead letters only: the enterprise and its _dlq path.
    assert names("officer", "") == ["acme"]
    assert names("officer", "acme") == ["_dlq"]
    path = "acme/_dlq"
    for level in ["acme", "dallas", "packaging", "line-1", "filler"]:
        assert level in names("officer", path), (path, names("officer", path))
        path = f"{path}/{level}"
    leaf = demo.get("/api/v1/namespace", {"path": path}, user="officer").json()["children"]
    assert [c["name"] for c in leaf] == ["speed"] and leaf[0]["live"] is not None, leaf
    # The device sees the path down to its equipment and its own values ...
    assert names("filler", "") == ["acme"]
    for parent, child in [("acme", "dallas"), ("acme/dallas", "packaging"),
                          ("acme/dallas/packaging", "line-1"), (LINE1, "filler")]:
        assert child in names("filler", parent), (parent, names("filler", parent))
    own = demo.get("/api/v1/namespace", {"path": FILLER}, user="filler").json()["children"]
    assert FILLER_TAGS <= {c["name"] for c in own if c["live"] is not None}, own
    # ... and nothing of another machine's.
    other = demo.get("/api/v1/namespace", {"path": CAPPER}, user="filler").json()["children"]
    assert [c for c in other if c["live"] is not None] == [], other
    a = demo.get("/api/v1/namespace", {"path": LINE1}, user="filler")
    assert all(c["live"] is None for c in a.json()["children"]), a


def test_a_denial_is_audited(demo):
    """`visitor` is denied only here. Its first denial is written to the
    audit log; the next one within the window is counted, not written (a
    console left open on a forbidden page must not flood the log)."""
    a = demo.get("/api/v1/tag", {"path": CAPPER_SPEED}, user="visitor")
    assert a.status == 403, a
    assert '"visitor"' in a.error()["message"] and "subscribe" in a.error()["message"]
    again = demo.get("/api/v1/history/raw", {"path": CAPPER_TEMPERATURE}, user="visitor")
    assert again.status == 403, again
    assert demo.get("/api/v1/tag", {"path": CAPPER_SPEED}, user="filler").status == 403
    # A fence: a login is written durably before it is answered, after the
    # records above in the log's order.
    demo.api.login("visitor", demo.passwords["visitor"])

    def audit(category):
        answer = demo.get("/api/v1/audit", {"category": category, "limit": "5000", "verify": "false"})
        assert answer.status == 200, answer
        return answer.json()["records"]

    def fenced():
        logins = [r for r in audit("authentication") if r["actor"]["id"] == "visitor" and r["type"] == "login"]
        return len(logins) >= 2  # the fixture's and the fence

    assert wait_until(fenced, 10, 0.2), "the fence login is not in the audit log"
    denials = [r for r in audit("authorization") if r["actor"]["id"] == "visitor"]
    assert len(denials) == 1, denials
    r = denials[0]
    assert r["type"] == "api-subscribe-denied" and r["action"] == "subscribe", r
    assert r["category"] == "authorization" and r["outcome"]["success"] is False, r
    assert r["target"] == CAPPER_SPEED, r
    assert '"visitor"' in (r["outcome"].get("reason") or ""), r
    assert r["source"]["transport"] == "http" and r["source"]["ip"] == HOST, r
    # Other identities' denials are their own.
    filler = [r for r in audit("authorization") if r["actor"]["id"] == "filler"]
    assert filler and all(r["type"].startswith("api-") and r["type"].endswith("-denied") for r in filler)
    # The chain of the log still verifies.
    chain = demo.get("/api/v1/audit", {"limit": "1"}).json()["chain"]
    assert chain["ok"] is True and chain["problems"] == [], chain


def test_the_officer_is_refused_a_line_kpi_with_the_input_named(demo):
    a = demo.get("/api/v1/kpi", {"path": LINE1}, user="officer")
    assert a.status == 403, a
    msg = a.error()["message"]
    assert '"officer"' in msg and LINE1 in msg and "subscribe" in msg, msg


# --------------------------------------------------------------------------
# 4. The namespace


def test_browse_root_and_enterprise(demo):
    root = demo.get("/api/v1/namespace")
    assert root.status == 200, root
    body = root.json()
    assert body["path"] == "" and body["next_after"] is None
    assert [(c["name"], c["kind"], c["modeled"]) for c in body["children"]] == [("acme", "enterprise", True)]
    site = demo.get("/api/v1/namespace", {"path": "acme/dallas/packaging"}).json()
    kinds = {c["name"]: c["kind"] for c in site["children"]}
    assert kinds.get("line-1") == "line" and kinds.get("line-2") == "line", kinds
    line = demo.get("/api/v1/namespace", {"path": LINE1}).json()
    kinds = {c["name"]: c["kind"] for c in line["children"]}
    assert {kinds.get(m) for m in ("filler", "capper", "labeler")} == {"equipment"}, kinds


def test_paging_walks_every_child_once(demo):
    everything = demo.get("/api/v1/namespace", {"path": FILLER, "limit": "1000"}).json()
    assert everything["next_after"] is None
    names, after, pages = [], None, 0
    while True:
        pages += 1
        assert pages <= 50, "paging does not end"
        params = {"path": FILLER, "limit": "2"}
        if after is not None:
            params["after"] = after
        a = demo.get("/api/v1/namespace", params)
        assert a.status == 200, a
        page = a.json()
        assert len(page["children"]) <= 2, page
        names += [c["name"] for c in page["children"]]
        after = page["next_after"]
        if after is None:
            break
        assert after == page["children"][-1]["name"], page
    assert len(names) == len(set(names)), f"duplicates while paging: {names}"
    assert names == sorted(names), names
    assert FILLER_TAGS <= set(names), names
    # Children that appeared meanwhile (the KPIs publish every 10 s) aside,
    # the walk found what one big page holds.
    assert {c["name"] for c in everything["children"]} <= set(names), (everything, names)
    assert pages >= 4


def test_live_value_fields_and_the_speed_contract(demo):
    children = demo.get("/api/v1/namespace", {"path": FILLER}).json()["children"]
    speed = next(c for c in children if c["name"] == "speed")
    assert speed["kind"] == "tag" and speed["modeled"] and not speed["has_children"], speed
    live = speed["live"]
    assert isinstance(live["value"], (int, float)), live
    assert live["quality"] == "good"
    assert isinstance(live["timestamp_ms"], int) and abs(live["timestamp_ms"] - now_ms()) < 120_000
    assert isinstance(live["age_ms"], int) and live["age_ms"] >= 0
    assert live["stale"] is False and live["retained"] is True
    assert live["received_ms"] > 0
    contract = speed["contract"]
    assert contract["type"] == "float" and contract["unit"] == "units/min", contract
    assert contract["min"] == 0 and contract["max"] == 1200, contract
    assert contract["enum"] == [] and contract["writable"] is False
    state = next(c for c in children if c["name"] == "state")
    assert state["contract"]["type"] == "enum" and "running" in state["contract"]["enum"]
    assert state["live"]["value"] in state["contract"]["enum"]

    detail = demo.get("/api/v1/tag", {"path": SPEED})
    assert detail.status == 200, detail
    d = detail.json()
    assert d["path"] == SPEED and d["kind"] == "tag" and d["contract"] == contract
    assert d["source"] == {"connector": "modbus", "name": "line-1-filler-plc"}, d
    assert d["equipment"]["path"] == FILLER and d["equipment"]["class"] == "filler@1", d
    assert d["kpi_unit"] == FILLER


def test_an_old_value_is_stale_with_its_quality(demo):
    topic = f"{FILLER}/{uniq('probe')}"
    sample = {"timestamp_ms": now_ms() - 600_000, "value": 1.5, "quality": "uncertain"}
    mqtt_publish(demo.mqtt_port, [(topic, json.dumps(sample), True)])
    def detail():
        answer = demo.get("/api/v1/tag", {"path": topic})
        return answer if answer.status == 200 else None

    a = wait_until(detail, 10, 0.1)
    assert a, demo.get("/api/v1/tag", {"path": topic})
    d = a.json()
    assert d["kind"] == "topic" and d["contract"] is None, d
    live = d["live"]
    assert live["value"] == 1.5 and live["quality"] == "uncertain", live
    assert live["timestamp_ms"] == sample["timestamp_ms"] and live["age_ms"] >= 600_000, live
    assert live["stale"] is True, live


def test_search_finds_the_tag_first(demo):
    a = demo.get("/api/v1/namespace/search", {"q": "line-2 capper state"})
    assert a.status == 200, a
    body = a.json()
    assert body["query"] == "line-2 capper state"
    paths = [r["path"] for r in body["results"]]
    assert paths and paths[0] == f"{LINE2}/capper/state", paths
    assert all("line-2" in p and "capper" in p and "state" in p for p in paths), paths
    first = body["results"][0]
    assert first["kind"] == "tag" and first["contract"]["type"] == "enum"
    # Case does not matter; an empty query is a bad request.
    upper = demo.get("/api/v1/namespace/search", {"q": "LINE-2 Capper STATE"}).json()
    assert [r["path"] for r in upper["results"]] == paths
    empty = demo.get("/api/v1/namespace/search", {"q": "  "})
    assert empty.status == 400 and "q" in empty.error()["message"], empty


@pytest.mark.parametrize("endpoint,path", [
    ("/api/v1/namespace", "acme/+"),
    ("/api/v1/namespace", f"{FILLER}/#"),
    ("/api/v1/tag", f"{LINE1}/+/speed"),
    ("/api/v1/tag", "acme/#"),
])
def test_a_wildcard_is_not_a_path(demo, endpoint, path):
    a = demo.get(endpoint, {"path": path})
    assert a.status == 400, a
    err = a.error()
    assert err["code"] == "bad_request" and "path" in err["message"], err


def test_an_unknown_tag_is_404(demo):
    a = demo.get("/api/v1/tag", {"path": f"{FILLER}/no_such_tag"})
    assert a.status == 404, a
    err = a.error()
    assert err["code"] == "not_found" and "no_such_tag" in err["message"], err


# --------------------------------------------------------------------------
# 5. History


def test_history_raw_aggregate_and_snapshot(demo):
    def raw():
        a = demo.get("/api/v1/history/raw", {"path": SPEED, "from": "-5m"})
        assert a.status == 200, a
        series = a.json()["series"]
        return series if series and len(series[0]["points"]) >= 3 else None

    series = wait_until(raw, 20, 0.5)
    assert series, demo.get("/api/v1/history/raw", {"path": SPEED, "from": "-5m"})
    s = series[0]
    assert s["topic"] == SPEED and s["value_type"] == "float", s
    stamps = [p["ts_ms"] for p in s["points"]]
    assert stamps == sorted(stamps)
    assert all(isinstance(p["value"], (int, float)) and p["quality"] == "good" for p in s["points"])
    limited = demo.get("/api/v1/history/raw", {"path": SPEED, "from": "-5m", "limit": "2"}).json()
    assert len(limited["series"][0]["points"]) == 2 and limited["series"][0]["truncated"] is True

    agg = demo.get("/api/v1/history/aggregate",
                   {"path": SPEED, "from": "-5m", "bucket": "1m", "agg": "min,max,avg,count"})
    assert agg.status == 200, agg
    body = agg.json()
    assert body["bucket_ms"] == 60_000 and body["to_ms"] - body["from_ms"] == 300_000, body
    buckets = [b for b in body["series"][0]["buckets"] if b["count"] > 0]
    assert buckets, body
    for b in buckets:
        assert b["min"] <= b["avg"] <= b["max"], b
        assert b["end_ms"] - b["start_ms"] == 60_000
    auto = demo.get("/api/v1/history/aggregate",
                    {"path": SPEED, "from": "-1h", "bucket": "auto", "max_buckets": "10"}).json()
    assert 0 < 3_600_000 // auto["bucket_ms"] <= 20, auto["bucket_ms"]

    snap = demo.get("/api/v1/history/snapshot", {"path": f"{FILLER}/+", "at": "now"})
    assert snap.status == 200, snap
    values = {v["topic"]: v for v in snap.json()["values"]}
    assert SPEED in values and values[SPEED]["age_ms"] >= 0, values
    assert {f"{FILLER}/{t}" for t in ("state", "good_count", "energy")} <= set(values)


@pytest.mark.parametrize("endpoint,params,names", [
    ("/api/v1/history/raw", {"path": SPEED, "from": "last tuesday"}, "from"),
    ("/api/v1/history/raw", {"path": SPEED, "to": "soon"}, "to"),
    ("/api/v1/history/aggregate", {"path": SPEED, "from": "yesterday-ish"}, "from"),
    ("/api/v1/history/snapshot", {"path": SPEED, "at": "then"}, "at"),
    ("/api/v1/history/aggregate", {"path": SPEED, "bucket": "fortnightly"}, "bucket"),
    ("/api/v1/history/aggregate", {"path": SPEED, "agg": "median-ish"}, "agg"),
    ("/api/v1/history/raw", {}, "path"),
])
def test_history_bad_parameters_are_400_naming_them(demo, endpoint, params, names):
    a = demo.get(endpoint, params)
    assert a.status == 400, a
    err = a.error()
    assert err["code"] == "bad_request" and names in err["message"], err


def test_history_too_many_buckets_is_400(demo):
    a = demo.get("/api/v1/history/aggregate", {"path": SPEED, "from": "-7d", "bucket": "1s"})
    assert a.status == 400, a
    assert "buckets" in a.error()["message"]
    backwards = demo.get("/api/v1/history/aggregate", {"path": SPEED, "from": "now", "to": "-1h"})
    assert backwards.status == 400, backwards


# --------------------------------------------------------------------------
# 6. KPIs


def test_kpi_units_and_paths(demo):
    a = demo.get("/api/v1/kpi/units")
    assert a.status == 200, a
    body = a.json()
    assert sorted(u["path"] for u in body["units"]) == sorted(UNITS), body
    for u in body["units"]:
        assert u["calendar"] == "three-shift" and u["state_model"], u
    assert {LINE1, LINE2, "acme/dallas/packaging", "acme/dallas", *UNITS} <= set(body["paths"]), body
    # What the officer may not read is left out, not refused.
    officer = demo.get("/api/v1/kpi/units", user="officer").json()
    assert officer == {"units": [], "paths": []}, officer


def test_kpi_report_of_a_line(demo):
    def report():
        a = demo.get("/api/v1/kpi", {"path": LINE1})
        assert a.status == 200, a
        body = a.json()
        kpis = {k["kpi"]: k for k in body["kpis"]}
        ready = all(isinstance((kpis.get(n) or {}).get("value"), (int, float))
                    for n in ("oee", "availability", "effectiveness", "quality"))
        return body if ready else None

    body = wait_until(report, 30, 0.5)
    assert body, demo.get("/api/v1/kpi", {"path": LINE1})
    assert body["path"] == LINE1 and body["from_ms"] <= body["to_ms"], body
    assert isinstance(body["elements"], dict) and "apt_ms" in body["elements"], body["elements"]
    kpis = {k["kpi"]: k for k in body["kpis"]}
    for name in ("oee", "availability", "effectiveness", "quality"):
        k = kpis[name]
        assert 0 <= k["value"] <= 1.0000001, k
        assert k["unit"] == "ratio" and k["formula"], k
        assert k["inputs"] and all({"name", "value", "unit"} <= set(i) for i in k["inputs"]), k
    assert "Availability" in kpis["oee"]["formula"]
    product = 1.0
    for i in kpis["oee"]["inputs"]:
        product *= i["value"]
    assert abs(product - kpis["oee"]["value"]) < 1e-6, kpis["oee"]


def test_kpi_explain(demo):
    a = demo.get("/api/v1/kpi/explain", {"path": LINE1, "kpi": "availability"})
    assert a.status == 200, a
    body = a.json()
    assert body["kpi"]["kpi"] == "availability"
    formula = body["kpi"]["formula"]
    assert formula and formula in body["text"], (formula, body["text"][:500])
    assert LINE1 in body["text"] and body["report"]["path"] == LINE1
    oee = demo.get("/api/v1/kpi/explain", {"path": FILLER}).json()  # oee by default
    assert oee["kpi"]["kpi"] == "oee" and oee["kpi"]["formula"] in oee["text"]


@pytest.mark.parametrize("endpoint,params,status,names", [
    ("/api/v1/kpi", {"path": LINE1, "period": "the-good-old-days"}, 400, "period"),
    ("/api/v1/kpi/explain", {"path": LINE1, "period": "someday"}, 400, "period"),
    ("/api/v1/kpi/explain", {"path": LINE1, "kpi": "happiness"}, 400, "kpi"),
    ("/api/v1/kpi", {}, 400, "path"),
    ("/api/v1/kpi", {"path": "acme/houston"}, 404, "acme/houston"),
    ("/api/v1/kpi/explain", {"path": "acme/houston"}, 404, "acme/houston"),
])
def test_kpi_errors(demo, endpoint, params, status, names):
    a = demo.get(endpoint, params)
    assert a.status == status, a
    assert names in a.error()["message"]


# --------------------------------------------------------------------------
# 7. Dead letters


def test_dead_letters_newest_first_with_reason_and_rule(demo, dead_letters):
    a = demo.get("/api/v1/dead-letters")
    assert a.status == 200, a
    body = a.json()
    entries = body["entries"]
    received = [e["received_ms"] for e in entries]
    assert received == sorted(received, reverse=True), received
    topics = [e["topic"] for e in entries]
    assert topics.index(CAPPER_TEMPERATURE) < topics.index(SPEED), topics
    speed = next(e for e in entries if e["topic"] == SPEED)
    assert speed["rule"] == "type" and "float" in speed["reason"], speed
    assert speed["payload"] == dead_letters["first"]["payload"], speed
    assert speed["dlq_topic"] == f"acme/_dlq/{SPEED}", speed
    assert body["counters"]["by_rule"]["type"] >= 2, body["counters"]
    # Filtered by path; limited.
    capper = demo.get("/api/v1/dead-letters", {"path": CAPPER}).json()["entries"]
    assert [e["topic"] for e in capper] == [CAPPER_TEMPERATURE], capper
    assert len(demo.get("/api/v1/dead-letters", {"limit": "1"}).json()["entries"]) == 1
    # The security officer reads them too.
    officer = demo.get("/api/v1/dead-letters", user="officer").json()["entries"]
    assert {SPEED, CAPPER_TEMPERATURE} <= {e["topic"] for e in officer}
    # And the tag shows its last dead letter.
    tag = demo.get("/api/v1/tag", {"path": SPEED}).json()
    assert tag["dead_letter"] and tag["dead_letter"]["rule"] == "type", tag
    assert "fast" in tag["dead_letter"]["payload"]
    # The live value is still the PLC's float, not the refused text.
    assert isinstance(tag["live"]["value"], (int, float)), tag["live"]


# --------------------------------------------------------------------------
# 8. The live feed


class Burst(threading.Thread):
    """Publishes a counter to one topic as fast as it can, for a while."""

    def __init__(self, port: int, topic: str, seconds: float):
        super().__init__(daemon=True)
        self.port, self.topic, self.seconds = port, topic, seconds
        self.sent = 0

    def run(self):
        c = mqtt_client(self.port)
        try:
            end = time.monotonic() + self.seconds
            while time.monotonic() < end:
                self.sent += 1
                c.publish(self.topic, json.dumps({"timestamp_ms": now_ms(), "value": self.sent}), qos=0)
                time.sleep(0.002)
        finally:
            c.disconnect()
            c.loop_stop()


def test_live_feed_coalesces_changes_below_the_watched_path(demo):
    burst_topic = f"{FILLER}/{uniq('burst')}"
    with Sse(demo.console_port, [FILLER], demo.tokens["admin"]) as sse:
        assert sse.status == 200
        assert (sse.headers.get("Content-Type") or "").startswith("text/event-stream")
        hello = sse.events(5, max_events=1)
        assert hello and hello[0][0] == "hello", hello
        assert hello[0][1] == {
            "interval_ms": 500,
            "stale_after_ms": 300_000,
            "fields": ["path", "value", "quality", "timestamp_ms", "received_ms"],
            "watching": [FILLER],
        }, hello
        # While it is open, /metrics counts it.
        metrics = demo.get("/metrics").body.decode()
        feeds = re.search(r"^gantry_console_live_feeds (\S+)$", metrics, re.M)
        assert feeds and float(feeds.group(1)) >= 1, feeds
        burst = Burst(demo.mqtt_port, burst_topic, 2.5)
        burst.start()
        window = 3.0
        events = sse.events(window)
        burst.join(10)
    changes = [e for e in events if e[0] == "changes"]
    assert len(changes) >= 2, events
    # At most one event per interval (500 ms): a count bound, not a timing one.
    assert len(changes) <= window / 0.5 + 2, [round(t, 2) for _, _, t in changes]
    burst_values = []
    for _, data, _ in changes:
        # Rows: [path, value, quality, timestamp_ms, received_ms], with the
        # server's clock in now_ms.
        paths = [c[0] for c in data["changes"]]
        assert len(paths) == len(set(paths)), f"an event carries a topic twice: {paths}"
        assert all(p.startswith(FILLER + "/") for p in paths), paths
        assert data["dropped"] == 0
        assert isinstance(data["now_ms"], int)
        for c in data["changes"]:
            assert len(c) == 5 and c[2] in ("good", "uncertain", "bad"), c
            assert isinstance(c[4], int) and c[4] <= data["now_ms"], c
            if c[0] == burst_topic:
                burst_values.append(c[1])
    assert burst.sent > 100, burst.sent
    # Coalesced: a fraction of the burst arrives, each newer than the last.
    assert burst_values and len(burst_values) < burst.sent / 10, (len(burst_values), burst.sent)
    assert burst_values == sorted(burst_values) and len(set(burst_values)) == len(burst_values)
    # The PLC-fed tags changed during the window too.
    seen = {c[0] for _, data, _ in changes for c in data["changes"]}
    assert SPEED in seen, seen


def test_live_feed_only_carries_what_the_identity_may_read(demo):
    with Sse(demo.console_port, [FILLER], demo.tokens["speedy"]) as sse:
        assert sse.status == 200
        events = sse.events(3.5)
    assert events and events[0][0] == "hello", events
    changes = [c for name, data, _ in events if name == "changes" for c in data["changes"]]
    assert changes, events
    assert {c[0] for c in changes} == {SPEED}, {c[0] for c in changes}


@pytest.mark.parametrize("user,paths,status", [
    ("admin", [f"acme/x{i}" for i in range(17)], 400),
    ("admin", [f"{LINE1}/+"], 400),
    ("admin", [], 400),
    ("officer", ["acme/dallas"], 403),
    ("speedy", [CAPPER], 403),
    ("filler", [CAPPER_SPEED], 403),
])
def test_live_feed_refusals(demo, user, paths, status):
    with Sse(demo.console_port, paths, demo.tokens[user]) as sse:
        a = Answer(sse.status, sse.headers, sse.resp.read())
    assert a.status == status, a
    err = a.error()
    if status == 403:
        assert f'"{user}"' in err["message"], err
    if len(paths) > 16:
        assert "16" in err["message"], err


def test_sixteen_paths_are_fine(demo):
    paths = [f"{LINE1}/filler", *(f"acme/dallas/p{i}" for i in range(15))]
    with Sse(demo.console_port, paths, demo.tokens["admin"]) as sse:
        assert sse.status == 200
        hello = sse.events(5, max_events=1)
    assert hello and hello[0][1]["watching"] == paths


# --------------------------------------------------------------------------
# 9. Metrics

METRIC_LINE = re.compile(r'^[a-zA-Z_:][a-zA-Z0-9_:]*(\{[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\]|\\.)*"'
                         r'(,[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\]|\\.)*")*\})? -?[0-9.eE+-]+$')


def test_metrics_in_prometheus_text(demo):
    def scrape():
        a = demo.get("/metrics")
        assert a.status == 200, a
        text = a.body.decode()
        return (a, text) if f'gantry_kpi{{path="{LINE1}",kpi="oee"}}' in text else None

    got = wait_until(scrape, 30, 0.5)  # the KPIs are published every 10 s
    assert got, demo.get("/metrics").body.decode()[-2000:]
    a, text = got
    assert a.content_type.startswith("text/plain"), a.content_type
    assert "version=0.0.4" in a.content_type
    types = re.findall(r"^# TYPE (\S+) (\S+)$", text, re.M)
    names = [n for n, _ in types]
    assert len(names) == len(set(names)), "a family declared twice"
    for line in text.splitlines():
        if line and not line.startswith("#"):
            assert METRIC_LINE.match(line), line
            family = re.split(r"[{ ]", line, maxsplit=1)[0]
            assert family in names, f"{family} has no # TYPE"
    received = re.search(r"^gantry_broker_messages_received_total (\S+)$", text, re.M)
    assert received and float(received.group(1)) > 0
    assert ("gantry_broker_messages_received_total", "counter") in types
    oee = re.search(rf'^gantry_kpi{{path="{re.escape(LINE1)}",kpi="oee"}} (\S+)$', text, re.M)
    assert oee and 0 <= float(oee.group(1)) <= 1, oee
    assert re.search(rf'^gantry_kpi{{path="{re.escape(FILLER)}",kpi="availability"}} ', text, re.M)
    assert re.search(r'^gantry_connector_connected\{connector="modbus",name="line-1-filler-plc"\} 1$',
                     text, re.M), [l for l in text.splitlines() if "connector_connected" in l]
    assert re.search(r"^gantry_console_live_feeds \d+$", text, re.M)
    assert re.search(r"^gantry_console_sessions \d+$", text, re.M)
    assert re.search(r"^gantry_contracts_invalid \d+", text, re.M)
    assert re.search(r"^gantry_historian_written \d+", text, re.M)


@pytest.mark.parametrize("user,status", [("analyst", 200), ("officer", 200), ("operator", 200),
                                         ("filler", 403), ("speedy", 403)])
def test_metrics_need_sys(demo, user, status):
    a = demo.get("/metrics", user=user)
    assert a.status == status, a
    if status == 403:
        err = a.error()
        assert "$SYS/#" in err["message"] and f'"{user}"' in err["message"], err


def test_closed_live_feeds_are_no_longer_counted(demo):
    """Feeds of earlier tests were closed by the client; the server notices
    at its next write (the filler changes every second)."""
    def feeds():
        m = re.search(r"^gantry_console_live_feeds (\S+)$", demo.get("/metrics").body.decode(), re.M)
        return m and float(m.group(1)) == 0

    assert wait_until(feeds, 10, 0.2)


# --------------------------------------------------------------------------
# 11. Pages, assets, headers, unknown routes


def test_console_page_assets_and_security_headers(demo):
    page = demo.api.get("/")
    assert page.status == 200 and page.content_type.startswith("text/html"), page
    assert b"<!doctype html>" in page.body[:100].lower() and b"/assets/app.js" in page.body
    csp = page.headers.get("Content-Security-Policy") or ""
    assert "default-src 'self'" in csp and "frame-ancestors 'none'" in csp, csp
    # Scripts from Gantry only: no eval, no inline script.
    script_src = next((d for d in csp.split(";") if d.strip().startswith("script-src")), "")
    assert "unsafe-eval" not in csp and "unsafe-inline" not in script_src, csp
    for name, value in SECURITY_HEADERS.items():
        assert page.headers.get(name) == value, (name, page.headers.get(name))
    js = demo.api.get("/assets/app.js")
    assert js.status == 200 and "javascript" in js.content_type, js.content_type
    assert len(js.body) > 100
    css = demo.api.get("/assets/app.css")
    assert css.status == 200 and css.content_type.startswith("text/css")
    # Every answer carries them, API errors included.
    for a in (js, demo.api.get("/api/v1/me"), demo.get("/api/v1/me")):
        for name, value in SECURITY_HEADERS.items():
            assert a.headers.get(name) == value, (name, a)
        assert a.headers.get("Content-Security-Policy") == csp
    # API answers are not cached.
    assert demo.get("/api/v1/me").headers.get("Cache-Control") == "no-store"


@pytest.mark.parametrize("path", ["/api/v1/nope", "/api/v1/namespace/nope", "/nope",
                                  "/assets/nope.js"])
def test_unknown_routes_are_json_404(demo, path):
    for token in (None, demo.tokens["admin"]):
        a = demo.api.get(path, token=token)
        assert a.status == 404, a
        assert a.error()["code"] == "not_found"


@pytest.mark.parametrize("path,params", [
    ("/api/v1/namespace", {"limit": "abc"}),
    ("/api/v1/tag", {}),
    ("/api/v1/audit", {"verify": "maybe"}),
    ("/api/v1/history/raw", {"path": SPEED, "limit": "-1"}),
])
def test_malformed_query_parameters_are_json_400(demo, path, params):
    a = demo.get(path, params)
    assert a.status == 400, a
    err = a.error()
    assert err["code"] == "bad_request" and "query parameters" in err["message"], err


def test_a_wrong_method_is_a_json_405(demo):
    for method, path in (("GET", "/api/v1/login"), ("PUT", "/api/v1/login"), ("DELETE", "/api/v1/me")):
        a = demo.api.request(method, path, token=demo.tokens["admin"])
        assert a.status == 405, (method, path, a)
        err = a.error()
        assert err["code"] == "method_not_allowed" and path in err["message"], err


def test_an_unknown_api_path_is_named_in_full(demo):
    err = demo.api.get("/api/v1/nope", token=demo.tokens["admin"]).error()
    assert "/api/v1/nope" in err["message"], err


def test_the_audit_category_filter_reads_back_far_enough(demo):
    """One matching record behind many others is still found with a small
    limit: the filter reads further back until it has enough or the log ends."""
    for user in ("analyst", "filler"):
        denied = demo.get("/api/v1/users", user=user)
        assert denied.status == 403, denied
    for _ in range(45):
        demo.api.login("spare", demo.passwords["spare"])

    def found():
        a = demo.get("/api/v1/audit", {"category": "authorization", "limit": "2", "verify": "false"})
        assert a.status == 200, a
        records = a.json()["records"]
        assert all(r["category"] == "authorization" for r in records), records
        return len(records) == 2
    assert wait_until(found, 10, 0.2)


def test_a_device_denial_is_audited_as_a_device(demo):
    demo.get("/api/v1/users", user="filler")
    def device_records():
        a = demo.get("/api/v1/audit", {"category": "authorization", "limit": "500", "verify": "false"})
        return [r for r in a.json()["records"] if r["actor"]["id"] == "filler"]
    assert wait_until(lambda: bool(device_records()), 10, 0.2)
    assert all(r["actor"]["kind"] == "device" for r in device_records())


def test_contract_statistics_are_labels_not_metric_names(demo, dead_letters):
    text = demo.get("/metrics").body.decode()
    assert "gantry_contracts_by_client_" not in text and "gantry_contracts_by_path_" not in text
    families = [line.split()[2] for line in text.splitlines() if line.startswith("# TYPE ")]
    assert len(families) == len(set(families))
    # Each family's samples are contiguous: once another family starts, a
    # family never comes back.
    seen, current = set(), None
    for line in text.splitlines():
        if line.startswith("#") or not line:
            continue
        name = line.split("{")[0].split(" ")[0]
        if name != current:
            assert name not in seen, f"{name} is split"
            seen.add(name)
            current = name


def test_an_empty_list_is_not_a_refusal(tmp_path):
    """On a fresh demo with no dead letter yet, an identity allowed to read
    one enterprise's dead letters gets an empty list, not a 403; one without
    connector permission still gets a 403 for connectors."""
    d = Demo(tmp_path)
    try:
        d.start()
        r = gantry("role", "add", "dlq-acme", "--allow", "subscribe:acme/_dlq/#",
                   "--data-dir", str(d.data_dir))
        assert r.returncode == 0, r.stderr
        add_user(d.data_dir, "dlqreader", "dlq-acme")
        # The running Gantry re-reads the security file within a second.
        token = wait_until(lambda: (a := d.api.login_answer("dlqreader", password_of("dlqreader"))).status == 200
                           and a.json()["token"], 10, 0.2)
        assert token, "the new identity cannot log in"
        a = d.api.get("/api/v1/dead-letters", token=token)
        assert a.status == 200, a
        assert a.json()["entries"] == [], a
        b = d.api.get("/api/v1/connectors", token=token)
        assert b.status == 403, b
        assert '"dlqreader"' in b.error()["message"]
    finally:
        d.stop()


# --------------------------------------------------------------------------
# 2 (continued). The failed-login back-off, on a Gantry of its own


def console_broker(workdir: Path, console: str, extra: str = "") -> Broker:
    b = Broker("gantry", workdir, gantry_extra=(extra + "\n" + console).strip())
    add_user(b.data_dir, "ada", "admin")
    return b


def start_or_fail(b: Broker, console_port: int) -> None:
    try:
        b.start()
    except BrokerError as e:
        pytest.fail(str(e), pytrace=False)
    if not wait_until(lambda: port_open(console_port), 15, 0.05):
        pytest.fail(f"the console did not open port {console_port}:\n{b.log_tail()}", pytrace=False)


def test_repeated_failed_logins_are_throttled_with_retry_after(tmp_path):
    port = free_port()
    b = console_broker(tmp_path / "throttle", f'[console]\nbind = "{HOST}:{port}"')
    failed = True
    try:
        start_or_fail(b, port)
        api = Api(f"http://{HOST}:{port}")
        answers = []
        for _ in range(8):
            a = api.login_answer("ada", "wrong-password-" + uniq())
            answers.append(a)
            if a.status == 429:
                break
        statuses = [a.status for a in answers]
        # Three failures cost nothing; then each one doubles a wait (from
        # 1 s) during which the address is refused outright.
        assert statuses[:4] == [401, 401, 401, 401], statuses
        assert "next attempt" not in answers[2].error()["message"]
        assert "next attempt" in answers[3].error()["message"], answers[3]
        assert statuses[-1] == 429, statuses
        throttled = answers[-1]
        err = throttled.error()
        assert err["code"] == "too_many_requests" and "retry in" in err["message"], err
        retry_after = int(throttled.headers.get("Retry-After"))
        assert retry_after >= 1, throttled.headers
        # During the wait even the right password is refused; afterwards it works.
        first = api.login_answer("ada", password_of("ada"))
        assert first.status in (429, 200), first
        ok = wait_until(lambda: api.login_answer("ada", password_of("ada")).status == 200,
                        retry_after + 15, 0.25)
        assert ok, "the right password is still refused after Retry-After"
        token = api.login("ada", password_of("ada"))
        records = api.get("/api/v1/audit", {"category": "authentication", "limit": "200"},
                          token=token).json()["records"]
        assert any(r["type"] == "login-throttled" and r["source"]["transport"] == "http"
                   for r in records), [r["type"] for r in records]
        failed = False
    finally:
        code = b.stop()
        if failed:
            print(f"\n----- {b} log tail (exit code {code}) -----\n{b.log_tail(60)}")


# --------------------------------------------------------------------------
# 10. HTTPS and the [console] configuration


def make_certs(out: Path) -> Path:
    for args in (["ca"], ["server", "--ca", str(out)]):
        r = gantry("cert", *args, "--out", str(out))
        assert r.returncode == 0, r.stderr
    return out


def test_https_console(tmp_path):
    certs = make_certs(tmp_path / "certs")
    port = free_port()
    tls = "\n".join(["[tls]", f'cert = "{certs / "server.pem"}"', f'key = "{certs / "server-key.pem"}"'])
    b = console_broker(tmp_path / "https", f'[console]\nhttps_bind = "{HOST}:{port}"', extra=tls)
    failed = True
    try:
        start_or_fail(b, port)
        context = ssl.create_default_context(cafile=str(certs / "ca.pem"))
        api = Api(f"https://{HOST}:{port}", context)
        jar = http.cookiejar.CookieJar()
        a = api.login_answer("ada", password_of("ada"), jar=jar)
        assert a.status == 200, a
        attrs = [p.strip() for p in (a.headers.get("Set-Cookie") or "").split(";")]
        assert {"Secure", "HttpOnly", "SameSite=Strict"} <= set(attrs), attrs
        me = api.get("/api/v1/me", jar=jar)
        assert me.status == 200 and me.json()["identity"] == "ada", me
        assert api.get("/api/v1/me", token=a.json()["token"]).status == 200
        assert api.get("/healthz").body.strip() == b"ok"
        # The CA is what makes the certificate trusted.
        with pytest.raises(urllib.error.URLError):
            Api(f"https://{HOST}:{port}", ssl.create_default_context()).opener().open(
                f"https://{HOST}:{port}/healthz", timeout=10)
        # Plain HTTP on the HTTPS port gets no HTTP answer.
        conn = http.client.HTTPConnection(HOST, port, timeout=10)
        try:
            with pytest.raises((http.client.HTTPException, OSError)):
                conn.request("GET", "/healthz")
                conn.getresponse().read()
        finally:
            conn.close()
        failed = False
    finally:
        code = b.stop()
        if failed:
            print(f"\n----- {b} log tail (exit code {code}) -----\n{b.log_tail(60)}")


def run_config(tmp_path: Path, name: str, body: str) -> tuple[subprocess.CompletedProcess, str]:
    data = tmp_path / f"{name}-data"
    text = f'data_dir = "{data}"\n\n[mqtt]\nbind = "{HOST}:{free_port()}"\n\n{body}\n'
    path = tmp_path / f"{name}.toml"
    path.write_text(text)
    r = gantry("run", "--config", str(path), timeout=30)
    return r, text


def test_console_config_errors(tmp_path):
    # HTTPS without a certificate.
    r, _ = run_config(tmp_path, "no-tls", f'[console]\nhttps_bind = "{HOST}:{free_port()}"')
    assert r.returncode != 0, r
    assert "[console] https_bind" in r.stderr and "[tls]" in r.stderr, r.stderr
    # A misspelt field: named, with its line.
    r, text = run_config(tmp_path, "typo", f'[console]\nbind = "{HOST}:{free_port()}"\nsesion_hours = 3')
    line = text.splitlines().index("sesion_hours = 3") + 1
    assert r.returncode != 0, r
    assert "sesion_hours" in r.stderr and f"typo.toml:{line}:" in r.stderr, r.stderr
    # A console without a listener.
    r, _ = run_config(tmp_path, "nowhere", "[console]\nsession_hours = 2")
    assert r.returncode != 0, r
    assert "[console]" in r.stderr and "bind" in r.stderr, r.stderr
