#!/usr/bin/env python3
"""What logging and metrics cost: requests/s with the access log on against off, and with the
metrics read every second against never.

One command:  python3 bench/observability.py   (after a release build; installs wrk if missing)

The daemon serves one 1 KiB file (keep-alive, wrk pinned to the other cores) in four set-ups,
a fresh daemon for every run: no access log and nobody reading metrics (the baseline); the
access log in `combined` format, then in `json`, written to a file; and the baseline with a
Prometheus scrape of `/metrics` every second (the same sums `proxyctl stats` reads). Five runs
each, alternating; the section "observability" of bench/RESULTS.md gets the medians and ratios.
"""

import argparse
import glob
import json
import os
import subprocess
import socket
import statistics
import sys
import tempfile
import threading
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
{logging}

[admin]
socket = "{tmp}/admin.sock"
{admin}

[path_routes."127.0.0.1"]
"/files/" = {{ path = "{www}" }}
"""

SETUPS = {
    "baseline": ("", ""),
    "access log (combined)": ('access_log = "{tmp}/access.log"\naccess_log_format = "combined"', ""),
    "access log (json)": ('access_log = "{tmp}/access.log"\naccess_log_format = "json"', ""),
    "metrics read every second": ("", 'metrics_listen = "127.0.0.1:{mport}"'),
}


def scrape(mport):
    with socket.create_connection(("127.0.0.1", mport), timeout=5) as s:
        s.sendall(b"GET /metrics HTTP/1.1\r\nHost: m\r\n\r\n")
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    return data.startswith(b"HTTP/1.1 200") and b"zerocopy_requests_total" in data


def scrape_every_second(mport, stop, counts):
    while not stop.wait(1.0):
        try:
            if scrape(mport):
                counts[0] += 1
        except OSError:
            pass


def cpu_secs(pid):
    """User and system CPU time of a process so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def scrape_cost_us(pid, mport, n=300):
    """The daemon's CPU time per scrape, in µs (no other load)."""
    before = cpu_secs(pid)
    for _ in range(n):
        scrape(mport)
    return (cpu_secs(pid) - before) / n * 1e6


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", type=int, default=10, help="seconds per run (default 10)")
    ap.add_argument("--runs", type=int, default=5, help="runs per set-up (default 5)")
    ap.add_argument("--no-build", action="store_true", help="use the existing release binary")
    ap.add_argument("--output", default=os.path.join(ROOT, "bench", "RESULTS.md"))
    ap.add_argument("--setups", help="only the set-ups whose names contain this text (and the baseline); the results file is not written")
    args = ap.parse_args()
    setups = {n: v for n, v in SETUPS.items() if not args.setups or n == "baseline" or args.setups in n}

    ensure_tools()
    if not args.no_build:
        sh(["cargo", "build", "--release", "--locked", "--workspace"], cwd=ROOT)
    ncpu = os.cpu_count() or 2
    workers = max(1, ncpu // 2)
    server_cores = ",".join(str(c) for c in range(workers))
    wrk_cores = ",".join(str(c) for c in range(workers, ncpu))
    wrk_threads = ncpu - workers

    tmp = tempfile.mkdtemp(prefix="zcs-observability-")
    www = os.path.join(tmp, "www")
    os.makedirs(www)
    with open(os.path.join(www, "1k.bin"), "wb") as f:
        f.write(os.urandom(1024))
    port = free_port(18380)
    mport = free_port(18390)

    samples = {name: [] for name in setups}
    access_lines = {}
    scrape_costs = []
    for run in range(args.runs):
        order = list(setups) if run % 2 == 0 else list(reversed(setups))
        for name in order:
            logging, admin = setups[name]
            conf = os.path.join(tmp, "zcs.toml")
            log = os.path.join(tmp, "access.log")
            for old in glob.glob(log + "*"):
                os.remove(old)
            with open(conf, "w") as f:
                f.write(CONF.format(port=port, workers=workers, www=www, tmp=tmp,
                                    logging=logging.format(tmp=tmp), admin=admin.format(mport=mport)))
            with Server("zerocopy-server", ["taskset", "-c", server_cores, BIN, "--config", conf], port) as srv:
                stop, scraped = threading.Event(), [0]
                scraper = None
                try:
                    run_wrk(port, "/files/1k.bin", 50, [], 2, wrk_cores, wrk_threads)  # warm-up
                    if admin:
                        scraper = threading.Thread(target=scrape_every_second, args=(mport, stop, scraped))
                        scraper.start()
                    s = run_wrk(port, "/files/1k.bin", 50, [], args.duration, wrk_cores, wrk_threads)
                except RuntimeError as e:
                    sys.exit(f"{name}: {e}\nthe daemon's log:\n{srv.log_tail()}")
                finally:
                    stop.set()
                    if scraper:
                        scraper.join()
                if admin and scraped[0] < args.duration - 1:
                    sys.exit(f"{name}: only {scraped[0]} scrapes succeeded")
                if admin:
                    scrape_costs.append(scrape_cost_us(srv.proc.pid, mport))
                samples[name].append(s)
                if logging:
                    time.sleep(1.5)  # the logger writes what it buffered
                    stats = json.loads(subprocess.run(
                        [os.path.join(os.path.dirname(BIN), "proxyctl"), "--socket", f"{tmp}/admin.sock", "stats", "--json"],
                        capture_output=True, text=True, check=True).stdout)
                    # Rotated files (max_log_size) count too.
                    written = 0
                    for path in glob.glob(log + "*"):
                        with open(path, "rb") as f:
                            written += sum(1 for _ in f)
                    access_lines[name] = (written, sum(r["requests"] for r in stats["routes"]),
                                          stats["log_lines_dropped"])
            lines_note = ""
            if name in access_lines:
                lines_note = "  access log: {:,} lines, {:,} requests, {:,} dropped".format(*access_lines[name])
            print(f"{name:26} run {run + 1}: {s[0]:>10.0f} req/s  p50 {fmt_us(s[1])}  p99 {fmt_us(s[2])}{lines_note}", file=sys.stderr)

    med = {n: statistics.median(x[0] for x in s) for n, s in samples.items()}
    lines = [
        "| set-up | req/s (median) | min–max | p50 | p99 | ratio to baseline |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, s in samples.items():
        rps = [x[0] for x in s]
        ratio = med[name] / med["baseline"]
        bold = "**" if name != "baseline" else ""
        lines.append(
            f"| {name} | {med[name]:,.0f} | {min(rps):,.0f}–{max(rps):,.0f} | "
            f"{fmt_us(statistics.median(x[1] for x in s))} | {fmt_us(statistics.median(x[2] for x in s))} | "
            f"{bold}{ratio:.2f}×{bold} |"
        )
    table = "\n".join(lines)
    print(table)
    written = "; ".join(f"{n}: {c:,} lines for {r:,} requests, {d:,} dropped"
                        for n, (c, r, d) in access_lines.items())
    report = f"""## Cost of the access log and of reading metrics (`bench/observability.py`)

Latest run: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}. Machine: {machine()}.

One daemon ({workers} worker(s) pinned to core(s) {server_cores}) serving one 1 KiB file; wrk:
{wrk_threads} thread(s) on core(s) {wrk_cores}, 50 connections, keep-alive, {args.duration} s runs
after a 2 s warm-up, {args.runs} runs per set-up alternating, a fresh daemon each run; medians.
The access log goes to a file on the same disk (`flush_interval_ms` 1000, rotated at the default
100 MB); "metrics read every
second" scrapes `/metrics` once a second during the run (counters are always kept; reading them
is the only extra work). The last run's access logs: {written}. Measured apart, without load:
one scrape costs the daemon {statistics.median(scrape_costs) if scrape_costs else 0:.0f} µs of CPU (median of {len(scrape_costs)} × 300
scrapes), so a scrape a second is about {statistics.median(scrape_costs) / 1e4 if scrape_costs else 0:.3f} % of one core.

{table}
"""
    if args.setups:
        return
    results.update_section("observability", report, args.output)
    print(f"\nwritten to {os.path.relpath(args.output, ROOT)}", file=sys.stderr)


if __name__ == "__main__":
    main()
