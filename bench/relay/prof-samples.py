#!/usr/bin/env python3
"""Where serve's main thread spends its CPU, by sample counts of a Bun .cpuprofile (BUN_FLAGS="--cpu-prof
--cpu-prof-dir=DIR"). Counts, not the time column of --cpu-prof-md: that one gives each sample the time until the
next, so the one sample taken before the thread waits in epoll gets the whole wait ("Socket 15 %" was one such).

    python3 prof-samples.py BEFORE.cpuprofile [AFTER.cpuprofile] [ROWS]

Each sample goes to the first of: SQLite statements (a native run/get/all leaf), a socket write (native
writeBuffered: intake's replies or delivery's commands), the innermost frame in src/ or node_modules/, else Bun's
own JS (node:net, streams, timers).
"""
import collections
import json
import sys


def areas(path):
    p = json.load(open(path))
    nodes = {n["id"]: n for n in p["nodes"]}
    parent = {c: n["id"] for n in p["nodes"] for c in n.get("children", [])}
    counts = collections.Counter()
    for leaf_id, k in collections.Counter(p["samples"]).items():
        chain, i = [], leaf_id
        while i is not None:
            chain.append(nodes[i]["callFrame"])
            i = parent.get(i)
        urls = [f.get("url", "") for f in chain]
        native = urls[0] == ""
        if native and chain[0]["functionName"] in ("run", "get", "all", "values"):
            key = "SQLite statements (native run/get/all)"
        elif native and chain[0]["functionName"] == "writeBuffered":
            key = "socket writes, delivery" if any("nodemailer" in u for u in urls) else "socket writes, intake (replies)"
        else:
            key = "Bun runtime JS (node:net, streams, timers)"
            for f, u in zip(chain, urls):
                if "/src/" in u:
                    key = "src/" + u.split("/src/")[1]
                    break
                if "node_modules/" in u:
                    key = u.split("node_modules/")[1].split("/")[0]
                    break
                if f["functionName"] in ("require", "bound require"):
                    key = "startup (module loading)"
                    break
        counts[key] += k
    return counts, len(p["samples"])


def main():
    files = [a for a in sys.argv[1:] if a.endswith(".cpuprofile")]
    rows = next((int(a) for a in sys.argv[1:] if a.isdigit()), 25)
    runs = [areas(f) for f in files]
    keys = sorted({k for c, _ in runs for k in c}, key=lambda k: -sum(c[k] / t for c, t in runs))
    print(f"{'':46s}" + "".join(f"{'%':>8s}" for _ in runs))
    for k in keys[:rows]:
        print(f"{k[:46]:46s}" + "".join(f"{100 * c[k] / t:8.1f}" for c, t in runs))
    print(f"{'samples':46s}" + "".join(f"{t:8d}" for _, t in runs))


main()
