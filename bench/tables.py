#!/usr/bin/env python3
"""Markdown tables of the bench scripts.

  tables.py table RUNS_TSV
      every measured row (lib.sh `measure` lines), per round and median
  tables.py memory MEMORY_TSV [BURST_TSV]
      memory.sh's rows
  tables.py summary HARNESS_TSV EXTRAS_TSV MEMORY_TSV BURST_TSV [RESUMPTION_TXT]
      bench/run.sh's headline: ours vs HAProxy vs nginx (same run), issue 20's targets met or
      missed, the scaling checks, resumption, memory
  tables.py compare RUNS_TSV MEMORY_TSV BURST_TSV OLD NEW
      bench/compare.sh's: the anchor, OLD and NEW per row and round, NEW / OLD, memory

Figures per row are medians over the rounds (with 2 rounds: their mean). `proxy CPU µs/req`
is the proxy's CPU time (utime+stime of its processes) per successful request; in the
new-connection rows that is per new TLS connection; in the egress row it is the route's proxy
plus the peer's ingress.
"""
import json
import re
import statistics
import sys

COLS = ["id", "label", "rep", "rps", "p50", "p99", "ok", "total", "check",
        "cpu_proxy", "cpu_upstream", "cpu_loadgen", "cpu_other", "us", "per_proxy", "note"]
NAN = float("nan")


def fnum(x):
    try:
        return float(x)
    except (TypeError, ValueError):
        return NAN


def med(xs):
    xs = [x for x in xs if x == x]
    return statistics.median(xs) if xs else NAN


def ratio(a, b):
    return a / b if a == a and b == b and b else NAN


def f0(x):
    return "-" if x != x else "%.0f" % x


def f1(x):
    return "-" if x != x else ("%.1f" % x if x < 1000 else "%.0f" % x)


def f2(x):
    return "-" if x != x else ("%.2f" % x if x < 100 else "%.0f" % x)


def read_rows(path):
    rows = {}
    try:
        lines = open(path).read().splitlines()
    except (OSError, TypeError):
        return rows
    for line in lines:
        parts = line.split("\t")
        if len(parts) == len(COLS):
            r = dict(zip(COLS, parts))
            rows.setdefault(r["id"], []).append(r)
    return rows


def summarize(runs):
    per = [r["per_proxy"] for r in runs if r["per_proxy"] != "-"]
    return {
        "label": runs[0]["label"],
        "rps": med([fnum(r["rps"]) for r in runs]),
        "rps_all": [fnum(r["rps"]) for r in runs],
        "p50": med([fnum(r["p50"]) for r in runs]),
        "p99": med([fnum(r["p99"]) for r in runs]),
        "p99_all": [fnum(r["p99"]) for r in runs],
        "us": med([fnum(r["us"]) for r in runs]),
        "us_all": [fnum(r["us"]) for r in runs],
        "per": " / ".join(per),
        "check": ",".join(sorted({r["check"] for r in runs})),
        "cpu": "/".join("%.0f" % med([fnum(r[k]) for r in runs])
                        for k in ("cpu_proxy", "cpu_upstream", "cpu_loadgen", "cpu_other")),
        "note": "; ".join(sorted({r["note"] for r in runs if r["note"] != "-"})),
        "noisy": any(fnum(r["cpu_other"]) > 15 for r in runs),
    }


def read_tsv(path):
    try:
        lines = open(path).read().splitlines()
    except (OSError, TypeError):
        return []
    if not lines:
        return []
    head = lines[0].split("\t")
    return [dict(zip(head, ln.split("\t"))) for ln in lines[1:] if len(ln.split("\t")) == len(head)]


def per_conn(r):
    n = fnum(r["opened"])
    return (fnum(r["held_kb"]) - fnum(r["idle1_kb"])) / n if n and n == n else NAN


def cmd_table(tsv):
    print("| row | check | req/s per round | req/s | p50 ms | p99 ms per round | proxy CPU µs/req per round | µs/req | of which per proxy | CPU% proxy/upstream/oha/other | notes |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for rid, runs in read_rows(tsv).items():
        s = summarize(runs)
        notes = (["NOISY"] if s["noisy"] else []) + ([s["note"]] if s["note"] else [])
        print("| %s `%s` | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |" % (
            s["label"], rid, s["check"], " / ".join(f0(x) for x in s["rps_all"]), f0(s["rps"]), f2(s["p50"]),
            " / ".join(f2(x) for x in s["p99_all"]), " / ".join(f1(x) for x in s["us_all"]), f1(s["us"]),
            s["per"] or "-", s["cpu"], "; ".join(notes) or "-"))


def cmd_memory(memtsv, bursttsv=None):
    mem = read_tsv(memtsv)
    if mem:
        print("| proxy | N idle mTLS conns | opened | RSS idle → after 1 req (MiB) | RSS held (MiB) | Δ per conn (KiB) | RSS after close (MiB) |")
        print("|---|---|---|---|---|---|---|")
        for r in mem:
            print("| %s | %s | %s | %.1f → %.1f | %.1f | %.1f | %.1f |" % (
                r["proxy"], r["N"], r["opened"], fnum(r["idle0_kb"]) / 1024, fnum(r["idle1_kb"]) / 1024,
                fnum(r["held_kb"]) / 1024, per_conn(r), fnum(r["closed_kb"]) / 1024))
        print()
    burst = read_tsv(bursttsv)
    if burst:
        print("| proxy | burst: silent + slow-loris connections | closed by the proxy while held (silent + slow) | RSS idle after 1 req (MiB) | peak while open (MiB) | highest after (MiB) | RSS after the burst (MiB) | after − idle (MiB) |")
        print("|---|---|---|---|---|---|---|---|")
        for r in burst:
            i, a = fnum(r["idle1_kb"]) / 1024, fnum(r["after_kb"]) / 1024
            print("| %s | %s + %s (errors %s) | %s | %.1f | %.1f | %.1f | %.1f (%s s after) | %+.1f |" % (
                r["proxy"], r["silent"], r["slow"], r["errors"], r["closed_by_proxy"], i,
                fnum(r["peak_kb"]) / 1024, fnum(r.get("after_max_kb")) / 1024, a, r["after_s"], a - i))
        print()


def read_loops(path):
    loops = []
    try:
        lines = open(path).read().splitlines()
    except (OSError, TypeError):
        return loops
    for ln in lines:
        m = re.match(r'resumption tls(\S+) (\w+): (\{.*\}) proxy_ticks=(\d+) hz=(\d+)', ln)
        if not m:
            continue
        j = json.loads(m.group(3))
        us = int(m.group(4)) / float(m.group(5)) * 1e6 / max(1, j.get("conns", 0))
        loops.append((m.group(1), m.group(2), j.get("conns", 0), j.get("resumed", 0), j.get("errors", 0), us))
    return loops


def cmd_summary(harness_tsv, extras_tsv, memtsv, bursttsv, resumption=None):
    allr = {k: summarize(v) for k, v in read_rows(harness_tsv).items()}
    allr.update({k: summarize(v) for k, v in read_rows(extras_tsv).items()})

    def get(k, f):
        return allr[k][f] if k in allr else NAN

    print("### Ours vs the anchors (same run, medians of the rounds)")
    print()
    print("| job | m2m-auth-proxy | HAProxy 2.6 | nginx 1.22 | ours / HAProxy | ours / nginx |")
    print("|---|---|---|---|---|---|")

    def line(job, ours, hap, ngx, field, fmt=f0):
        o, a, n = get(ours, field), get(hap, field), get(ngx, field)
        print("| %s | %s | %s | %s | %s | %s |" % (job, fmt(o), fmt(a), fmt(n), f2(ratio(o, a)), f2(ratio(o, n))))
    line("keep-alive mTLS, proxy CPU µs/req", "m2m-mtls", "haproxy-mtls-san", "nginx-mtls-san", "us", f1)
    line("keep-alive mTLS, req/s", "m2m-mtls", "haproxy-mtls-san", "nginx-mtls-san", "rps")
    line("keep-alive mTLS, p99 ms (32 connections)", "m2m-mtls", "haproxy-mtls-san", "nginx-mtls-san", "p99", f2)
    line("keep-alive mTLS, 2 threads, proxy CPU µs/req", "m2m-mtls-t2", "haproxy-mtls-san-t2", "-", "us", f1)
    line("keep-alive mTLS, 2 threads, req/s", "m2m-mtls-t2", "haproxy-mtls-san-t2", "-", "rps")
    line("keep-alive mTLS, 2 threads, p99 ms", "m2m-mtls-t2", "haproxy-mtls-san-t2", "-", "p99", f2)
    line("new TLS conn/req (full handshake), proxy CPU µs/conn", "m2m-mtls-newconn", "haproxy-mtls-san-newconn",
         "nginx-mtls-san-newconn", "us")
    line("new TLS conn/req, conn/s", "m2m-mtls-newconn", "haproxy-mtls-san-newconn", "nginx-mtls-san-newconn", "rps")
    line("new TLS conn/req, resumed (session tickets on, oha resumes), µs/conn", "m2m-mtls-newconn-resumed", "-", "-", "us")
    line("Basic bcrypt-10, proxy CPU µs/req", "m2m-basic-bcrypt10", "haproxy-basic-bcrypt10", "nginx-basic-bcrypt10", "us")
    line("egress route + the peer's ingress, CPU µs/req (both proxies)", "m2m-egress", "-", "-", "us", f1)
    line("egress, p99 ms", "m2m-egress", "-", "-", "p99", f2)
    if "m2m-egress" in allr:
        print("| egress: µs/req route + peer's ingress, per round | %s | | | | |" % (allr["m2m-egress"]["per"] or "-"))
    print()

    if "m2msys-mtls" in allr or "m2msys-mtls-newconn" in allr:
        print("### OpenSSL: vendored (default build) vs Debian 3.0 (OPENSSL_NO_VENDOR=1), same run")
        print()
        print("| row | vendored | Debian 3.0 | 3.0 / vendored |")
        print("|---|---|---|---|")
        for name, a, b in (("keep-alive mTLS, proxy CPU µs/req", "m2m-mtls", "m2msys-mtls"),
                           ("new TLS conn/req, proxy CPU µs/conn", "m2m-mtls-newconn-ca1", "m2msys-mtls-newconn")):
            x, y = get(a, "us"), get(b, "us")
            print("| %s | %s | %s | %s |" % (name, f0(x), f0(y), f2(ratio(y, x))))
        print()

    mem = read_tsv(memtsv)
    burst = read_tsv(bursttsv)
    ours_mem = [r for r in mem if r["proxy"] == "m2m"]

    def verdict(ok):
        return "-" if ok is None else ("**met**" if ok else "**missed**")

    def le(o, limit):
        return (o <= limit) if o == o and limit == limit else None

    print("### Issue 20 targets (this run)")
    print()
    print("| target | measured | verdict |")
    print("|---|---|---|")
    for tag, ours, hap in (("`threads: 1`", "m2m-mtls", "haproxy-mtls-san"),
                           ("`threads: 2` / `nbthread 2`", "m2m-mtls-t2", "haproxy-mtls-san-t2")):
        o, a = get(ours, "us"), get(hap, "us")
        print("| keep-alive mTLS CPU per request ≤ 1.25× HAProxy's, %s | %s vs %s µs = %s× | %s |" % (
            tag, f1(o), f1(a), f2(ratio(o, a)), verdict(le(o, 1.25 * a))))
    o, a = get("m2m-mtls", "p99"), get("haproxy-mtls-san", "p99")
    print("| p99 at 32 connections ≤ 1.25× HAProxy's, `threads: 1` | %s vs %s ms = %s× | %s |" % (
        f2(o), f2(a), f2(ratio(o, a)), verdict(le(o, 1.25 * a))))
    for r in ours_mem:
        per = per_conn(r)
        print("| ≤ 30 KiB per idle keep-alive mTLS connection, %s held | %.1f KiB | %s |" % (
            r["N"], per, verdict(le(per, 30.0))))
    if ours_mem:
        i1 = min(fnum(r["idle1_kb"]) for r in ours_mem) / 1024
        print("| idle RSS ≤ 15 MiB after one request | %.1f MiB | %s |" % (i1, verdict(le(i1, 15.0))))
    for r in burst:
        if r["proxy"] != "m2m":
            continue
        d = (fnum(r["after_kb"]) - fnum(r["idle1_kb"])) / 1024
        print("| RSS within 5 MiB of idle %s s after %s slow-loris + %s silent connections | %.1f → peak %.1f → %.1f MiB (%+.1f) | %s |" % (
            r["after_s"], r["slow"], r["silent"], fnum(r["idle1_kb"]) / 1024, fnum(r["peak_kb"]) / 1024,
            fnum(r["after_kb"]) / 1024, d, verdict(le(d, 5.0))))
    print("| egress CPU per request (route + peer's ingress): no worse than before | %s µs (%s) | compare with `bench/compare.sh` |" % (
        f1(get("m2m-egress", "us")), allr.get("m2m-egress", {}).get("per") or "-"))
    print("| per new connection / resumed: no worse than before | %s / %s µs/conn | compare with `bench/compare.sh` |" % (
        f0(get("m2m-mtls-newconn", "us")), f0(get("m2m-mtls-newconn-resumed", "us"))))
    print()

    print("### Scaling checks (issue 7)")
    print()
    print("| check | measured | verdict |")
    print("|---|---|---|")

    def ratio_row(name, big, small, field="us", limit=1.1):
        b, s = get(big, field), get(small, field)
        if b == b and s == s:
            print("| %s | %s vs %s µs = %s× | %s |" % (name, f0(b), f0(s), f2(b / s), verdict(b / s <= limit)))
    ratio_row("Basic bcrypt-10 ≤ 1.1× keep-alive mTLS cost (verified-password cache)", "m2m-basic-bcrypt10", "m2m-mtls")
    ratio_row("htpasswd cost flat 1 → 100 000 users (≤ 1.1×)", "m2m-basic-bcrypt10-100k", "m2m-basic-bcrypt10")
    ratio_row("token cost flat 1 → 100 000 tokens (≤ 1.1×)", "m2m-bearer-100k", "m2m-bearer")
    ratio_row("handshake cost flat 1 → 100 CAs (≤ 1.1×)", "m2m-mtls-newconn-ca100", "m2m-mtls-newconn-ca1")
    b, s = get("m2m-bearer-100k-reload", "p99"), get("m2m-bearer-100k", "p99")
    if b == b and s == s:
        print("| 100 000-token reload does not stall requests | p99 %s ms while reloading vs %s ms | see reload.txt |" % (f2(b), f2(s)))
    print()

    loops = read_loops(resumption)
    if loops:
        print("### New connections from tlsclient.py loop (4 threads, one GET per connection)")
        print()
        print("| TLS | client offers previous session | connections | resumed | errors | proxy CPU µs/conn |")
        print("|---|---|---|---|---|---|")
        for tv, mode, conns, res, errs, us in loops:
            print("| %s | %s | %d | %d | %d | %.0f |" % (tv, "yes" if mode == "resume" else "no", conns, res, errs, us))
        print()
    if mem or burst:
        print("### Memory (RSS of the proxy's processes; kernel socket buffers not included)")
        print()
        cmd_memory(memtsv, bursttsv)


def cmd_compare(tsv, memtsv, bursttsv, old, new):
    rows = read_rows(tsv)
    print("| row | anchor | %s | %s | %s / %s | p99 ms anchor / %s / %s |" % (old, new, new, old, old, new))
    print("|---|---|---|---|---|---|")
    for kind, anchor in (("mtls", "haproxy-mtls-san"), ("mtls-newconn", "haproxy-mtls-san-newconn"),
                         ("mtls-newconn-resumed", None), ("mtls-t2", "haproxy-mtls-san-t2"),
                         ("egress", None)):
        o, n = rows.get("%s-%s" % (old, kind)), rows.get("%s-%s" % (new, kind))
        if not o and not n:
            continue
        a = rows.get(anchor) if anchor else None
        cell = lambda runs: "-" if not runs else "%s (%s)" % (
            f1(summarize(runs)["us"]), " / ".join(f1(fnum(r["us"])) for r in runs))
        p99 = lambda runs: f2(summarize(runs)["p99"]) if runs else "-"
        so, sn = (summarize(o)["us"] if o else NAN), (summarize(n)["us"] if n else NAN)
        print("| %s, proxy CPU µs/%s (per round) | %s | %s | %s | %s | %s / %s / %s |" % (
            kind, "conn" if "newconn" in kind else "req", cell(a), cell(o), cell(n), f2(ratio(sn, so)),
            p99(a), p99(o), p99(n)))
    print()
    cmd_memory(memtsv, bursttsv)


if __name__ == "__main__":
    cmds = {"table": cmd_table, "memory": cmd_memory, "summary": cmd_summary, "compare": cmd_compare}
    if len(sys.argv) < 2 or sys.argv[1] not in cmds:
        sys.exit(__doc__)
    cmds[sys.argv[1]](*sys.argv[2:])
