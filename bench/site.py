#!/usr/bin/env python3
"""What the route features cost, and compression side by side with nginx.

One command:  python3 bench/site.py   (after a release build; installs nginx and wrk if missing,
as root)

Cases, each run five times per server, alternating, medians (wrk pinned to the other cores,
50 keep-alive connections):

1. **3 `headers.set`** — the daemon alone: a 1 KiB file through a route without header rules and
   through one with three `set` entries (the issue's goal: at most 3 % cost).
2. **1 KiB text, gzip on the fly** — the daemon with `compress = ["gzip"]` (level 6) against
   nginx with `gzip on; gzip_comp_level 6;` for the same `text/plain` file, `Accept-Encoding:
   gzip`.
3. **precompressed** — a 1 KiB `.css` with a `.gz` beside it: the daemon with
   `precompressed = ["gzip"]` against nginx with `gzip_static on` (`Accept-Encoding: gzip`); and
   the daemon serving the `.br` variant (`Accept-Encoding: br`; nginx has no `brotli_static`
   without a third-party module).

The section "site" of bench/RESULTS.md gets the tables.
"""

import argparse
import gzip
import os
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import results  # noqa: E402
from run import BIN, ROOT, Server, ensure_tools, fmt_us, free_port, machine, nginx_bin, run_wrk, sh  # noqa: E402

CONF = """
[server]
listen = "127.0.0.1:{port}"
threads = {workers}

[logging]
level = "warn"

[path_routes."127.0.0.1"."/plain/"]
path = "{www}"

[path_routes."127.0.0.1"."/headers/"]
path = "{www}"
headers = {{ set = {{ "Strict-Transport-Security" = "max-age=63072000", "X-Frame-Options" = "DENY", "X-Content-Type-Options" = "nosniff" }} }}

[path_routes."127.0.0.1"."/gzip/"]
path = "{www}"
compress = ["gzip"]
compress_min_size = 512

[path_routes."127.0.0.1"."/static/"]
path = "{www}"
precompressed = ["br", "gzip"]
"""

NGINX = """
worker_processes {workers};
worker_cpu_affinity {affinity};
daemon off;
master_process on;
pid {tmp}/nginx.pid;
error_log {tmp}/nginx-error.log warn;
events {{ worker_connections 16384; use epoll; multi_accept on; }}
http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    tcp_nodelay on;
    keepalive_requests 100000000;
    types {{ text/plain txt; text/css css; }}
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    server {{
        listen 127.0.0.1:{port} reuseport backlog=4096;
        location /gzip/ {{
            alias {www}/;
            gzip on;
            gzip_comp_level 6;
            gzip_min_length 512;
            gzip_types text/plain;
        }}
        location /static/ {{
            alias {www}/;
            gzip_static on;
        }}
    }}
}}
"""


def text(n):
    out = b""
    i = 0
    while len(out) < n:
        out += f"line {i}: the quick brown fox jumps over the lazy dog\n".encode()
        i += 1
    return out[:n]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", type=int, default=10)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--no-build", action="store_true")
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
    affinity = " ".join(format(1 << c, "b") for c in range(workers))

    tmp = tempfile.mkdtemp(prefix="zcs-site-")
    os.chmod(tmp, 0o755)  # nginx's workers run as another user
    www = os.path.join(tmp, "www")
    os.makedirs(www)
    with open(os.path.join(www, "1k.bin"), "wb") as f:
        f.write(os.urandom(1024))
    body = text(1024)
    with open(os.path.join(www, "1k.txt"), "wb") as f:
        f.write(body)
    with open(os.path.join(www, "1k.css"), "wb") as f:
        f.write(body)
    with open(os.path.join(www, "1k.css.gz"), "wb") as f:
        f.write(gzip.compress(body, 9))
    try:
        import brotli  # noqa: PLC0415
        br = brotli.compress(body, quality=11)
    except ImportError:
        br = subprocess.run(["brotli", "-c"], input=body, capture_output=True, check=True).stdout
    with open(os.path.join(www, "1k.css.br"), "wb") as f:
        f.write(br)
    port = free_port(18380)
    nport = free_port(port + 1)
    conf = os.path.join(tmp, "zcs.toml")
    with open(conf, "w") as f:
        f.write(CONF.format(port=port, workers=workers, www=www))
    with open(os.path.join(tmp, "nginx.conf"), "w") as f:
        f.write(NGINX.format(workers=workers, affinity=affinity, tmp=tmp, port=nport, www=www))
    ours = ["taskset", "-c", server_cores, BIN, "--config", conf]
    theirs = ["taskset", "-c", server_cores, nginx_bin(), "-p", tmp, "-c", os.path.join(tmp, "nginx.conf")]

    # (case, server, command, port, path, headers)
    cases = [
        ("1 KiB file, no header rules", "zerocopy-server", ours, port, "/plain/1k.bin", []),
        ("1 KiB file, 3 headers.set", "zerocopy-server", ours, port, "/headers/1k.bin", []),
        ("1 KiB text, gzip on the fly", "zerocopy-server", ours, port, "/gzip/1k.txt", ["Accept-Encoding: gzip"]),
        ("1 KiB text, gzip on the fly", "nginx", theirs, nport, "/gzip/1k.txt", ["Accept-Encoding: gzip"]),
        ("precompressed .gz (1 KiB css)", "zerocopy-server", ours, port, "/static/1k.css", ["Accept-Encoding: gzip"]),
        ("precompressed .gz (1 KiB css)", "nginx", theirs, nport, "/static/1k.css", ["Accept-Encoding: gzip"]),
        ("precompressed .br (1 KiB css)", "zerocopy-server", ours, port, "/static/1k.css", ["Accept-Encoding: br"]),
    ]
    samples = {(c[0], c[1]): [] for c in cases}
    for run in range(args.runs):
        order = cases if run % 2 == 0 else list(reversed(cases))
        for case, server, cmd, p, path, headers in order:
            with Server(server, cmd, p) as srv:
                try:
                    run_wrk(p, path, 50, headers, 2, wrk_cores, wrk_threads)
                    s = run_wrk(p, path, 50, headers, args.duration, wrk_cores, wrk_threads)
                except RuntimeError as e:
                    sys.exit(f"{case} / {server}: {e}\n{srv.log_tail()}")
                if s[3]:
                    sys.exit(f"{case} / {server}: {s[3]} errors")
                samples[(case, server)].append(s)
                print(f"{case:32} {server:16} run {run + 1}: {s[0]:>10.0f} req/s  p99 {fmt_us(s[2])}", file=sys.stderr)

    med = {k: statistics.median(x[0] for x in v) for k, v in samples.items()}
    base = {
        "1 KiB file, 3 headers.set": med[("1 KiB file, no header rules", "zerocopy-server")],
        "1 KiB text, gzip on the fly": med.get(("1 KiB text, gzip on the fly", "nginx")),
        "precompressed .gz (1 KiB css)": med.get(("precompressed .gz (1 KiB css)", "nginx")),
        "precompressed .br (1 KiB css)": med.get(("precompressed .gz (1 KiB css)", "nginx")),
    }
    lines = [
        "| case | server | req/s (median) | min–max | p50 | p99 | ratio |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for (case, server), s in samples.items():
        rps = [x[0] for x in s]
        b = base.get(case)
        if b and (case, server) != ("1 KiB text, gzip on the fly", "nginx") and server != "nginx":
            what = "to no rules" if case.startswith("1 KiB file") else "to nginx (.gz)" if ".br" in case else "to nginx"
            ratio = f"**{med[(case, server)] / b:.2f}×** {what}"
        else:
            ratio = "1.00×"
        lines.append(
            f"| {case} | {server} | {med[(case, server)]:,.0f} | {min(rps):,.0f}–{max(rps):,.0f} | "
            f"{fmt_us(statistics.median(x[1] for x in s))} | {fmt_us(statistics.median(x[2] for x in s))} | {ratio} |"
        )
    table = "\n".join(lines)
    print(table)
    report = f"""## Route features: header rules, compression, precompressed files (`bench/site.py`)

Latest run: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}. Machine: {machine()}.

Each server with {workers} worker(s) pinned to core(s) {server_cores}; wrk: {wrk_threads} thread(s) on
core(s) {wrk_cores}, 50 keep-alive connections, {args.duration} s runs after a 2 s warm-up,
{args.runs} runs per case alternating; medians. The text is 1 KiB of English-like lines
(gzip 6 makes about 300 bytes of it). nginx: `gzip on; gzip_comp_level 6` and `gzip_static on`;
nginx has no `brotli_static` without a third-party module, so the `.br` row is compared with
nginx's `.gz`.

{table}
"""
    results.update_section("site", report, args.output)
    print(f"\nwritten to {os.path.relpath(args.output, ROOT)}", file=sys.stderr)


if __name__ == "__main__":
    main()
