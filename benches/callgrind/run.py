#!/usr/bin/env python3
"""User-space instructions per proxied request, counted by callgrind (valgrind):
deterministic where CPU time on this shared 2-core machine is not.

Each proxy under test (nginx, HAProxy, isthmus; one worker each) runs under
`valgrind --tool=callgrind` in front of one upstream nginx (not under valgrind).
After a warm-up the counters are zeroed (`callgrind_control -z`), exactly N
requests are sent with h2load, and the counters are dumped (`-d`); instructions /
N is the figure. Kernel work
(syscalls, loopback TCP) is not counted: compare it with the user part of the CPU
figures of benches/run.sh.

    benches/callgrind/run.sh [--requests N] [--targets nginx,haproxy,isthmus]
                             [--scenarios h1-1k,h2c-0] [--out FILE]

Needs valgrind, nginx, haproxy, h2load (benches/load/run.sh installs all but
valgrind; run.sh installs it). ISTHMUS_BIN: the isthmus binary (release build).
Only 127.0.0.1; every process is started in its own process group and stopped on
exit; each load is bounded (h2load -n N, plus a timeout).
"""

import argparse
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
PROCS: list[subprocess.Popen] = []


def log(msg: str) -> None:
    print(f"callgrind: {msg}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(argv: list[str], out: Path, env=None) -> subprocess.Popen:
    f = open(out, "wb")
    p = subprocess.Popen(argv, stdout=f, stderr=subprocess.STDOUT,
                         start_new_session=True, env=env)
    PROCS.append(p)
    return p


def stop_all() -> None:
    for p in PROCS:
        if p.poll() is None:
            try:
                os.killpg(p.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
    deadline = time.time() + 10
    for p in PROCS:
        try:
            p.wait(max(0.1, deadline - time.time()))
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)


def wait_port(port: int, timeout: float) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise SystemExit(f"nothing listens on 127.0.0.1:{port} after {timeout} s")


def h2load(url: str, n: int, h2c: bool, host: str | None = None) -> dict:
    argv = ["h2load", "-n", str(n), "-c", "10", "-m", "10" if h2c else "1", "-t", "1"]
    if not h2c:
        argv.append("--h1")
    if host:
        argv += ["-H", f"host: {host}"]
    argv.append(url)
    r = subprocess.run(argv, capture_output=True, text=True, timeout=600)
    m = re.search(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed", r.stdout)
    if not m:
        raise SystemExit(f"h2load said:\n{r.stdout}\n{r.stderr}")
    done, ok = int(m.group(3)), int(m.group(4))
    status = re.search(r"status codes: (\d+) 2xx", r.stdout)
    return {"done": done, "succeeded": ok, "2xx": int(status.group(1)) if status else 0}


def callgrind_total(pid: int, outfile_pattern: str, work: Path) -> int:
    """Dump the counters of `pid` and return the instructions collected since they
    were zeroed (the dump file `<out>.1`)."""
    subprocess.run(["callgrind_control", "-d", str(pid)], capture_output=True, timeout=60)
    total = 0
    for f in sorted(work.glob(outfile_pattern)):
        if not f.name.endswith(".1"):
            continue
        for line in f.read_text(errors="replace").splitlines():
            if line.startswith("summary:") or line.startswith("totals:"):
                total = max(total, int(line.split()[1]))
    return total


def configs(work: Path, ports: dict) -> None:
    www = work / "www"
    www.mkdir()
    (www / "1k").write_bytes(b"x" * 1024)
    (www / "0").write_bytes(b"")
    (work / "tmp").mkdir()
    common = f"""
    access_log off;
    keepalive_requests 1000000000;
    keepalive_timeout 300s;
    client_body_temp_path {work}/tmp/b; proxy_temp_path {work}/tmp/p;
    fastcgi_temp_path {work}/tmp/f; uwsgi_temp_path {work}/tmp/u; scgi_temp_path {work}/tmp/s;
    """
    (work / "upstream.conf").write_text(f"""
worker_processes 1; daemon off; pid {work}/upstream.pid; error_log {work}/upstream-error.log warn;
events {{ worker_connections 4096; }}
http {{ {common}
  server {{ listen 127.0.0.1:{ports['upstream']}; root {www}; }}
}}
""")
    (work / "nginx.conf").write_text(f"""
worker_processes 1; daemon off; master_process off; pid {work}/nginx.pid;
error_log {work}/nginx-error.log warn;
events {{ worker_connections 4096; }}
http {{ {common}
  upstream u {{ server 127.0.0.1:{ports['upstream']}; keepalive 64; keepalive_requests 1000000000; }}
  server {{
    listen 127.0.0.1:{ports['nginx']};
    listen 127.0.0.1:{ports['nginx_h2c']} http2;
    location / {{ proxy_pass http://u; proxy_http_version 1.1; proxy_set_header Connection ""; }}
  }}
}}
""")
    (work / "haproxy.cfg").write_text(f"""
global
  nbthread 1
  maxconn 4096
defaults
  mode http
  timeout connect 5s
  timeout client 300s
  timeout server 300s
  http-reuse always
frontend f
  bind 127.0.0.1:{ports['haproxy']}
  bind 127.0.0.1:{ports['haproxy_h2c']} proto h2
  default_backend b
backend b
  server u 127.0.0.1:{ports['upstream']}
""")
    iw = work / "isthmus"
    iw.mkdir()
    src = (REPO / "benches/load/isthmus/bench.yaml").read_text()
    src = src.replace("@ISTHMUS_HTTP@", str(ports["isthmus"])).replace("@UPSTREAM@", str(ports["upstream"]))
    (iw / "bench.yaml").write_text(src)


TARGETS = {
    "nginx": lambda w, p: ["nginx", "-c", str(w / "nginx.conf"), "-e", str(w / "nginx-error.log")],
    "haproxy": lambda w, p: ["haproxy", "-db", "-f", str(w / "haproxy.cfg")],
    "isthmus": lambda w, p: [os.environ["ISTHMUS_BIN"], "up", str(w / "isthmus"),
                             "--no-demo-apps", "--workers", "1"],
}


def measure(target: str, scenario: str, work: Path, ports: dict, n: int) -> dict:
    out = f"callgrind.{target}.{scenario}.%p"
    argv = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={work}/{out}"] + TARGETS[target](work, ports)
    env = dict(os.environ, ISTHMUS_RUNTIME_DIR=str(work / "rt"), ISTHMUS_XDS_PORT="0",
               ISTHMUS_ADMIN_PORT="0")
    p = start(argv, work / f"{target}.{scenario}.log", env)
    h2c = scenario.startswith("h2c")
    port = ports[f"{target}_h2c"] if h2c and target != "isthmus" else ports[target]
    path = "/0" if scenario.endswith("-0") else "/1k"
    url = f"http://127.0.0.1:{port}{path}"
    try:
        wait_port(port, 120)
        warm = h2load(url, 2000, h2c)
        if warm["2xx"] != 2000:
            raise SystemExit(f"{target} {scenario}: warm-up got {warm}")
        # Counters to zero after the warm-up, dumped right after the measured run
        # (nothing else reaches the proxy in between).
        subprocess.run(["callgrind_control", "-z", str(p.pid)], capture_output=True,
                       timeout=60, check=True)
        got = h2load(url, n, h2c)
        if got["2xx"] != n:
            raise SystemExit(f"{target} {scenario}: measured run got {got}")
        total = callgrind_total(p.pid, out.replace("%p", str(p.pid)) + "*", work)
    finally:
        os.killpg(p.pid, signal.SIGTERM)
        try:
            p.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
    return {"target": target, "scenario": scenario, "requests": n,
            "instructions": total, "per_request": total / n}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=20000)
    ap.add_argument("--targets", default="nginx,haproxy,isthmus")
    ap.add_argument("--scenarios", default="h1-1k,h2c-0")
    ap.add_argument("--out", default=str(REPO / "benches/results/callgrind.md"))
    args = ap.parse_args()
    for tool in ["valgrind", "callgrind_control", "h2load", "nginx", "haproxy"]:
        if not shutil.which(tool):
            raise SystemExit(f"{tool} is missing (benches/callgrind/run.sh installs it)")
    if "isthmus" in args.targets and not os.environ.get("ISTHMUS_BIN"):
        raise SystemExit("ISTHMUS_BIN is not set")
    shm = Path("/dev/shm") if Path("/dev/shm").is_dir() else None
    work = Path(tempfile.mkdtemp(prefix="isthmus-callgrind.", dir=shm))
    work.chmod(0o755)  # nginx workers run as nobody
    ports = {k: free_port() for k in ["upstream", "nginx", "nginx_h2c", "haproxy",
                                      "haproxy_h2c", "isthmus"]}
    rows = []
    try:
        configs(work, ports)
        start(["nginx", "-c", str(work / "upstream.conf"), "-e", str(work / "upstream-error.log")],
              work / "upstream.log")
        wait_port(ports["upstream"], 10)
        for scenario in args.scenarios.split(","):
            for target in args.targets.split(","):
                log(f"{scenario} {target}: {args.requests} requests under callgrind")
                rows.append(measure(target, scenario, work, ports, args.requests))
                log(f"  {rows[-1]['per_request']:,.0f} instructions per request")
    finally:
        stop_all()
        if not os.environ.get("KEEP"):
            shutil.rmtree(work, ignore_errors=True)
    commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
                            capture_output=True, text=True).stdout.strip()
    lines = [
        "# User-space instructions per request (callgrind)",
        "",
        f"- command: `benches/callgrind/run.sh --requests {args.requests} --targets {args.targets} --scenarios {args.scenarios}`",
        f"- isthmus: git {commit}, {os.environ.get('ISTHMUS_BIN', '')}",
        f"- date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}",
        "- method: one worker each, under `valgrind --tool=callgrind`, counters zeroed after",
        "  2,000 warm-up requests and dumped after the measured ones; h2load, 10 connections (h2c: 10",
        "  streams each). Kernel instructions are not counted.",
        "",
        "| scenario | target | instructions / request | vs nginx | vs haproxy |",
        "|---|---|---:|---:|---:|",
    ]
    for r in rows:
        def ratio(peer):
            base = next((x for x in rows if x["target"] == peer and x["scenario"] == r["scenario"]), None)
            return f"{r['per_request'] / base['per_request']:.2f}x" if base else ""
        lines.append(f"| {r['scenario']} | {r['target']} | {r['per_request']:,.0f} | {ratio('nginx')} | {ratio('haproxy')} |")
    text = "\n".join(lines) + "\n"
    Path(args.out).write_text(text)
    Path(args.out).with_suffix(".json").write_text(json.dumps(rows, indent=1) + "\n")
    print(text)


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        stop_all()
        sys.exit(130)
