#!/usr/bin/env python3
"""Markdown tables for bench/run.sh.

  tables.py extras EXTRAS_TSV MEMORY_TSV
      the project's extra rows (Bearer, scaling, OpenSSL variant) and its memory figures
  tables.py summary HARNESS_TSV EXTRAS_TSV MEMORY_TSV [ANCHOR_MEMORY_TSV] [RESUMPTION_TXT]
      headline comparison (ours vs HAProxy vs nginx, same run) and the issue-7 targets, met/missed

Figures per row are medians over the rounds (with 2 rounds: their mean). `proxy CPU us/req` is
the proxy's CPU time (utime+stime of its process tree) per successful request; for the new-
connection rows that is per new TLS connection.
"""
import re
import statistics
import sys

HARNESS_COLS = ["id", "label", "rep", "rps", "p50", "p99", "ok", "total", "check",
                "cpu_proxy", "cpu_upstream", "cpu_loadgen", "cpu_other", "note"]
EXTRAS_COLS = ["id", "label", "rep", "rps", "p50", "p99", "ok", "total", "check",
               "cpu_proxy", "cpu_upstream", "all_busy", "us", "note"]


def fnum(x):
    try:
        return float(x)
    except (TypeError, ValueError):
        return float("nan")


def med(xs):
    xs = [x for x in xs if x == x]
    return statistics.median(xs) if xs else float("nan")


def read_rows(path, cols):
    rows = {}
    try:
        f = open(path)
    except OSError:
        return rows
    for line in f:
        parts = line.rstrip("\n").split("\t")
        if len(parts) != len(cols):
            continue
        r = dict(zip(cols, parts))
        if r["id"] == "proxy":  # header line
            continue
        if "us" not in r:
            rps = fnum(r["rps"])
            r["us"] = "%.1f" % (fnum(r["cpu_proxy"]) * 1e4 / rps) if rps > 0 else "nan"
        rows.setdefault(r["id"], []).append(r)
    return rows


def summarize(runs):
    return {
        "label": runs[0]["label"],
        "rps": med([fnum(r["rps"]) for r in runs]),
        "rps_all": [fnum(r["rps"]) for r in runs],
        "p50": med([fnum(r["p50"]) for r in runs]),
        "p99": med([fnum(r["p99"]) for r in runs]),
        "p99_all": [fnum(r["p99"]) for r in runs],
        "us": med([fnum(r["us"]) for r in runs if r["id"] != "direct"]),
        "us_all": [fnum(r["us"]) for r in runs],
        "check": ",".join(sorted({r["check"] for r in runs})),
        "cpu": "/".join("%.0f" % med([fnum(r.get(k)) for r in runs])
                        for k in ("cpu_proxy", "cpu_upstream")),
        "note": "; ".join(sorted({r["note"] for r in runs if r["note"] != "-"})),
        "noisy": any(fnum(r.get("cpu_other")) > 15 for r in runs),
    }


def f0(x):
    return "-" if x != x else "%.0f" % x


def f2(x):
    return "-" if x != x else ("%.2f" % x if x < 100 else "%.0f" % x)


def read_memory(path):
    out = []
    try:
        lines = open(path).read().splitlines()
    except OSError:
        return out
    if not lines:
        return out
    head = lines[0].split("\t")
    for line in lines[1:]:
        parts = line.split("\t")
        if len(parts) == len(head):
            out.append(dict(zip(head, parts)))
    return out


def mem_rows(ours, anchors):
    """(proxy, N, idle0 KiB, idle1 KiB, held KiB, per-conn KiB, closed KiB, opened)."""
    rows = []
    for r in ours:
        n = max(1, int(fnum(r["opened"]) if fnum(r["opened"]) == fnum(r["opened"]) else 1))
        per = (fnum(r["held_kb"]) - fnum(r["idle1_kb"])) / n
        rows.append(("m2m", r["N"], fnum(r["idle0_kb"]), fnum(r["idle1_kb"]), fnum(r["held_kb"]), per,
                     fnum(r["closed_kb"]), r["opened"]))
    for r in anchors:
        if r.get("conf") != "mem":
            continue
        n = max(1, int(fnum(r["opened"])))
        per = (fnum(r["held_rss"]) - fnum(r["idle1_rss"])) / n
        rows.append((r["proxy"], r["N"], fnum(r["idle0_rss"]), fnum(r["idle1_rss"]), fnum(r["held_rss"]), per,
                     fnum(r["closed_rss"]), r["opened"]))
    return rows


def print_memory(rows):
    if not rows:
        return
    print("| proxy | N idle mTLS conns | opened | RSS idle → after 1 req (MiB) | RSS held (MiB) | Δ per conn (KiB) | RSS after close (MiB) |")
    print("|---|---|---|---|---|---|---|")
    for p, n, i0, i1, h, per, c, opened in rows:
        print("| %s | %s | %s | %.1f → %.1f | %.1f | %.1f | %.1f |" % (p, n, opened, i0 / 1024, i1 / 1024, h / 1024, per, c / 1024))


def cmd_extras(tsv, memtsv):
    rows = read_rows(tsv, EXTRAS_COLS)
    print("| row | check | req/s per round | req/s (median) | p50 ms | p99 ms per round | proxy CPU µs/req (per round) | CPU% proxy/upstream | notes |")
    print("|---|---|---|---|---|---|---|---|---|")
    for rid, runs in rows.items():
        s = summarize(runs)
        print("| %s `%s` | %s | %s | %s | %s | %s | %s (%s) | %s | %s |" % (
            s["label"], rid, s["check"], " / ".join(f0(x) for x in s["rps_all"]), f0(s["rps"]), f2(s["p50"]),
            " / ".join(f2(x) for x in s["p99_all"]), f0(s["us"]), " / ".join(f0(x) for x in s["us_all"]),
            s["cpu"], s["note"] or "-"))
    print()
    print_memory(mem_rows(read_memory(memtsv), []))


def cmd_summary(harness_tsv, extras_tsv, memtsv, anchor_mem=None, resumption=None):
    h = {k: summarize(v) for k, v in read_rows(harness_tsv, HARNESS_COLS).items()}
    e = {k: summarize(v) for k, v in read_rows(extras_tsv, EXTRAS_COLS).items()}
    allr = dict(h)
    allr.update(e)
    get = lambda k, f: allr[k][f] if k in allr else float("nan")

    print("### Ours vs the anchors (same run, medians of the rounds)")
    print()
    print("| job | m2m-auth-proxy | HAProxy 2.6 | nginx 1.22 | ours / HAProxy | ours / nginx |")
    print("|---|---|---|---|---|---|")

    def line(job, ours, hap, ngx, field, fmt=f0):
        o, a, n = get(ours, field), get(hap, field), get(ngx, field)
        ra = o / a if a == a and a else float("nan")
        rn = o / n if n == n and n else float("nan")
        print("| %s | %s | %s | %s | %s | %s |" % (job, fmt(o), fmt(a), fmt(n), f2(ra), f2(rn)))
    line("keep-alive mTLS, proxy CPU µs/req", "m2m-mtls", "haproxy-mtls-san", "nginx-mtls-san", "us")
    line("keep-alive mTLS, req/s", "m2m-mtls", "haproxy-mtls-san", "nginx-mtls-san", "rps")
    line("keep-alive mTLS, p99 ms", "m2m-mtls", "haproxy-mtls-san", "nginx-mtls-san", "p99", f2)
    line("new TLS conn/req (full handshake), proxy CPU µs/conn", "m2m-mtls-newconn", "haproxy-mtls-san-newconn",
         "nginx-mtls-san-newconn", "us")
    line("new TLS conn/req, conn/s", "m2m-mtls-newconn", "haproxy-mtls-san-newconn", "nginx-mtls-san-newconn", "rps")
    line("new TLS conn/req, session tickets on (oha resumes), proxy CPU µs/conn", "m2m-mtls-newconn-resumed", "-", "-", "us")
    line("Basic bcrypt-10, proxy CPU µs/req", "m2m-basic-bcrypt10", "haproxy-basic-bcrypt10", "nginx-basic-bcrypt10", "us")
    line("Basic bcrypt-10, req/s", "m2m-basic-bcrypt10", "haproxy-basic-bcrypt10", "nginx-basic-bcrypt10", "rps")
    print()

    if "m2msys-mtls" in allr or "m2msys-mtls-newconn" in allr:
        print("### OpenSSL: vendored 3.6 (default build) vs Debian 3.0 (OPENSSL_NO_VENDOR=1), same run")
        print()
        print("| row | vendored 3.6 | Debian 3.0 | 3.0 / 3.6 |")
        print("|---|---|---|---|")
        for name, a, b in (("keep-alive mTLS, proxy CPU µs/req", "m2m-mtls", "m2msys-mtls"),
                           ("new TLS conn/req, proxy CPU µs/conn", "m2m-mtls-newconn-ca1", "m2msys-mtls-newconn")):
            x, y = get(a, "us"), get(b, "us")
            print("| %s | %s | %s | %s |" % (name, f0(x), f0(y), f2(y / x if x == x and x else float("nan"))))
        print()

    # ---- targets
    mem = mem_rows(read_memory(memtsv), read_memory(anchor_mem) if anchor_mem else [])
    ours_mem = [m for m in mem if m[0] == "m2m"]
    resumed = None
    loops = []
    if resumption:
        try:
            import json
            for ln in open(resumption):
                m = re.match(r'resumption tls(\S+) (\w+): (\{.*\}) proxy_ticks=(\d+) hz=(\d+)', ln)
                if not m:
                    continue
                j = json.loads(m.group(3))
                conns = max(1, j.get("conns", 0))
                us = int(m.group(4)) / float(m.group(5)) * 1e6 / conns
                loops.append((m.group(1), m.group(2), j.get("conns", 0), j.get("resumed", 0), us))
                if m.group(1) == "1.3" and m.group(2) == "resume":
                    resumed = (j.get("resumed", 0), j.get("conns", 0))
        except OSError:
            pass

    def verdict(ok):
        return "-" if ok is None else ("**met**" if ok else "**missed**")

    print("### Issue 7 targets")
    print()
    print("| target | measured | verdict |")
    print("|---|---|---|")
    o, a = get("m2m-mtls", "us"), get("haproxy-mtls-san", "us")
    ok = (o <= 0.75 * a) if o == o and a == a else None
    print("| keep-alive mTLS CPU ≤ 0.75× HAProxy | %s vs %s µs/req = %s× | %s |" % (f0(o), f0(a), f2(o / a if a == a and a else float("nan")), verdict(ok)))
    o, a = get("m2m-mtls", "rps"), get("haproxy-mtls-san", "rps")
    ok = (o >= a) if o == o and a == a else None
    print("| keep-alive mTLS req/s ≥ HAProxy | %s vs %s | %s |" % (f0(o), f0(a), verdict(ok)))
    o, a = get("m2m-mtls", "p99"), get("haproxy-mtls-san", "p99")
    ok = (o <= a) if o == o and a == a else None
    print("| keep-alive mTLS p99 no worse than HAProxy | %s vs %s ms | %s |" % (f2(o), f2(a), verdict(ok)))
    o = get("m2m-mtls-newconn", "us")
    a = min(get("haproxy-mtls-san-newconn", "us"), get("nginx-mtls-san-newconn", "us"))
    ok = (o <= 0.5 * a) if o == o and a == a else None
    print("| full handshake CPU ≤ 0.5× anchors | %s vs %s µs/conn (best anchor) = %s× | %s |" % (f0(o), f0(a), f2(o / a if a == a and a else float("nan")), verdict(ok)))
    if resumed is not None:
        ok = resumed[0] > 0
        print("| TLS session resumption supported (own row) | %d of %d TLS 1.3 connections resumed | %s |" % (resumed[0], resumed[1], verdict(ok)))
    o, m = get("m2m-basic-bcrypt10", "us"), get("m2m-mtls", "us")
    ok = (o <= 1.1 * m) if o == o and m == m else None
    print("| Basic bcrypt-10 ≤ 1.1× keep-alive mTLS cost | %s vs %s µs/req = %s× | %s |" % (f0(o), f0(m), f2(o / m if m == m and m else float("nan")), verdict(ok)))
    if ours_mem:
        i1 = min(x[3] for x in ours_mem) / 1024
        ok = i1 <= 20 * 1000 * 1000 / 1048576  # 20 MB = 19.07 MiB
        print("| idle RSS ≤ 20 MB | %.1f MiB (after one request) | %s |" % (i1, verdict(ok)))
        big = [x for x in ours_mem if str(x[1]) == "5000"]
        if big:
            per = big[0][5]
            ok = per * 1024 <= 40 * 1000
            print("| ≤ 40 KB per idle keep-alive TLS connection (5 000 open) | %.1f KiB | %s |" % (per, verdict(ok)))

    def ratio_row(name, big, small, field="us", limit=1.1):
        b, s = get(big, field), get(small, field)
        if b != b or s != s:
            return
        print("| %s | %s vs %s µs = %s× | %s |" % (name, f0(b), f0(s), f2(b / s), verdict(b / s <= limit)))
    ratio_row("htpasswd cost flat 1 → 100 000 users (≤ 1.1×)", "m2m-basic-bcrypt10-100k", "m2m-basic-bcrypt10")
    ratio_row("token cost flat 1 → 100 000 tokens (≤ 1.1×)", "m2m-bearer-100k", "m2m-bearer")
    ratio_row("handshake cost flat 1 → 100 CAs (≤ 1.1×)", "m2m-mtls-newconn-ca100", "m2m-mtls-newconn-ca1")
    b, s = get("m2m-bearer-100k-reload", "p99"), get("m2m-bearer-100k", "p99")
    if b == b and s == s:
        print("| 100 000-token reload does not stall requests | p99 %s ms while reloading vs %s ms | %s |" % (
            f2(b), f2(s), "see text (1 core shared with the reload thread)"))
    print()
    if loops:
        print("### New connections from tlsclient.py loop (4 threads, one GET per connection)")
        print()
        print("| TLS | client offers previous session | connections | resumed | proxy CPU µs/conn |")
        print("|---|---|---|---|---|")
        for tv, mode, conns, res, us in loops:
            print("| %s | %s | %d | %d | %.0f |" % (tv, "yes" if mode == "resume" else "no", conns, res, us))
        print()
    if mem:
        print("### Memory (RSS of the proxy's processes; kernel socket buffers not included)")
        print()
        print_memory(mem)


if __name__ == "__main__":
    if sys.argv[1] == "extras":
        cmd_extras(*sys.argv[2:4])
    elif sys.argv[1] == "summary":
        cmd_summary(*sys.argv[2:])
    else:
        sys.exit(__doc__)
