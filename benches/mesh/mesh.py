#!/usr/bin/env python3
"""Mesh benchmark: load client -> client's sidecar -> mTLS -> server's sidecar -> app.

Three paths to the same upstream (the load harness's nginx, 1 worker, /1k = 1 KiB):

- direct:  the client talks to the upstream;
- nginx:   a reference, not a sidecar: two nginx (1 worker each) doing the same
           hops with mTLS, a lean proxy's cost of the two extra hops here;
- envoy:   two Envoys as the client's and the server's sidecar (mTLS between them
           with certificates made here with openssl: a root and two leaves with
           SPIFFE URI SANs);
- isthmus: `isthmus up DIR --no-demo-apps` with two injected WorkloadEntries
           (`client`, `server`) and PeerAuthentication STRICT; the sidecars are
           its `isthmus proxy` children, mTLS with certificates of its mesh CA.

Two scenarios: a fixed 1000 req/s (h2load --h1, latency from its per-request log)
and a saturating closed loop (wrk -c50). For each cell: req/s, p50/p99, the CPU
time of both sidecars (utime + stime from /proc/PID/stat) per request, their RSS
(idle, peak during the run), the upstream's CPU per request and the mTLS
connections between the sidecars. Pinning as in the load harness: the load
generator on CPU 0, the upstream and every sidecar on CPU 1, each sidecar with one
worker thread.

Started by benches/mesh/run.sh. Reuses the load harness (benches/load/bench.py:
processes, ports, certificates, /proc readers, quiet-machine wait, output parsers;
report.py: progress lines). Everything it starts is stopped on exit, on Ctrl-C,
SIGTERM or failure, and dies with it even if it is SIGKILLed.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "load"))

import bench as lb  # noqa: E402  (benches/load/bench.py)
import report as lr  # noqa: E402  (benches/load/report.py)

HOST = "server:8000"  # the Service as the client app names it
PATH = "/1k"
SPIFFE = "spiffe://cluster.local/ns/default/sa/{}"
TARGETS = ["direct", "nginx", "envoy", "isthmus"]
ROLES = ["client", "server"]  # the two sidecars

# Targets from the issue (mesh: two sidecars).
TARGET_ADDED_P99_MS = 0.30  # Istio's published added p99 for two sidecars
TARGET_IDLE_RSS_MIB = 12
TARGET_CPU_VS_ENVOY = 0.5


@dataclass(frozen=True)
class Scenario:
    key: str
    title: str


SCENARIOS = [
    Scenario("rate-1k", "fixed 1000 req/s, 1 KiB, HTTP/1.1 keep-alive "
             f"(h2load --h1 -t1 -c{lb.RATE_CONNS} -m1 --rps={lb.RATE_PER_CONN})"),
    Scenario("sat-1k", f"closed loop, 1 KiB, HTTP/1.1 keep-alive (wrk -t1 -c{lb.WRK_CONNS})"),
]
BY_KEY = {s.key: s for s in SCENARIOS}


@dataclass
class MeshTarget:
    name: str
    port: int
    # role -> pids of that sidecar (empty for direct)
    sidecars: dict[str, list[int]] = field(default_factory=dict)
    # processes of the target that are not sidecars (isthmus: the `up` process,
    # controller only here: no Gateway), measured but not counted
    control: list[int] = field(default_factory=list)
    procs: list[subprocess.Popen] = field(default_factory=list)
    idle_rss_kib: dict[str, int] = field(default_factory=dict)
    after_rss_kib: dict[str, int] = field(default_factory=dict)
    inbound_port: int | None = None  # the server sidecar's mTLS port

    def all_pids(self) -> list[int]:
        return [p for r in ROLES for p in self.sidecars.get(r, [])] + self.control


def load_command(key: str, port: int, duration: int, log: Path) -> list[str]:
    """The harness's client commands (load/bench.py load_command), with the Host
    header of the Service: the client's sidecar routes by it. wrk replaces its Host
    header with -H Host; h2load would send a second one, it takes `:authority`."""
    url = f"http://127.0.0.1:{port}{PATH}"
    tool = {"rate-1k": "rate", "sat-1k": "wrk"}[key]
    s = lb.Scenario(key, "", "http", PATH, tool)
    cmd = lb.load_command(s, url, duration, log)
    host = "Host" if tool == "wrk" else ":authority"
    return cmd[:-1] + ["-H", f"{host}: {HOST}", url]


def tcp_states(port: int) -> dict[str, int]:
    """Sockets on 127.0.0.1 with `port` at either end, by state (ESTABLISHED counted
    once per connection: the side whose remote port is `port`)."""
    out = {"established": 0, "time_wait": 0}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                next(f)
                for line in f:
                    parts = line.split()
                    local, remote, st = parts[1], parts[2], parts[3]
                    lport = int(local.rsplit(":", 1)[1], 16)
                    rport = int(remote.rsplit(":", 1)[1], 16)
                    if st == "01" and rport == port:
                        out["established"] += 1
                    elif st == "06" and port in (lport, rport):
                        out["time_wait"] += 1
        except OSError:
            pass
    return out


def cmdline(pid: int) -> list[str]:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return [a.decode(errors="replace") for a in f.read().split(b"\0") if a]
    except OSError:
        return []


def is_sidecar(argv: list[str], role: str) -> bool:
    """`isthmus proxy ... --name ROLE` (as `up` starts its sidecars)."""
    return (argv[1:2] == ["proxy"] and "--name" in argv
            and argv[argv.index("--name") + 1:][:1] == [role])


def make_pki(d: Path) -> None:
    """A root (ECDSA P-256, CA) and two leaves for Envoy, `client` and `server`, with
    the SPIFFE IDs Istio would give them as URI SANs: the key type isthmus's mesh CA
    issues too."""
    d.mkdir(parents=True)
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]

    def ok(argv: list[str]) -> None:
        r = lb.run(argv, timeout=30)
        if r.returncode != 0:
            raise SystemExit(f"mesh: {' '.join(argv[:3])} failed: {r.stderr}")

    ok(["openssl", "req", "-x509", *ec, "-keyout", str(d / "root.key"), "-out",
        str(d / "root.pem"), "-days", "2", "-subj", "/O=isthmus-bench/CN=bench mesh root",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign"])
    for i, name in enumerate(ROLES, start=2):
        ext = d / f"{name}.ext"
        # nginx verifies a peer by DNS name only: the server's leaf has one too.
        dns = ",DNS:server.default.svc.cluster.local" if name == "server" else ""
        ext.write_text(f"subjectAltName=critical,URI:{SPIFFE.format(name)}{dns}\n"
                       "basicConstraints=critical,CA:FALSE\n"
                       "keyUsage=critical,digitalSignature,keyEncipherment\n"
                       "extendedKeyUsage=serverAuth,clientAuth\n")
        ok(["openssl", "req", "-new", *ec, "-keyout", str(d / f"{name}.key"), "-out",
            str(d / f"{name}.csr"), "-subj", "/O=isthmus-bench"])
        ok(["openssl", "x509", "-req", "-in", str(d / f"{name}.csr"), "-CA",
            str(d / "root.pem"), "-CAkey", str(d / "root.key"), "-set_serial", str(i),
            "-days", "2", "-extfile", str(ext), "-out", str(d / f"{name}.pem")])
    for k in d.glob("*.key"):
        k.chmod(0o600)


def read_latencies(log: Path) -> list[int]:
    """Per-request latencies (µs) of the successful requests in an h2load log."""
    lat: list[int] = []
    try:
        with open(log) as f:
            for line in f:
                parts = line.split("\t")
                if len(parts) >= 3 and parts[1] == "200":
                    lat.append(int(parts[2]))
    except OSError:
        pass
    return lat


def curl_host(port: int, host: str = HOST) -> tuple[int, int]:
    """(status, body bytes) of GET /1k with the Service's Host header; (0, 0) if no
    HTTP answer."""
    try:
        r = lb.run(["curl", "-s", "-o", "/dev/null", "--max-time", "3", "-H", f"Host: {host}",
                    "-w", "%{http_code} %{size_download}", f"http://127.0.0.1:{port}{PATH}"])
        code, size = r.stdout.split()
        return int(code), int(size)
    except (ValueError, subprocess.TimeoutExpired):
        return 0, 0


class MeshBench(lb.Bench):
    """The load harness's Bench (work dir on /dev/shm, process groups, versions,
    machine) with a mesh set-up and measurement of its own."""

    def setup(self) -> None:
        w = self.workdir
        (w / "www").mkdir()
        (w / "tmp").mkdir()
        (w / "www" / "0").write_bytes(b"")
        (w / "www" / "1k").write_bytes(b"x" * 1024)
        # The upstream's configuration serves TLS too (passthrough scenarios of the
        # load harness); never used here, but it needs its certificates.
        lb.make_cert(w / "tls")
        lb.make_cert(w / "tls-upstream", cn=lb.PASS_SNI)
        make_pki(w / "pki")
        names = ["UPSTREAM", "UPSTREAM_H2C", "UPSTREAM_TLS", "SHIM_CHECK",
                 "XDS", "ADMIN", "CLIENT_APP", "CLIENT_IN", "CLIENT_OUT", "SERVER_IN",
                 "SERVER_OUT", "ENVOY_CLIENT_ADMIN", "ENVOY_SERVER_ADMIN", "ENVOY_OUT",
                 "ENVOY_IN", "NGINX_OUT", "NGINX_IN"]
        ports = dict(zip(names, lb.free_ports(len(names))))
        self.ports = ports
        values = {k: str(v) for k, v in ports.items()}
        values.update(RUN=str(w), PKI=str(w / "pki"), UPSTREAM_CONNS=str(lb.NGINX_CONNS))
        lb.fill(HERE.parent / "load/peers/upstream-nginx.conf", w / "upstream.conf", values)
        lb.fill(HERE / "envoy-client.yaml", w / "envoy-client.yaml", values)
        lb.fill(HERE / "envoy-server.yaml", w / "envoy-server.yaml", values)
        lb.fill(HERE / "nginx-client.conf", w / "nginx-client.conf", values)
        lb.fill(HERE / "nginx-server.conf", w / "nginx-server.conf", values)
        (w / "isthmus").mkdir()
        lb.fill(HERE / "isthmus.yaml", w / "isthmus" / "mesh.yaml", values)
        (w / "runtime").mkdir()

        up = self.procs.start("upstream", ["nginx", "-p", str(w), "-c", str(w / "upstream.conf"),
                                           "-e", str(w / "upstream-error.log")],
                              w / "upstream.log", lb.SERVER_CPU)
        lb.wait_port(ports["UPSTREAM"], up, "upstream nginx")
        self.upstream_pids = lb.process_tree(up.pid)
        self.mtargets: dict[str, MeshTarget] = {"direct": MeshTarget("direct", ports["UPSTREAM"])}

        wanted = set(self.args.targets)
        if "nginx" in wanted:
            t = MeshTarget("nginx", ports["NGINX_OUT"], inbound_port=ports["NGINX_IN"])
            for role in ROLES:
                p = self.procs.start(f"nginx-{role}", [
                    "nginx", "-p", str(w), "-c", str(w / f"nginx-{role}.conf"),
                    "-e", str(w / f"nginx-{role}-error.log")], w / f"nginx-{role}.log",
                    lb.SERVER_CPU)
                t.procs.append(p)
            lb.wait_port(ports["NGINX_IN"], t.procs[1], "nginx (server side)")
            lb.wait_port(ports["NGINX_OUT"], t.procs[0], "nginx (client side)")
            for role, p in zip(ROLES, t.procs):  # master and worker
                t.sidecars[role] = lb.process_tree(p.pid)
            self.mtargets["nginx"] = t
        if "envoy" in wanted:
            t = MeshTarget("envoy", ports["ENVOY_OUT"], inbound_port=ports["ENVOY_IN"])
            for role in ROLES:
                p = self.procs.start(f"envoy-{role}", [
                    self.args.envoy, "-c", str(w / f"envoy-{role}.yaml"), "--concurrency", "1",
                    "--disable-hot-restart", "-l", "warning"], w / f"envoy-{role}.log",
                    lb.SERVER_CPU)
                t.sidecars[role] = [p.pid]  # taskset execs: the pid is envoy's
                t.procs.append(p)
            lb.wait_port(ports["ENVOY_IN"], t.procs[1], "envoy (server sidecar)")
            lb.wait_port(ports["ENVOY_OUT"], t.procs[0], "envoy (client sidecar)")
            self.mtargets["envoy"] = t
        if "isthmus" in wanted:
            argv = [self.args.isthmus, "up", str(w / "isthmus"), "--no-demo-apps",
                    "--workers", "1", "--xds-port", str(ports["XDS"]),
                    "--admin-port", str(ports["ADMIN"])]
            p = self.procs.start("isthmus", argv, w / "isthmus.log", lb.SERVER_CPU,
                                 env={"ISTHMUS_RUNTIME_DIR": str(w / "runtime"),
                                      "ISTHMUS_LOG": "warn"})
            t = MeshTarget("isthmus", ports["CLIENT_OUT"], procs=[p],
                           inbound_port=ports["SERVER_IN"])
            lb.wait_port(ports["SERVER_IN"], p, "isthmus (server sidecar)", timeout=60)
            lb.wait_port(ports["CLIENT_OUT"], p, "isthmus (client sidecar)", timeout=60)
            # The sidecars: `isthmus proxy ... --name NAME` children of this `up`
            # (not by name machine-wide: other isthmus meshes may be running).
            tree = lb.process_tree(p.pid)
            for role in ROLES:
                pids = [q for q in tree if q != p.pid and is_sidecar(cmdline(q), role)]
                if len(pids) != 1:
                    raise RuntimeError(f"isthmus: {len(pids)} sidecar process(es) for "
                                       f"{role} under up (pid {p.pid}): {pids}")
                t.sidecars[role] = pids
            t.control = [p.pid]
            self.mtargets["isthmus"] = t

        self.check_paths()
        time.sleep(0.5)
        for t in self.mtargets.values():
            for role, pids in t.sidecars.items():
                t.idle_rss_kib[role] = lb.tree_mem(pids)[0]
            if t.control:
                t.idle_rss_kib["control"] = lb.tree_mem(t.control)[0]
        # Warm-up as in the load harness: 1 s of HTTP/1.1 load per proxy path.
        for t in self.mtargets.values():
            if t.sidecars:
                lb.run(["taskset", "-c", lb.LOADGEN_CPU, "wrk", "-t1", f"-c{lb.WRK_CONNS}",
                        "-d1s", "-H", f"Host: {HOST}", f"http://127.0.0.1:{t.port}{PATH}"],
                       timeout=20)

    def check_paths(self) -> None:
        """Every path answers GET /1k (1 KiB) with the Service's Host; a new mesh may
        take a moment (configuration push, workload certificates). Then: the server
        sidecar refuses plaintext (so the hop is mTLS), and the client sidecar holds
        a connection to the server sidecar's inbound port."""
        checks: dict[str, dict[str, str]] = {}
        for t in self.mtargets.values():
            deadline = time.monotonic() + 30
            while True:
                code, size = curl_host(t.port)
                if code == 200 and size == 1024:
                    break
                for p in t.procs:
                    if p.poll() is not None:
                        raise RuntimeError(f"{t.name} exited with status {p.returncode}")
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{t.name}: GET {PATH} Host {HOST} on :{t.port}: "
                                       f"status {code}, {size} B")
                time.sleep(0.2)
            if t.inbound_port is None:
                continue
            c: dict[str, str] = {}
            code, _ = curl_host(t.inbound_port)
            c["plaintext to the server sidecar"] = (f"refused (HTTP {code})" if code != 200
                                                    else "ANSWERED 200")
            if code == 200:
                raise RuntimeError(f"{t.name}: the server sidecar answers plaintext: no mTLS")
            r = lb.run(["openssl", "s_client", "-connect", f"127.0.0.1:{t.inbound_port}",
                        "-brief"], stdin=subprocess.DEVNULL, timeout=5)
            m = re.search(r"^Protocol version: (.+)$", r.stdout + r.stderr, re.M)
            c["TLS (openssl s_client, no client cert)"] = (
                f"{m.group(1).strip()}, then refused" if m else "handshake refused")
            # The client sidecar's own connections to the inbound port.
            mine = tcp_owner_count(t.sidecars["client"], t.inbound_port)
            c["client sidecar -> server sidecar connections"] = str(mine)
            if mine == 0:
                raise RuntimeError(f"{t.name}: no connection from the client sidecar to the "
                                   f"server sidecar's inbound port {t.inbound_port}")
            checks[t.name] = c
        self.meta["path_check"] = checks
        for name, c in checks.items():
            print(f"mesh: check {name}: " + ", ".join(f"{k}: {v}" for k, v in c.items()),
                  file=sys.stderr)

    # ----------------------------------------------------------------- measuring
    def run_load(self, s: Scenario, t: MeshTarget, rep: int, duration: int, tag: str) -> dict:
        """One run of the client against `t`: raw counters (ticks, samples), turned
        into per-request figures by `finish_cell` after the slices are merged."""
        raw: dict = {"wall": 0.0}
        for p in t.procs:
            if p.poll() is not None:
                raw["error"] = f"{t.name} exited with status {p.returncode}"
                return raw
        log = self.workdir / f"h2load-{s.key}-{t.name}-{rep}-{tag}.log"
        cmd = load_command(s.key, t.port, duration, log)
        samplers = {r: lb.MemSampler(p) for r, p in t.sidecars.items()}
        cpu0 = {r: lb.tree_cpu(p) for r, p in t.sidecars.items()}
        ctl0 = lb.tree_cpu(t.control)
        up0 = lb.tree_cpu(self.upstream_pids)
        tw0 = tcp_states(t.inbound_port)["time_wait"] if t.inbound_port else 0
        m0 = lb.machine_ticks()
        ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        me0 = resource.getrusage(resource.RUSAGE_SELF)
        t0 = time.monotonic()
        for sm in samplers.values():
            sm.start()
        try:
            r = subprocess.run(cmd, capture_output=True, text=True,
                               timeout=duration + 30, preexec_fn=lb.die_with_parent)
            out = r.stdout + r.stderr
        except subprocess.TimeoutExpired as e:
            out, r = f"timed out: {e}", None
        raw["wall"] = time.monotonic() - t0
        raw["duration"] = duration
        peaks = {role: sm.stop() for role, sm in samplers.items()}
        cpu1 = {r: lb.tree_cpu(p) for r, p in t.sidecars.items()}
        ctl1 = lb.tree_cpu(t.control)
        up1 = lb.tree_cpu(self.upstream_pids)
        m1 = lb.machine_ticks()
        ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        me1 = resource.getrusage(resource.RUSAGE_SELF)
        if t.inbound_port:
            st = tcp_states(t.inbound_port)
            raw["mtls_established"] = st["established"]
            raw["mtls_time_wait_new"] = max(0, st["time_wait"] - tw0)
        (self.workdir / f"out-{s.key}-{t.name}-{rep}-{tag}.txt").write_text(
            " ".join(cmd) + "\n" + out)
        if s.key == "sat-1k":
            res = lb.parse_wrk(out)
        else:
            res = lb.parse_h2load(out, log)
            raw["lat_us"] = read_latencies(log)
        log.unlink(missing_ok=True)
        raw.update(res)
        if r is None or r.returncode != 0 or not res.get("requests") or "rps" not in res:
            raw["error"] = (out.strip().splitlines() or ["no output"])[-1][:160]
            return raw
        raw["ticks"] = {role: (cpu1[role][0] - cpu0[role][0], cpu1[role][1] - cpu0[role][1])
                        for role in t.sidecars}
        raw["peak_kib"] = peaks
        raw["hwm_kib"] = {role: lb.tree_mem(p)[1] for role, p in t.sidecars.items()}
        raw["control_ticks"] = (ctl1[0] + ctl1[1]) - (ctl0[0] + ctl0[1])
        raw["upstream_ticks"] = (up1[0] + up1[1]) - (up0[0] + up0[1])
        raw["machine_ticks"] = m1[2] - m0[2]
        raw["loadgen_s"] = (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)
        raw["self_s"] = (me1.ru_utime - me0.ru_utime) + (me1.ru_stime - me0.ru_stime)
        return raw

    def finish_cell(self, s: Scenario, t: MeshTarget, rep: int, raws: list[dict],
                    quiet: bool, busy: float) -> dict:
        """Merge the runs (slices) of one cell and derive the per-request figures."""
        cell: dict = {"scenario": s.key, "target": t.name, "rep": rep, "quiet": quiet,
                      "busy_before": round(busy, 3), "slices": len(raws)}
        bad = [r for r in raws if "error" in r]
        if bad:
            cell["error"] = bad[0]["error"]
            return cell
        reqs = sum(r["requests"] for r in raws)
        dur = sum(r["duration"] for r in raws)
        wall = sum(r["wall"] for r in raws)
        cell.update(requests=reqs, errors=sum(r.get("errors", 0) for r in raws),
                    wall_s=round(wall, 3), rps=sum(r["rps"] * r["duration"] for r in raws) / dur)
        if "lat_us" in raws[0]:
            lat = sorted(x for r in raws for x in r["lat_us"])
            cell["p50_ms"] = lb.percentile(lat, 50) / 1000
            cell["p99_ms"] = lb.percentile(lat, 99) / 1000
            cell["p999_ms"] = lb.percentile(lat, 99.9) / 1000
            cell["slice_p99_ms"] = [round(lb.percentile(sorted(r["lat_us"]), 99) / 1000, 3)
                                    for r in raws]
        else:
            cell["p50_ms"], cell["p99_ms"] = raws[0].get("p50_ms"), raws[0].get("p99_ms")
        tick_us = 1e6 / lb.CLK_TCK
        if t.sidecars:
            tu = ts = 0
            for role in t.sidecars:
                du = sum(r["ticks"][role][0] for r in raws)
                ds = sum(r["ticks"][role][1] for r in raws)
                tu, ts = tu + du, ts + ds
                cell[f"{role}_cpu_us"] = (du + ds) * tick_us / reqs
                cell[f"{role}_rss_peak_kib"] = max(r["peak_kib"][role] for r in raws)
                cell[f"{role}_hwm_kib"] = max(r["hwm_kib"][role] for r in raws)
            cell["cpu_user_us"] = tu * tick_us / reqs
            cell["cpu_sys_us"] = ts * tick_us / reqs
            cell["cpu_us"] = cell["cpu_user_us"] + cell["cpu_sys_us"]
            cell["cpu_cores"] = (tu + ts) / lb.CLK_TCK / dur
            cell["mtls_established"] = raws[-1].get("mtls_established", 0)
            cell["mtls_time_wait_new"] = sum(r.get("mtls_time_wait_new", 0) for r in raws)
        ctl = sum(r["control_ticks"] for r in raws)
        up = sum(r["upstream_ticks"] for r in raws)
        if t.control:
            cell["control_cpu_us"] = ctl * tick_us / reqs
        cell["upstream_cpu_us"] = up * tick_us / reqs
        loadgen = sum(r["loadgen_s"] for r in raws)
        me = sum(r["self_s"] for r in raws)
        cell["loadgen_cores"] = loadgen / wall
        ours = (sum(sum(r["ticks"][x]) for r in raws for x in t.sidecars) + ctl + up) / lb.CLK_TCK
        machine = sum(r["machine_ticks"] for r in raws) / lb.CLK_TCK
        # CPU that none of this cell's processes used: other work on the machine, and
        # the idle sidecars of the other targets.
        cell["other_cores"] = round(max(0.0, machine - ours - loadgen - me) / wall, 3)
        if cell["other_cores"] > self.args.other_threshold:
            cell["quiet"] = False
        return cell

    def run_cells(self) -> list[dict]:
        """Every scenario x target, `reps` times, the order of the targets rotated per
        repetition. The fixed-rate cells run in `slices` short runs that alternate
        between the targets, and their latencies are pooled: the wake-up latency of
        this virtual machine drifts within minutes, and interleaving spreads the
        drift over every target instead of over whichever ran at the wrong time."""
        a = self.args
        cells = []
        targets = [self.mtargets[n] for n in TARGETS if n in self.mtargets]
        total = a.reps * len(SCENARIOS) * len(targets)
        done = 0
        for rep in range(a.reps):
            k = rep % len(targets)
            order = targets[k:] + targets[:k]
            for s in SCENARIOS:
                raws: dict[str, list[dict]] = {t.name: [] for t in order}
                if s.key == "rate-1k":
                    n = a.slices
                    per = max(1, round(a.duration / n))
                    quiet_all, busy_max = True, 0.0
                    for i in range(n):
                        quiet, busy = lb.wait_quiet(a.quiet_threshold, a.quiet_timeout)
                        quiet_all, busy_max = quiet_all and quiet, max(busy_max, busy)
                        for t in order:
                            raws[t.name].append(self.run_load(s, t, rep, per, f"s{i}"))
                    status = {t.name: (quiet_all, busy_max) for t in order}
                else:
                    status = {}
                    for t in order:
                        status[t.name] = lb.wait_quiet(a.quiet_threshold, a.quiet_timeout)
                        raws[t.name].append(self.run_load(s, t, rep, a.duration, "run"))
                for t in order:
                    c = self.finish_cell(s, t, rep, raws[t.name], *status[t.name])
                    cells.append(c)
                    done += 1
                    line = lr.cell_line(c)
                    if "client_cpu_us" in c:
                        line += (f" (client {c['client_cpu_us']:.1f} + server "
                                 f"{c['server_cpu_us']:.1f})")
                    print(f"mesh: [{done}/{total}] {line}", file=sys.stderr, flush=True)
        time.sleep(1)
        for t in self.mtargets.values():
            for role, pids in t.sidecars.items():
                t.after_rss_kib[role] = lb.tree_mem(pids)[0]
        return cells

    def write(self, cells: list[dict]) -> None:
        now = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        versions = self.versions()
        versions.pop("haproxy", None)
        meta = {
            "date": now,
            "mode": self.args.mode,
            "command": self.args.command,
            "machine": self.machine(),
            "load_average_at_start": self.load_at_start,
            "versions": versions,
            # The git state above is the checkout's at run time; with ISTHMUS_BIN the
            # binary may be older (or built from a tree with other changes).
            "isthmus_binary": f"{self.args.isthmus}, built " + dt.datetime.fromtimestamp(
                os.stat(self.args.isthmus).st_mtime, dt.timezone.utc).strftime(
                "%Y-%m-%d %H:%M UTC"),
            "duration_s": self.args.duration,
            "slices": self.args.slices,
            "reps": self.args.reps,
            "quiet_threshold": self.args.quiet_threshold,
            "quiet_timeout_s": self.args.quiet_timeout,
            "scenarios": {s.key: s.title for s in SCENARIOS},
            "idle_rss_kib": {n: t.idle_rss_kib for n, t in self.mtargets.items() if t.sidecars},
            "after_rss_kib": {n: t.after_rss_kib for n, t in self.mtargets.items()
                              if t.sidecars},
            **self.meta,
        }
        data = {"meta": meta, "cells": cells}
        out = Path(self.args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.with_suffix(".json").write_text(json.dumps(data, indent=1) + "\n")
        md = render(data)
        out.write_text(md)
        print(md)
        print(f"mesh: wrote {out} and {out.with_suffix('.json')}", file=sys.stderr)


def tcp_owner_count(pids: list[int], port: int) -> int:
    """Established connections to 127.0.0.1:`port` whose socket belongs to `pids`."""
    inodes: set[str] = set()
    for pid in pids:
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                try:
                    link = os.readlink(f"/proc/{pid}/fd/{fd}")
                except OSError:
                    continue
                if link.startswith("socket:["):
                    inodes.add(link[8:-1])
        except OSError:
            pass
    n = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                next(f)
                for line in f:
                    parts = line.split()
                    if (parts[3] == "01" and int(parts[2].rsplit(":", 1)[1], 16) == port
                            and parts[9] in inodes):
                        n += 1
        except OSError:
            pass
    return n


# --------------------------------------------------------------------------- report

MEDIAN_KEYS = ["rps", "p50_ms", "p99_ms", "cpu_us", "cpu_user_us", "cpu_sys_us", "cpu_cores",
               "client_cpu_us", "server_cpu_us", "control_cpu_us", "upstream_cpu_us",
               "loadgen_cores", "mtls_established", "mtls_time_wait_new"]


def aggregate(cells: list[dict]) -> dict[tuple[str, str], dict]:
    """Median over the repetitions of each scenario x target (peaks: the maximum)."""
    groups: dict[tuple[str, str], list[dict]] = {}
    for c in cells:
        groups.setdefault((c["scenario"], c["target"]), []).append(c)
    out = {}
    for key, cs in groups.items():
        ok = [c for c in cs if "error" not in c]
        agg: dict = {"runs": len(ok), "of": len(cs)}
        if not ok:
            agg["error"] = cs[0].get("error")
            out[key] = agg
            continue
        for k in MEDIAN_KEYS:
            vals = [c[k] for c in ok if k in c]
            if vals:
                agg[k] = statistics.median(vals)
        for k in ("client_rss_peak_kib", "server_rss_peak_kib", "client_hwm_kib",
                  "server_hwm_kib"):
            vals = [c[k] for c in ok if k in c]
            if vals:
                agg[k] = max(vals)
        agg["errors"] = sum(c.get("errors", 0) for c in ok)
        agg["requests"] = sum(c.get("requests", 0) for c in ok)
        agg["noisy"] = sum(1 for c in ok if not c.get("quiet", True))
        sl = [x for c in ok for x in c.get("slice_p99_ms", [])]
        if sl:
            agg["slice_p99"] = sl
        rps = [c["rps"] for c in ok]
        if len(rps) > 1:
            agg["rps_spread"] = (min(rps), max(rps))
        out[key] = agg
    return out


def mib(kib) -> str:
    return "" if kib is None else f"{kib / 1024:.1f}"


def render(data: dict) -> str:
    meta, cells = data["meta"], data["cells"]
    agg = aggregate(cells)
    idle = meta.get("idle_rss_kib", {})
    after = meta.get("after_rss_kib", {})
    v = meta.get("versions", {})
    la = meta.get("load_average_at_start")
    lines = [
        f"# Mesh: two sidecars ({meta['mode']})",
        "",
        "load client -> client's sidecar (outbound, plaintext HTTP/1.1, routed by "
        f"`Host: {HOST}`) -> mTLS (TLS 1.3, HTTP/1.1, keep-alive) -> server's sidecar "
        "(inbound, STRICT) -> upstream nginx (1 KiB). `direct`: the client talks to the "
        "upstream itself; `nginx`: two nginx doing the same hops with mTLS, a reference for "
        "what two extra hops cost on this machine with a lean proxy (not a sidecar).",
        "",
        f"- date: {meta['date']}",
        f"- command: `{meta['command']}`",
        f"- machine: {meta['machine']}"
        + (f"; load average at start {la[0]:.2f} / {la[1]:.2f} / {la[2]:.2f}" if la else ""),
        "- pinning: load generator on CPU 0; upstream (nginx, 1 worker) and every sidecar "
        "on CPU 1 (the pair under test loaded, the other pairs idle); every sidecar with one "
        "worker: nginx `worker_processes 1`, Envoy `--concurrency 1`, `isthmus proxy` (one "
        "worker thread; `up` with `--workers 1`, no Gateway: it runs only the controller)",
        f"- runs: {meta['duration_s']} s per cell, {meta['reps']} repetition(s), median shown "
        f"(peaks: maximum); the fixed-rate cells in {meta.get('slices', 1)} slices alternating "
        "between the targets, latencies pooled per cell; before each cell (slice round), "
        "wait for < "
        f"{meta['quiet_threshold'] * 100:.0f} % machine CPU (at most "
        f"{meta['quiet_timeout_s']:.0f} s)",
        "- versions: " + ", ".join(f"{k} {v[k]}" for k in
                                   ("nginx", "envoy", "isthmus", "wrk", "h2load", "openssl",
                                    "kernel") if k in v),
        f"- isthmus binary: {meta.get('isthmus_binary', '?')} (the git state in versions is "
        "the checkout's when the run started)",
        "- Envoy: static configuration, no Istio telemetry filters (stats, metadata "
        "exchange): a lower bound of an Istio sidecar's work; certificates from openssl "
        "(ECDSA P-256 root, two leaves with SPIFFE URI SANs), TLS 1.3 only both ways. "
        "isthmus: certificates from its mesh CA (ECDSA P-256).",
    ]
    for name, c in meta.get("path_check", {}).items():
        lines.append(f"- path check {name}: " + ", ".join(f"{k}: {x}" for k, x in c.items()))
    lines += [
        "",
        "| scenario | target | req/s | p50 ms | p99 ms | added p50 / p99 ms vs direct "
        "| both sidecars CPU µs/req (user + sys) | client + server µs/req "
        "| sidecars CPU cores | upstream CPU µs/req | client sidecar RSS MB idle → peak "
        "| server sidecar RSS MB idle → peak | mTLS conns (open / new TIME_WAIT) | notes |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for key, title in meta["scenarios"].items():
        first = True
        for name in TARGETS:
            a = agg.get((key, name))
            if a is None:
                continue
            label = title if first else ""
            first = False
            if "error" in a:
                lines.append(f"| {label} | {name} | failed: {a['error']} |" + " |" * 11)
                continue
            d = agg.get((key, "direct"))
            added = ""
            if name != "direct" and d and "p50_ms" in d and "p50_ms" in a:
                added = f"{a['p50_ms'] - d['p50_ms']:+.2f} / {a['p99_ms'] - d['p99_ms']:+.2f}"
            cpu = split = cores = rc = rs = conns = ""
            if "cpu_us" in a:
                cpu = f"{a['cpu_us']:.1f} ({a['cpu_user_us']:.1f} + {a['cpu_sys_us']:.1f})"
                split = f"{a['client_cpu_us']:.1f} + {a['server_cpu_us']:.1f}"
                cores = f"{a['cpu_cores']:.3f}"
                rc = f"{mib(idle.get(name, {}).get('client'))} → {mib(a['client_rss_peak_kib'])}"
                rs = f"{mib(idle.get(name, {}).get('server'))} → {mib(a['server_rss_peak_kib'])}"
                conns = f"{a.get('mtls_established', 0):.0f} / {a.get('mtls_time_wait_new', 0):.0f}"
            notes = []
            if a.get("loadgen_cores", 0) > 0.9:
                notes.append(f"client at {a['loadgen_cores'] * 100:.0f} % of CPU 0")
            if a.get("errors"):
                notes.append(f"{a['errors']} errors of {a['requests']:,}")
            if a.get("noisy"):
                notes.append(f"noisy ({a['noisy']}/{a['runs']})")
            if a["runs"] < a["of"]:
                notes.append(f"{a['of'] - a['runs']} run(s) failed")
            if "rps_spread" in a:
                lo, hi = a["rps_spread"]
                if hi - lo > 0.005 * hi:
                    notes.append(f"req/s {lo:,.0f}–{hi:,.0f}")
            sl = a.get("slice_p99")
            if sl:
                notes.append(f"p99 per slice {min(sl):.2f}–{max(sl):.2f}")
            lines.append(
                f"| {label} | {name} | {a['rps']:,.0f} | {lr.fmt(a.get('p50_ms'), '.2f')} "
                f"| {lr.fmt(a.get('p99_ms'), '.2f')} | {added} | {cpu} | {split} | {cores} "
                f"| {lr.fmt(a.get('upstream_cpu_us'), '.1f')} | {rc} | {rs} | {conns} "
                f"| {'; '.join(notes)} |")
    if after:
        lines += ["", "Sidecar RSS MB 1 s after the last run: " + "; ".join(
            f"{n} client {mib(r.get('client'))}, server {mib(r.get('server'))}"
            for n, r in after.items())]

    # Ratios.
    lines += [
        "",
        "isthmus relative to Envoy, the nginx reference pair and direct in the same run (CPU/req, p99, added p99, "
        "RSS: below 1 is better for isthmus; req/s: above 1 is better):",
        "",
        "| scenario | vs | CPU/req ratio | req/s ratio | p50 ratio | p99 ratio "
        "| added p99 ratio |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for key in meta["scenarios"]:
        me, d = agg.get((key, "isthmus")), agg.get((key, "direct"))
        if not me or "rps" not in me:
            continue
        for peer in ("envoy", "nginx", "direct"):
            p = agg.get((key, peer))
            if not p or "rps" not in p:
                continue
            added = ""
            if peer != "direct" and d and "p99_ms" in d:
                added = lr.ratio(me["p99_ms"] - d["p99_ms"], p["p99_ms"] - d["p99_ms"])
            lines.append(f"| {key} | {peer} | {lr.ratio(me.get('cpu_us'), p.get('cpu_us'))} "
                         f"| {lr.ratio(me['rps'], p['rps'])} "
                         f"| {lr.ratio(me.get('p50_ms'), p.get('p50_ms'))} "
                         f"| {lr.ratio(me.get('p99_ms'), p.get('p99_ms'))} | {added} |")
    ii, ei = idle.get("isthmus", {}), idle.get("envoy", {})
    for peer in ("envoy", "nginx"):
        pi = idle.get(peer, {})
        if ii and pi:
            lines.append(f"| idle RSS | {peer} | client "
                         f"{lr.ratio(ii.get('client'), pi.get('client'))}, server "
                         f"{lr.ratio(ii.get('server'), pi.get('server'))} | | | | |")

    # Targets.
    lines += ["", "Against the targets (issue: mesh, two sidecars):", "",
              "| target | measured | met? |", "|---|---|---|"]

    def yes(ok: bool) -> str:
        return "**yes**" if ok else "no"

    r_me, r_d = agg.get(("rate-1k", "isthmus")), agg.get(("rate-1k", "direct"))
    r_e = agg.get(("rate-1k", "envoy"))
    if r_me and r_d and "p99_ms" in r_me and "p99_ms" in r_d:
        added = r_me["p99_ms"] - r_d["p99_ms"]
        env = ""
        if r_e and "p99_ms" in r_e:
            env = f" (Envoy pair {r_e['p99_ms'] - r_d['p99_ms']:+.2f} ms"
            r_n = agg.get(("rate-1k", "nginx"))
            if r_n and "p99_ms" in r_n:
                env += f", nginx pair {r_n['p99_ms'] - r_d['p99_ms']:+.2f} ms"
            env += ")"
        miss = "" if added <= TARGET_ADDED_P99_MS else \
            f", {added - TARGET_ADDED_P99_MS:.2f} ms over"
        lines.append(f"| added p99 at 1000 req/s, two sidecars <= {TARGET_ADDED_P99_MS:.2f} ms "
                     f"| {added:+.2f} ms{env}{miss} | {yes(added <= TARGET_ADDED_P99_MS)} |")
    if ii:
        worst = max(ii.get("client", 0), ii.get("server", 0)) / 1024
        env = ""
        if ei:
            env = (f" (Envoy {ei.get('client', 0) / 1024:.1f} / "
                   f"{ei.get('server', 0) / 1024:.1f})")
        lines.append(f"| sidecar RSS idle <= {TARGET_IDLE_RSS_MIB} MB (each) | client "
                     f"{ii.get('client', 0) / 1024:.1f} MB, server "
                     f"{ii.get('server', 0) / 1024:.1f} MB{env} "
                     f"| {yes(worst <= TARGET_IDLE_RSS_MIB)} |")
    for key in meta["scenarios"]:
        me, e = agg.get((key, "isthmus")), agg.get((key, "envoy"))
        if me and e and "cpu_us" in me and "cpu_us" in e:
            q = me["cpu_us"] / e["cpu_us"]
            lines.append(f"| CPU/req of both sidecars <= {TARGET_CPU_VS_ENVOY}x Envoy's ({key}) "
                         f"| {me['cpu_us']:.1f} vs {e['cpu_us']:.1f} µs: {q:.2f}x "
                         f"| {yes(q <= TARGET_CPU_VS_ENVOY)} |")
    lines += ["", "How to read this table: see \"Mesh: two sidecars\" in benches/README.md.", ""]
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--mode", choices=["quick", "full"], default="quick")
    ap.add_argument("--isthmus", required=True, help="the isthmus binary")
    ap.add_argument("--envoy", required=True, help="the envoy binary")
    ap.add_argument("--out", required=True, help="Markdown file to write (JSON beside it)")
    ap.add_argument("--command", default="", help="the command line to record")
    ap.add_argument("--targets", help="comma-separated subset of nginx,envoy,isthmus "
                    "(direct is always run)")
    ap.add_argument("--duration", type=int, help="seconds per cell (quick 6, full 10)")
    ap.add_argument("--slices", type=int, help="runs the fixed-rate cells are split into, "
                    "alternating between the targets (quick 3, full 5)")
    ap.add_argument("--reps", type=int, help="repetitions per cell, median kept (quick 1, full 3)")
    ap.add_argument("--quiet-threshold", type=float, default=0.15)
    ap.add_argument("--quiet-timeout", type=float,
                    help="seconds to wait for quiet before measuring anyway (quick 2, full 10)")
    ap.add_argument("--other-threshold", type=float, default=0.15)
    ap.add_argument("--keep", action="store_true",
                    help="keep the work dir (configs, logs, raw load-tool output)")
    args = ap.parse_args()
    quick = args.mode == "quick"
    args.targets = args.targets.split(",") if args.targets else TARGETS[1:]
    for n in args.targets:
        if n not in TARGETS[1:]:
            ap.error(f"unknown target {n!r}")
    # Bounded: every load runs at most duration + 30 s, at most 60 s per cell.
    args.duration = min(60, args.duration or (6 if quick else 10))
    args.slices = max(1, min(args.duration, args.slices or (3 if quick else 5)))
    args.reps = min(10, args.reps or (1 if quick else 3))
    if args.quiet_timeout is None:
        args.quiet_timeout = 2 if quick else 10
    args.scenarios = []  # lb.Bench.build_shim and friends look at it; unused here

    os.sched_setaffinity(0, {int(lb.LOADGEN_CPU)})
    b = MeshBench(args)
    b.load_at_start = os.getloadavg()
    keep = False

    def on_signal(signum, _frame):
        raise KeyboardInterrupt(f"signal {signum}")

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, on_signal)
    t0 = time.monotonic()
    try:
        print(f"mesh: {args.mode}: {len(SCENARIOS)} scenarios x {1 + len(args.targets)} "
              f"targets x {args.reps} rep(s) of {args.duration} s; work dir {b.workdir}",
              file=sys.stderr, flush=True)
        b.setup()
        cells = b.run_cells()
        b.write(cells)
    except KeyboardInterrupt:
        print("mesh: interrupted; stopping everything it started", file=sys.stderr)
        return 130
    except (RuntimeError, OSError, subprocess.SubprocessError) as e:
        print(f"mesh: failed: {e}", file=sys.stderr)
        keep = True
        return 1
    finally:
        # A second Ctrl-C or TERM must not cut the clean-up short.
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, signal.SIG_IGN)
        b.procs.stop_all()
        if keep or args.keep:
            print(f"mesh: work dir kept: {b.workdir}", file=sys.stderr)
        else:
            shutil.rmtree(b.workdir, ignore_errors=True)
        print(f"mesh: {time.monotonic() - t0:.0f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
