#!/usr/bin/env python3
"""Prints the table of bench/backlog/RESULTS.md from run.py's JSON lines: per phase kind the median [min-max] of
each figure, and the backlog/empty ratio of the end-to-end rates and CPU per message, pair by pair and overall."""
import json, statistics, sys


def fmt(xs):
    xs = [x for x in xs if x is not None]
    if not xs:
        return "-"
    return f"{statistics.median(xs):g} [{min(xs):g}–{max(xs):g}]"


def groups(path):
    recs = [json.loads(l) for l in open(path) if l.strip()]
    roots = sorted({r.get("root") for r in recs}, key=lambda r: r != "before")
    for root in roots:
        yield (path if root is None else f"{path} ({root})"), [r for r in recs if r.get("root") == root]


for path, recs in (g for p in sys.argv[1:] for g in groups(p)):
    print(f"\n{path}: {len(recs)} phases")
    print("| queue | n | end-to-end msgs/s | CPU ms/msg | machine busy % | RSS idle MiB | RSS peak MiB | to listening s | to first delivery s | retry wait s (max of 10) | load before |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for kind in ("empty", "backlog"):
        rs = [r for r in recs if r["kind"] == kind]
        label = "empty" if kind == "empty" else f"backlog {rs[0]['backlog']:,}" if rs else kind
        print(f"| {label} | {len(rs)} | {fmt([r['e2e_rate'] for r in rs])} | {fmt([r['relay_cpu_ms_per_msg'] for r in rs])} "
              f"| {fmt([r['machine_busy_pct'] for r in rs])} | {fmt([round(r['mem_idle_rss_kb'] / 1024) for r in rs])} "
              f"| {fmt([round(r['mem_peak_rss_kb'] / 1024) for r in rs])} | {fmt([r['to_listening_s'] for r in rs])} "
              f"| {fmt([r['to_first_delivery_s'] for r in rs])} | {fmt([max((w for w in r['retry_wait_s'] if w is not None), default=None) for r in rs])} "
              f"| {fmt([r['load_before'][0] for r in rs])} |")
    empty = [r for r in recs if r["kind"] == "empty"]
    back = [r for r in recs if r["kind"] == "backlog"]
    pairs = list(zip(empty, back))
    ratios = [round(b["e2e_rate"] / e["e2e_rate"], 2) for e, b in pairs]
    cpu = [round(b["relay_cpu_ms_per_msg"] / e["relay_cpu_ms_per_msg"], 2) for e, b in pairs]
    undelivered = sum(w is None for r in back for w in r["retry_wait_s"])
    print(f"\nrate backlog/empty per pair: {ratios}; of the medians: "
          f"{statistics.median([b['e2e_rate'] for b in back]) / statistics.median([e['e2e_rate'] for e in empty]):.2f}")
    print(f"CPU per message backlog/empty per pair: {cpu}; retries not delivered within 60 s: {undelivered}")
