#!/usr/bin/env python3
"""What the backlog alone costs: outpost started on the seeded million-recipient backlog (seed.ts), and on an empty
queue, with no new mail; its CPU time (user + system, from /proc) counted over a fixed span after the first seconds,
and the recipient rows it writes meanwhile (those whose updated_at falls in the span). With --before, the other checkout runs the same phases in turn, on a fresh copy of the same seed.

  python3 bench/backlog/idle.py --rounds 2 --settle 5 --span 30 --before /path/to/checkout --out results/idle.jsonl

The relay benchmark (run.py) sees this cost spread over its messages; measured alone it does not depend on how fast
the machine is at the time as much as a rate does. Loopback only; the same routes and sinks as run.py.
"""
import argparse, json, os, shutil, signal, subprocess, sys, time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import run  # noqa: E402  (the routes, sinks and helpers of the relay benchmark)

TICK = os.sysconf("SC_CLK_TCK")


def cpu_ms(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) * 1000 / TICK


def phase(a, root, kind, template, out):
    work, db, cfg = run.data_dir("outpost-idle-", kind, template)
    load = os.getloadavg()
    log = open(os.path.join(work, "outpost.log"), "w")
    p = subprocess.Popen(["bun", "src/main.ts", "serve", "--config", cfg], cwd=root, stdout=log, stderr=subprocess.STDOUT)
    rec = {"kind": kind, "root": "before" if root == a.before else "after", "load_before": [round(x, 2) for x in load]}
    try:
        t0 = time.time()
        while not run.listening(run.SMTP_PORT):
            if p.poll() is not None or time.time() - t0 > 120:
                sys.exit(f"outpost did not listen; see {work}/outpost.log")
            time.sleep(0.02)
        time.sleep(a.settle)
        c0, w0 = cpu_ms(p.pid), time.time()
        time.sleep(a.span)
        c1, w1 = cpu_ms(p.pid), time.time()
        rec["cpu_ms_per_s"] = round((c1 - c0) / (w1 - w0), 2)
        since, until = int(w0 * 1000), int(w1 * 1000)
        rec["rows_written_in_span"] = run.query(db, f"SELECT count(*) FROM recipients WHERE updated_at BETWEEN {since} AND {until}")[0][0]
        rec["rows_attempted"] = run.query(db, "SELECT count(*) FROM events WHERE type = 'deferred'")[0][0]
        rec["rss_kb"] = int(open(f"/proc/{p.pid}/status").read().split("VmRSS:")[1].split()[0])
    finally:
        run.stop(p)
        log.close()
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(rec), flush=True)
    with open(out, "a") as f:
        f.write(json.dumps(rec) + "\n")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--backlog", type=int, default=1_000_000)
    ap.add_argument("--settle", type=float, default=5, help="seconds after listening before counting")
    ap.add_argument("--span", type=float, default=30, help="seconds counted")
    ap.add_argument("--root", default=os.path.abspath(os.path.join(HERE, "..", "..")))
    ap.add_argument("--before", help="another checkout, run in turn with --root")
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    run.seeded_phases(a, a.rounds, lambda root, kind, template: phase(a, root, kind, template, a.out))

if __name__ == "__main__":
    main()
