#!/usr/bin/env python3
"""What a full security policy costs: requests/s on a route with one against the same route
without.

One command:  python3 bench/policy.py   (after a release build; installs wrk if missing, as root)

The daemon serves one 1 KiB file through two routes of one config: `/plain/` with no policy and
`/policy/` with 10 CIDR rules (allowed and denied addresses, IPv4 and IPv6, the client's own
network last), a method list and a rate limit high enough never to trigger. wrk (pinned to the
other cores) runs each route five times, alternating; the section "policy" of bench/RESULTS.md
gets the medians and the ratio.
"""

import argparse
import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import results  # noqa: E402
from run import BIN, ROOT, Server, ensure_tools, fmt_us, free_port, machine, run_wrk, sh  # noqa: E402

CONF = """
[server]
listen = "127.0.0.1:{port}"
threads = {workers}

[logging]
level = "warn"

[path_routes."127.0.0.1"]
"/plain/" = {{ path = "{www}" }}

[path_routes."127.0.0.1"."/policy/"]
path = "{www}"

[path_routes."127.0.0.1"."/policy/".security]
allowed_methods = ["GET", "HEAD", "POST"]
# Above what wrk's one address sends in a run (the daemon restarts for each run), so it never
# triggers; every request still goes through the limiter.
rate_limit_requests_per_min = 4000000
denied_ips = ["10.0.0.0/8", "192.168.0.0/16", "2001:db8::/32", "fd00::/8", "203.0.113.7"]
allowed_ips = ["172.16.0.0/12", "198.51.100.0/24", "2001:db8:1::/48", "100.64.0.0/10", "127.0.0.0/8"]
"""


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", type=int, default=10, help="seconds per run (default 10)")
    ap.add_argument("--runs", type=int, default=5, help="runs per route (default 5: the runs are short and this machine is noisy)")
    ap.add_argument("--no-build", action="store_true", help="use the existing release binary")
    ap.add_argument("--output", default=os.path.join(ROOT, "bench", "RESULTS.md"))
    args = ap.parse_args()

    ensure_tools()
    if not args.no_build:
        sh(["cargo", "build", "--release", "--locked"], cwd=ROOT)
    ncpu = os.cpu_count() or 2
    workers = max(1, ncpu // 2)
    server_cores = ",".join(str(c) for c in range(workers))
    wrk_cores = ",".join(str(c) for c in range(workers, ncpu))
    wrk_threads = ncpu - workers

    tmp = tempfile.mkdtemp(prefix="zcs-policy-")
    www = os.path.join(tmp, "www")
    os.makedirs(www)
    with open(os.path.join(www, "1k.bin"), "wb") as f:
        f.write(os.urandom(1024))
    port = free_port(18280)
    conf = os.path.join(tmp, "zcs.toml")
    with open(conf, "w") as f:
        f.write(CONF.format(port=port, workers=workers, www=www))

    routes = {"no policy": "/plain/1k.bin", "full policy": "/policy/1k.bin"}
    samples = {name: [] for name in routes}
    for run in range(args.runs):
        order = list(routes) if run % 2 == 0 else list(reversed(routes))
        for name in order:
            # A fresh daemon per run: the rate-limit window starts empty.
            with Server("zerocopy-server", ["taskset", "-c", server_cores, BIN, "--config", conf], port) as srv:
                try:
                    run_wrk(port, routes[name], 50, [], 2, wrk_cores, wrk_threads)  # warm-up
                    s = run_wrk(port, routes[name], 50, [], args.duration, wrk_cores, wrk_threads)
                except RuntimeError as e:
                    sys.exit(f"{name}: {e}\nthe daemon's log:\n{srv.log_tail()}")
                if s[3]:
                    sys.exit(f"{name}: {s[3]} errors (the rate limit triggered?)")
                samples[name].append(s)
                print(f"{name:12} run {run + 1}: {s[0]:>10.0f} req/s  p50 {fmt_us(s[1])}  p99 {fmt_us(s[2])}", file=sys.stderr)

    med = {n: statistics.median(x[0] for x in s) for n, s in samples.items()}
    lines = [
        "| route | req/s (median) | min–max | p50 | p99 | ratio to no policy |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, s in samples.items():
        rps = [x[0] for x in s]
        ratio = med[name] / med["no policy"]
        lines.append(
            f"| {name} | {med[name]:,.0f} | {min(rps):,.0f}–{max(rps):,.0f} | "
            f"{fmt_us(statistics.median(x[1] for x in s))} | {fmt_us(statistics.median(x[2] for x in s))} | "
            f"{'**' if name != 'no policy' else ''}{ratio:.2f}×{'**' if name != 'no policy' else ''} |"
        )
    table = "\n".join(lines)
    print(table)
    report = f"""## Cost of a full security policy (`bench/policy.py`)

Latest run: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}. Machine: {machine()}.

One daemon ({workers} worker(s) pinned to core(s) {server_cores}), one 1 KiB file through two
routes: `/plain/` without policy, `/policy/` with 10 CIDR rules (5 denied, 5 allowed, IPv4 and
IPv6; the client's network is the last allowed one), `allowed_methods` and a rate limit that never
triggers (every request still goes through the shared limiter). wrk: {wrk_threads} thread(s) on
core(s) {wrk_cores}, 50 connections, keep-alive, {args.duration} s runs after a 2 s warm-up,
{args.runs} runs per route alternating; medians.

{table}
"""
    results.update_section("policy", report, args.output)
    print(f"\nwritten to {os.path.relpath(args.output, ROOT)}", file=sys.stderr)


if __name__ == "__main__":
    main()
