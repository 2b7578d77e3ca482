#!/usr/bin/env python3
"""Progress, resources and the verdict of bench/soak.sh (standard library only).

    soak_report.py --work DIR --proxy NAME:PID:ADMIN ... --start T --duration S
                   --report FILE.md --command 'bench/soak.sh 3600' [--interval 60]
                   [--res-every 600] [--rss-growth-mb 16] [--fd-growth 32] [--binary PATH]

Reads the clients' logs DIR/load.<kind>.<proxy>.<upstream>.log (soak_client.py format; the last
field names the upstream a request depends on, for the outage windows), DIR/probe.log
(soak_rotate.py) and DIR/outages (`upstream stop answered` per planned restart; a failure
overlapping [stop, answered + 1 s] of its upstream is excused). Every --interval prints a
progress line; samples RSS and open descriptors of each proxy at the start, every --res-every
seconds, at the end of the load and 5 s after it; snapshots /metrics at the start and the end.

Targets (exit status 1 when one is missed): no failure outside the planned outages, no wrong
refusal or admission (requests and probes), no echo showing another originator, method, path
or poa, every probed reload seen and correct, no reload failure, and no growth: from the first
sample under load after warm-up (--res-every) to the end of the load, RSS must not grow more
than --rss-growth-mb and descriptors not more than --fd-growth.
So that it cannot pass for want of traffic: every client of --streams has a log, ran to the
end, and saw both forwarded requests and planned refusals; each of the --outages planned
outages happened and failed some requests; every rotated file (soak_rotate.KINDS) of every
proxy was reloaded at least twice and probed correct both added and removed; and resources
were sampled at least twice under load.
"""

import argparse
import glob
import os
import sys
import time
import urllib.request

from soak_rotate import KINDS  # the rotated files

CORRECT = ("ok", "refused")
STOPPED_EARLY = 15  # s: a client whose last request ended earlier than this before the end died
WRONG = ("wrong_refusal", "wrong_allow", "wrong_reason")


def rss_mb(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def fds(pid):
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return -1


def metrics(admin):
    try:
        return urllib.request.urlopen(f"http://{admin}/metrics", timeout=5).read().decode()
    except Exception:
        return ""


def reloads(text):
    """{(kind, result): count} from m2m_auth_proxy_reloads_total."""
    out = {}
    for line in text.splitlines():
        if line.startswith("m2m_auth_proxy_reloads_total{"):
            labels, value = line.rsplit(" ", 1)
            kind = labels.split('file="', 1)[1].split('"', 1)[0]
            result = labels.split('result="', 1)[1].split('"', 1)[0]
            out[(kind, result)] = float(value)
    return out


class Tail:
    """The lines appended to a file since the last call."""

    def __init__(self, path):
        self.path, self.offset, self.rest = path, 0, b""

    def lines(self):
        try:
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                data = f.read()
                self.offset += len(data)
        except OSError:
            return []
        data = self.rest + data
        parts = data.split(b"\n")
        self.rest = parts.pop()
        return [p.decode() for p in parts if p]


def outages(work):
    windows = []  # (upstream, start, end)
    try:
        for line in open(os.path.join(work, "outages")):
            up, stop, answered = line.split()
            windows.append((up, float(stop), float(answered) + 1.0))
    except OSError:
        pass
    try:  # still open at the end
        up, stop = open(os.path.join(work, "outage.open")).read().split()[:2]
        windows.append((up, float(stop), float("inf")))
    except (OSError, ValueError):
        pass
    return windows


class Stream:
    """One client log: counts by outcome, failures kept for the outage check."""

    def __init__(self, path):
        base = os.path.basename(path)[len("load."):-len(".log")]
        self.kind, self.proxy, self.upstream = base.rsplit(".", 2)
        self.tail = Tail(path)
        self.counts = {}
        self.failures = []  # (start, end, outcome)
        self.last_end = 0.0  # the last request's end: a client that died early stops here
        self.latencies = []  # of this interval, ms

    def read(self):
        new = {}
        for line in self.tail.lines():
            try:
                start, end, _status, outcome = line.split()
                start, end = float(start), float(end)
            except ValueError:
                continue
            new[outcome] = new.get(outcome, 0) + 1
            self.last_end = max(self.last_end, end)
            if outcome == "stale_retry":
                continue
            if outcome in CORRECT:
                self.latencies.append((end - start) * 1000)
            elif outcome not in WRONG and outcome != "bad_echo":
                self.failures.append((start, end, outcome))
        for k, v in new.items():
            self.counts[k] = self.counts.get(k, 0) + v
        return new


def p99(values):
    if not values:
        return 0.0
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * 0.99))]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--work", required=True)
    ap.add_argument("--proxy", action="append", required=True)
    ap.add_argument("--start", type=float, required=True)
    ap.add_argument("--duration", type=float, required=True)
    ap.add_argument("--interval", type=float, default=60)
    ap.add_argument("--res-every", type=float, default=600)
    ap.add_argument("--rss-growth-mb", type=float, default=16)
    ap.add_argument("--fd-growth", type=int, default=32)
    ap.add_argument("--report", required=True)
    ap.add_argument("--command", default="")
    ap.add_argument("--binary", default="")
    ap.add_argument("--settings", default="")
    ap.add_argument("--error-log", action="append", default=[],
                    help="NAME:PATH of a proxy's stderr: panics fail the soak, levels counted")
    ap.add_argument("--streams", default="",
                    help="the client logs that must exist, as KIND.PROXY (space separated)")
    ap.add_argument("--outages", type=int, default=0,
                    help="planned outages that must have happened (each with failures)")
    a = ap.parse_args()

    proxies = []  # (name, pid, admin)
    for spec in a.proxy:
        name, pid, admin = spec.split(":", 2)
        proxies.append((name, int(pid), admin))
    metrics_start = {n: reloads(metrics(adm)) for n, _, adm in proxies}
    samples = []  # (label, t, {name: (rss, fds)})

    def sample(label):
        t = time.time() - a.start
        samples.append((label, t, {n: (rss_mb(pid), fds(pid)) for n, pid, _ in proxies}))

    sample("start")
    streams = {}
    probe = Tail(os.path.join(a.work, "probe.log"))
    probes = {}  # (proxy, kind) -> {outcome: n}
    probes_ok = {}  # (proxy, kind, present) -> correct probes
    probe_bad = []

    def read_all():
        for path in glob.glob(os.path.join(a.work, "load.*.log")):
            if path not in streams:
                streams[path] = Stream(path)
        new = {}
        for s in streams.values():
            for k, v in s.read().items():
                new[k] = new.get(k, 0) + v
        pnew = {}
        for line in probe.lines():
            parts = line.split(None, 5)
            if len(parts) < 5:
                continue
            _, proxy, kind, present, outcome = parts[:5]
            if outcome == "correct":
                probes_ok[(proxy, kind, present)] = probes_ok.get((proxy, kind, present), 0) + 1
            d = probes.setdefault((proxy, kind), {})
            d[outcome] = d.get(outcome, 0) + 1
            pnew[outcome] = pnew.get(outcome, 0) + 1
            if outcome != "correct":
                probe_bad.append(line)
        return new, pnew

    names = [n for n, _, _ in proxies]
    print(f"{'t(s)':>6} {'req/s':>6} {'p99 ms':>7} "
          + " ".join(f"{n + ' MB':>7} {n + ' fd':>5}" for n in names)
          + "  not ok | probes", flush=True)
    next_res = a.res_every
    end_of_load = a.start + a.duration - 1
    n = 0
    last_tick = a.start
    while True:
        n += 1
        tick = min(a.start + n * a.interval, end_of_load)
        time.sleep(max(0.0, tick - time.time()))
        if tick - a.start >= next_res and tick < end_of_load:
            sample(f"{int(round(tick - a.start))} s")
            next_res += a.res_every
        if tick >= end_of_load:
            sample("end of load")
        new, pnew = read_all()
        lat = [x for s in streams.values() for x in s.latencies]
        for s in streams.values():
            s.latencies = []
        total = sum(v for k, v in new.items() if k != "stale_retry")
        span = max(1e-9, tick - last_tick)
        last_tick = tick
        cur = {nm: (rss_mb(pid), fds(pid)) for nm, pid, _ in proxies}
        bad = " ".join(f"{k}={v}" for k, v in sorted(new.items()) if k not in CORRECT) or "-"
        pr = " ".join(f"{k}={v}" for k, v in sorted(pnew.items())) or "-"
        print(f"{min(tick - a.start, a.duration):>6.0f} {total / span:>6.0f} {p99(lat):>7.1f} "
              + " ".join(f"{cur[nm][0]:>7.1f} {cur[nm][1]:>5}" for nm in names)
              + f"  {bad} | {pr}", flush=True)
        if tick >= end_of_load:
            break
    # the clients stop at start + duration; give them time to finish and close
    time.sleep(max(0.0, a.start + a.duration + 5 - time.time()))
    read_all()
    sample("5 s after")
    metrics_end = {n: reloads(metrics(adm)) for n, _, adm in proxies}

    # --- verdict --------------------------------------------------------------------------------
    windows = outages(a.work)
    in_window = [0] * len(windows)  # failures per planned outage: none means no real outage
    rows = []
    totals = {}
    lost_samples = []
    for s in sorted(streams.values(), key=lambda s: (s.kind, s.proxy)):
        excused = lost = 0
        for start, end, outcome in s.failures:
            hits = [i for i, (up, w_start, w_end) in enumerate(windows)
                    if up == s.upstream and start <= w_end and end >= w_start]
            for i in hits:
                in_window[i] += 1
            if hits:
                excused += 1
            else:
                lost += 1
                if len(lost_samples) < 12:
                    lost_samples.append(f"{s.kind}@{s.proxy} {outcome} at {start - a.start:.1f}s")
        c = s.counts
        row = {
            "kind": s.kind, "proxy": s.proxy,
            "total": sum(v for k, v in c.items() if k != "stale_retry"),
            "ok": c.get("ok", 0), "refused": c.get("refused", 0),
            "excused": excused, "lost": lost,
            "wrong_refusal": c.get("wrong_refusal", 0),
            "wrong_allow": c.get("wrong_allow", 0) + c.get("wrong_reason", 0),
            "bad_echo": c.get("bad_echo", 0), "stale_retry": c.get("stale_retry", 0),
        }
        rows.append(row)
        for k, v in row.items():
            if isinstance(v, int):
                totals[k] = totals.get(k, 0) + v

    problems = []
    if totals.get("lost"):
        problems.append(f"{totals['lost']} failure(s) outside the planned outages: "
                        + ", ".join(lost_samples))
    if totals.get("wrong_refusal"):
        problems.append(f"{totals['wrong_refusal']} request(s) refused that should have been "
                        "allowed")
    if totals.get("wrong_allow"):
        problems.append(f"{totals['wrong_allow']} request(s) allowed (or refused by another "
                        "rule) that should have been refused as planned")
    if totals.get("bad_echo"):
        problems.append(f"{totals['bad_echo']} forwarded request(s) reached the CSE with "
                        "another originator, method, path or poa")
    # nothing may pass for want of traffic: every client ran to the end, with forwarded
    # requests and planned refusals both seen
    last_ends = {(s.kind, s.proxy): s.last_end for s in streams.values()}
    for r in rows:
        key = (r["kind"], r["proxy"])
        if r["ok"] == 0:
            problems.append(f"no request of {r['kind']}@{r['proxy']} succeeded")
        if r["refused"] == 0:
            problems.append(f"no planned refusal of {r['kind']}@{r['proxy']} was seen")
        if last_ends[key] < a.start + a.duration - STOPPED_EARLY:
            problems.append(f"{r['kind']}@{r['proxy']} stopped at "
                            f"{last_ends[key] - a.start:.0f} s of {a.duration:.0f}")
    if not rows:
        problems.append("no client log")
    missing = sorted(set(a.streams.split()) - {f"{r['kind']}.{r['proxy']}" for r in rows})
    if missing:
        problems.append("no log of client(s) " + ", ".join(missing))
    closed = [i for i, w in enumerate(windows) if w[2] != float("inf")]
    if len(closed) < a.outages:
        problems.append(f"{len(closed)} planned outage(s) happened, {a.outages} planned")
    for i in closed:
        if in_window[i] == 0:
            problems.append(f"no request failed in the outage of upstream {windows[i][0]} at "
                            f"{windows[i][1] - a.start:.0f} s: not a real outage")
    if probe_bad:
        problems.append(f"{len(probe_bad)} probe(s) not correct: " + "; ".join(
            " ".join(line.split()[1:]) for line in probe_bad[:6]))
    if not probes:
        problems.append("no rotation was probed")
    # every file of every proxy rotated both ways: the new version in, then the old one back
    for name in names:
        unseen = [f"{kind} {'added' if present == '1' else 'removed'}" for kind in KINDS
                  for present in ("1", "0") if not probes_ok.get((name, kind, present))]
        if unseen:
            problems.append(f"{name}: no correct probe of " + ", ".join(unseen))
    reload_rows = []
    for name in names:
        s0, s1 = metrics_start[name], metrics_end[name]
        kinds = sorted({k for k, _ in s1})
        for kind in kinds:
            ok = s1.get((kind, "success"), 0) - s0.get((kind, "success"), 0)
            bad = s1.get((kind, "failure"), 0) - s0.get((kind, "failure"), 0)
            if ok or bad:
                reload_rows.append((name, kind, int(ok), int(bad)))
            if bad:
                problems.append(f"{name}: {int(bad)} {kind} reload(s) failed")
        few = [kind for kind in KINDS
               if s1.get((kind, "success"), 0) - s0.get((kind, "success"), 0) < 2]
        if few:
            problems.append(f"{name}: fewer than 2 reloads applied (reloads_total) of "
                            + ", ".join(few))

    # growth: from the first sample after warm-up to the end of the load
    loaded = [smp for smp in samples if smp[0] not in ("start", "5 s after")]
    growth = {}
    if len(loaded) < 2:
        problems.append("fewer than 2 resource samples under load: growth not measured")
    else:
        first, last = loaded[0], loaded[-1]
        for name in names:
            drss = last[2][name][0] - first[2][name][0]
            dfd = last[2][name][1] - first[2][name][1]
            growth[name] = (drss, dfd, first[0])
            if drss > a.rss_growth_mb:
                problems.append(f"{name}: RSS grew {drss:.1f} MB from {first[0]} to the end of "
                                f"the load (bound {a.rss_growth_mb:g} MB)")
            if dfd > a.fd_growth:
                problems.append(f"{name}: open descriptors grew by {dfd} from {first[0]} to the "
                                f"end of the load (bound {a.fd_growth})")

    error_logs = []  # (name, {level: n}, panics)
    for spec in a.error_log:
        name, path = spec.split(":", 1)
        levels, panics = {}, 0
        try:
            for line in open(path, errors="replace"):
                if "panicked" in line:
                    panics += 1
                for level in ("ERROR", "WARN"):
                    if f" {level} " in line or line.startswith(level):
                        levels[level] = levels.get(level, 0) + 1
        except OSError:
            pass
        error_logs.append((name, levels, panics))
        if panics:
            problems.append(f"{name}: {panics} panic(s) in the error log")

    verdict = "PASS" if not problems else "FAIL"
    md = render(a, rows, totals, probes, reload_rows, samples, names, windows, growth, verdict,
                problems, error_logs)
    with open(a.report, "w") as f:
        f.write(md)
    print("---")
    print(md)
    print(f"report written to {a.report}")
    sys.exit(0 if verdict == "PASS" else 1)


def render(a, rows, totals, probes, reload_rows, samples, names, windows, growth, verdict,
           problems, error_logs):
    started = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(a.start))
    out = [f"# Soak report: {verdict}", "",
           f"- command: `{a.command}`" if a.command else "",
           f"- binary: `{a.binary}`" if a.binary else "",
           f"- started {started}, {a.duration:.0f} s of load",
           f"- {a.settings}" if a.settings else "", ""]
    out = [line for line in out if line != ""] + [""]
    out += ["## Requests per kind", "",
            "Outcomes as planned: `allowed` (forwarded, the CSE's echo showed the proven "
            "originator, method and path), `refused` (403 / 4103 by the planned rule or "
            "policy). `wrong refusals`: planned allow, refused; `wrong allows`: planned "
            "refusal, forwarded or refused by another rule.", "",
            "| kind | proxy | requests | allowed | refused as planned | failed in outages | "
            "failed outside outages | wrong refusals | wrong allows | bad echo | stale retries |",
            "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|"]
    for r in rows:
        out.append(f"| {r['kind']} | {r['proxy']} | {r['total']} | {r['ok']} | {r['refused']} | "
                   f"{r['excused']} | {r['lost']} | {r['wrong_refusal']} | {r['wrong_allow']} | "
                   f"{r['bad_echo']} | {r['stale_retry']} |")
    t = totals
    out.append(f"| **all** | | **{t.get('total', 0)}** | {t.get('ok', 0)} | "
               f"{t.get('refused', 0)} | {t.get('excused', 0)} | **{t.get('lost', 0)}** | "
               f"**{t.get('wrong_refusal', 0)}** | **{t.get('wrong_allow', 0)}** | "
               f"{t.get('bad_echo', 0)} | {t.get('stale_retry', 0)} |")
    out += ["", "## Rotations probed", "",
            "Each file flipped between two versions, the reload awaited in /metrics, then the "
            "new version checked from outside (soak_rotate.py).", "",
            "| proxy | kind | probes | correct | not correct |", "|---|---|--:|--:|--:|"]
    for (proxy, kind), d in sorted(probes.items()):
        total = sum(d.values())
        bad = ", ".join(f"{k} {v}" for k, v in sorted(d.items()) if k != "correct") or "0"
        out.append(f"| {proxy} | {kind} | {total} | {d.get('correct', 0)} | {bad} |")
    out += ["", "## Reloads applied (`m2m_auth_proxy_reloads_total`, end minus start)", "",
            "| proxy | kind | success | failure |", "|---|---|--:|--:|"]
    for name, kind, ok, bad in reload_rows:
        out.append(f"| {name} | {kind} | {ok} | {bad} |")
    out += ["", "## Planned outages", ""]
    if windows:
        for up, w0, w1 in windows:
            dur = "still open" if w1 == float("inf") else f"{w1 - 1 - w0:.2f} s until it answered"
            out.append(f"- upstream {up} stopped at {w0 - a.start:.1f} s, {dur}")
    else:
        out.append("- none")
    out += ["", "## Resources of each proxy (RSS MB / open descriptors)", "",
            "| sample | t (s) | " + " | ".join(names) + " |",
            "|---|--:|" + "--:|" * len(names)]
    for label, t_, vals in samples:
        out.append(f"| {label} | {t_:.0f} | "
                   + " | ".join(f"{vals[n][0]:.1f} / {vals[n][1]}" for n in names) + " |")
    if growth:
        out.append("")
        for name, (drss, dfd, since) in growth.items():
            out.append(f"- {name}: from {since} to the end of the load RSS {drss:+.1f} MB "
                       f"(bound {a.rss_growth_mb:g}), descriptors {dfd:+d} (bound {a.fd_growth})")
    if error_logs:
        out += ["", "## Error logs (stderr)", ""]
        for name, levels, panics in error_logs:
            out.append(f"- {name}: {levels.get('ERROR', 0)} ERROR, {levels.get('WARN', 0)} WARN "
                       f"lines, {panics} panics")
    out += ["", f"## Verdict: {verdict}", ""]
    out += [f"- {p}" for p in problems] or ["- every target met"]
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    main()
