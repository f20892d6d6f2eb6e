#!/usr/bin/env python3
"""Driver for bench/console.sh: a plant-shaped namespace of retained tags, a
steady update stream, and the clients that measure Gantry's HTTP API (browse,
search, live feed) against MQTT clients on the same namespace.

Standard library only: a minimal MQTT 3.1.1 client on raw sockets (QoS 0/1,
enough to publish and to count deliveries), http.client for the API and a
raw-socket reader for Server-Sent Events (so every byte on the wire is
counted, chunk framing included).

The namespace: acme/dallas/packaging/line-LL/machine-MM/tag-TTTT with
LINES lines x MACHINES machines x TAGS tags (10 x 10 x 1,000 = 100,000 by
default): a line has 10 children, a machine 1,000, and one line holds a tenth
of all tags.

Every subcommand is bounded in time and prints JSON lines on stdout.
"""

import argparse
import http.client
import json
import os
import random
import signal
import socket
import statistics
import struct
import sys
import time

AREA = "acme/dallas/packaging"


# ---------------------------------------------------------------- namespace

class Plant:
    def __init__(self, lines, machines, tags):
        self.lines, self.machines, self.tags = lines, machines, tags
        self.total = lines * machines * tags

    def topic(self, i):
        per_line = self.machines * self.tags
        line, rest = divmod(i, per_line)
        machine, tag = divmod(rest, self.tags)
        return f"{AREA}/line-{line + 1:02}/machine-{machine + 1:02}/tag-{tag:04}"

    def line(self, n):
        return f"{AREA}/line-{n:02}"

    def machine(self, line, m):
        return f"{AREA}/line-{line:02}/machine-{m:02}"


def plant_of(a):
    return Plant(a.lines, a.machines, a.tags)


def sample(value, ts_ms):
    # Gantry's canonical time-series sample.
    return b'{"timestamp_ms":%d,"value":%s}' % (ts_ms, repr(round(value, 3)).encode())


# ---------------------------------------------------------------- MQTT

def varint(n):
    out = bytearray()
    while True:
        b = n % 128
        n //= 128
        out.append(b | 0x80 if n else b)
        if not n:
            return bytes(out)


def packet(first, body):
    return bytes([first]) + varint(len(body)) + body


def mstr(s):
    b = s.encode() if isinstance(s, str) else s
    return struct.pack("!H", len(b)) + b


def publish_packet(topic, payload, qos=0, retain=True, pid=0):
    first = 0x30 | (qos << 1) | (1 if retain else 0)
    body = mstr(topic) + (struct.pack("!H", pid) if qos else b"") + payload
    return packet(first, body)


def frames(buf, pos):
    """Yields (first_byte, start_of_body, end) of every complete packet from pos."""
    n = len(buf)
    while pos < n:
        mult, rl, i = 1, 0, pos + 1
        while True:
            if i >= n:
                return
            b = buf[i]
            rl += (b & 0x7F) * mult
            i += 1
            if b < 0x80:
                break
            mult *= 128
        end = i + rl
        if end > n:
            return
        yield buf[pos], i, end
        pos = end


class Mqtt:
    def __init__(self, host, port, client_id, timeout=10.0):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = bytearray()
        self.pos = 0
        self.bytes_in = 0
        body = mstr("MQTT") + bytes([4, 0x02]) + struct.pack("!H", 0) + mstr(client_id)
        self.sock.sendall(packet(0x10, body))
        first, _, _ = self.next_packet()
        if first >> 4 != 2:
            raise RuntimeError(f"expected CONNACK, got packet type {first >> 4}")

    def fill(self):
        data = self.sock.recv(1 << 20)
        if not data:
            raise RuntimeError("the broker closed the connection")
        self.bytes_in += len(data)
        if self.pos > (1 << 20):
            del self.buf[: self.pos]
            self.pos = 0
        self.buf += data

    def next_packet(self):
        while True:
            for first, start, end in frames(self.buf, self.pos):
                self.pos = end
                return first, start, end
            self.fill()

    def subscribe(self, filt, qos=0):
        self.sock.sendall(packet(0x82, struct.pack("!H", 1) + mstr(filt) + bytes([qos])))

    def close(self):
        try:
            self.sock.sendall(b"\xe0\x00")
            self.sock.close()
        except OSError:
            pass


def cmd_fill(a):
    """Publishes every tag once, retained, QoS 1 (window 1,000): the namespace."""
    plant = plant_of(a)
    m = Mqtt(a.host, a.port, f"console-bench-fill-{os.getpid()}", timeout=60)
    ts = int(time.time() * 1000)
    t0 = time.perf_counter()
    sent = acked = 0
    window = 1000
    while acked < plant.total:
        batch = []
        while sent < plant.total and sent - acked < window:
            pid = sent % 65535 + 1
            batch.append(publish_packet(plant.topic(sent), sample(sent % 1000 / 7, ts), 1, True, pid))
            sent += 1
        if batch:
            m.sock.sendall(b"".join(batch))
        m.fill()
        for first, _, end in frames(m.buf, m.pos):
            m.pos = end
            if first >> 4 == 4:
                acked += 1
    secs = time.perf_counter() - t0
    m.close()
    print(json.dumps({"measure": "fill", "broker": a.broker, "topics": plant.total,
                      "seconds": round(secs, 3), "per_s": round(plant.total / secs)}))


STOP = False


def _stop(*_):
    global STOP
    STOP = True


def cmd_stream(a):
    """Publishes RATE retained updates per second (QoS 0) to tags drawn at
    random over the whole namespace, in 10 ms ticks, until DURATION or SIGTERM."""
    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    plant = plant_of(a)
    rng = random.Random(a.seed)
    topics = [plant.topic(i).encode() for i in range(plant.total)]
    m = Mqtt(a.host, a.port, f"console-bench-stream-{os.getpid()}")
    m.sock.settimeout(None)
    t0 = time.perf_counter()
    sent = 0
    while not STOP:
        now = time.perf_counter() - t0
        if now >= a.duration:
            break
        due = int(a.rate * now) - sent
        if due > 0:
            ts = int(time.time() * 1000)
            out = []
            for _ in range(due):
                i = rng.randrange(plant.total)
                out.append(publish_packet(topics[i], sample(rng.uniform(0, 1000), ts)))
            m.sock.sendall(b"".join(out))
            sent += due
        time.sleep(0.01)
    secs = time.perf_counter() - t0
    m.close()
    print(json.dumps({"measure": "stream", "broker": a.broker, "sent": sent,
                      "seconds": round(secs, 1), "per_s": round(sent / secs)}), flush=True)


def cmd_tree(a):
    """Opens the tree the MQTT way: subscribes to `#` and times until every
    retained tag has arrived (deliveries with the retain flag; live updates
    forwarded meanwhile are counted apart)."""
    plant = plant_of(a)
    token = login(a) if a.http else None
    for run in range(a.runs):
        m = Mqtt(a.host, a.port, f"console-bench-tree-{os.getpid()}-{run}", timeout=a.timeout)
        before = m.bytes_in
        dropped0 = broker_dropped(a, token)
        cpu0 = time.process_time()
        t0 = time.perf_counter()
        m.subscribe("#")
        retained = live = 0
        deadline = t0 + a.timeout
        m.sock.settimeout(a.idle)
        last = t0
        while retained < plant.total and time.perf_counter() < deadline:
            if time.perf_counter() - last > a.idle:
                break  # no retained message for IDLE s: the broker dropped the rest
            try:
                m.fill()
            except socket.timeout:
                break
            for first, _, end in frames(m.buf, m.pos):
                m.pos = end
                if first >> 4 == 3:
                    if first & 1:
                        retained += 1
                        last = time.perf_counter()
                        if retained == plant.total:
                            break
                    else:
                        live += 1
        secs = (last if retained < plant.total else time.perf_counter()) - t0
        client_cpu = time.process_time() - cpu0
        got = m.bytes_in - before
        m.close()
        time.sleep(0.2)
        dropped = broker_dropped(a, token)
        print(json.dumps({"measure": "tree", "broker": a.broker, "client": "python", "run": run,
                          "retained": retained, "live": live, "ms": round(secs * 1000, 1),
                          "client_cpu_ms": round(client_cpu * 1000, 1), "bytes": got,
                          "broker_dropped": None if dropped is None else dropped - dropped0}),
              flush=True)
        time.sleep(0.5)


# ---------------------------------------------------------------- HTTP API

def login(a):
    c = http.client.HTTPConnection(a.host, a.http, timeout=10)
    c.request("POST", "/api/v1/login", json.dumps({"username": a.user, "password": a.password}),
              {"Content-Type": "application/json"})
    r = c.getresponse()
    body = r.read()
    if r.status != 200:
        raise RuntimeError(f"login: {r.status} {body[:200]!r}")
    c.close()
    return json.loads(body)["token"]


def broker_dropped(a, token):
    """The broker's count of messages dropped for full session queues (Gantry only)."""
    if not token:
        return None
    c = http.client.HTTPConnection(a.host, a.http, timeout=10)
    c.request("GET", "/api/v1/broker", headers={"Authorization": f"Bearer {token}"})
    r = c.getresponse()
    body = r.read()
    c.close()
    return json.loads(body)["stats"]["messages_dropped"] if r.status == 200 else None


def pct(values, p):
    s = sorted(values)
    k = max(0, min(len(s) - 1, round(p / 100 * len(s) + 0.5) - 1))
    return s[k]


def cmd_browse(a):
    """Browse and search latency over one keep-alive connection: time from
    sending a request to the last byte of its answer (JSON parsing excluded)."""
    plant = plant_of(a)
    token = login(a)
    hdr = {"Authorization": f"Bearer {token}"}
    c = http.client.HTTPConnection(a.host, a.http, timeout=30)

    def get(url):
        t = time.perf_counter()
        c.request("GET", url, headers=hdr)
        r = c.getresponse()
        body = r.read()
        dt = time.perf_counter() - t
        if r.status != 200:
            raise RuntimeError(f"GET {url}: {r.status} {body[:300]!r}")
        return dt, body

    rng = random.Random(a.seed)

    def level10():
        path = plant.line(rng.randrange(plant.lines) + 1)
        dt, body = get(f"/api/v1/namespace?path={path}")
        n = len(json.loads(body)["children"])
        assert n == plant.machines, (path, n)
        return dt, len(body), 1

    def level1000():
        path = plant.machine(rng.randrange(plant.lines) + 1, rng.randrange(plant.machines) + 1)
        total, size, pages, after, count = 0.0, 0, 0, None, 0
        while True:
            url = f"/api/v1/namespace?path={path}&limit={a.page}"
            if after:
                url += f"&after={after}"
            dt, body = get(url)
            total += dt
            size += len(body)
            pages += 1
            d = json.loads(body)
            count += len(d["children"])
            after = d["next_after"]
            if not after:
                break
        assert count == plant.tags, (path, count)
        return total, size, pages

    def search():
        term = f"tag-{rng.randrange(plant.tags):04}"
        dt, body = get(f"/api/v1/namespace/search?q={term}&limit=200")
        d = json.loads(body)
        n = len(d["results"])
        assert n == plant.lines * plant.machines and not d["truncated"], (term, n)
        return dt, len(body), 1

    def drill():
        # What a console does to show one machine's tags from nothing: every
        # level from the roots down, then the machine's first page.
        line, machine = rng.randrange(plant.lines) + 1, rng.randrange(plant.machines) + 1
        paths = ["", "acme", "acme/dallas", AREA, plant.line(line), plant.machine(line, machine)]
        total, size = 0.0, 0
        for path in paths:
            dt, body = get(f"/api/v1/namespace?path={path}&limit={a.page}")
            total += dt
            size += len(body)
            assert json.loads(body)["children"], path
        return total, size, len(paths)

    cases = [("browse-10", level10), (f"browse-1000-by-{a.page}", level1000), ("search-100", search),
             ("drill-down", drill)]
    for name, fn in cases:
        for _ in range(a.warmup):
            fn()
        times, sizes, pages = [], [], 0
        for _ in range(a.n):
            dt, size, p = fn()
            times.append(dt * 1000)
            sizes.append(size)
            pages = p
        print(json.dumps({"measure": "browse", "case": name, "n": a.n, "pages": pages,
                          "p50_ms": round(pct(times, 50), 3), "p99_ms": round(pct(times, 99), 3),
                          "mean_ms": round(statistics.fmean(times), 3),
                          "bytes": round(statistics.fmean(sizes))}), flush=True)
    c.close()


def cpu_ticks(pid):
    """utime + stime of the whole process, and of all its threads but the
    store writer (`gantry-store`: the retained log and its compaction, which
    the update stream drives alike in every case), in clock ticks."""
    def ticks(path):
        with open(path) as f:
            text = f.read()
        comm = text[text.index("(") + 1: text.rindex(")")]
        fields = text.rsplit(")", 1)[1].split()
        return comm, int(fields[11]) + int(fields[12])  # fields 14 and 15
    _, total = ticks(f"/proc/{pid}/stat")
    # The process total keeps the time of threads that have exited (idle
    # blocking-pool threads do); subtract the store writer's own time rather
    # than summing the live threads.
    store = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            comm, t = ticks(f"/proc/{pid}/task/{tid}/stat")
        except (FileNotFoundError, ProcessLookupError):
            continue
        if comm == "gantry-store":
            store += t
    return total, total - store


class SseFeed:
    """A raw HTTP/1.1 client of GET /api/v1/live: counts every byte received
    and decodes chunked framing and events."""

    def __init__(self, a, token, path):
        self.sock = socket.create_connection((a.host, a.http), timeout=5)
        req = (f"GET /api/v1/live?path={path} HTTP/1.1\r\nHost: {a.host}\r\n"
               f"Authorization: Bearer {token}\r\nAccept: text/event-stream\r\n\r\n")
        self.sock.sendall(req.encode())
        self.raw = bytearray()
        self.bytes_in = 0
        self.text = bytearray()   # de-chunked body
        self.events = self.changes = self.dropped = 0
        self.chunked = None
        while b"\r\n\r\n" not in self.raw:
            self._recv()
        head, _, rest = bytes(self.raw).partition(b"\r\n\r\n")
        status = head.split(b"\r\n", 1)[0]
        if b" 200 " not in status + b" ":
            raise RuntimeError(f"live feed: {status!r}")
        self.chunked = b"transfer-encoding: chunked" in head.lower()
        self.raw = bytearray(rest)
        self._decode()

    def _recv(self):
        data = self.sock.recv(1 << 20)
        if not data:
            raise RuntimeError("the server closed the live feed")
        self.bytes_in += len(data)
        self.raw += data

    def _decode(self):
        if not self.chunked:
            self.text += self.raw
            self.raw.clear()
        else:
            while True:
                line_end = self.raw.find(b"\r\n")
                if line_end < 0:
                    break
                size = int(self.raw[:line_end].split(b";")[0], 16)
                if len(self.raw) < line_end + 2 + size + 2:
                    break
                self.text += self.raw[line_end + 2: line_end + 2 + size]
                del self.raw[: line_end + 2 + size + 2]
        while True:
            end = self.text.find(b"\n\n")
            if end < 0:
                break
            block = bytes(self.text[:end])
            del self.text[: end + 2]
            kind, data = "message", []
            for line in block.split(b"\n"):
                if line.startswith(b"event:"):
                    kind = line[6:].strip().decode()
                elif line.startswith(b"data:"):
                    data.append(line[5:].lstrip(b" "))
            if kind == "changes":
                d = json.loads(b"\n".join(data))
                self.events += 1
                self.changes += len(d["changes"])
                self.dropped += d["dropped"]

    def pump(self, until):
        while True:
            left = until - time.perf_counter()
            if left <= 0:
                return
            self.sock.settimeout(left)
            try:
                self._recv()
            except socket.timeout:
                return
            self._decode()

    def counters(self):
        return self.bytes_in, self.events, self.changes, self.dropped

    def close(self):
        self.sock.close()


class MqttFeed:
    def __init__(self, a, filt):
        self.m = Mqtt(a.host, a.port, f"console-bench-sub-{os.getpid()}")
        self.m.subscribe(filt)
        self.msgs = self.retained = 0

    def pump(self, until):
        m = self.m
        while True:
            left = until - time.perf_counter()
            if left <= 0:
                return
            m.sock.settimeout(left)
            try:
                m.fill()
            except socket.timeout:
                return
            for first, _, end in frames(m.buf, m.pos):
                m.pos = end
                if first >> 4 == 3:
                    if first & 1:
                        self.retained += 1
                    else:
                        self.msgs += 1

    def counters(self):
        return self.m.bytes_in, self.msgs, self.msgs, 0

    def close(self):
        self.m.close()


def cmd_live(a):
    """Live-feed cost. For each case: open the client, let it settle (the
    retained backlog of an MQTT subscription, the first events of a feed),
    then count what it receives and the broker's CPU time over WINDOW s.
    Cases alternate within every round."""
    plant = plant_of(a)
    token = login(a)
    tick = os.sysconf("SC_CLK_TCK")
    cases = {
        "baseline": lambda: None,
        "feed-line": lambda: SseFeed(a, token, plant.line(1)),
        "mqtt-line": lambda: MqttFeed(a, plant.line(1) + "/#"),
        "mqtt-all": lambda: MqttFeed(a, "#"),
        "feed-acme": lambda: SseFeed(a, token, "acme"),
    }
    for run in range(a.runs):
        for name in a.cases.split(","):
            client = cases[name]()
            t = time.perf_counter()
            if client:
                client.pump(t + a.settle)
                c0 = client.counters()
            else:
                time.sleep(a.settle)
                c0 = (0, 0, 0, 0)
            cpu0, t0 = cpu_ticks(a.pid), time.perf_counter()
            if client:
                client.pump(t0 + a.window)
                c1 = client.counters()
            else:
                time.sleep(a.window)
                c1 = (0, 0, 0, 0)
            cpu1, t1 = cpu_ticks(a.pid), time.perf_counter()
            if client:
                client.close()
            secs = t1 - t0
            print(json.dumps({
                "measure": "live", "case": name, "run": run, "seconds": round(secs, 2),
                "bytes_per_s": round((c1[0] - c0[0]) / secs),
                "events_per_s": round((c1[1] - c0[1]) / secs, 2),
                "changes_per_s": round((c1[2] - c0[2]) / secs, 1),
                "dropped_per_s": round((c1[3] - c0[3]) / secs, 1),
                "broker_cpu_pct": round((cpu1[0] - cpu0[0]) / tick / secs * 100, 2),
                "broker_cpu_no_store_pct": round((cpu1[1] - cpu0[1]) / tick / secs * 100, 2),
            }), flush=True)
            time.sleep(a.gap)


# ---------------------------------------------------------------- report

def cmd_report(a):
    rows = []
    for path in a.inputs:
        with open(path) as f:
            for line in f:
                line = line.strip()
                if line.startswith("{"):
                    rows.append(json.loads(line))

    def med(pred, key):
        v = [r[key] for r in rows if pred(r) and key in r]
        return statistics.median(v) if v else None

    def spread(pred, key, fmt):
        v = [r[key] for r in rows if pred(r) and key in r]
        return "–".join(fmt(x) for x in (min(v), max(v))) if v else ""

    f0 = lambda v: "n/a" if v is None else f"{v:,.0f}"
    f1 = lambda v: "n/a" if v is None else f"{v:,.1f}"
    f2 = lambda v: "n/a" if v is None else f"{v:,.2f}"
    ratio = lambda x, y: "n/a" if x is None or not y else (f"{x / y:.3f}×" if x / y < 0.1 else f"{x / y:.2f}×")
    o = [f"# Console and API: browse and live-feed cost ({a.title})", ""]

    total = max((r["topics"] for r in rows if r["measure"] == "fill"), default=0)
    tree = lambda b: (lambda r: r["measure"] == "tree" and r["broker"] == b and r["retained"] >= total)
    lost = [r for r in rows if r["measure"] == "tree" and r["retained"] < total]
    g_tree, m_tree = med(tree("gantry"), "ms"), med(tree("mosquitto"), "ms")
    g_bytes = med(tree("gantry"), "bytes")
    o += ["## Browse vs opening the tree over MQTT", "",
          "| request | p50 (ms) | p99 (ms) | bytes | p50 ÷ `#` on Gantry |",
          "|---|---:|---:|---:|---:|"]
    runs_b = {}
    for r in rows:
        if r["measure"] == "browse":
            runs_b.setdefault(r["case"], []).append(r)
    for case, rs in runs_b.items():
        p50 = statistics.median(x["p50_ms"] for x in rs)
        p99 = statistics.median(x["p99_ms"] for x in rs)
        b = statistics.median(x["bytes"] for x in rs)
        pages = rs[0]["pages"]
        label = {"browse-10": "a level with 10 children",
                 "search-100": "search matching 100 tags",
                 "drill-down": f"drill down from the roots to a machine's first page ({pages} requests)"}.get(
            case, f"a level with 1,000 children, {pages} pages (total of the pages)")
        o.append(f"| {label} | {f2(p50)} | {f2(p99)} | {f0(b)} | {ratio(p50, g_tree)} |")
    o.append(f"| **MQTT `#` on Gantry: all retained tags received** | {f1(g_tree)} | | {f0(g_bytes)} | 1.00× |")
    if m_tree is not None:
        o.append(f"| MQTT `#` on Mosquitto: all retained tags received | {f1(m_tree)} | | "
                 f"{f0(med(tree('mosquitto'), 'bytes'))} | {ratio(m_tree, g_tree)} |")
    o.append("")
    o.append(f"`#` runs (ms): Gantry {spread(tree('gantry'), 'ms', f1)}"
             + (f"; Mosquitto {spread(tree('mosquitto'), 'ms', f1)}" if m_tree else "")
             + f". The Python client's own CPU time during the Gantry runs: median "
             f"{f1(med(tree('gantry'), 'client_cpu_ms'))} ms. Live updates Gantry dropped for the `#` "
             f"client while its queue held the retained backlog, per run: "
             f"{', '.join(str(r['broker_dropped']) for r in rows if tree('gantry')(r) and r.get('broker_dropped') is not None) or 'n/a'}.")
    for r in lost:
        o.append(f"**Incomplete `#` run on {r['broker']}: {r['retained']:,} of {total:,} retained "
                 f"messages arrived** (then {r['live']:,} live ones; nothing more for the idle limit); "
                 "left out of the medians above.")
    o.append("")

    live = lambda c: (lambda r: r["measure"] == "live" and r["case"] == c)
    base = med(live("baseline"), "broker_cpu_pct")
    all_b = med(live("mqtt-all"), "bytes_per_s")
    all_m = med(live("mqtt-all"), "changes_per_s")
    o += ["## Live-feed cost", "",
          "| client | bytes/s | events/s | tag changes/s | dropped/s | bytes per change | bytes ÷ `#` "
          "| Gantry CPU | over baseline | Gantry CPU without store writer | over baseline |",
          "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    base_ns = med(live("baseline"), "broker_cpu_no_store_pct")
    names = {"baseline": "none (update stream only)",
             "feed-line": "live feed, one line (1/10 of the tags)",
             "mqtt-line": "MQTT `line-01/#` (same tags as the line feed)",
             "mqtt-all": "MQTT `#` (every tag)",
             "feed-acme": "live feed, whole enterprise `acme`"}
    for case, label in names.items():
        if not any(live(case)(r) for r in rows):
            continue
        b = med(live(case), "bytes_per_s")
        cpu = med(live(case), "broker_cpu_pct")
        ns = med(live(case), "broker_cpu_no_store_pct")
        ch = med(live(case), "changes_per_s")
        o.append(f"| {label} | {f0(b)} | {f1(med(live(case), 'events_per_s'))} | "
                 f"{f0(ch)} | {f0(med(live(case), 'dropped_per_s'))} | {f0(b / ch) if ch else ''} | "
                 f"{'' if case == 'baseline' else ratio(b, all_b)} | {f1(cpu)} % | "
                 f"{'' if case == 'baseline' or cpu is None or base is None else f'{cpu - base:+.1f} pts'} | "
                 f"{'n/a' if ns is None else f'{ns:.1f} %'} | "
                 f"{'' if case == 'baseline' or ns is None or base_ns is None else f'{ns - base_ns:+.1f} pts'} |")
    o.append("")
    o.append("CPU per case, all runs (%, whole process / without the store writer): " + "; ".join(
        f"{c} {spread(live(c), 'broker_cpu_pct', f1)} / {spread(live(c), 'broker_cpu_no_store_pct', f1)}"
        for c in names if any(live(c)(r) for r in rows)) + ".")
    stream = [r for r in rows if r["measure"] == "stream"]
    if stream:
        o.append(f"Update stream achieved: {', '.join(f0(r['per_s']) for r in stream)} updates/s "
                 f"(`#` received {f0(all_m)} msg/s).")
    fill = [r for r in rows if r["measure"] == "fill"]
    if fill:
        o.append(f"Fill ({total:,} retained, QoS 1, window 1,000): " + ", ".join(
            f"{r['broker']} {r['seconds']} s" for r in fill) + ".")
    text = "\n".join(o) + "\n"
    if a.output:
        with open(a.output, "w") as f:
            f.write(text)
    sys.stdout.write(text)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)

    def common(s, mqtt=True, http=False):
        s.add_argument("--host", default="127.0.0.1")
        s.add_argument("--lines", type=int, default=10)
        s.add_argument("--machines", type=int, default=10)
        s.add_argument("--tags", type=int, default=1000)
        s.add_argument("--broker", default="gantry")
        s.add_argument("--seed", type=int, default=1)
        if mqtt:
            s.add_argument("--port", type=int, required=True)
        if http:
            s.add_argument("--http", type=int, required=True)
            s.add_argument("--user", default="bench")
            s.add_argument("--password", default="bench-password-1")

    s = sub.add_parser("fill"); common(s)
    s = sub.add_parser("stream"); common(s)
    s.add_argument("--rate", type=float, default=5000)
    s.add_argument("--duration", type=float, default=1800)
    s = sub.add_parser("tree"); common(s)
    s.add_argument("--http", type=int, help="Gantry's API port: count messages dropped meanwhile")
    s.add_argument("--user", default="bench")
    s.add_argument("--password", default="bench-password-1")
    s.add_argument("--runs", type=int, default=1)
    s.add_argument("--timeout", type=float, default=60)
    s.add_argument("--idle", type=float, default=3, help="give up after this long without a message")
    s = sub.add_parser("browse"); common(s, mqtt=False, http=True)
    s.add_argument("--n", type=int, default=200)
    s.add_argument("--warmup", type=int, default=10)
    s.add_argument("--page", type=int, default=200)
    s = sub.add_parser("live"); common(s, http=True)
    s.add_argument("--pid", type=int, required=True)
    s.add_argument("--runs", type=int, default=1)
    s.add_argument("--window", type=float, default=8)
    s.add_argument("--settle", type=float, default=2)
    s.add_argument("--gap", type=float, default=0.5)
    s.add_argument("--cases", default="baseline,feed-line,mqtt-line,mqtt-all,feed-acme")
    s = sub.add_parser("report")
    s.add_argument("inputs", nargs="+")
    s.add_argument("--title", default="")
    s.add_argument("--output")
    a = p.parse_args()
    {"fill": cmd_fill, "stream": cmd_stream, "tree": cmd_tree, "browse": cmd_browse,
     "live": cmd_live, "report": cmd_report}[a.cmd](a)


if __name__ == "__main__":
    main()
