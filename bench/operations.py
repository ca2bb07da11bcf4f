#!/usr/bin/env python3
"""What request ids and trace context cost, and whether a dead collector reaches the requests.

One command:  python3 bench/operations.py   (after a release build; installs wrk and oha if missing)

1. **Cost**: one 1 KiB file, keep-alive, wrk with 50 connections on the other core(s), in two
   set-ups — request ids and trace context off (`request_id_header = ""`, `propagate = false`),
   and the defaults (ids on, `traceparent` propagated, nothing exported). Both daemons run at
   once on the same core, each loaded by its own wrk (25 connections): the scheduler shares
   the core equally, so their req/s ratio is their inverse CPU-cost ratio, measured at the same
   moments. 15 rounds of 5 s; the median of the rounds' ratios.
2. **A dead collector**: every request sampled (`sample_ratio = 1.0`) and exported to a
   collector that refuses connections, to one that accepts and never answers (each export
   waits out its 5 s), and to a live one (answers 200 at once), against no export at all; an
   open-loop load (oha, a fixed rate of a quarter of what the core served in the cost part) so that a
   stall would show in p99. Three runs each, alternating; medians.

The section "operations" of bench/RESULTS.md gets the tables.
"""

import argparse
import contextlib
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import results  # noqa: E402
from run import BIN, ROOT, Server, ensure_tools, fmt_us, free_port, machine, run_fixed_rate, run_wrk, sh  # noqa: E402

CONF = """
[server]
listen = "127.0.0.1:{port}"
threads = {workers}
{server}

[logging]
level = "warn"

[admin]
socket = "{admin}"

{tracing}

[path_routes."127.0.0.1"]
"/files/" = {{ path = "{www}" }}
"""

COST = {
    "ids and trace context off": ('request_id_header = ""', "[tracing]\npropagate = false"),
    "ids on, propagate only (defaults)": ("", ""),
}

EXPORT = "[tracing]\nsample_ratio = 1.0\notlp_endpoint = \"http://127.0.0.1:{cport}/v1/traces\"\nexport_interval_ms = 1000\n"
COLLECTORS = ["no export", "collector refuses", "collector never answers", "live collector"]


class Sink(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self):
        self.rfile.read(int(self.headers["Content-Length"]))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


def collector(kind):
    """A port for `kind`, and what to stop afterwards."""
    if kind == "collector refuses":
        return free_port(18470), None
    if kind == "collector never answers":
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        s.listen(1024)  # accepted by the kernel, never read
        return s.getsockname()[1], s.close
    srv = ThreadingHTTPServer(("127.0.0.1", 0), Sink)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv.server_address[1], srv.shutdown


def tracing_stats(tmp):
    out = subprocess.run(
        [os.path.join(os.path.dirname(BIN), "proxyctl"), "--socket", f"{tmp}/admin.sock", "stats", "--json"],
        capture_output=True, text=True, check=True).stdout
    return json.loads(out)["tracing"]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", type=int, default=10, help="seconds per run (default 10)")
    ap.add_argument("--runs", type=int, default=15, help="rounds of the cost part (default 15)")
    ap.add_argument("--cost-duration", type=int, default=5, help="seconds per cost run (default 5)")
    ap.add_argument("--export-runs", type=int, default=3, help="runs per collector set-up (default 3)")
    ap.add_argument("--no-build", action="store_true", help="use the existing release binary")
    ap.add_argument("--export-only", action="store_true",
                    help="only the dead-collector part, at --rate; the results file is not written")
    ap.add_argument("--rate", type=int, default=0, help="with --export-only: the fixed rate")
    ap.add_argument("--cost-only", action="store_true",
                    help="only the cost part; the results file is not written")
    ap.add_argument("--output", default=os.path.join(ROOT, "bench", "RESULTS.md"))
    args = ap.parse_args()

    ensure_tools()
    if not args.no_build:
        sh(["cargo", "build", "--release", "--locked", "--workspace"], cwd=ROOT)
    ncpu = os.cpu_count() or 2
    workers = max(1, ncpu // 2)
    server_cores = ",".join(str(c) for c in range(workers))
    wrk_cores = ",".join(str(c) for c in range(workers, ncpu))
    wrk_threads = ncpu - workers

    tmp = tempfile.mkdtemp(prefix="zcs-operations-")
    www = os.path.join(tmp, "www")
    os.makedirs(www)
    with open(os.path.join(www, "1k.bin"), "wb") as f:
        f.write(os.urandom(1024))
    port = free_port(18450)

    def daemon(server, tracing, port=port, admin="admin.sock"):
        conf = os.path.join(tmp, f"zcs-{port}.toml")
        with open(conf, "w") as f:
            f.write(CONF.format(port=port, workers=workers, www=www, admin=os.path.join(tmp, admin), server=server,
                                tracing=tracing))
        return Server("zerocopy-server", ["taskset", "-c", server_cores, BIN, "--config", conf], port)

    # 1. Cost: both daemons at once on the same core(s), each loaded by its own wrk (25
    # connections) on the other core(s). The scheduler gives each daemon an equal share of
    # the server core, so the ratio of their req/s is the inverse ratio of their CPU per
    # request — measured at the same moments: this machine's speed drifts by tens of percent
    # over minutes, which separate runs cannot tell from a cost of a few percent.
    cost = {name: [] for name in COST}
    ratios = []
    off, on = list(COST)
    if not args.export_only:
        ports = {off: port, on: free_port(port + 1)}
        with contextlib.ExitStack() as up:
            srvs = {name: up.enter_context(daemon(*COST[name], port=ports[name], admin=f"admin-{i}.sock"))
                    for i, name in enumerate(COST)}

            def both(duration):
                got, failed = {}, []

                def one(name):
                    try:
                        got[name] = run_wrk(ports[name], "/files/1k.bin", 25, [], duration, wrk_cores, wrk_threads)
                    except RuntimeError as e:
                        failed.append(f"{name}: {e}\nthe daemon's log:\n{srvs[name].log_tail()}")

                threads = [threading.Thread(target=one, args=(name,)) for name in COST]
                for t in threads:
                    t.start()
                for t in threads:
                    t.join()
                if failed:
                    sys.exit(failed[0])
                return got

            both(2)  # warm-up
            for run in range(args.runs):
                got = both(args.cost_duration)
                for name in COST:
                    cost[name].append(got[name])
                ratios.append(got[on][0] / got[off][0])
                print(f"round {run + 1:2}: off {got[off][0]:>9.0f} req/s, on {got[on][0]:>9.0f} req/s, "
                      f"ratio {ratios[-1]:.3f}", file=sys.stderr)
    med = {n: statistics.median(x[0] for x in s) if s else args.rate * 4 for n, s in cost.items()}
    cost_lines = [
        "| set-up | req/s (median) | min–max | p99 | req/s, median of the rounds' ratios |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, s in cost.items():
        if not s:
            continue
        rps = [x[0] for x in s]
        ratio = f"{statistics.median(ratios):.3f}×" if name == on else "1"
        cost_lines.append(
            f"| {name} | {med[name]:,.0f} | {min(rps):,.0f}–{max(rps):,.0f} | "
            f"{fmt_us(statistics.median(x[2] for x in s))} | {ratio} |")
    if ratios:
        q = statistics.quantiles(ratios, n=4)
        cost_lines.append(f"\nThe rounds' ratios: median {statistics.median(ratios):.3f}, quartiles "
                          f"{q[0]:.3f}–{q[2]:.3f}, {len(ratios)} rounds.")
    cost_table = "\n".join(cost_lines)
    print(cost_table)

    if args.cost_only:
        return
    # 2. A dead collector, at a fixed rate.
    # A quarter of what the core served in the cost part (both daemons together).
    rate = int((med[on] + med[off]) / 4)
    fixed = {kind: [] for kind in COLLECTORS}
    stats = {}
    for run in range(args.export_runs):
        order = COLLECTORS if run % 2 == 0 else list(reversed(COLLECTORS))
        for kind in order:
            cport, stop = (None, None) if kind == "no export" else collector(kind)
            tracing = "" if kind == "no export" else EXPORT.format(cport=cport)
            try:
                with daemon("", tracing) as srv:
                    try:
                        run_wrk(port, "/files/1k.bin", 50, [], 2, wrk_cores, wrk_threads)  # warm-up
                        r = run_fixed_rate(port, "/files/1k.bin", rate, args.duration, wrk_cores)
                    except RuntimeError as e:
                        sys.exit(f"{kind}: {e}\nthe daemon's log:\n{srv.log_tail()}")
                    if kind != "no export":
                        time.sleep(1.2)
                        stats[kind] = tracing_stats(tmp)
            finally:
                if stop:
                    stop()
            fixed[kind].append(r)
            print(f"{kind:26} run {run + 1}: p50 {fmt_us(r[0])}  p99 {fmt_us(r[1])}  "
                  f"{r[2]:,.0f} req/s  non-2xx {r[3]}", file=sys.stderr)
    base_p99 = statistics.median(x[1] for x in fixed["no export"])
    fixed_lines = [
        "| collector | p50 | p99 | p99 ratio | req/s | non-2xx | spans exported / dropped (queue full, export failed), last run |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    for kind, rs in fixed.items():
        p99 = statistics.median(x[1] for x in rs)
        t = stats.get(kind)
        spans = "—" if not t else (f"{t['spans_exported']:,} / {t['spans_dropped_queue_full']:,}, "
                                   f"{t['spans_dropped_export_failed']:,}")
        fixed_lines.append(
            f"| {kind} | {fmt_us(statistics.median(x[0] for x in rs))} | {fmt_us(p99)} | "
            f"{p99 / base_p99:.2f}× | {statistics.median(x[2] for x in rs):,.0f} | "
            f"{sum(x[3] for x in rs)} | {spans} |")
    fixed_table = "\n".join(fixed_lines)
    print(fixed_table)

    report = f"""## Request ids, trace context and span export (`bench/operations.py`)

Latest run: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}. Machine: {machine()}.

Daemons with {workers} worker(s) pinned to core(s) {server_cores} serving one 1 KiB file; the
load on core(s) {wrk_cores}; medians.

**Cost** (wrk, closed loop): both daemons at once on the same server core(s), each loaded by
its own wrk (25 keep-alive connections) on the other core(s), {args.runs} rounds of
{args.cost_duration} s after a 2 s warm-up. The scheduler gives each daemon an equal share of
the server core, so the ratio of their req/s is the inverse ratio of their CPU per request,
taken at the same moments (this machine's speed drifts by tens of percent over minutes, which
runs one after the other cannot tell from a cost of a few percent: run one after the other,
two identical daemons came out 4.5 % apart).

{cost_table}

**A dead collector** (oha, open loop at {rate:,} req/s — a quarter of what the core served in the cost part —
{args.export_runs} runs per set-up alternating, {args.duration} s each after a 2 s warm-up, a
fresh daemon each run): every request sampled and exported
(`export_interval_ms = 1000`, `export_queue_size` 8192, batches of 512), to a collector that
refuses connections, one that accepts and never answers (each export waits its 5 s deadline),
and a live one.

{fixed_table}
"""
    if args.export_only:
        return
    results.update_section("operations", report, args.output)
    print(f"\nwritten to {os.path.relpath(args.output, ROOT)}", file=sys.stderr)


if __name__ == "__main__":
    main()
