#!/usr/bin/env python3
"""Performance, round two: the table of the issue "the proxy ahead of nginx, new connections,
the tail, cold files", measured side by side with nginx in one run.

One command:  sudo python3 bench/round2.py   (after `cargo build --release --locked`; root to
drop the page cache for the cold-disk case and to raise the open-file limit)

Layout: each server under test (zerocopy-server with one worker, nginx with one worker process)
and its upstream (an nginx with one worker serving the same files) pinned to core 0; wrk
(`-t1 -c50`) or oha pinned to core 1. Every case runs three times per server, alternating, 10 s
after a 2 s warm-up; medians. Cases:

- 1 KiB file, keep-alive; and with a new client connection per request (`Connection: close`).
- proxy 1 KiB keep-alive, both keeping up to 64 idle upstream connections; and the daemon with
  its default pool (8 idle per upstream) against nginx's `keepalive 64`, with the upstream
  connections the daemon opened per 1,000 requests (from `proxyctl stats`).
- cold files: 20,000 distinct 4 KiB files requested in random order (a wrk Lua script), nginx
  with `open_file_cache` off (its default), the daemon with its file cache (16 MiB per worker:
  most requests miss it); with the page cache warm, and dropped before each run.
- p99 at a fixed rate: a quarter of nginx's 1 KiB keep-alive rate above, 50 connections, oha
  open loop with latency correction.
- resident memory per idle TLS keep-alive connection: 10,000 TLS connections, each with one
  request answered, then left idle (`bench/idle.py`'s method over TLS).

The tables go to stdout and to the section "round-two" of bench/RESULTS.md.
"""

import argparse
import json
import os
import random
import re
import resource
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import results  # noqa: E402
from idle import rss_kib  # noqa: E402
from run import (BIN, ROOT, Server, cpu_jiffies, ensure_tools, fmt_us, free_port, machine,  # noqa: E402
                 nginx_bin, oha_bin, run_fixed_rate, sh, to_us)

PROXYCTL = os.path.join(ROOT, "target", "release", "proxyctl")
SERVER_CORE, LOAD_CORE = "0", "1"
COLD_FILES = 20_000

UPSTREAM_CONF = """
worker_processes 1;
worker_cpu_affinity 1;
daemon off;
master_process on;
pid {tmp}/upstream.pid;
error_log {tmp}/upstream-error.log warn;
events {{ worker_connections 16384; use epoll; }}
http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    keepalive_timeout 65;
    keepalive_requests 100000000;
    default_type application/octet-stream;
    client_body_temp_path {tmp}/ubody;
    proxy_temp_path {tmp}/uproxy;
    fastcgi_temp_path {tmp}/ufastcgi;
    uwsgi_temp_path {tmp}/uuwsgi;
    scgi_temp_path {tmp}/uscgi;
    server {{
        listen 127.0.0.1:{port} reuseport backlog=4096;
        root {www};
    }}
}}
"""

NGINX_CONF = """
worker_processes 1;
worker_cpu_affinity 1;
worker_rlimit_nofile 30000;
daemon off;
master_process on;
pid {tmp}/nginx.pid;
error_log {tmp}/nginx-error.log warn;
events {{ worker_connections 30000; use epoll; multi_accept on; }}
http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    tcp_nodelay on;
    keepalive_timeout 300;
    keepalive_requests 100000000;
    default_type application/octet-stream;
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    upstream up {{
        server 127.0.0.1:{upstream};
        keepalive 64;
    }}
    server {{
        listen 127.0.0.1:{port} reuseport backlog=4096;
        root {www};
        location /p/ {{
            proxy_pass http://up/;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
        }}
        location /p8/ {{
            proxy_pass http://up/;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
        }}
    }}
    server {{
        listen 127.0.0.1:{tls_port} ssl backlog=4096;
        root {www};
        ssl_certificate {tmp}/cert.pem;
        ssl_certificate_key {tmp}/key.pem;
        ssl_protocols TLSv1.2 TLSv1.3;
        ssl_session_cache off;
        ssl_session_tickets off;
    }}
}}
"""

DAEMON_CONF = """
[server]
listen = "127.0.0.1:{port}"
threads = 1

[logging]
level = "warn"

[admin]
socket = "{tmp}/admin.sock"

[security]
client_header_timeout_secs = 300

[path_routes."127.0.0.1"]
"/" = {{ path = "{www}" }}
# As nginx's `keepalive 64`.
"/p/" = {{ type = "Proxy", url = "http://127.0.0.1:{upstream}/", security = {{ max_idle_connections_per_host = 64 }} }}
# The default pool: 8 idle connections per upstream.
"/p8/" = {{ type = "Proxy", url = "http://127.0.0.1:{upstream}/" }}
"""

DAEMON_TLS_CONF = """
[server]
listen = "127.0.0.1:{port}"
threads = 1

[logging]
level = "warn"

[admin]
socket = "{tmp}/admin-tls.sock"

[security]
client_header_timeout_secs = 300

[tls]
cert_path = "{tmp}/cert.pem"
key_path = "{tmp}/key.pem"

[path_routes."127.0.0.1"]
"/" = {{ path = "{www}" }}
"""

COLD_LUA = """
math.randomseed(%d)
request = function()
  return wrk.format("GET", string.format("/cold/%%05d.bin", math.random(0, %d)))
end
"""

# (name, path, extra wrk args, before each run)
CASES = [
    ("1 KiB keep-alive", "/1k.bin", [], None),
    ("1 KiB, a new client connection per request", "/1k.bin", ["-H", "Connection: close"], None),
    ("proxy 1 KiB keep-alive, 64 idle upstream connections each", "/p/1k.bin", [], None),
    ("proxy 1 KiB keep-alive, the daemon's default pool (8 idle) vs nginx `keepalive 64`", "/p8/1k.bin", [], None),
    ("cold files: 20,000 distinct 4 KiB files, random order, page cache warm", "/", ["-s", "{lua}"], None),
    ("cold files: 20,000 distinct 4 KiB files, random order, page cache dropped before each run", "/",
     ["-s", "{lua}"], "drop"),
]


def process_ticks(pid):
    """User and system clock ticks used so far by a process (all its threads) and by its
    children (nginx's workers under its master), from /proc."""
    ticks, todo, seen = 0, [pid], set()
    while todo:
        p = todo.pop()
        if p in seen:
            continue
        seen.add(p)
        try:
            with open(f"/proc/{p}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            ticks += int(fields[11]) + int(fields[12])  # utime, stime
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children") as f:
                    todo.extend(int(c) for c in f.read().split())
        except (OSError, ValueError, IndexError):
            pass
    return ticks


def wrk(port, path, extra, duration, server_cores, pids=()):
    """One wrk run; with pids (server, upstream) also each process's own CPU per request."""
    cmd = ["taskset", "-c", LOAD_CORE, "wrk", "-t1", "-c50", f"-d{duration}s", "--latency", *extra,
           f"http://127.0.0.1:{port}{path}"]
    before = cpu_jiffies(server_cores)
    own_before = [process_ticks(p) for p in pids]
    run = subprocess.run(cmd, capture_output=True, text=True)
    after = cpu_jiffies(server_cores)
    own_after = [process_ticks(p) for p in pids]
    out = run.stdout
    if run.returncode != 0 or "Requests/sec" not in out:
        raise RuntimeError(f"wrk failed ({run.returncode}): {out}{run.stderr}")
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    p50 = to_us(re.search(r"\s50%\s+(\S+)", out).group(1))
    p99 = to_us(re.search(r"\s99%\s+(\S+)", out).group(1))
    errors = 0
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if m:
        errors += int(m.group(1))
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if m:
        errors += int(m.group(1)) + int(m.group(3)) + int(m.group(4))
        if "Connection: close" not in extra:
            errors += int(m.group(2))
    requests = int(re.search(r"(\d+) requests in", out).group(1))
    busy = after[0] - before[0]
    per_request = 1e6 / os.sysconf("SC_CLK_TCK") / max(requests, 1)
    own = [(a - b) * per_request for a, b in zip(own_after, own_before)]
    return dict(rps=rps, p50=p50, p99=p99, errors=errors, cpu_us=busy * per_request, own_us=own)


def upstream_counts(tmp):
    out = subprocess.run([PROXYCTL, "--socket", f"{tmp}/admin.sock", "stats", "--json"],
                         capture_output=True, text=True)
    if out.returncode != 0:
        return None
    ups = json.loads(out.stdout).get("upstreams", [])
    return {u["upstream"]: (u["connects"], u["reuses"]) for u in ups}


def opened_per_1000(before, after):
    if before is None or after is None:
        return None
    connects = sum(a[0] for a in after.values()) - sum(b[0] for b in before.values())
    reuses = sum(a[1] for a in after.values()) - sum(b[1] for b in before.values())
    return connects * 1000 / max(connects + reuses, 1)


def drop_page_cache():
    subprocess.run(["sync"], check=True)
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write("3\n")


def tls_idle(port, n):
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    conns = []
    request = b"GET /1k.bin HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    for _ in range(n):
        s = ctx.wrap_socket(socket.create_connection(("127.0.0.1", port)))
        s.sendall(request)
        got = b""
        while b"\r\n\r\n" not in got or len(got) < got.index(b"\r\n\r\n") + 4 + 1024:
            chunk = s.recv(65536)
            if not chunk:
                raise RuntimeError("the server closed a connection")
            got += chunk
        conns.append(s)
    return conns


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--duration", type=int, default=10)
    ap.add_argument("--tls-connections", type=int, default=10_000)
    ap.add_argument("--only", default="", help="run only the cases whose name contains this (\"memory per idle TLS "
                    "connection\", \"p99 at a fixed rate\" — which needs \"1 KiB keep-alive\" — or a case's)")
    ap.add_argument("--no-write", action="store_true", help="print, do not update bench/RESULTS.md")
    args = ap.parse_args()
    ensure_tools()
    for b in (BIN, PROXYCTL):
        if not os.path.exists(b):
            sys.exit(f"{b} is missing: cargo build --release --locked")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

    tmp = tempfile.mkdtemp(prefix="zcs-round2-")
    www = os.path.join(tmp, "www")
    os.makedirs(os.path.join(www, "cold"))
    with open(os.path.join(www, "1k.bin"), "wb") as f:
        f.write(os.urandom(1024))
    for i in range(COLD_FILES):
        with open(os.path.join(www, "cold", f"{i:05d}.bin"), "wb") as f:
            f.write(os.urandom(4096))
    for d in ("body", "proxy", "fastcgi", "uwsgi", "scgi", "ubody", "uproxy", "ufastcgi", "uuwsgi", "uscgi"):
        os.makedirs(os.path.join(tmp, d))
    os.chmod(tmp, 0o755)
    sh(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
        "-keyout", f"{tmp}/key.pem", "-out", f"{tmp}/cert.pem", "-days", "2", "-subj", "/CN=127.0.0.1"],
       capture_output=True)
    lua = os.path.join(tmp, "cold.lua")
    with open(lua, "w") as f:
        f.write(COLD_LUA % (random.randrange(1 << 30), COLD_FILES - 1))
    ports = dict(upstream=free_port(18600), ours=free_port(18610), theirs=free_port(18620),
                 ours_tls=free_port(18630), theirs_tls=free_port(18640))
    with open(f"{tmp}/upstream.conf", "w") as f:
        f.write(UPSTREAM_CONF.format(tmp=tmp, port=ports["upstream"], www=www))
    with open(f"{tmp}/nginx.conf", "w") as f:
        f.write(NGINX_CONF.format(tmp=tmp, port=ports["theirs"], tls_port=ports["theirs_tls"],
                                  upstream=ports["upstream"], www=www))
    with open(f"{tmp}/zcs.toml", "w") as f:
        f.write(DAEMON_CONF.format(tmp=tmp, port=ports["ours"], upstream=ports["upstream"], www=www))
    with open(f"{tmp}/zcs-tls.toml", "w") as f:
        f.write(DAEMON_TLS_CONF.format(tmp=tmp, port=ports["ours_tls"], www=www))
    pin = ["taskset", "-c", SERVER_CORE]
    servers = {
        "zerocopy-server": (pin + [BIN, "--config", f"{tmp}/zcs.toml"], ports["ours"]),
        "nginx": (pin + [nginx_bin(), "-p", tmp, "-c", f"{tmp}/nginx.conf"], ports["theirs"]),
    }
    upstream_cmd = pin + [nginx_bin(), "-p", tmp, "-c", f"{tmp}/upstream.conf"]

    def want(name):
        return not args.only or args.only in name

    rows = []
    med = {}
    with Server("upstream", upstream_cmd, ports["upstream"]) as upstream:
        for name, path, extra, before_run in CASES:
            if not want(name):
                continue
            extra = [a.replace("{lua}", lua) for a in extra]
            samples = {s: [] for s in servers}
            for run in range(args.runs):
                order = list(servers) if run % 2 == 0 else list(reversed(servers))
                for s in order:
                    cmd, port = servers[s]
                    with Server(s, cmd, port) as srv:
                        try:
                            if before_run == "drop":
                                drop_page_cache()
                            else:
                                wrk(port, path, extra, 2, SERVER_CORE)
                            counts = upstream_counts(tmp) if s == "zerocopy-server" else None
                            pids = (srv.proc.pid, upstream.proc.pid) if path.startswith("/p") else (srv.proc.pid,)
                            r = wrk(port, path, extra, args.duration, SERVER_CORE, pids)
                            if counts is not None:
                                r["opened"] = opened_per_1000(counts, upstream_counts(tmp))
                        except (OSError, RuntimeError) as e:
                            sys.exit(f"{s}: {name}: {e}\nits log:\n{srv.log_tail()}")
                    samples[s].append(r)
                    opened = r.get("opened")
                    print(f"{name[:60]:60} {s:16} run {run + 1}: {r['rps']:>10,.0f} req/s p99 {fmt_us(r['p99'])}"
                          + (f", {opened:.2f} upstream connections opened per 1,000 requests" if opened is not None
                             and path.startswith("/p") else ""), file=sys.stderr)
            m = {s: statistics.median(x["rps"] for x in v) for s, v in samples.items()}
            med[name] = m
            for s, v in samples.items():
                opened = [x["opened"] for x in v if x.get("opened") is not None]
                rows.append(
                    f"| {name} | {s} | {m[s]:,.0f} | {min(x['rps'] for x in v):,.0f}–{max(x['rps'] for x in v):,.0f} | "
                    f"{fmt_us(statistics.median(x['p50'] for x in v))} | {fmt_us(statistics.median(x['p99'] for x in v))} | "
                    f"{sum(x['errors'] for x in v)} | {statistics.median(x['cpu_us'] for x in v):.1f} µs | "
                    f"{statistics.median(x['own_us'][0] for x in v):.1f} µs | "
                    + (f"{statistics.median(x['own_us'][1] for x in v):.1f} µs" if path.startswith("/p") else "")
                    + " | "
                    + (f"{statistics.median(opened):.2f}" if opened and path.startswith("/p") else "")
                    + f" | {'**' if s != 'nginx' else ''}{m[s] / m['nginx']:.2f}×{'**' if s != 'nginx' else ''} |")

        # p99 at a fixed rate: a quarter of nginx's 1 KiB keep-alive rate.
        fixed = []
        base = med.get("1 KiB keep-alive", {}).get("nginx")
        if base and want("p99 at a fixed rate"):
            rate = int(base / 4)
            samples = {s: [] for s in servers}
            for run in range(args.runs):
                order = list(servers) if run % 2 == 0 else list(reversed(servers))
                for s in order:
                    cmd, port = servers[s]
                    with Server(s, cmd, port) as srv:
                        wrk(port, "/1k.bin", [], 2, SERVER_CORE)
                        p50, p99, done, bad = run_fixed_rate(port, "/1k.bin", rate, args.duration, LOAD_CORE)
                    samples[s].append((p50, p99, done, bad))
                    print(f"fixed rate {rate}/s {s:16} run {run + 1}: p50 {fmt_us(p50)} p99 {fmt_us(p99)}", file=sys.stderr)
            p99n = statistics.median(x[1] for x in samples["nginx"])
            for s, v in samples.items():
                p99 = statistics.median(x[1] for x in v)
                fixed.append(f"| {s} | {fmt_us(statistics.median(x[0] for x in v))} | {fmt_us(p99)} | "
                             f"{statistics.median(x[2] for x in v):,.0f} | {sum(x[3] for x in v)} | "
                             f"{'**' if s != 'nginx' else ''}{p99 / p99n:.2f}×{'**' if s != 'nginx' else ''} |")

    # Memory per idle TLS connection, each server fresh.
    tls_rows = []
    if want("memory per idle TLS connection") and args.tls_connections > 0:
        tls_servers = {
            "zerocopy-server": (pin + [BIN, "--config", f"{tmp}/zcs-tls.toml"], ports["ours_tls"]),
            "nginx": (pin + [nginx_bin(), "-p", tmp, "-c", f"{tmp}/nginx.conf"], ports["theirs_tls"]),
        }
        per = {}
        for s, (cmd, port) in tls_servers.items():
            with Server(s, cmd, port) as srv:
                time.sleep(0.5)
                before = rss_kib(srv.proc.pid)
                conns = tls_idle(port, args.tls_connections)
                time.sleep(1.0)
                after = rss_kib(srv.proc.pid)
                for c in conns:
                    c.close()
            per[s] = (before, after, (after - before) * 1024 / args.tls_connections)
            print(f"TLS idle {s:16}: RSS {before:,} → {after:,} KiB: {per[s][2]:,.0f} bytes each", file=sys.stderr)
        for s, (before, after, each) in per.items():
            tls_rows.append(f"| {s} | {each:,.0f} | {before:,} → {after:,} KiB | "
                            f"{'**' if s != 'nginx' else ''}{each / per['nginx'][2]:.2f}×{'**' if s != 'nginx' else ''} |")

    body = [
        "## Performance, round two (`bench/round2.py`)",
        "",
        f"Latest run: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}.",
        "",
        f"- Machine: {machine()}.",
        "- Layout: each server under test (zerocopy-server, 1 worker; nginx, 1 worker process) and the",
        "  upstream of the proxy cases (an nginx, 1 worker, the same files) pinned to core 0; `wrk -t1",
        f"  -c50` (or oha) pinned to core 1. {args.runs} runs per case and server, alternating, "
        f"{args.duration} s after a 2 s warm-up; medians.",
        "- nginx: sendfile, tcp_nopush, access_log off, `keepalive 64` to the upstream, no",
        "  `open_file_cache`. zerocopy-server: its defaults (file cache on: 16 MiB per worker);",
        "  `/p/` keeps up to 64 idle upstream connections, `/p8/` the default 8.",
        "- CPU per request: core 0's busy time over the run (the server *and* the upstream, with the",
        "  kernel's interrupt work) divided by the requests done; then the user and system time of",
        "  the server's process alone, and of the upstream's, per request (from /proc: what each",
        "  process spent itself, without the interrupt work the kernel does outside them).",
        "",
        "| case | server | req/s (median) | min–max | p50 | p99 | errors | CPU per request (core 0) | server process | upstream process | upstream connections opened per 1,000 requests | ratio to nginx |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        *rows,
    ]
    if fixed:
        body += [
            "",
            f"**p99 at a fixed rate** — 1 KiB file, a quarter of nginx's keep-alive rate above, 50 connections, "
            f"oha open loop with latency correction, {args.duration} s, medians of {args.runs}.",
            "",
            "| server | p50 | p99 | req/s done | errors | p99 ratio to nginx |",
            "|---|---:|---:|---:|---:|---:|",
            *fixed,
        ]
    if tls_rows:
        body += [
            "",
            f"**Memory per idle TLS connection** — {args.tls_connections:,} TLS keep-alive connections (Python's "
            "ssl client: TLS 1.3, ECDSA P-256), one request answered on each, then idle; growth of the "
            "server's resident memory (every process of it) divided by the connections; one run each.",
            "",
            "| server | bytes per idle TLS connection | RSS before → with the connections | ratio to nginx |",
            "|---|---:|---:|---:|",
            *tls_rows,
        ]
    text = "\n".join(body)
    print(text)
    if not args.no_write:
        results.update_section("round-two", text)


if __name__ == "__main__":
    main()
