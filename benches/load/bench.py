#!/usr/bin/env python3
"""Load benchmarks of isthmus beside direct / nginx / haproxy / envoy.

Every target forwards to the same upstream (nginx, 1 worker, static /0 and /1k);
in the TLS passthrough scenarios (pt-*) the proxies forward the TCP connection by
its SNI to the upstream's TLS port, where TLS ends.
The load generator runs on CPU 0; the upstream and every proxy on CPU 1, each proxy
with one worker or thread. For each scenario and target the harness records
requests/s, p50/p99 latency, the proxy's CPU time per request (utime + stime of its
whole process tree from /proc/PID/stat), its RSS (idle, peak sampled during the
load, VmHWM), and writes a Markdown table (report.py) plus the raw JSON.

Started by load/run.sh (which installs the tools and builds isthmus); standard
library only. Everything it starts is in its own process group and is stopped on
exit, on Ctrl-C and on failure.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import ctypes
import datetime as dt
import hashlib
import json
import os
import random
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import report

HERE = Path(__file__).resolve().parent
CLK_TCK = os.sysconf("SC_CLK_TCK")
LOADGEN_CPU = "0"
SERVER_CPU = "1"


# --------------------------------------------------------------------------- scenarios

@dataclass(frozen=True)
class Scenario:
    key: str
    title: str
    proto: str  # http | h2c | https (TLS ends at the proxy) | pass (TLS ends at the upstream)
    path: str
    tool: str  # wrk | h2load | rate | idle
    close: bool = False  # one request per connection (full TLS handshakes)
    per: str = "req"  # what CPU time is divided by: "req", "handshake" or "connection"
    conns: int = 0  # idle: keep-alive connections held open at once; attack: its connections
    attack: str = ""  # "slowloris": slowhttptest -H against the target during the run


SCENARIOS = [
    Scenario("h1-0", "HTTP/1.1 keep-alive, 0 B (wrk -t1 -c50)", "http", "/0", "wrk"),
    Scenario("h1-1k", "HTTP/1.1 keep-alive, 1 KiB (wrk -t1 -c50)", "http", "/1k", "wrk"),
    Scenario("h2c-0", "h2c, 0 B (h2load -t1 -c10 -m10)", "h2c", "/0", "h2load"),
    Scenario("rate-1k", "fixed 1000 req/s, 1 KiB, HTTP/1.1 (h2load --h1 -c10 --rps 100)",
             "http", "/1k", "rate"),
    Scenario("tls-0", "HTTPS keep-alive, TLS 1.3, 0 B (wrk -t1 -c50)", "https", "/0", "wrk"),
    Scenario("tls-hs", "full TLS 1.3 handshake per request, ECDSA P-256 "
             "(wrk -t1 -c50, Connection: close)", "https", "/0", "wrk",
             close=True, per="handshake"),
    Scenario("pt-0", "TLS passthrough by SNI: HTTPS keep-alive, TLS 1.3 with the upstream, "
             "0 B (wrk -t1 -c50)", "pass", "/0", "wrk"),
    Scenario("pt-hs", "TLS passthrough by SNI: full TLS 1.3 handshake with the upstream per "
             "request, ECDSA P-256 (wrk -t1 -c50, Connection: close)", "pass", "/0", "wrk",
             close=True, per="connection"),
    Scenario("rate-1k-slowloris", "fixed 1000 req/s as rate-1k while slowhttptest holds 1,000 "
             "slowloris connections (-H -c 1000 -r 500 -i 5)", "http", "/1k", "rate",
             conns=1000, attack="slowloris"),
    Scenario("idle-5k", "5,000 idle HTTP/1.1 keep-alive connections, one 1 KiB request each",
             "http", "/1k", "idle", conns=5000),
    Scenario("idle-10k", "10,000 idle HTTP/1.1 keep-alive connections, one 1 KiB request each",
             "http", "/1k", "idle", conns=10000),
]
BY_KEY = {s.key: s for s in SCENARIOS}
QUICK = ["h1-1k", "h2c-0", "rate-1k", "tls-0", "tls-hs", "pt-0", "pt-hs"]
# The idle-connection scenarios (idle-*) and the attack ones only when asked for
# (--scenarios): they raise connection limits in the peers' configurations (see
# idle_limits).
FULL = [s.key for s in SCENARIOS if s.tool != "idle" and not s.attack]
# The SNI the passthrough routes match. wrk sends the URL's host as SNI; Istio
# wants a fully qualified name there, so the URL names this one and pass-sni.lua
# makes wrk connect to 127.0.0.1 (curl: --resolve).
PASS_SNI = "pass.bench.test"
TARGETS = ["direct", "nginx", "haproxy", "envoy", "isthmus"]
WRK_CONNS = 50
H2_CONNS, H2_STREAMS = 10, 10
RATE_CONNS, RATE_PER_CONN = 10, 100  # 10 x 100 = 1000 req/s
# idle-*: connections being opened (or requests in flight) at a time, the limit
# of each step of one connection (connect, request, response) and of each phase.
IDLE_IN_FLIGHT = 200
IDLE_STEP_TIMEOUT = 10.0
IDLE_PHASE_TIMEOUT = 120.0
# Connection limits of the peers when no idle scenario runs (their configurations'
# values before the idle scenarios existed).
NGINX_CONNS, HAPROXY_MAXCONN = 8192, 8000


# --------------------------------------------------------------------------- /proc

def read_stat(pid: int) -> tuple[int, int, int] | None:
    """(ppid, utime, stime) in clock ticks, or None if the process is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            s = f.read()
    except OSError:
        return None
    rest = s[s.rfind(")") + 2:].split()
    return int(rest[1]), int(rest[11]), int(rest[12])


def process_tree(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            st = read_stat(int(d))
            if st:
                children.setdefault(st[0], []).append(int(d))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, []))
    return out


def tree_cpu(pids: list[int]) -> tuple[int, int]:
    """(utime, stime) ticks summed over the processes."""
    u = s = 0
    for pid in pids:
        st = read_stat(pid)
        if st:
            u += st[1]
            s += st[2]
    return u, s


def tree_mem(pids: list[int]) -> tuple[int, int]:
    """(VmRSS, VmHWM) in KiB summed over the processes."""
    rss = hwm = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        rss += int(line.split()[1])
                    elif line.startswith("VmHWM:"):
                        hwm += int(line.split()[1])
        except OSError:
            pass
    return rss, hwm


def tree_fds(pids: list[int]) -> int:
    """Open file descriptors summed over the processes."""
    n = 0
    for pid in pids:
        try:
            n += len(os.listdir(f"/proc/{pid}/fd"))
        except OSError:
            pass
    return n


def settled_rss(pids: list[int], timeout: float = 3.0) -> int:
    """Summed VmRSS (KiB) once two samples 200 ms apart differ by less than 1 %
    (or after `timeout` s: the last sample)."""
    last = tree_mem(pids)[0]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        time.sleep(0.2)
        now = tree_mem(pids)[0]
        if abs(now - last) <= 0.01 * max(last, 1):
            return now
        last = now
    return last


def machine_ticks() -> tuple[int, int, int]:
    """(total, idle incl. iowait, user+nice+system) ticks over all CPUs."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:9]]
    return sum(v), v[3] + v[4], v[0] + v[1] + v[2]


def machine_busy(interval: float = 1.0) -> float:
    """Share of all CPUs that were not idle over `interval` seconds (0..1)."""
    t0, i0, _ = machine_ticks()
    time.sleep(interval)
    t1, i1, _ = machine_ticks()
    return 1.0 - (i1 - i0) / max(1, t1 - t0)


def psi_some_us(resource_name: str) -> int:
    """Total time (us) some task waited on `resource_name` (cpu, io, memory), or 0."""
    try:
        with open(f"/proc/pressure/{resource_name}") as f:
            return int(f.readline().rsplit("total=", 1)[1])
    except (OSError, IndexError, ValueError):
        return 0


def wait_quiet(threshold: float, timeout: float) -> tuple[bool, float]:
    """Wait until the machine's non-idle CPU over 1 s is below `threshold`."""
    deadline = time.monotonic() + timeout
    while True:
        busy = machine_busy(1.0)
        if busy < threshold:
            return True, busy
        if time.monotonic() >= deadline:
            return False, busy


class MemSampler(threading.Thread):
    """Samples the summed VmRSS of a process tree every 100 ms; keeps the maximum."""

    def __init__(self, pids: list[int]):
        super().__init__(daemon=True)
        self.pids, self.peak_kib = pids, 0
        self.stop_event = threading.Event()

    def run(self) -> None:
        while not self.stop_event.is_set():
            self.peak_kib = max(self.peak_kib, tree_mem(self.pids)[0])
            self.stop_event.wait(0.1)

    def stop(self) -> int:
        self.stop_event.set()
        self.join()
        self.peak_kib = max(self.peak_kib, tree_mem(self.pids)[0])
        return self.peak_kib


# --------------------------------------------------------------------------- processes

_LIBC = ctypes.CDLL(None, use_errno=True)


def die_with_parent() -> None:
    """In a child before exec: PR_SET_PDEATHSIG (1), so that it is killed even if
    bench.py itself is SIGKILLed."""
    _LIBC.prctl(1, signal.SIGKILL, 0, 0, 0)


# Kills the process groups listed in $2 once the process $1 (bench.py) is gone
# without having removed the list: the clean-up of a bench.py that was SIGKILLed.
# PR_SET_PDEATHSIG alone does not reach nginx's workers (forked by the master).
WATCHER = """
import os, signal, sys, time
parent, pgids = int(sys.argv[1]), sys.argv[2]
while os.getppid() == parent:
    time.sleep(1)
try:
    with open(pgids) as f:
        groups = [int(line) for line in f if line.strip()]
except OSError:
    sys.exit(0)
for g in groups:
    try:
        os.killpg(g, signal.SIGKILL)
    except OSError:
        pass
os.unlink(pgids)
"""


class Procs:
    """Processes this run started, each in its own process group."""

    def __init__(self, workdir: Path) -> None:
        self.procs: list[tuple[str, subprocess.Popen]] = []
        self.pgids = workdir / "pgids"
        self.watcher = subprocess.Popen(
            [sys.executable, "-c", WATCHER, str(os.getpid()), str(self.pgids)],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True)

    def start(self, name: str, argv: list[str], log: Path, cpu: str,
              env: dict[str, str] | None = None) -> subprocess.Popen:
        out = open(log, "ab")
        p = subprocess.Popen(["taskset", "-c", cpu, *argv], stdout=out, stderr=subprocess.STDOUT,
                             stdin=subprocess.DEVNULL, start_new_session=True,
                             preexec_fn=die_with_parent,
                             env={**os.environ, **(env or {})})
        out.close()
        self.procs.append((name, p))
        with open(self.pgids, "a") as f:
            f.write(f"{p.pid}\n")
        return p

    def stop_all(self) -> None:
        for _, p in self.procs:
            if p.poll() is None:
                try:
                    os.killpg(p.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        deadline = time.monotonic() + 5
        for _, p in self.procs:
            try:
                p.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
        for _, p in self.procs:
            try:  # the group: also workers that outlived their parent
                os.killpg(p.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            try:
                p.wait(timeout=2)
            except subprocess.TimeoutExpired:
                pass
        self.procs.clear()
        self.pgids.unlink(missing_ok=True)
        if self.watcher.poll() is None:
            self.watcher.kill()
            self.watcher.wait()


def free_ports(n: int, lo: int = 20000, hi: int = 32000) -> list[int]:
    """`n` ports free on 127.0.0.1, below the ephemeral range, from a random start."""
    ports: list[int] = []
    start = random.randrange(lo, hi - 2000)
    for port in range(start, hi):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        ports.append(port)
        if len(ports) == n:
            return ports
    raise SystemExit(f"bench: not enough free ports in {lo}..{hi}")


def wait_port(port: int, proc: subprocess.Popen, name: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{name} exited with status {proc.returncode} before listening")
        with socket.socket() as s:
            s.settimeout(0.5)
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"{name} is not listening on 127.0.0.1:{port} after {timeout:.0f} s")


def run(argv: list[str], timeout: float = 10, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, **kw)


def curl(url: str, h2c: bool = False, resolve: str | None = None) -> tuple[int, int, str]:
    """(status, body bytes, HTTP version) of a GET, or (0, 0, error). `resolve`:
    curl's --resolve HOST:PORT:ADDR."""
    argv = ["curl", "-sk", "-o", "/dev/null", "--max-time", "3",
            "-w", "%{http_code} %{size_download} %{http_version}", url]
    if h2c:
        argv.insert(1, "--http2-prior-knowledge")
    if resolve:
        argv[1:1] = ["--resolve", resolve]
    try:
        r = run(argv)
        code, size, ver = r.stdout.split()
        return int(code), int(size), ver
    except (ValueError, subprocess.TimeoutExpired) as e:
        return 0, 0, str(e)


def fill(template: Path, dest: Path, values: dict[str, str]) -> None:
    text = template.read_text()
    for k, v in values.items():
        text = text.replace(f"@{k}@", v)
    left = re.findall(r"@[A-Z0-9_]+@", text)
    if left:
        raise SystemExit(f"bench: {template}: unfilled placeholders {sorted(set(left))}")
    dest.write_text(text)


def first_line(argv: list[str]) -> str:
    try:
        r = run(argv)
    except (OSError, subprocess.TimeoutExpired):
        return "?"
    lines = (r.stdout + r.stderr).strip().splitlines()
    return lines[0].strip() if lines else "?"


# --------------------------------------------------------------------------- targets

@dataclass
class Target:
    name: str
    ports: dict[str, int | None]  # proto -> port; None: not served
    proc: subprocess.Popen | None = None  # None for "direct"
    pids: list[int] = field(default_factory=list)
    idle_rss_kib: int = 0
    idle_hwm_kib: int = 0
    na: dict[str, str] = field(default_factory=dict)  # proto -> reason it is not measured
    tls: dict[str, str] = field(default_factory=dict)

    def url(self, s: Scenario) -> str | None:
        port = self.ports.get(s.proto)
        if port is None:
            return None
        if s.proto == "pass":
            return f"https://{PASS_SNI}:{port}{s.path}"
        if s.proto == "https":
            # wrk sends the URL's host as SNI; an IP address there is not allowed
            # (RFC 6066) and rustls logs a warning for every such handshake.
            return f"https://localhost:{port}{s.path}"
        return f"http://127.0.0.1:{port}{s.path}"


def make_cert(tls_dir: Path, cn: str = "bench.local") -> None:
    """A self-signed ECDSA P-256 certificate for `cn`, localhost and 127.0.0.1; the
    key is written 0600."""
    tls_dir.mkdir(parents=True)
    r = run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
             "ec_paramgen_curve:P-256", "-nodes", "-keyout", str(tls_dir / "key.pem"),
             "-out", str(tls_dir / "cert.pem"), "-days", "2", "-subj", f"/CN={cn}",
             "-addext", f"subjectAltName=DNS:{cn},DNS:localhost,IP:127.0.0.1"])
    if r.returncode != 0:
        raise SystemExit(f"bench: openssl req failed: {r.stderr}")
    (tls_dir / "key.pem").chmod(0o600)
    (tls_dir / "combined.pem").write_text(
        (tls_dir / "cert.pem").read_text() + (tls_dir / "key.pem").read_text())
    (tls_dir / "combined.pem").chmod(0o600)


def tls_probe(port: int, workdir: Path, name: str, sni: str = "bench.local") -> dict[str, str]:
    """Negotiated protocol, cipher, key exchange; whether the server lets a client resume."""
    info: dict[str, str] = {}
    try:
        r = run(["openssl", "s_client", "-connect", f"127.0.0.1:{port}",
                 "-servername", sni, "-brief"], stdin=subprocess.DEVNULL, timeout=5)
        text = r.stdout + r.stderr
        for key, label in (("protocol", "Protocol version"), ("cipher", "Ciphersuite"),
                           ("kx", "Server Temp Key"), ("sig", "Signature type")):
            m = re.search(rf"^{label}: (.+)$", text, re.M)
            if m:
                info[key] = m.group(1).strip()
        sess = workdir / f"{name}.sess"
        req = f"GET /0 HTTP/1.1\r\nHost: {sni}\r\nConnection: close\r\n\r\n"
        run(["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-servername",
             sni, "-sess_out", str(sess), "-ign_eof", "-quiet"], input=req, timeout=5)
        if sess.exists() and sess.stat().st_size > 0:
            r = run(["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-servername",
                     sni, "-sess_in", str(sess)], stdin=subprocess.DEVNULL, timeout=5)
            info["resumption"] = "yes" if re.search(r"^Reused,", r.stdout, re.M) else "no"
        else:
            info["resumption"] = "no"
    except subprocess.TimeoutExpired:
        info["error"] = "openssl s_client timed out"
    return info


def pem_der_sha256(pem: str) -> str | None:
    """SHA-256 (hex) of the DER of the first certificate in `pem`, or None."""
    m = re.search(r"-----BEGIN CERTIFICATE-----(.+?)-----END CERTIFICATE-----", pem, re.S)
    if not m:
        return None
    try:
        der = base64.b64decode("".join(m.group(1).split()), validate=True)
    except ValueError:
        return None
    return hashlib.sha256(der).hexdigest()


def served_cert(port: int, sni: str) -> str | None:
    """SHA-256 of the certificate a TLS handshake on `port` with `sni` gets, or None
    when the handshake fails (the connection was refused or closed). s_client checks
    the server's TLS 1.3 CertificateVerify signature even without chain
    verification, so a completed handshake proves the server holds that
    certificate's key."""
    try:
        r = run(["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-servername", sni],
                stdin=subprocess.DEVNULL, timeout=5)
    except subprocess.TimeoutExpired:
        return None
    return pem_der_sha256(r.stdout) if r.returncode == 0 else None


# --------------------------------------------------------------------------- load tools

def to_ms(value: str, unit: str) -> float:
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def parse_wrk(out: str) -> dict:
    res: dict = {}
    m = re.search(r"(\d+) requests in ([\d.]+)(\w+)", out)
    if m:
        res["requests"] = int(m.group(1))
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if m:
        res["rps"] = float(m.group(1))
    for pct in ("50", "99"):
        m = re.search(rf"^\s+{pct}%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
        if m:
            res[f"p{pct}_ms"] = to_ms(m.group(1), m.group(2))
    errors = 0
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if m:
        errors += sum(int(x) for x in m.groups())
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if m:
        errors += int(m.group(1))
    res["errors"] = errors
    return res


def percentile(sorted_vals: list[int], p: float) -> float:
    if not sorted_vals:
        return float("nan")
    k = max(0, min(len(sorted_vals) - 1, int(-(-p * len(sorted_vals) // 100)) - 1))
    return sorted_vals[k]


def parse_h2load(out: str, log: Path) -> dict:
    res: dict = {}
    m = re.search(r"finished in ([\d.]+)(\w+), ([\d.]+) req/s", out)
    if m:
        res["rps"] = float(m.group(3))
    m = re.search(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, "
                  r"(\d+) failed, (\d+) errored, (\d+) timeout", out)
    if m:
        res["requests"] = int(m.group(3))
        res["errors"] = int(m.group(5)) + int(m.group(6)) + int(m.group(7))
    m = re.search(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", out)
    if m:
        res["errors"] = res.get("errors", 0) + int(m.group(3)) + int(m.group(4))
    lat: list[int] = []
    try:
        with open(log) as f:
            for line in f:
                parts = line.split("\t")
                if len(parts) >= 3 and parts[1] == "200":
                    lat.append(int(parts[2]))
    except OSError:
        pass
    lat.sort()
    if lat:
        res["p50_ms"] = percentile(lat, 50) / 1000
        res["p99_ms"] = percentile(lat, 99) / 1000
    return res


def load_command(s: Scenario, url: str, duration: int, log: Path) -> list[str]:
    base = ["taskset", "-c", LOADGEN_CPU]
    if s.tool == "wrk":
        cmd = ["wrk", "-t1", f"-c{WRK_CONNS}", f"-d{duration}s", "--latency", "--timeout", "5s"]
        if s.close:
            cmd += ["-H", "Connection: close"]
        if s.proto == "pass":
            cmd += ["-s", str(HERE / "pass-sni.lua")]
        return base + cmd + [url]
    if s.tool == "h2load":
        return base + ["h2load", "-t1", f"-c{H2_CONNS}", f"-m{H2_STREAMS}", "-D", str(duration),
                       "--log-file", str(log), url]
    if s.tool == "rate":
        return base + ["h2load", "--h1", "-t1", f"-c{RATE_CONNS}", "-m1",
                       f"--rps={RATE_PER_CONN}", "-D", str(duration), "--log-file", str(log), url]
    raise ValueError(s.tool)


# --------------------------------------------------------------------------- idle client

async def idle_get(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                   path: str) -> str | None:
    """One keep-alive GET of a 1 KiB file; None when it got 200 and 1024 bytes and
    the connection stays open, else what went wrong."""
    writer.write(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
    await writer.drain()
    head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
    parts = head[0].split()
    status = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0
    headers = {}
    for line in head[1:]:
        if ":" in line:
            k, v = line.split(":", 1)
            headers[k.strip().lower()] = v.strip().lower()
    if "content-length" in headers:
        body = await reader.readexactly(int(headers["content-length"]))
    elif headers.get("transfer-encoding") == "chunked":
        body = b""
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            body += (await reader.readexactly(size + 2))[:size]
            if size == 0:
                break
    else:
        return f"status {status}, no Content-Length, not chunked"
    if status != 200 or len(body) != 1024:
        return f"status {status}, {len(body)} B"
    if headers.get("connection") == "close":
        return "connection: close"
    return None


async def idle_run(port: int, path: str, n: int, pids: list[int],
                   upstream_pids: list[int]) -> dict:
    """Open `n` keep-alive connections to 127.0.0.1:`port` (IDLE_IN_FLIGHT at a
    time), one GET each; with all of them open and idle, the summed RSS and open
    descriptors of `pids` (the proxy) and the upstream's descriptors; then a second
    GET on every connection that got its first answer (it was kept), and close."""
    res: dict = {"conns": n}
    sem = asyncio.Semaphore(IDLE_IN_FLIGHT)
    failures: list[str] = []

    async def open_one(i: int):
        async with sem:
            try:
                reader, writer = await asyncio.wait_for(
                    asyncio.open_connection("127.0.0.1", port), IDLE_STEP_TIMEOUT)
            except (OSError, asyncio.TimeoutError) as e:
                failures.append(f"connect: {e!r}")
                return None
            try:
                err = await asyncio.wait_for(idle_get(reader, writer, path), IDLE_STEP_TIMEOUT)
            except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError,
                    asyncio.LimitOverrunError, ValueError) as e:
                err = f"first request: {e!r}"
            if err is not None:
                failures.append(err)
                writer.close()
                return None
            return reader, writer

    async def second(conn) -> bool:
        reader, writer = conn
        async with sem:
            try:
                err = await asyncio.wait_for(idle_get(reader, writer, path), IDLE_STEP_TIMEOUT)
            except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError,
                    asyncio.LimitOverrunError, ValueError) as e:
                err = f"second request: {e!r}"
            if err is not None:
                failures.append(err)
            return err is None

    async def gather(coros):
        tasks = [asyncio.ensure_future(c) for c in coros]
        if not tasks:
            return []
        done, pending = await asyncio.wait(tasks, timeout=IDLE_PHASE_TIMEOUT)
        for t in pending:
            t.cancel()
        if pending:
            failures.append(f"{len(pending)} not done within {IDLE_PHASE_TIMEOUT:.0f} s")
        out = []
        for t in tasks:
            if t in done and t.exception() is not None:
                failures.append(repr(t.exception()))
            out.append(t.result() if t in done and t.exception() is None else None)
        return out

    fds_before, up_before = tree_fds(pids), tree_fds(upstream_pids)
    res["rss_before_kib"] = settled_rss(pids)
    sampler = MemSampler(pids)
    sampler.start()
    t0 = time.monotonic()
    conns = [c for c in await gather(open_one(i) for i in range(n)) if c is not None]
    res["open_s"] = round(time.monotonic() - t0, 2)
    res["served"] = len(conns)
    # Everything answered and idle: what holding the connections costs.
    res["rss_with_kib"] = await asyncio.to_thread(settled_rss, pids)
    res["fds_added"] = tree_fds(pids) - fds_before
    res["upstream_fds_added"] = tree_fds(upstream_pids) - up_before
    t0 = time.monotonic()
    res["kept"] = sum(1 for ok in await gather(second(c) for c in conns) if ok)
    res["second_s"] = round(time.monotonic() - t0, 2)
    res["rss_peak_kib"] = sampler.stop()
    for _, writer in conns:
        writer.close()
    for _, writer in conns:
        try:
            await asyncio.wait_for(writer.wait_closed(), IDLE_STEP_TIMEOUT)
        except (OSError, asyncio.TimeoutError):
            pass
    res["rss_after_close_kib"] = await asyncio.to_thread(settled_rss, pids)
    res["hwm_kib"] = tree_mem(pids)[1]
    if res["served"]:
        res["kib_per_conn"] = (res["rss_with_kib"] - res["rss_before_kib"]) / res["served"]
    res["errors"] = len(failures)
    if failures:
        kinds: dict[str, int] = {}
        for f in failures:
            f = f[:100]
            kinds[f] = kinds.get(f, 0) + 1
        res["failures"] = dict(sorted(kinds.items(), key=lambda kv: -kv[1])[:5])
    return res


def idle_limits(scenarios: list[str]) -> int:
    """The most connections an idle scenario of `scenarios` holds (0: none)."""
    return max((BY_KEY[k].conns for k in scenarios), default=0)


# --------------------------------------------------------------------------- the bench

class Bench:
    def __init__(self, args: argparse.Namespace):
        self.args = args
        # On tmpfs when there is one: the static files, the logs and h2load's
        # per-request log must not wait on a disk that other work keeps busy.
        shm = "/dev/shm" if os.access("/dev/shm", os.W_OK) else None
        self.workdir = Path(tempfile.mkdtemp(prefix="isthmus-bench-", dir=shm))
        self.workdir.chmod(0o755)  # nginx workers run as an unprivileged user
        self.procs = Procs(self.workdir)
        self.targets: dict[str, Target] = {}
        self.upstream_pids: list[int] = []
        self.meta: dict = {}
        self.shim: Path | None = None

    # ----------------------------------------------------------------- setup
    def setup(self) -> None:
        w = self.workdir
        (w / "www").mkdir()
        (w / "tmp").mkdir()
        (w / "www" / "0").write_bytes(b"")
        (w / "www" / "1k").write_bytes(b"x" * 1024)
        make_cert(w / "tls")
        # The upstream's own certificate for the passthrough scenarios: no proxy is
        # given it (checked in check_passthrough).
        make_cert(w / "tls-upstream", cn=PASS_SNI)
        names = ["UPSTREAM", "UPSTREAM_H2C", "UPSTREAM_TLS", "SHIM_CHECK", "NGINX_HTTP",
                 "NGINX_H2C", "NGINX_HTTPS", "NGINX_PASS", "HAPROXY_HTTP", "HAPROXY_HTTPS",
                 "HAPROXY_PASS", "ENVOY_ADMIN", "ENVOY_HTTP", "ENVOY_HTTPS", "ENVOY_PASS",
                 "ISTHMUS_HTTP", "ISTHMUS_HTTPS", "ISTHMUS_PASS"]
        ports = dict(zip(names, free_ports(len(names))))
        values = {k: str(v) for k, v in ports.items()}
        values["RUN"] = str(w)
        values["PASS_SNI"] = PASS_SNI
        # Debian builds nginx's stream module (ssl_preread) as a dynamic module.
        stream_so = next((p for p in ("/usr/lib/nginx/modules/ngx_stream_module.so",
                                      "/usr/share/nginx/modules/ngx_stream_module.so")
                          if os.path.exists(p)), None)
        values["LOAD_STREAM"] = f"load_module {stream_so};" if stream_so else ""
        values["TLS_CRT_B64"] = base64.b64encode((w / "tls/cert.pem").read_bytes()).decode()
        values["TLS_KEY_B64"] = base64.b64encode((w / "tls/key.pem").read_bytes()).decode()
        # Connection limits: raised for the idle scenarios only, so every other run
        # measures the peers exactly as before. nginx counts its upstream
        # connections in worker_connections; the upstream gets as many connections
        # as a proxy that keeps one per idle client connection opens.
        idle = idle_limits(self.args.scenarios)
        values["NGINX_CONNS"] = str(max(NGINX_CONNS, idle + 2048))
        values["UPSTREAM_CONNS"] = str(max(NGINX_CONNS, idle + 2048))
        values["HAPROXY_MAXCONN"] = str(max(HAPROXY_MAXCONN, idle + 1000))
        if idle:
            self.meta["idle_limits"] = (
                f"RLIMIT_NOFILE {self.meta.get('nofile', '?')} for every process; nginx "
                f"worker_connections {values['NGINX_CONNS']} (proxy and upstream), HAProxy "
                f"maxconn {values['HAPROXY_MAXCONN']}; Envoy and isthmus: no limit set")
        self.ports = ports
        fill(HERE / "peers/upstream-nginx.conf", w / "upstream.conf", values)
        fill(HERE / "peers/nginx.conf", w / "nginx.conf", values)
        fill(HERE / "peers/haproxy.cfg", w / "haproxy.cfg", values)
        fill(HERE / "peers/envoy.yaml", w / "envoy.yaml", values)
        (w / "isthmus").mkdir()
        for f in sorted((HERE / "isthmus").glob("*.yaml")):
            fill(f, w / "isthmus" / f.name, values)

        wanted = set(self.args.targets)
        # The upstream first: every target depends on it.
        up = self.procs.start("upstream", ["nginx", "-p", str(w), "-c", str(w / "upstream.conf"),
                                           "-e", str(w / "upstream-error.log")],
                              w / "upstream.log", SERVER_CPU)
        wait_port(ports["UPSTREAM"], up, "upstream nginx")
        wait_port(ports["SHIM_CHECK"], up, "upstream nginx")
        wait_port(ports["UPSTREAM_TLS"], up, "upstream nginx")
        self.upstream_pids = process_tree(up.pid)
        # direct: plain HTTP and h2c to the upstream; no TLS row of its own except
        # the passthrough one, where the client talks TLS to the upstream itself.
        self.targets["direct"] = Target("direct", {"http": ports["UPSTREAM"],
                                                   "h2c": ports["UPSTREAM_H2C"], "https": None,
                                                   "pass": ports["UPSTREAM_TLS"]})

        if "nginx" in wanted:
            p = self.procs.start("nginx", ["nginx", "-p", str(w), "-c", str(w / "nginx.conf"),
                                           "-e", str(w / "nginx-error.log")],
                                 w / "nginx.log", SERVER_CPU)
            self.targets["nginx"] = Target("nginx", {"http": ports["NGINX_HTTP"],
                                                     "h2c": ports["NGINX_H2C"],
                                                     "https": ports["NGINX_HTTPS"],
                                                     "pass": ports["NGINX_PASS"]}, p)
        if "haproxy" in wanted:
            p = self.procs.start("haproxy", ["haproxy", "-db", "-f", str(w / "haproxy.cfg")],
                                 w / "haproxy.log", SERVER_CPU)
            self.targets["haproxy"] = Target("haproxy", {"http": ports["HAPROXY_HTTP"],
                                                         "h2c": ports["HAPROXY_HTTP"],
                                                         "https": ports["HAPROXY_HTTPS"],
                                                         "pass": ports["HAPROXY_PASS"]}, p)
        if "envoy" in wanted:
            p = self.procs.start("envoy", [self.args.envoy, "-c", str(w / "envoy.yaml"),
                                           "--concurrency", "1", "--disable-hot-restart",
                                           "-l", "warning"],
                                 w / "envoy.log", SERVER_CPU)
            self.targets["envoy"] = Target("envoy", {"http": ports["ENVOY_HTTP"],
                                                     "h2c": ports["ENVOY_HTTP"],
                                                     "https": ports["ENVOY_HTTPS"],
                                                     "pass": ports["ENVOY_PASS"]}, p)
        if "isthmus" in wanted:
            argv = [self.args.isthmus, "up", str(w / "isthmus"), "--no-demo-apps"]
            if "--workers" in run([self.args.isthmus, "up", "--help"]).stdout:
                argv += ["--workers", "1"]
                self.meta["isthmus_workers"] = "--workers 1"
            else:
                self.meta["isthmus_workers"] = ("TOKIO_WORKER_THREADS=1 (isthmus up has no "
                                                "--workers option)")
            # Tokio reads TOKIO_WORKER_THREADS when the runtime's worker count is not
            # set in code. The controller's push and admin ports ephemeral and its
            # runtime file in the work dir: another `isthmus up` on the machine (the
            # defaults are 15012/15014 and /tmp/isthmus) does not stop this one.
            p = self.procs.start("isthmus", argv, w / "isthmus.log", SERVER_CPU,
                                 env={"TOKIO_WORKER_THREADS": "1", "ISTHMUS_XDS_PORT": "0",
                                      "ISTHMUS_ADMIN_PORT": "0",
                                      "ISTHMUS_RUNTIME_DIR": str(w / "runtime")})
            self.targets["isthmus"] = Target("isthmus", {"http": ports["ISTHMUS_HTTP"],
                                                         "h2c": ports["ISTHMUS_HTTP"],
                                                         "https": ports["ISTHMUS_HTTPS"],
                                                         "pass": ports["ISTHMUS_PASS"]}, p)

        for t in self.targets.values():
            if t.proc is not None:
                wait_port(t.ports["http"], t.proc, t.name)
        self.check_targets()
        time.sleep(0.5)
        for t in self.targets.values():
            if t.proc is not None:
                t.pids = process_tree(t.proc.pid)
                t.idle_rss_kib, t.idle_hwm_kib = tree_mem(t.pids)
        self.check_passthrough()
        self.build_shim()
        self.warm_up()

    def check_targets(self) -> None:
        """Each target answers /0 and /1k over HTTP/1.1, h2c, HTTPS and TLS
        passthrough as expected."""
        problems = []
        missing = {"https": "no TLS yet", "pass": "no TLS passthrough yet"}
        for t in self.targets.values():
            for proto in ("http", "h2c", "https", "pass"):
                port = t.ports.get(proto)
                if port is None:
                    continue
                if proto in missing and t.proc is not None:
                    self.wait_tls(t, port, proto)
                    if proto in t.na:
                        continue
                scheme = "http" if proto in ("http", "h2c") else "https"
                # Passthrough routes by SNI: name the host the routes match.
                host = PASS_SNI if proto == "pass" else "127.0.0.1"
                resolve = f"{PASS_SNI}:{port}:127.0.0.1" if proto == "pass" else None
                for path, size in (("/0", 0), ("/1k", 1024)):
                    code, got, ver = curl(f"{scheme}://{host}:{port}{path}", proto == "h2c",
                                          resolve)
                    if code != 200 or got != size or (proto == "h2c" and ver != "2"):
                        msg = f"{t.name} {proto} {path}: status {code}, {got} B, HTTP {ver}"
                        if t.name == "isthmus" and proto in missing:
                            t.na[proto] = f"n/a ({missing[proto]}: {msg})"
                        else:
                            problems.append(msg)
            if t.ports.get("https") and "https" not in t.na:
                t.tls = tls_probe(t.ports["https"], self.workdir, t.name)
        if problems:
            raise RuntimeError("targets do not answer as expected:\n  " + "\n  ".join(problems))

    def wait_tls(self, t: Target, port: int, proto: str) -> None:
        """Wait for the HTTPS or passthrough listener; an isthmus without it gets
        those rows n/a."""
        try:
            wait_port(port, t.proc, t.name, timeout=10 if t.name != "isthmus" else 3)
        except RuntimeError as e:
            if t.name != "isthmus" or (t.proc is not None and t.proc.poll() is not None):
                raise
            t.na[proto] = "n/a (no TLS yet)" if proto == "https" else "n/a (no passthrough yet)"
            print(f"bench: isthmus {proto} listener does not answer ({e}); those rows n/a",
                  file=sys.stderr)

    def check_passthrough(self) -> None:
        """That every passthrough target really passes TLS through, before measuring:

        - the certificate a client gets through it (SNI PASS_SNI) is the
          upstream's own, whose key only the upstream has (a completed TLS 1.3
          handshake proves the peer holds it), not the proxies' certificate;
        - a ClientHello for an unknown name is refused (routing is by SNI, not a
          plain TCP forward);
        - no proxy's configuration names the upstream's key file or contains the key,
          and no proxy process has it open.

        A target that presents another certificate is not measured (its rows say
        why); the findings go to the report's header."""
        if not any(BY_KEY[k].proto == "pass" for k in self.args.scenarios):
            return
        w = self.workdir
        upstream_fp = pem_der_sha256((w / "tls-upstream/cert.pem").read_text())
        proxy_fp = pem_der_sha256((w / "tls/cert.pem").read_text())
        key_path = str(w / "tls-upstream")
        key_pem = (w / "tls-upstream/key.pem").read_text()
        key_body = "".join(key_pem.split("-----")[2].split())
        key_b64 = base64.b64encode(key_pem.encode()).decode()
        configs = {"nginx": [w / "nginx.conf"], "haproxy": [w / "haproxy.cfg"],
                   "envoy": [w / "envoy.yaml"],
                   "isthmus": sorted((w / "isthmus").glob("*.yaml"))}
        checks: dict[str, dict[str, str]] = {}
        for t in self.targets.values():
            port = t.ports.get("pass")
            if port is None or "pass" in t.na:
                continue
            c: dict[str, str] = {}
            fp = served_cert(port, PASS_SNI)
            c["cert"] = ("upstream's" if fp == upstream_fp else
                         "the proxies' (TLS terminated)" if fp == proxy_fp else
                         "none (handshake failed)" if fp is None else f"unknown {fp[:16]}")
            if t.proc is None:
                c["unknown_sni"] = "n/a (the upstream answers any name)"
            else:
                c["unknown_sni"] = ("refused" if served_cert(port, "unknown.invalid") is None
                                    else "answered")
                text = "".join(f.read_text() for f in configs.get(t.name, []))
                # Whole strings: every P-256 key's PEM starts with the same bytes.
                in_config = key_path in text or key_body in "".join(text.split()) \
                    or key_b64 in text
                open_fds = []
                for pid in t.pids:
                    try:
                        for fd in os.listdir(f"/proc/{pid}/fd"):
                            try:
                                if os.readlink(f"/proc/{pid}/fd/{fd}").startswith(key_path):
                                    open_fds.append(f"{pid}/{fd}")
                            except OSError:
                                pass
                    except OSError:
                        pass
                c["key"] = ("in its configuration" if in_config else
                            f"open ({', '.join(open_fds)})" if open_fds else "not given")
            if fp is not None:
                info = tls_probe(port, w, f"{t.name}-pass", PASS_SNI)
                c["tls"] = (f"{info.get('protocol', '?')} {info.get('cipher', '?')} "
                            f"{info.get('kx', '?').split(',')[0]}, resumption offered: "
                            f"{info.get('resumption', '?')}")
            if fp != upstream_fp:
                t.na["pass"] = f"not measured: presents {c['cert']} certificate"
            checks[t.name] = c
        self.meta["passthrough_check"] = {
            "upstream_cert_sha256": upstream_fp, "sni": PASS_SNI, "targets": checks}
        for name, c in checks.items():
            print(f"bench: passthrough check {name}: " +
                  ", ".join(f"{k} {v}" for k, v in c.items()), file=sys.stderr)

    def build_shim(self) -> None:
        """Compile noresume.c and check that wrk then never resumes a session."""
        if not any(BY_KEY[k].close for k in self.args.scenarios):
            return
        so = self.workdir / "noresume.so"
        cc = shutil.which("cc") or shutil.which("gcc")
        if cc is None:
            self.meta["shim"] = "not built (no C compiler): wrk resumes where a server allows it"
            return
        r = run([cc, "-shared", "-fPIC", "-O2", "-o", str(so), str(HERE / "noresume.c"), "-ldl"],
                timeout=60)
        if r.returncode != 0:
            self.meta["shim"] = f"not built ({r.stderr.strip()[:200]})"
            return
        log = self.workdir / "shim-check.log"
        url = f"https://127.0.0.1:{self.ports['SHIM_CHECK']}/0"
        counts = {}
        for label, env in (("without", {}), ("with", {"LD_PRELOAD": str(so)})):
            log.write_text("")
            run(["taskset", "-c", LOADGEN_CPU, "wrk", "-t1", "-c2", "-d1s",
                 "-H", "Connection: close", url], env={**os.environ, **env}, timeout=20)
            time.sleep(0.2)
            lines = log.read_text().split()
            counts[label] = (lines.count("r"), len(lines))
        resumed_with, total_with = counts["with"]
        if resumed_with == 0 and total_with > 0 and counts["without"][0] > 0:
            self.shim = so
            self.meta["shim"] = (f"active: against a server that issues tickets, wrk resumed "
                                 f"{counts['without'][0]}/{counts['without'][1]} connections "
                                 f"without the shim and {resumed_with}/{total_with} with it")
        else:
            self.meta["shim"] = f"check failed ({counts}); not used"

    def warm_up(self) -> None:
        """One second of HTTP/1.1 load per proxy: upstream pools, allocator, caches."""
        for t in self.targets.values():
            if t.proc is None:
                continue
            run(["taskset", "-c", LOADGEN_CPU, "wrk", "-t1", f"-c{WRK_CONNS}", "-d1s",
                 f"http://127.0.0.1:{t.ports['http']}/1k"], timeout=20)

    # ----------------------------------------------------------------- measuring
    def measure(self, s: Scenario, t: Target, rep: int) -> dict:
        cell: dict = {"scenario": s.key, "target": t.name, "rep": rep}
        if s.proto in t.na:
            cell["na"] = t.na[s.proto]
            return cell
        url = t.url(s)
        if url is None:
            cell["na"] = "not measured"
            return cell
        if t.proc is not None and t.proc.poll() is not None:
            cell["error"] = f"{t.name} exited with status {t.proc.returncode}"
            return cell
        if s.tool == "idle":
            return self.measure_idle(s, t, cell)
        quiet, busy = wait_quiet(self.args.quiet_threshold, self.args.quiet_timeout)
        cell["quiet"], cell["busy_before"] = quiet, round(busy, 3)
        log = self.workdir / f"h2load-{s.key}-{t.name}-{rep}.log"
        cmd = load_command(s, url, self.args.duration, log)
        env = dict(os.environ)
        if s.close and self.shim is not None:
            env["LD_PRELOAD"] = str(self.shim)
        attack = None
        if s.attack == "slowloris":
            # 1,000 slowloris connections (a header line every 5 s), opened at 500/s
            # before the measured load starts; they stay on for the whole run.
            attack = subprocess.Popen(
                ["taskset", "-c", LOADGEN_CPU, "slowhttptest", "-H", "-c", "1000", "-r", "500",
                 "-i", "5", "-l", str(self.args.duration + 20), "-p", "5", "-u", url],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                preexec_fn=die_with_parent)
            time.sleep(3)
            cell["attack"] = "slowhttptest -H -c 1000 -r 500 -i 5"
        sampler = MemSampler(t.pids) if t.pids else None
        cell["rss_before_kib"] = tree_mem(t.pids)[0] if t.pids else 0
        cpu0 = tree_cpu(t.pids) if t.pids else (0, 0)
        up0 = tree_cpu(self.upstream_pids)
        m0 = machine_ticks()
        psi0 = {r: psi_some_us(r) for r in ("cpu", "io")}
        ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        me0 = resource.getrusage(resource.RUSAGE_SELF)
        t0 = time.monotonic()
        if sampler:
            sampler.start()
        try:
            r = subprocess.run(cmd, capture_output=True, text=True, env=env,
                               timeout=self.args.duration + 30, preexec_fn=die_with_parent)
            out = r.stdout + r.stderr
        except subprocess.TimeoutExpired as e:
            out = f"timed out: {e}"
            r = None
        wall = time.monotonic() - t0
        if attack is not None:
            attack.terminate()
            try:
                attack.wait(timeout=10)
            except subprocess.TimeoutExpired:
                attack.kill()
        peak = sampler.stop() if sampler else 0
        cpu1 = tree_cpu(t.pids) if t.pids else (0, 0)
        up1 = tree_cpu(self.upstream_pids)
        m1 = machine_ticks()
        psi1 = {r: psi_some_us(r) for r in ("cpu", "io")}
        ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        me1 = resource.getrusage(resource.RUSAGE_SELF)
        (self.workdir / f"out-{s.key}-{t.name}-{rep}.txt").write_text(" ".join(cmd) + "\n" + out)

        res = parse_wrk(out) if s.tool == "wrk" else parse_h2load(out, log)
        log.unlink(missing_ok=True)
        cell.update(res)
        reqs = res.get("requests", 0)
        if r is None or r.returncode != 0 or not reqs or "rps" not in res:
            cell["error"] = (out.strip().splitlines() or ["no output"])[-1][:160]
            return cell
        cell["wall_s"] = round(wall, 3)
        if t.pids:
            du, ds = cpu1[0] - cpu0[0], cpu1[1] - cpu0[1]
            cell["cpu_user_us"] = du / CLK_TCK * 1e6 / reqs
            cell["cpu_sys_us"] = ds / CLK_TCK * 1e6 / reqs
            cell["cpu_us"] = cell["cpu_user_us"] + cell["cpu_sys_us"]
            cell["cpu_cores"] = (du + ds) / CLK_TCK / self.args.duration
            cell["rss_peak_kib"] = peak
            cell["hwm_kib"] = tree_mem(t.pids)[1]
        cell["upstream_cpu_us"] = ((up1[0] - up0[0]) + (up1[1] - up0[1])) / CLK_TCK * 1e6 / reqs
        loadgen = (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)
        me = (me1.ru_utime - me0.ru_utime) + (me1.ru_stime - me0.ru_stime)
        cell["loadgen_cores"] = loadgen / wall
        ours = (cpu1[0] + cpu1[1] - cpu0[0] - cpu0[1] + up1[0] + up1[1] - up0[0] - up0[1]) / CLK_TCK
        machine = (m1[2] - m0[2]) / CLK_TCK
        # CPU time that none of the processes of this cell used (other work on the
        # machine; in-kernel softirq time shows separately in /proc/stat, not here).
        cell["other_cores"] = round(max(0.0, machine - ours - loadgen - me) / wall, 3)
        # Pressure stall information: share of the run in which some task of the
        # machine waited for a CPU or for I/O (diagnosis of noisy cells).
        for r in ("cpu", "io"):
            cell[f"psi_{r}_some"] = round((psi1[r] - psi0[r]) / 1e6 / wall, 3)
        if cell["other_cores"] > self.args.other_threshold:
            cell["quiet"] = False
        return cell

    @staticmethod
    def runs(s: Scenario, t: Target) -> bool:
        """Whether target `t` has a row in scenario `s` (direct: not in the
        terminated-TLS and idle scenarios)."""
        return t.url(s) is not None and not (s.tool == "idle" and t.proc is None)

    def measure_idle(self, s: Scenario, t: Target, cell: dict) -> dict:
        """idle-*: hold s.conns keep-alive connections open (see idle_run)."""
        quiet, busy = wait_quiet(self.args.quiet_threshold, self.args.quiet_timeout)
        cell["quiet"], cell["busy_before"] = quiet, round(busy, 3)
        t.pids = process_tree(t.proc.pid)
        try:
            res = asyncio.run(idle_run(t.ports[s.proto], s.path, s.conns, t.pids,
                                       self.upstream_pids))
        except OSError as e:
            cell["error"] = f"client: {e}"
            return cell
        cell.update(res)
        if not res["served"]:
            cell["error"] = f"no connection served: {res.get('failures')}"
        elif t.proc.poll() is not None:
            cell["error"] = f"{t.name} exited with status {t.proc.returncode}"
        return cell

    def run_all(self) -> list[dict]:
        cells = []
        targets = [self.targets[n] for n in TARGETS if n in self.targets]
        total = self.args.reps * sum(1 for k in self.args.scenarios for t in targets
                                     if self.runs(BY_KEY[k], t))
        done = 0
        for rep in range(self.args.reps):
            for key in self.args.scenarios:
                s = BY_KEY[key]
                # Rotate the order per repetition so no target always goes first.
                k = rep % len(targets)
                for t in targets[k:] + targets[:k]:
                    if not self.runs(s, t):
                        continue  # direct has no terminated-TLS row nor idle rows
                    done += 1
                    c = self.measure(s, t, rep)
                    cells.append(c)
                    print(f"bench: [{done}/{total}] {report.cell_line(c)}", file=sys.stderr,
                          flush=True)
        return cells

    # ----------------------------------------------------------------- metadata
    def versions(self) -> dict[str, str]:
        def number(text: str) -> str:
            m = re.search(r"\d+\.\d+[\w.+~-]*", text)
            return m.group(0) if m else text

        envoy = first_line([self.args.envoy, "--version"])
        v = {
            "nginx": number(first_line(["nginx", "-v"])),
            "haproxy": number(first_line(["haproxy", "-v"])),
            "envoy": number(envoy.split("/", 1)[-1]) + (" (BoringSSL)" if "BoringSSL" in envoy
                                                          else ""),
            "isthmus": number(first_line([self.args.isthmus, "version"])),
            "wrk": number(first_line(["wrk", "-v"])),
            "h2load": number(first_line(["h2load", "--version"])),
            "openssl": number(first_line(["openssl", "version"])),
            "kernel": os.uname().release,
        }
        repo = HERE.parent.parent
        rev = run(["git", "-C", str(repo), "rev-parse", "--short", "HEAD"]).stdout.strip()
        # Changes under benches/ do not change the binary.
        dirty = run(["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no",
                     "--", ".", ":!benches"]).stdout.strip()
        if rev:
            v["isthmus"] += f" (git {rev}{', uncommitted changes' if dirty else ''})"
        return v

    def machine(self) -> str:
        model = "?"
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
        mem = 0
        with open("/proc/meminfo") as f:
            mem = int(f.readline().split()[1]) // (1024 * 1024)
        return f"{os.cpu_count()} CPUs ({model}), {mem} GiB RAM, Linux {os.uname().release}"

    def finish(self, cells: list[dict]) -> None:
        now = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        meta = {
            "date": now,
            "mode": self.args.mode,
            "command": self.args.command,
            "machine": self.machine(),
            "versions": self.versions(),
            "duration_s": self.args.duration,
            "reps": self.args.reps,
            "quiet_threshold": self.args.quiet_threshold,
            "quiet_timeout_s": self.args.quiet_timeout,
            "scenarios": {k: BY_KEY[k].title for k in self.args.scenarios},
            "per": {k: BY_KEY[k].per for k in self.args.scenarios},
            "idle": {k: BY_KEY[k].conns for k in self.args.scenarios
                     if BY_KEY[k].tool == "idle"},
            "tls": {n: t.tls for n, t in self.targets.items() if t.tls},
            "idle_rss_kib": {n: t.idle_rss_kib for n, t in self.targets.items() if t.pids},
            "na": {n: t.na for n, t in self.targets.items() if t.na},
            **self.meta,
        }
        data = {"meta": meta, "cells": cells}
        out = Path(self.args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.with_suffix(".json").write_text(json.dumps(data, indent=1) + "\n")
        md = report.render(data)
        out.write_text(md)
        print(md)
        print(f"bench: wrote {out} and {out.with_suffix('.json')}", file=sys.stderr)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--mode", choices=["quick", "full"], default="quick")
    ap.add_argument("--isthmus", required=True, help="the isthmus binary")
    ap.add_argument("--envoy", required=True, help="the envoy binary")
    ap.add_argument("--out", required=True, help="Markdown file to write (JSON beside it)")
    ap.add_argument("--command", default="", help="the command line to record")
    ap.add_argument("--scenarios", help=f"comma-separated subset of {','.join(BY_KEY)}")
    ap.add_argument("--targets", help=f"comma-separated subset of {','.join(TARGETS[1:])} "
                    "(direct is always run)")
    ap.add_argument("--duration", type=int, help="seconds per measurement (quick 3, full 10)")
    ap.add_argument("--reps", type=int, help="repetitions per cell, median kept (quick 1, full 3)")
    ap.add_argument("--quiet-threshold", type=float, default=0.15,
                    help="machine non-idle share under which it counts as quiet (default 0.15)")
    ap.add_argument("--quiet-timeout", type=float,
                    help="seconds to wait for quiet before measuring anyway (quick 2, full 10)")
    ap.add_argument("--other-threshold", type=float, default=0.15,
                    help="cores of CPU used by other processes during a run above which the "
                    "cell is marked noisy (default 0.15)")
    ap.add_argument("--keep", action="store_true",
                    help="keep the work dir (configs, logs, raw load-tool output)")
    args = ap.parse_args()
    quick = args.mode == "quick"
    args.scenarios = args.scenarios.split(",") if args.scenarios else (
        QUICK if quick else FULL)
    for k in args.scenarios:
        if k not in BY_KEY:
            ap.error(f"unknown scenario {k!r}")
    args.targets = args.targets.split(",") if args.targets else TARGETS[1:]
    for n in args.targets:
        if n not in TARGETS:
            ap.error(f"unknown target {n!r}")
    args.duration = args.duration or (3 if quick else 10)
    args.reps = args.reps or (1 if quick else 3)
    if args.quiet_timeout is None:
        args.quiet_timeout = 2 if quick else 10

    # The orchestrator shares CPU 0 with the load generator, away from the servers.
    os.sched_setaffinity(0, {int(LOADGEN_CPU)})
    bench = Bench(args)
    idle = idle_limits(args.scenarios)
    if idle:
        # The idle scenarios hold thousands of sockets in this process (the client)
        # and in the proxy: the soft descriptor limit up to the hard one, inherited
        # by everything started from here.
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft != resource.RLIM_INFINITY and (hard == resource.RLIM_INFINITY or soft < hard):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        bench.meta["nofile"] = soft
        if soft < idle + 1000:
            print(f"bench: RLIMIT_NOFILE is {soft}: too low for {idle} connections; "
                  "those cells will fail", file=sys.stderr)
    keep = False

    def on_signal(signum, _frame):
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGINT, on_signal)  # also when started in the background
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)
    t0 = time.monotonic()
    try:
        print(f"bench: {args.mode}: {len(args.scenarios)} scenarios x "
              f"{1 + len(args.targets)} targets x {args.reps} rep(s) of {args.duration} s; "
              f"work dir {bench.workdir}", file=sys.stderr, flush=True)
        bench.setup()
        cells = bench.run_all()
        bench.finish(cells)
    except KeyboardInterrupt:
        print("bench: interrupted; stopping everything it started", file=sys.stderr)
        return 130
    except (RuntimeError, OSError, subprocess.SubprocessError) as e:
        print(f"bench: failed: {e}", file=sys.stderr)
        keep = True
        return 1
    finally:
        bench.procs.stop_all()
        if keep or args.keep:
            print(f"bench: work dir kept: {bench.workdir}", file=sys.stderr)
        else:
            shutil.rmtree(bench.workdir, ignore_errors=True)
        print(f"bench: {time.monotonic() - t0:.0f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
