#!/usr/bin/env python3
"""End-to-end relay benchmark driver (loopback only). Copied from the Postfix baseline benchmark this project was measured against; changed only in that
it also counts outpost's JSON log lines ("status":"deferred") next to Postfix's "status=deferred", and can warm
the relay up before measuring (--warmup, below).

   smtp-source --> relay under test (127.0.0.1:PORT) --> smtp-sink (127.0.0.1:SINKPORT)

For each repetition:
  * starts a fresh smtp-sink -c on 127.0.0.1:SINKPORT and follows its running counter
    (stdout records "sess=.. quit=.. mesg=N\\r"),
  * runs smtp-source (bounded: -m count, and wrapped in `timeout`),
  * t_accept = time until smtp-source exits (all messages got their 250),
  * t_e2e    = time until the sink has counted all messages,
  * optionally waits until the Postfix queue is empty (postqueue -p),
  * samples RSS and PSS of the relay's process tree (root pid + descendants) every 0.25 s,
  * CPU seconds used by the relay's process tree (incl. reaped children via cutime/cstime
    of the root), and whole-machine busy CPU from /proc/stat.
With --warmup N, before the first repetition it sends N messages of the same size over the same number of
sessions to its own sink, waits until all N are delivered (and the Postfix queue is empty), then until the
relay's CPU has settled; the repetitions measure a relay that has been running (JIT compiled, process pools
and caches warm), and their CPU, rates and memory cover only themselves. --warmup 0: a freshly started relay.
Appends one JSON line per repetition to --out.
Only 127.0.0.1 is ever contacted.
"""
import argparse, json, os, re, socket, subprocess, sys, threading, time

LOOPBACK = "127.0.0.1"
HZ = os.sysconf("SC_CLK_TCK")


def children_map():
    kids = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                s = f.read()
            ppid = int(s[s.rfind(")") + 2:].split()[1])
            kids.setdefault(ppid, []).append(int(d))
        except (OSError, ValueError, IndexError):
            pass
    return kids


def tree(root):
    kids = children_map()
    out, stack = [], [root]
    while stack:
        p = stack.pop()
        out.append(p)
        stack.extend(kids.get(p, []))
    return out


def proc_stat_times(pid):
    with open(f"/proc/{pid}/stat") as f:
        s = f.read()
    fields = s[s.rfind(")") + 2:].split()
    # fields[11..14] = utime stime cutime cstime (stat fields 14..17)
    return [int(x) for x in fields[11:15]]


def tree_cpu_seconds(root):
    total = 0
    for p in tree(root):
        try:
            u, s, cu, cs = proc_stat_times(p)
        except OSError:
            continue
        total += u + s
        if p == root:
            total += cu + cs
    return total / HZ


def tree_mem_kb(root):
    rss = pss = n = 0
    for p in tree(root):
        try:
            with open(f"/proc/{p}/smaps_rollup") as f:
                for line in f:
                    if line.startswith("Rss:"):
                        rss += int(line.split()[1])
                    elif line.startswith("Pss:"):
                        pss += int(line.split()[1])
            n += 1
        except OSError:
            pass
    return rss, pss, n


def machine_busy():
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    idle = v[3] + v[4]
    return sum(v), idle


def wait_port(port, timeout=10):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            with socket.create_connection((LOOPBACK, port), timeout=1) as s:
                s.recv(512)  # greeting
                s.sendall(b"QUIT\r\n")
                return True
        except OSError:
            time.sleep(0.05)
    return False


def postfix_queue_empty():
    r = subprocess.run(["postqueue", "-p"], capture_output=True, text=True, timeout=30)
    return "Mail queue is empty" in r.stdout


def wait_queue_empty(timeout):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if postfix_queue_empty():
            return True
        time.sleep(0.2)
    return False


class Sink:
    REC = re.compile(rb"mesg=(\d+)")

    def __init__(self, port, extra):
        self.count = 0
        self.target = None
        self.t_target = None
        self.cv = threading.Condition()
        cmd = ["smtp-sink", "-c"] + extra
        if os.geteuid() == 0:
            cmd += ["-u", "postfix"]
        cmd += [f"{LOOPBACK}:{port}", "1000"]
        self.p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        self.th = threading.Thread(target=self._read, daemon=True)
        self.th.start()

    def _read(self):
        buf = b""
        fd = self.p.stdout.fileno()
        while True:
            try:
                chunk = os.read(fd, 65536)
            except OSError:
                break
            if not chunk:
                break
            buf += chunk
            parts = buf.split(b"\r")
            buf = parts[-1]
            m = None
            for rec in reversed(parts[:-1]):
                m = self.REC.search(rec)
                if m:
                    break
            if m:
                now = time.monotonic()
                with self.cv:
                    self.count = int(m.group(1))
                    if self.target is not None and self.t_target is None and self.count >= self.target:
                        self.t_target = now
                    self.cv.notify_all()

    def wait_for(self, n, timeout):
        end = time.monotonic() + timeout
        with self.cv:
            while self.count < n:
                left = end - time.monotonic()
                if left <= 0:
                    return None
                self.cv.wait(left)
            return self.t_target

    def stop(self):
        self.p.terminate()
        try:
            self.p.wait(5)
        except subprocess.TimeoutExpired:
            self.p.kill()
            self.p.wait()


def source_cmd(a, msgs):
    src = ["timeout", str(a.timeout), "smtp-source", "-s", str(a.sessions),
           "-m", str(msgs), "-l", str(a.size), "-f", "from@example.org",
           "-t", "to@example.test", "-M", "bench.example.org"]
    if a.reuse:
        src.append("-d")
    return src + [f"{LOOPBACK}:{a.port}"]


def wait_cpu_settled(root, timeout, window=0.5, busy=0.05):
    """Until the relay's tree uses < busy CPU-seconds per window (its warm-up's tail: JIT, cleanup), bounded."""
    end = time.monotonic() + timeout
    prev = tree_cpu_seconds(root)
    while time.monotonic() < end:
        time.sleep(window)
        cur = tree_cpu_seconds(root)
        if cur - prev < busy:
            return True
        prev = cur
    return False


def warm_up(a, root):
    """Send a.warmup messages through the relay and wait until they are delivered; a summary for the record."""
    sink = Sink(a.sink_port, [])
    try:
        if not wait_port(a.sink_port):
            sys.exit("smtp-sink did not come up (warm-up)")
        base = sink.count
        with sink.cv:
            sink.target = base + a.warmup
        cpu0 = tree_cpu_seconds(root) if root else 0.0
        t0 = time.monotonic()
        r = subprocess.run(source_cmd(a, a.warmup), capture_output=True, text=True)
        got = sink.wait_for(base + a.warmup, a.timeout)
        t1 = time.monotonic()
        if r.returncode != 0 or got is None:
            sys.exit(f"warm-up failed: smtp-source rc={r.returncode} {r.stderr.strip()[-300:]!r}, "
                     f"sink counted {sink.count - base} of {a.warmup}")
        if a.postfix_queue and not wait_queue_empty(a.timeout):
            sys.exit("postfix queue not empty after warm-up; aborting")
        settled = wait_cpu_settled(root, 30) if root else None
        cpu1 = tree_cpu_seconds(root) if root else 0.0
    finally:
        sink.stop()
    return {"warmup_e2e_rate": round(a.warmup / (t1 - t0), 1),
            "warmup_cpu_ms_per_msg": round(1000 * (cpu1 - cpu0) / a.warmup, 3),
            "warmup_settled": settled}


def read_log_tail(path, offset):
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            return f.read().decode(errors="replace")
    except OSError:
        return ""


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--label", required=True)
    ap.add_argument("--port", type=int, default=2525)
    ap.add_argument("--sink-port", type=int, default=2600)
    ap.add_argument("--msgs", type=int, required=True)
    ap.add_argument("--sessions", type=int, required=True)
    ap.add_argument("--size", type=int, required=True, help="payload bytes (smtp-source -l)")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--reuse", action="store_true", help="smtp-source -d: many messages per connection")
    ap.add_argument("--root-pid", type=int, help="pid of the relay's root process (memory/CPU)")
    ap.add_argument("--root-pidfile", help="file holding that pid (e.g. Postfix master.pid)")
    ap.add_argument("--postfix-queue", action="store_true", help="wait for empty Postfix queue")
    ap.add_argument("--log", default="/var/log/postfix.log")
    ap.add_argument("--timeout", type=int, default=300, help="per-phase time bound, s")
    ap.add_argument("--warmup", type=int, default=0,
                    help="messages sent and delivered before the first repetition, not measured (0: cold relay)")
    ap.add_argument("--out", required=True)
    a = ap.parse_args()

    root = a.root_pid
    if a.root_pidfile:
        root = int(open(a.root_pidfile).read().split()[0])

    fresh = tree_mem_kb(root) if root else (0, 0, 0)
    warm = warm_up(a, root) if a.warmup > 0 else {}
    if warm:
        time.sleep(1)
    prior = a.warmup  # messages this relay process has handled before the repetition
    for rep in range(1, a.reps + 1):
        if a.postfix_queue and not wait_queue_empty(a.timeout):
            sys.exit("postfix queue not empty before run; aborting")
        sink = Sink(a.sink_port, [])
        try:
            if not wait_port(a.sink_port):
                sys.exit("smtp-sink did not come up")
            base = sink.count  # includes the probe session (0 messages)
            with sink.cv:
                sink.target = base + a.msgs
            logoff = os.path.getsize(a.log) if os.path.exists(a.log) else 0
            mem_idle = tree_mem_kb(root) if root else (0, 0, 0)
            cpu0 = tree_cpu_seconds(root) if root else 0.0
            m_tot0, m_idle0 = machine_busy()
            load = [round(x, 2) for x in os.getloadavg()]

            peak = {"rss": 0, "pss": 0, "nproc": 0}
            stop = threading.Event()

            def sampler():
                while not stop.is_set():
                    r, p, n = tree_mem_kb(root)
                    if p > peak["pss"]:
                        peak["pss"] = p
                    if r > peak["rss"]:
                        peak["rss"] = r
                    if n > peak["nproc"]:
                        peak["nproc"] = n
                    stop.wait(0.25)

            th = threading.Thread(target=sampler, daemon=True)
            if root:
                th.start()

            t0 = time.monotonic()
            r = subprocess.run(source_cmd(a, a.msgs), capture_output=True, text=True)
            t1 = time.monotonic()
            t2 = sink.wait_for(base + a.msgs, a.timeout)
            cpu1 = tree_cpu_seconds(root) if root else 0.0
            m_tot1, m_idle1 = machine_busy()
            stop.set()
            if root:
                th.join()
            qempty = None
            t3 = None
            if a.postfix_queue:
                qempty = wait_queue_empty(a.timeout)
                t3 = time.monotonic()
            logtxt = read_log_tail(a.log, logoff)
            rec = {
                "label": a.label, "rep": rep, "msgs": a.msgs, "sessions": a.sessions,
                "size": a.size, "reuse": a.reuse, "warmup": a.warmup, "prior_msgs": prior,
                "source_rc": r.returncode, "source_err": r.stderr.strip()[-300:],
                "t_accept": round(t1 - t0, 3),
                "t_e2e": round(t2 - t0, 3) if t2 else None,
                "accept_rate": round(a.msgs / (t1 - t0), 1),
                "e2e_rate": round(a.msgs / (t2 - t0), 1) if t2 else None,
                "sink_count": sink.count - base,
                "queue_empty_after": qempty,
                "t_queue_empty": round(t3 - t0, 3) if t3 else None,
                "relay_cpu_s": round(cpu1 - cpu0, 2),
                "relay_cpu_ms_per_msg": round(1000 * (cpu1 - cpu0) / a.msgs, 3),
                "load_before": load,
                "machine_busy_pct": round(100 * (1 - (m_idle1 - m_idle0) / max(1, m_tot1 - m_tot0)), 1),
                "mem_idle_rss_kb": mem_idle[0], "mem_idle_pss_kb": mem_idle[1],
                "mem_peak_rss_kb": peak["rss"], "mem_peak_pss_kb": peak["pss"],
                "peak_nproc": peak["nproc"],
                "mem_fresh_rss_kb": fresh[0], "mem_fresh_pss_kb": fresh[1], **warm,
                "log_deferred": logtxt.count("status=deferred") + logtxt.count('"status":"deferred"'),
                "log_bounced": logtxt.count("status=bounced") + logtxt.count('"status":"bounced"'),
                "log_sent": logtxt.count("status=sent") + logtxt.count('"status":"delivered"'),
            }
            print(json.dumps(rec), flush=True)
            with open(a.out, "a") as f:
                f.write(json.dumps(rec) + "\n")
            if r.returncode != 0 or t2 is None:
                sys.exit("run failed; see record")
            prior += a.msgs
        finally:
            sink.stop()
        time.sleep(1)


if __name__ == "__main__":
    main()
