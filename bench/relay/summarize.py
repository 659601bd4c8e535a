#!/usr/bin/env python3
"""bench/relay: summarise results/*.jsonl (Postfix, outpost and floor runs) into markdown tables, with the outpost/Postfix ratio
(and the floor's, where there are floor runs).
Runs are grouped by their warm-up (messages a fresh relay had delivered before the measured run; 0 or absent: cold).
Adapted from the Postfix baseline benchmark's summarizer."""
import glob, json, os, statistics, sys
from collections import OrderedDict

here = os.path.dirname(os.path.abspath(__file__))
rdir = sys.argv[1] if len(sys.argv) > 1 else os.path.join(here, "results")


def load(name):
    p = os.path.join(rdir, name)
    if not os.path.exists(p):
        return []
    return [json.loads(l) for l in open(p) if l.strip()]


def med(vals, fmt="{:.0f}"):
    vals = [v for v in vals if v is not None]
    if not vals:
        return "-"
    m = statistics.median(vals)
    if len(vals) == 1:
        return fmt.format(m)
    return f"{fmt.format(m)} [{fmt.format(min(vals))}–{fmt.format(max(vals))}]"


def warmup(r):
    return r.get("warmup", 0)


def relay_table(recs):
    groups = OrderedDict()
    for r in sorted(recs, key=warmup):
        groups.setdefault((warmup(r), r["label"], r["size"], r["sessions"], r.get("reuse", False)), []).append(r)
    print("| warm-up msgs | relay | payload | sessions | msgs/run | n | accept msgs/s | end-to-end msgs/s | "
          "relay CPU ms/msg | machine busy % | peak PSS MiB | peak RSS-sum MiB | peak procs | deferred |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for (w, label, size, s, reuse), rs in groups.items():
        mib = lambda k: [x[k] / 1024 for x in rs if x.get(k)]
        print(f"| {w} | {label}{' (-d reuse)' if reuse else ''} | {size // 1024} KiB | {s} | {rs[0]['msgs']} | {len(rs)} | "
              f"{med([x['accept_rate'] for x in rs])} | {med([x['e2e_rate'] for x in rs])} | "
              f"{med([x['relay_cpu_ms_per_msg'] for x in rs], '{:.2f}') if rs[0]['relay_cpu_s'] else '-'} | "
              f"{med([x['machine_busy_pct'] for x in rs])} | "
              f"{med(mib('mem_peak_pss_kb')) if mib('mem_peak_pss_kb') else '-'} | "
              f"{med(mib('mem_peak_rss_kb')) if mib('mem_peak_rss_kb') else '-'} | "
              f"{med([x['peak_nproc'] for x in rs]) if rs[0]['peak_nproc'] else '-'} | "
              f"{sum(x.get('log_deferred', 0) for x in rs)} |")
    # memory before any message: recorded as mem_fresh_* (since warm-ups exist), else the cold rep 1's idle memory
    firsts = OrderedDict()
    for r in recs:
        if r["rep"] == 1 and (r.get("mem_fresh_pss_kb") or (not warmup(r) and r.get("mem_idle_pss_kb"))):
            firsts.setdefault(r["label"], []).append(r)
    for label, rs in firsts.items():
        fresh = lambda r, k: r.get(f"mem_fresh_{k}_kb") or r[f"mem_idle_{k}_kb"]
        print()
        print(f"Idle memory of {label} after a fresh start, before load (n={len(rs)}): "
              f"PSS {med([fresh(r, 'pss') / 1024 for r in rs], '{:.1f}')} MiB, "
              f"RSS-sum {med([fresh(r, 'rss') / 1024 for r in rs], '{:.1f}')} MiB.")


def warmup_table(recs):
    """The warm-up itself: the first messages a freshly started relay handles (its cold cost), one per start."""
    groups = OrderedDict()
    for r in recs:
        if warmup(r) and r["rep"] == 1 and "warmup_cpu_ms_per_msg" in r:
            groups.setdefault((warmup(r), r["label"], r["size"], r["sessions"]), []).append(r)
    if not groups:
        return
    print()
    print("| warm-up msgs (fresh relay, not in the tables above) | relay | payload | sessions | n | end-to-end msgs/s | "
          "relay CPU ms/msg |")
    print("|---|---|---|---|---|---|---|")
    for (w, label, size, s), rs in groups.items():
        print(f"| {w} | {label} | {size // 1024} KiB | {s} | {len(rs)} | {med([x['warmup_e2e_rate'] for x in rs])} | "
              f"{med([x['warmup_cpu_ms_per_msg'] for x in rs], '{:.2f}')} |")


def fsync_table(recs):
    groups = OrderedDict()
    for r in recs:
        if r["tool"] == "bun:sqlite":
            k = (f"bun:sqlite WAL sync={r['synchronous']}", f"{r['rows_per_txn']} row/txn", 1)
        else:
            k = (f"{r['tool']} {r['mode']}", "1 write/op", r["threads"])
        groups.setdefault(k, []).append(r)
    print("| test | unit | writers | n | commits/s (ops/s) | rows/s | p50 ms | p99 ms |")
    print("|---|---|---|---|---|---|---|---|")
    for (t, u, th), rs in groups.items():
        ops = [x.get("commits_per_s", x.get("ops_per_s")) for x in rs]
        rows = [x.get("rows_per_s", x.get("ops_per_s")) for x in rs]
        print(f"| {t} | {u} | {th} | {len(rs)} | {med(ops)} | {med(rows)} | "
              f"{med([x['lat_p50_ms'] for x in rs], '{:.2f}')} | {med([x['lat_p99_ms'] for x in rs], '{:.2f}')} |")


def ratio_table(recs):
    """outpost / Postfix, per payload and session count: the medians of each, then their ratio; where the same
    file has runs of the floor (../floor/relay.ts: the SMTP libraries alone), also floor / Postfix and outpost /
    floor, the share of the libraries' own rate that outpost keeps while storing and tracking every message."""
    by = OrderedDict()
    for r in sorted(recs, key=warmup):
        by.setdefault((warmup(r), r["size"], r["sessions"]), {}).setdefault(r["label"], []).append(r)
    floors = any("floor" in labels for labels in by.values())
    extra = " floor e2e msgs/s | floor / Postfix | outpost / floor |" if floors else ""
    print("| warm-up msgs | payload | sessions | Postfix e2e msgs/s | outpost e2e msgs/s | ratio e2e | Postfix CPU ms/msg | "
          "outpost CPU ms/msg | Postfix peak RSS-sum MiB | outpost peak RSS MiB |" + extra)
    print("|---|---|---|---|---|---|---|---|---|---|" + ("---|---|---|" if floors else ""))
    m = lambda rs, k: statistics.median([x[k] for x in rs if x.get(k) is not None] or [0])
    for (w, size, s), labels in by.items():
        pf, op, fl = labels.get("postfix", []), labels.get("outpost", []), labels.get("floor", [])
        if not pf or not op:
            continue
        ratio = m(op, "e2e_rate") / max(1e-9, m(pf, "e2e_rate"))
        row = (f"| {w} | {size // 1024} KiB | {s} | {m(pf, 'e2e_rate'):.0f} | {m(op, 'e2e_rate'):.0f} | {ratio:.2f} | "
               f"{m(pf, 'relay_cpu_ms_per_msg'):.2f} | {m(op, 'relay_cpu_ms_per_msg'):.2f} | "
               f"{m(pf, 'mem_peak_rss_kb') / 1024:.0f} | {m(op, 'mem_peak_rss_kb') / 1024:.0f} |")
        if floors:
            f = m(fl, "e2e_rate") if fl else 0
            row += (f" {f:.0f} | {f / max(1e-9, m(pf, 'e2e_rate')):.2f} | {m(op, 'e2e_rate') / f:.2f} |" if f
                    else " – | – | – |")
        print(row)


if __name__ == "__main__":
    # bench/relay: one or more JSONL files holding the relays' runs (labels "postfix", "outpost", "floor")
    recs = []
    # a directory (its *.jsonl) or JSONL files; run.sh passes the one file it wrote
    paths = [rdir] if os.path.isfile(rdir) else sorted(glob.glob(os.path.join(rdir, "*.jsonl")))
    for p in paths + sys.argv[2:]:
        recs += [json.loads(l) for l in open(p) if l.strip()]
    if recs:
        relay_table(recs)
        warmup_table(recs)
        print()
        ratio_table(recs)
