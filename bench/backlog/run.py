#!/usr/bin/env python3
"""New mail behind a million-recipient backlog: the relay benchmark (bench/relay/bench_relay.py: smtp-source ->
outpost -> smtp-sink, 2 KiB, 10 sessions) against the same outpost with an empty queue and with a seeded backlog
(seed.ts), interleaved: empty, backlog, empty, backlog, ... Each phase starts outpost on a fresh copy of its
database and records the time to listening and to its first delivery, the relay's rate, CPU and RSS, and how long
due retries for a healthy destination waited. Loopback only. Output: one JSON line per phase in --out.

  python3 bench/backlog/run.py --pairs 2 --msgs 10000 --backlog 1000000 --out bench/backlog/results/run.jsonl

--warmup N (default 0) sends N messages through each phase's outpost, delivered, before the measured relay run (as
bench/relay's WARMUP, so the rate and CPU are those of a relay whose JIT has compiled its hot code); lines carry it.

Addresses: outpost SMTP 127.0.0.1:2725; the relay's sink 127.0.0.1:2700 (bench_relay.py runs it); throttled domains
*.slow.test -> smtp-sink 127.0.0.2:2701 at 1 message a minute; dead domains *.dead.test -> 127.0.0.3:2702 (nothing
listens); the healthy probes *@probe.test -> smtp-sink 127.0.0.4:2703.
"""
import argparse, json, os, shutil, signal, socket, sqlite3, subprocess, sys, tempfile, time

HERE = os.path.dirname(os.path.abspath(__file__))
SMTP_PORT, SINK, SLOW, DEAD, PROBE = 2725, ("127.0.0.1", 2700), ("127.0.0.2", 2701), ("127.0.0.3", 2702), ("127.0.0.4", 2703)

CONFIG = """data_dir = "{data}"
hostname = "bench.outpost.test"
[smtp]
listen = ["127.0.0.1:{smtp}"]
trusted_networks = ["127.0.0.0/8"]
max_connections_per_ip = 1000
[http]
listen = "127.0.0.1:0"
[delivery]
per_destination_connections = 50
[delivery.destination."*.slow.test"]
rate = "1/min"
[[delivery.route]]
domain = "*"
host = "{sink[0]}"
port = {sink[1]}
[[delivery.route]]
domain = "*.slow.test"
host = "{slow[0]}"
port = {slow[1]}
[[delivery.route]]
domain = "*.dead.test"
host = "{dead[0]}"
port = {dead[1]}
[[delivery.route]]
domain = "probe.test"
host = "{probe[0]}"
port = {probe[1]}
"""


def listening(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def sink(addr):
    cmd = ["smtp-sink"] + (["-u", "postfix"] if os.geteuid() == 0 else []) + [f"{addr[0]}:{addr[1]}", "100"]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def query(db, sql):
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def data_dir(prefix, kind, template):
    """A fresh work dir with serve's config; its database a copy of the seeded one for a backlog phase."""
    work = tempfile.mkdtemp(prefix=prefix, dir="/var/tmp")
    data = os.path.join(work, "data")
    os.makedirs(data, mode=0o700)
    db = os.path.join(data, "outpost.db")
    if kind == "backlog":
        shutil.copyfile(template, db)
    cfg = os.path.join(work, "outpost.toml")
    with open(cfg, "w") as f:
        f.write(CONFIG.format(data=data, smtp=SMTP_PORT, sink=SINK, slow=SLOW, dead=DEAD, probe=PROBE))
    return work, db, cfg


def phase(a, kind, template, out, root):
    work, db, cfg = data_dir("outpost-backlog-", kind, template)
    start_ms = int(time.time() * 1000) + 1500
    subprocess.run(["bun", os.path.join(HERE, "seed.ts"), "healthy", db, str(start_ms)], check=True, cwd=root)
    load = os.getloadavg()
    log = open(os.path.join(work, "outpost.log"), "w")
    t0 = time.time()
    p = subprocess.Popen(["bun", "src/main.ts", "serve", "--config", cfg], cwd=root, stdout=log, stderr=subprocess.STDOUT)
    rec = {"kind": kind, "backlog": a.backlog if kind == "backlog" else 0, "warmup": a.warmup,
           "load_before": [round(x, 2) for x in load]}
    if a.before:
        rec["root"] = "before" if root == a.before else "after"
    try:
        while not listening(SMTP_PORT):
            if p.poll() is not None or time.time() - t0 > 120:
                sys.exit(f"outpost did not listen; see {work}/outpost.log")
            time.sleep(0.02)
        rec["to_listening_s"] = round(time.time() - t0, 2)
        while True:
            got = query(db, "SELECT updated_at FROM recipients WHERE address = 'first@probe.test' AND status = 'delivered'")
            if got:
                rec["to_first_delivery_s"] = round(got[0][0] / 1000 - t0, 2)
                break
            if time.time() - t0 > 120:
                rec["to_first_delivery_s"] = None
                break
            time.sleep(0.05)
        rel = os.path.join(work, "relay.jsonl")
        subprocess.run(["python3", os.path.join(HERE, "..", "relay", "bench_relay.py"), "--label", kind, "--reps", "1",
                        "--port", str(SMTP_PORT), "--sink-port", str(SINK[1]), "--root-pid", str(p.pid),
                        "--log", os.path.join(work, "outpost.log"), "--msgs", str(a.msgs), "--sessions", "10",
                        "--size", "2048", "--warmup", str(a.warmup), "--out", rel], check=True, stdout=subprocess.DEVNULL)
        with open(rel) as f:
            r = json.loads(f.readline())
        for k in ("e2e_rate", "accept_rate", "relay_cpu_ms_per_msg", "machine_busy_pct", "mem_idle_rss_kb", "mem_peak_rss_kb"):
            rec[k] = r[k]
        until = time.time() + 60
        while time.time() < until:
            rows = query(db, "SELECT address, updated_at, status FROM recipients WHERE address LIKE 'retry%@probe.test'")
            if rows and all(s == "delivered" for _, _, s in rows):
                break
            time.sleep(0.2)
        waits = []
        for addr, updated, status in sorted(rows):
            due = start_ms + 10_000 + 2_000 * int(addr[5:addr.index("@")])
            waits.append(round((updated - due) / 1000, 2) if status == "delivered" else None)
        rec["retry_wait_s"] = waits
        rec["queue_pending_after"] = query(db, "SELECT (SELECT count(*) FROM recipients INDEXED BY recipients_new WHERE status = 'queued') + "
                                            "(SELECT count(*) FROM recipients INDEXED BY recipients_retry WHERE status = 'deferred')")[0][0]
    finally:
        stop(p)
        log.close()
        if not a.keep:
            shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(rec), flush=True)
    with open(out, "a") as f:
        f.write(json.dumps(rec) + "\n")


def stop(p):
    """SIGTERM, as systemd would; killed if it has not exited after 40 s."""
    p.send_signal(signal.SIGTERM)
    try:
        p.wait(40)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--pairs", type=int, default=2)
    ap.add_argument("--msgs", type=int, default=10000)
    ap.add_argument("--backlog", type=int, default=1_000_000)
    ap.add_argument("--root", default=os.path.abspath(os.path.join(HERE, "..", "..")), help="the outpost checkout to run")
    ap.add_argument("--out", required=True)
    ap.add_argument("--before", help="another checkout (the code before): each pair runs --root's phases, then its own, "
                    "so both see the same machine; lines carry root = after/before")
    ap.add_argument("--later", action="store_true", help="the backlog all due in 8 hours: only its size costs")
    ap.add_argument("--keep", action="store_true", help="keep each phase's directory (logs, database)")
    ap.add_argument("--warmup", type=int, default=0, help="messages through each phase's fresh outpost before the "
                    "measured relay run (bench_relay.py --warmup); 0: cold, as before")
    a = ap.parse_args()
    seeded_phases(a, a.pairs, lambda root, kind, template: phase(a, kind, template, a.out, root), ["later"] if a.later else [])


def seeded_phases(a, rounds, run_phase, seed_extra=()):
    """Seeds the backlog template once, then run_phase(root, kind, template) `rounds` times for each checkout (--root,
    then --before) and kind (empty, then backlog); the sinks run throughout and the template is removed after."""
    # the healthy probes' domain goes to its own sink; the throttled domains to one that answers slowly enough
    sinks = [sink(SLOW), sink(PROBE)]
    tmpl_dir = tempfile.mkdtemp(prefix="outpost-backlog-seed-", dir="/var/tmp")
    try:
        template = os.path.join(tmpl_dir, "outpost.db")
        seed = ["bun", os.path.join(HERE, "seed.ts"), "backlog", template, str(a.backlog), *seed_extra]
        subprocess.run(seed, check=True, cwd=a.root)
        os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
        for _ in range(rounds):
            for root in [a.root] + ([a.before] if a.before else []):
                for kind in ("empty", "backlog"):
                    run_phase(root, kind, template)
    finally:
        for s in sinks:
            s.terminate()
            s.wait()
        shutil.rmtree(tmpl_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
