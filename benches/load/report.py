#!/usr/bin/env python3
"""Results writer of the load benchmarks: turns the JSON that bench.py writes
(`{"meta": ..., "cells": [...]}`, one cell per scenario x target x repetition) into
the Markdown report. `python3 benches/load/report.py FILE.json` re-renders a saved
run to stdout."""

from __future__ import annotations

import json
import statistics
import sys

PEERS = ["direct", "nginx", "haproxy", "envoy"]
ORDER = PEERS + ["isthmus"]
MEDIAN_KEYS = ["rps", "p50_ms", "p99_ms", "cpu_us", "cpu_user_us", "cpu_sys_us", "cpu_cores",
               "upstream_cpu_us", "loadgen_cores"]
# The idle-connection scenarios (idle-*): one cell holds N keep-alive connections.
IDLE_KEYS = ["served", "kept", "rss_before_kib", "rss_with_kib", "rss_after_close_kib",
             "kib_per_conn", "fds_added", "upstream_fds_added", "open_s", "second_s"]


def cell_line(c: dict) -> str:
    """One progress line for a finished cell."""
    head = f"{c['scenario']:<8} {c['target']:<8} rep {c['rep'] + 1}"
    if "na" in c:
        return f"{head}: {c['na']}"
    if "error" in c:
        return f"{head}: FAILED: {c['error']}"
    if "conns" in c:
        kb = f", {c['kib_per_conn']:.1f} KB/connection" if "kib_per_conn" in c else ""
        fail = f"; failures: {c['failures']}" if c.get("failures") else ""
        return (f"{head}: {c['served']:,}/{c['conns']:,} served, {c['kept']:,} kept, RSS "
                f"{c['rss_before_kib'] / 1024:.1f} -> {c['rss_with_kib'] / 1024:.1f} MB{kb}{fail}")
    cpu = f", {c['cpu_us']:.1f} us CPU/req" if "cpu_us" in c else ""
    noisy = "" if c.get("quiet", True) else f" (noisy: other {c.get('other_cores', 0):.2f} cores)"
    return (f"{head}: {c['rps']:,.0f} req/s, p50 {c.get('p50_ms', float('nan')):.2f} ms, "
            f"p99 {c.get('p99_ms', float('nan')):.2f} ms{cpu}{noisy}")


def aggregate(cells: list[dict]) -> dict[tuple[str, str], dict]:
    """Median over the repetitions of each scenario x target."""
    groups: dict[tuple[str, str], list[dict]] = {}
    for c in cells:
        groups.setdefault((c["scenario"], c["target"]), []).append(c)
    out = {}
    for key, cs in groups.items():
        ok = [c for c in cs if "na" not in c and "error" not in c]
        agg: dict = {"runs": len(ok), "of": len(cs)}
        if not ok:
            first = cs[0]
            agg["na" if "na" in first else "error"] = first.get("na") or first.get("error")
            out[key] = agg
            continue
        for k in MEDIAN_KEYS + IDLE_KEYS:
            vals = [c[k] for c in ok if k in c]
            if vals:
                agg[k] = statistics.median(vals)
        for k in ("rss_peak_kib", "hwm_kib"):
            vals = [c[k] for c in ok if k in c]
            if vals:
                agg[k] = max(vals)
        if "conns" in ok[0]:
            agg["conns"] = ok[0]["conns"]
            agg["failures"] = next((c["failures"] for c in ok if c.get("failures")), None)
        agg["errors"] = sum(c.get("errors", 0) for c in ok)
        agg["requests"] = sum(c.get("requests", 0) for c in ok)
        agg["noisy"] = sum(1 for c in ok if not c.get("quiet", True))
        rps = [c["rps"] for c in ok if "rps" in c]
        if len(rps) > 1:
            agg["rps_spread"] = (min(rps), max(rps))
        out[key] = agg
    return out


def fmt(v, spec: str, dash: str = "") -> str:
    return dash if v is None else format(v, spec)


def ratio(a, b) -> str:
    if a is None or b is None or b == 0:
        return ""
    return f"{a / b:.2f}x"


def render(data: dict) -> str:
    meta, cells = data["meta"], data["cells"]
    agg = aggregate(cells)
    idle = meta.get("idle_rss_kib", {})
    v = meta.get("versions", {})
    lines = [
        f"# isthmus load benchmarks ({meta['mode']})",
        "",
        f"- date: {meta['date']}",
        f"- command: `{meta.get('command') or 'benches/run.sh ' + meta['mode']}`",
        f"- machine: {meta['machine']}",
        "- pinning: load generator on CPU 0; upstream (nginx, 1 worker) and the proxy under "
        "test on CPU 1; every proxy with one worker/thread "
        f"(isthmus: {meta.get('isthmus_workers', '?')})",
        f"- runs: {meta['duration_s']} s per cell, {meta['reps']} repetition(s), median shown; "
        f"wait for < {meta['quiet_threshold'] * 100:.0f} % machine CPU before each "
        f"(at most {meta['quiet_timeout_s']:.0f} s)",
        "- versions: " + ", ".join(f"{k} {v[k]}" for k in
                                   ("nginx", "haproxy", "envoy", "isthmus", "wrk", "h2load",
                                    "openssl") if k in v),
    ]
    if "shim" in meta:
        lines.append(f"- full-handshake test, client-side no-resumption shim: {meta['shim']}")
    tls = meta.get("tls", {})
    if tls:
        parts = []
        for name in ORDER:
            if name in tls:
                t = tls[name]
                parts.append(f"{name} {t.get('protocol', '?')} {t.get('cipher', '?')} "
                             f"{t.get('kx', '?').split(',')[0]}, resumption offered: "
                             f"{t.get('resumption', '?')}")
        lines.append("- TLS as negotiated by `openssl s_client`: " + "; ".join(parts))
    pc = meta.get("passthrough_check")
    if pc:
        parts = []
        for name in ORDER:
            c = pc["targets"].get(name)
            if c is None:
                continue
            bits = [f"certificate seen: {c.get('cert', '?')}"]
            if "tls" in c:
                bits.append(c["tls"])
            if name != "direct":
                bits.append(f"unknown SNI: {c.get('unknown_sni', '?')}")
                bits.append(f"upstream key: {c.get('key', '?')}")
            parts.append(f"{name}: " + ", ".join(bits))
        fp = pc.get("upstream_cert_sha256") or "?"
        lines.append(f"- TLS passthrough check (SNI `{pc.get('sni', '?')}`; the upstream's "
                     f"own certificate, SHA-256 {fp[:16]}…, no proxy is given): "
                     + "; ".join(parts))
    if "idle_limits" in meta:
        lines.append(f"- idle-connection scenarios: {meta['idle_limits']}")
    for name, na in meta.get("na", {}).items():
        for proto, why in na.items():
            lines.append(f"- {name} {proto}: {why}")
    idle_keys = meta.get("idle", {})
    if any(key not in idle_keys for key in meta["scenarios"]):
        lines += [
            "",
            "| scenario | target | req/s | p50 ms | p99 ms | added p50 / p99 ms vs direct "
            "| proxy CPU µs/req (user + sys) | proxy CPU cores | upstream CPU µs/req "
            "| proxy RSS MB idle → peak | VmHWM MB | notes |",
            "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
        ]
    per = meta.get("per", {})
    for key, title in meta["scenarios"].items():
        if key in idle_keys:
            continue
        first = True
        for name in ORDER:
            a = agg.get((key, name))
            if a is None:
                continue
            label = title if first else ""
            first = False
            if "na" in a or "error" in a:
                why = a.get("na") or f"failed: {a.get('error')}"
                lines.append(f"| {label} | {name} | {why} | | | | | | | | | |")
                continue
            added = ""
            d = agg.get((key, "direct"))
            if key.startswith("rate") and name != "direct" and d and "p50_ms" in d:
                added = f"{a['p50_ms'] - d['p50_ms']:+.2f} / {a['p99_ms'] - d['p99_ms']:+.2f}"
            cpu = ""
            if "cpu_us" in a:
                cpu = f"{a['cpu_us']:.1f} ({a['cpu_user_us']:.1f} + {a['cpu_sys_us']:.1f})"
                unit = per.get(key, "handshake" if key == "tls-hs" else "req")
                if unit != "req":
                    cpu += f" per {unit}"
            rss = hwm = ""
            if "rss_peak_kib" in a:
                rss = f"{idle.get(name, 0) / 1024:.1f} → {a['rss_peak_kib'] / 1024:.1f}"
                hwm = f"{a['hwm_kib'] / 1024:.1f}"
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
                if hi - lo > 0.005 * hi:  # not at the fixed rate
                    notes.append(f"req/s {lo:,.0f}–{hi:,.0f}")
            lines.append(
                f"| {label} | {name} | {a['rps']:,.0f} | {fmt(a.get('p50_ms'), '.2f')} "
                f"| {fmt(a.get('p99_ms'), '.2f')} | {added} | {cpu} "
                f"| {fmt(a.get('cpu_cores'), '.3f')} | {fmt(a.get('upstream_cpu_us'), '.1f')} "
                f"| {rss} | {hwm} "
                f"| {'; '.join(notes)} |")
    if idle_keys:
        lines += idle_table(meta, agg)
    lines += [
        "",
        "isthmus relative to each peer in the same run (CPU/req and p99: below 1 is better "
        "for isthmus; req/s: above 1 is better" + ("; RSS: the process tree's RSS with the "
                                                  "idle-* connections open, below 1 is better"
                                                  if idle_keys else "") + "):",
        "",
    ]
    if idle_keys:
        lines += ["| scenario | vs | CPU/req ratio | req/s ratio | p99 ratio | RSS ratio |",
                  "|---|---|---:|---:|---:|---:|"]
    else:
        lines += ["| scenario | vs | CPU/req ratio | req/s ratio | p99 ratio |",
                  "|---|---|---:|---:|---:|"]
    for key in meta["scenarios"]:
        me = agg.get((key, "isthmus"))
        if key in idle_keys:
            if not me or "rss_with_kib" not in me:
                continue
            for peer in PEERS:
                p = agg.get((key, peer))
                if not p or "rss_with_kib" not in p:
                    continue
                lines.append(f"| {key} | {peer} | | | | "
                             f"{ratio(me['rss_with_kib'], p['rss_with_kib'])} |")
            continue
        if not me or "rps" not in me:
            continue
        for peer in PEERS:
            p = agg.get((key, peer))
            if not p or "rps" not in p:
                continue
            lines.append(f"| {key} | {peer} | {ratio(me.get('cpu_us'), p.get('cpu_us'))} "
                         f"| {ratio(me['rps'], p['rps'])} "
                         f"| {ratio(me.get('p99_ms'), p.get('p99_ms'))} |"
                         + (" |" if idle_keys else ""))
    lines += ["", "How to read this table: see \"Load benchmarks\" in benches/README.md.", ""]
    return "\n".join(lines)


def idle_table(meta: dict, agg: dict) -> list[str]:
    """The idle-* scenarios: N keep-alive connections opened (one 1 KiB request
    each), held open, then a second request on each, then closed."""
    lines = [
        "",
        "Idle keep-alive connections (each opened with one request, then all held open; "
        "RSS of the proxy's process tree before, with all of them open and idle, and after "
        "they were closed; KB per connection: RSS with them minus RSS just before, and "
        "minus the idle RSS after start-up (memory freed by an earlier cell and kept by the "
        "allocator makes the first one smaller), divided by the connections served; kept = "
        "answered a second request afterwards; proxy fds added: descriptors the proxy held "
        "for them; upstream fds added: connections the upstream held for them):",
        "",
        "| scenario | target | served / kept | RSS MB before → with | KB per connection "
        "(vs before / vs start-up) | RSS MB after close | peak MB | proxy fds added "
        "| upstream fds added | open s | notes |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    idle = meta.get("idle_rss_kib", {})
    for key, n in meta.get("idle", {}).items():
        first = True
        for name in ORDER:
            a = agg.get((key, name))
            if a is None:
                continue
            label = meta["scenarios"][key] if first else ""
            first = False
            if "na" in a or "error" in a:
                why = a.get("na") or f"failed: {a.get('error')}"
                lines.append(f"| {label} | {name} | {why} | | | | | | | | |")
                continue
            notes = []
            if a.get("served", 0) < n:
                notes.append(f"{n - a.get('served', 0):,} of {n:,} not served")
            if a.get("failures"):
                notes.append("failures: " + ", ".join(f"{k} ×{v}"
                                                      for k, v in a["failures"].items()))
            if a.get("noisy"):
                notes.append(f"noisy ({a['noisy']}/{a['runs']})")
            if a["runs"] < a["of"]:
                notes.append(f"{a['of'] - a['runs']} run(s) failed")
            peak = f"{a['rss_peak_kib'] / 1024:.1f}" if "rss_peak_kib" in a else ""
            from_start = (f"{(a['rss_with_kib'] - idle[name]) / a['served']:.2f}"
                          if idle.get(name) and a.get("served") else "")
            lines.append(
                f"| {label} | {name} | {a.get('served', 0):,.0f} / {a.get('kept', 0):,.0f} "
                f"| {a['rss_before_kib'] / 1024:.1f} → {a['rss_with_kib'] / 1024:.1f} "
                f"| {fmt(a.get('kib_per_conn'), '.2f')} / {from_start} "
                f"| {a['rss_after_close_kib'] / 1024:.1f} "
                f"| {peak} "
                f"| {fmt(a.get('fds_added'), ',.0f')} | {fmt(a.get('upstream_fds_added'), ',.0f')} "
                f"| {fmt(a.get('open_s'), '.1f')} | {'; '.join(notes)} |")
    return lines


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: report.py RESULTS.json")
    with open(sys.argv[1]) as f:
        print(render(json.load(f)))
