#!/usr/bin/env python3
"""Time from process start to the first successful HTTPS response, certificate
issuance over ACME included: isthmus vs Caddy against the same local pebble, in one
run, alternating, median of N runs each. Every run starts from an empty state
(new ACME account, new order) for a fresh name, so nothing is cached.

Usage: benches/acme/run.sh [runs]   (default 5)
Writes benches/results/acme-first-https.md and prints it.
"""
import base64, json, os, shutil, signal, socket, statistics, subprocess, sys, tempfile, time, urllib.request, ssl

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def wait_port(port, timeout=10):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            time.sleep(0.01)
    raise RuntimeError(f"port {port} not listening after {timeout}s")


def sh(*cmd, **kw):
    return subprocess.run(cmd, check=True, capture_output=True, text=True, **kw)


class Pebble:
    def __init__(self, work, http_port, tls_port):
        self.work = work
        self.dir_port, self.mgmt_port, self.dns_port, self.dns_mgmt = (free_port() for _ in range(4))
        ca_key, ca, key, crt = (os.path.join(work, n) for n in ("ca.key", "ca.pem", "pebble.key", "pebble.pem"))
        sh("openssl", "ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", ca_key)
        sh("openssl", "req", "-x509", "-new", "-key", ca_key, "-subj", "/CN=pebble bench CA", "-days", "2", "-out", ca)
        sh("openssl", "ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", key)
        csr = os.path.join(work, "pebble.csr")
        sh("openssl", "req", "-new", "-key", key, "-subj", "/CN=localhost", "-out", csr)
        ext = os.path.join(work, "ext.cnf")
        with open(ext, "w") as f:
            f.write("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
        sh("openssl", "x509", "-req", "-in", csr, "-CA", ca, "-CAkey", ca_key, "-CAcreateserial", "-days", "2", "-extfile", ext, "-out", crt)
        self.ca = ca
        cfg = os.path.join(work, "pebble.json")
        with open(cfg, "w") as f:
            json.dump({"pebble": {
                "listenAddress": f"127.0.0.1:{self.dir_port}",
                "managementListenAddress": f"127.0.0.1:{self.mgmt_port}",
                "certificate": crt, "privateKey": key,
                "httpPort": http_port, "tlsPort": tls_port,
                "ocspResponderURL": "", "externalAccountBindingRequired": False,
            }}, f)
        log = open(os.path.join(work, "pebble.log"), "w")
        self.procs = [
            subprocess.Popen(["pebble-challtestsrv", "-management", f"127.0.0.1:{self.dns_mgmt}",
                              "-dns01", f"127.0.0.1:{self.dns_port}", "-http01", "", "-https01", "",
                              "-tlsalpn01", "", "-defaultIPv4", "127.0.0.1", "-defaultIPv6", ""],
                             stdout=log, stderr=log, start_new_session=True),
        ]
        env = dict(os.environ, PEBBLE_VA_NOSLEEP="1", PEBBLE_WFE_NONCEREJECT="0")
        self.procs.append(subprocess.Popen(["pebble", "-config", cfg, "-dnsserver", f"127.0.0.1:{self.dns_port}", "-strict=false"],
                                           stdout=log, stderr=log, env=env, start_new_session=True))
        wait_port(self.dir_port)
        wait_port(self.mgmt_port)
        self.url = f"https://127.0.0.1:{self.dir_port}/dir"

    def issuing_root(self, path):
        ctx = ssl.create_default_context(cafile=self.ca)
        with urllib.request.urlopen(f"https://127.0.0.1:{self.mgmt_port}/roots/0", context=ctx) as r:
            data = r.read()
        with open(path, "wb") as f:
            f.write(data)
        return path

    def stop(self):
        for p in self.procs:
            try:
                os.killpg(p.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            p.wait()


def first_https(cmd, cwd, name, https_port, root, log_path, timeout=30.0):
    """Start cmd; poll with curl until a 200 over HTTPS verified against root."""
    log = open(log_path, "w")
    t0 = time.monotonic()
    p = subprocess.Popen(cmd, cwd=cwd, stdout=log, stderr=log, start_new_session=True)
    try:
        while time.monotonic() - t0 < timeout:
            r = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "2",
                                "--cacert", root, "--resolve", f"{name}:{https_port}:127.0.0.1",
                                f"https://{name}:{https_port}/"], capture_output=True, text=True)
            if r.stdout.strip() == "200":
                return time.monotonic() - t0
            if p.poll() is not None:
                raise RuntimeError(f"{cmd[0]} exited ({p.returncode}); see {log_path}")
            time.sleep(0.01)
        raise RuntimeError(f"no HTTPS 200 within {timeout}s; see {log_path}")
    finally:
        try:
            os.killpg(p.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        p.wait()


def isthmus_config(d, name, http_port, https_port, app_port, pebble):
    ca_b64 = base64.b64encode(open(pebble.ca, "rb").read()).decode()
    with open(os.path.join(d, "bench.yaml"), "w") as f:
        f.write(f"""apiVersion: cert-manager.io/v1
kind: ClusterIssuer
metadata: {{name: pebble}}
spec:
  acme:
    server: {pebble.url}
    email: bench@example.com
    caBundle: {ca_b64}
    privateKeySecretRef: {{name: pebble-account}}
    solvers:
    - http01:
        ingress: {{class: istio}}
---
apiVersion: cert-manager.io/v1
kind: Certificate
metadata: {{name: bench, namespace: istio-system}}
spec:
  secretName: bench-acme
  issuerRef: {{name: pebble, kind: ClusterIssuer}}
  dnsNames: [{name}]
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: bench}}
spec:
  selector: {{istio: ingressgateway}}
  servers:
  - port: {{number: {http_port}, name: http, protocol: HTTP}}
    hosts: ["*"]
  - port: {{number: {https_port}, name: https, protocol: HTTPS}}
    hosts: ["{name}"]
    tls: {{mode: SIMPLE, credentialName: bench-acme}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: bench}}
spec:
  hosts: ["*"]
  gateways: [bench]
  http:
  - route:
    - destination: {{host: app.bench, port: {{number: 80}}}}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: app}}
spec:
  hosts: [app.bench]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{{number: 80, name: http, protocol: HTTP}}]
  workloadSelector: {{labels: {{app: bench}}}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {{name: app, annotations: {{isthmus.dev/demo-app: bench}}}}
spec: {{address: 127.0.0.1, ports: {{http: {app_port}}}, labels: {{app: bench, version: v1}}}}
""")


def caddy_config(path, name, http_port, https_port, pebble, storage):
    with open(path, "w") as f:
        f.write(f"""{{
	admin off
	acme_ca {pebble.url}
	acme_ca_root {pebble.ca}
	http_port {http_port}
	https_port {https_port}
	storage file_system {storage}
}}
{name} {{
	respond "ok" 200
}}
""")


def main():
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 5
    isthmus = os.path.abspath(os.environ.get("ISTHMUS_BIN") or os.path.join(os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target")), "release", "isthmus"))
    work = tempfile.mkdtemp(prefix="isthmus-acme-bench-", dir="/dev/shm" if os.path.isdir("/dev/shm") else None)
    http_port, https_port, app_port = free_port(), free_port(), free_port()
    pebble = Pebble(work, http_port, https_port)
    results = {"isthmus": [], "caddy": []}
    try:
        root = pebble.issuing_root(os.path.join(work, "issuing-root.pem"))
        for i in range(runs):
            for target in ("isthmus", "caddy") if i % 2 == 0 else ("caddy", "isthmus"):
                name = f"run{i}-{target}.bench.test"
                d = os.path.join(work, f"{target}-{i}")
                os.makedirs(d)
                if target == "isthmus":
                    isthmus_config(d, name, http_port, https_port, app_port, pebble)
                    cmd = [isthmus, "up", d, "--workers", "1", "--state-dir", os.path.join(d, "state")]
                else:
                    caddy_config(os.path.join(d, "Caddyfile"), name, http_port, https_port, pebble, os.path.join(d, "storage"))
                    cmd = ["caddy", "run", "--config", os.path.join(d, "Caddyfile"), "--adapter", "caddyfile"]
                t = first_https(cmd, d, name, https_port, root, os.path.join(d, "log.txt"))
                results[target].append(t)
                print(f"acme-bench: run {i} {target}: {t*1000:.0f} ms", flush=True)
    finally:
        pebble.stop()
    med = {k: statistics.median(v) for k, v in results.items()}
    caddy_v = sh("caddy", "version").stdout.split()[0]
    out = [
        "# Time to first HTTPS response, ACME issuance included",
        "",
        f"- date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; command: `benches/acme/run.sh {runs}`",
        f"- machine: {os.cpu_count()} CPUs; pebble (Debian) with PEBBLE_VA_NOSLEEP=1; caddy {caddy_v}; isthmus release build",
        "- each run: empty state (new account, new order) and a new name; from process start to the first `curl --cacert <pebble issuing root>` 200; targets alternate",
        "",
        "| target | median ms | runs (ms) |",
        "|---|---:|---|",
    ]
    for k, v in results.items():
        out.append(f"| {k} | {med[k]*1000:.0f} | {', '.join(f'{x*1000:.0f}' for x in v)} |")
    out += ["", f"isthmus / caddy: {med['isthmus']/med['caddy']:.2f}x (below 1 is faster)", ""]
    text = "\n".join(out)
    os.makedirs(os.path.join(ROOT, "benches", "results"), exist_ok=True)
    with open(os.path.join(ROOT, "benches", "results", "acme-first-https.md"), "w") as f:
        f.write(text)
    print(text)
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
