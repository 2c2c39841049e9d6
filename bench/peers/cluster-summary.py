#!/usr/bin/env python3
"""The table of cluster-fanout.sh from its results folder: one row per load and hub, every
figure as "run 1 / run 2 / ...", read from the JSON line that ends each wxhub-bench output.

    python3 bench/peers/cluster-summary.py OUT REPS "LOADS" "PEERS"
    python3 bench/peers/cluster-summary.py /tmp/wxhub-cluster 3 "1000x10 10000x10" "wxhub socketio"
"""
import json
import sys

NAMES = {"wxhub": "wxhub (`--redis`)", "socketio": "Socket.IO 4 + redis-adapter"}


def result(out, peer, load, rep):
    try:
        with open(f"{out}/{peer}.{load}.{rep}.txt") as f:
            lines = f.read().splitlines()
        return json.loads(next(l for l in reversed(lines) if l.startswith("{")))
    except (OSError, StopIteration, ValueError):
        return None


def fmt(v, unit="", prec=0):
    if v is None:
        return "-"
    if unit == "k":
        return f"{v / 1000:.1f} k"
    return f"{v:.{prec}f}{unit}"


def each(runs, key, unit="", prec=0):
    return " / ".join(fmt(r.get(key) if r else None, unit, prec) for r in runs)


def cluster_pct(r):
    parts = [r.get(k) for k in ("cpu_pct_a", "cpu_pct_b", "cpu_pct_redis")] if r else [None]
    return None if None in parts else sum(parts)


def delivered(r):
    """Whether every subscriber got every message, within the drain."""
    if not r:
        return "no result"
    notes = []
    if r.get("fatal"):
        notes.append(f"FAILED: {r['fatal']}")
    if r.get("undelivered"):
        notes.append(f"{r['undelivered']:,} of {r['expected_total']:,} not within the drain")
    if r.get("duplicates"):
        notes.append(f"{r['duplicates']} duplicates")
    if r.get("reordered"):
        notes.append(f"{r['reordered']} out of order")
    return ", ".join(notes) or "all, once, in order"


def main():
    out, reps = sys.argv[1], int(sys.argv[2])
    loads, peers = sys.argv[3].split(), sys.argv[4].split()
    print()
    print(f"Two nodes on one Redis, {reps} run(s) of each, figures run 1 / run 2 / ...:")
    print()
    print("| subscribers (A + B), rate | hub | deliveries/s in the window | latency on A: p50; p99 (ms) "
          "| latency on B: p50; p99 (ms) | CPU per delivery, A + B + Redis | CPU of A + B + Redis, % of a core "
          "| CPU of everything else, % of a core | delivered |")
    print("|---|---|---|---|---|---|---|---|---|")
    for load in loads:
        n, rate = load.split("x")
        for p in peers:
            runs = [result(out, p, load, k) for k in range(1, reps + 1)]
            r1 = next((r for r in runs if r), {})
            split = f"{r1.get('subscribers_a', '?')} + {r1.get('subscribers_b', '?')}"
            lat = {
                node: f"{each(runs, f'p50_ms_{node}', '', 1)}; {each(runs, f'p99_ms_{node}', '', 1)}"
                for node in "ab"
            }
            pct = " / ".join(fmt(cluster_pct(r), "", 0) for r in runs)
            print(f"| {int(n):,} ({split}), {rate} msg/s | {NAMES.get(p, p)} "
                  f"| {each(runs, 'deliveries_per_s', 'k')} | {lat['a']} | {lat['b']} "
                  f"| {each(runs, 'cluster_cpu_us_per_delivery', ' us', 1)} | {pct} "
                  f"| {each(runs, 'others_cpu_pct', '', 0)} "
                  f"| {'; '.join(delivered(r) for r in runs)} |")


if __name__ == "__main__":
    main()
