#!/usr/bin/env python3
"""Memory per idle keep-alive connection: zerocopy-server against nginx.

One command:  python3 bench/idle.py   (after a release build; nginx from Debian, as bench/run.py)

Each server (one worker, pinned to core 0) starts fresh; a client opens N connections (10,000
by default), sends one request on each and reads the response, then leaves them all open and
idle. The growth of the server's resident memory (VmRSS of every process of the server, so
nginx's master and worker) divided by N is the memory per idle connection; kernel socket
buffers are not in it, for either server. Three runs each, alternating; the section
"idle-connections" of bench/RESULTS.md gets the medians.
"""

import argparse
import os
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import results  # noqa: E402
from run import BIN, ROOT, Server, ensure_tools, free_port, machine, nginx_bin, sh  # noqa: E402

EXTRA = os.environ.get("ZCS_IDLE_ARGS", "").split()

DAEMON_CONF = """
[server]
listen = "127.0.0.1:{port}"
threads = 1

[logging]
level = "warn"

[security]
client_header_timeout_secs = 300

[path_routes."127.0.0.1"]
"/" = {{ path = "{www}" }}
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
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        root {www};
    }}
}}
"""


def rss_kib(pid):
    """VmRSS of `pid` and its children, in KiB."""
    pids = [pid]
    kids = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()
    pids += [int(k) for k in kids]
    total = 0
    for p in pids:
        try:
            with open(f"/proc/{p}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
        except FileNotFoundError:
            pass
    return total


def open_idle(port, n):
    conns = []
    request = b"GET /1k.bin HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", port))
        s.sendall(request)
        got = b""
        while b"\r\n\r\n" not in got or len(got) < got.index(b"\r\n\r\n") + 4 + 1024:
            chunk = s.recv(65536)
            if not chunk:
                raise RuntimeError("the server closed a connection")
            got += chunk
        conns.append(s)
    return conns


def measure(srv, port, n):
    time.sleep(0.5)
    before = rss_kib(srv.proc.pid)
    conns = open_idle(port, n)
    time.sleep(1.0)
    after = rss_kib(srv.proc.pid)
    alive = srv.proc.poll() is None
    for c in conns:
        c.close()
    if not alive:
        raise RuntimeError("the server exited")
    return before, after, (after - before) * 1024 / n


def run_all(runs, connections):
    """Measures both servers `runs` times, alternating; returns {server: [(before, after, bytes per connection)]}."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = connections + 100
    if hard < need:
        sys.exit(f"the open-file limit ({hard}) is below {need}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

    tmp = tempfile.mkdtemp(prefix="zcs-idle-")
    www = os.path.join(tmp, "www")
    os.makedirs(www)
    with open(os.path.join(www, "1k.bin"), "wb") as f:
        f.write(os.urandom(1024))
    for d in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
        os.makedirs(os.path.join(tmp, d))
    os.chmod(tmp, 0o755)
    ours, theirs = free_port(18480), free_port(18490)
    with open(os.path.join(tmp, "zcs.toml"), "w") as f:
        f.write(DAEMON_CONF.format(port=ours, www=www))
    with open(os.path.join(tmp, "nginx.conf"), "w") as f:
        f.write(NGINX_CONF.format(tmp=tmp, port=theirs, www=www))
    servers = {
        "zerocopy-server": (["taskset", "-c", "0", BIN, "--config", os.path.join(tmp, "zcs.toml")] + EXTRA, ours),
        "nginx": (["taskset", "-c", "0", nginx_bin(), "-p", tmp, "-c", os.path.join(tmp, "nginx.conf")], theirs),
    }
    samples = {name: [] for name in servers}
    for run in range(runs):
        order = list(servers) if run % 2 == 0 else list(reversed(servers))
        for name in order:
            cmd, port = servers[name]
            with Server(name, cmd, port) as srv:
                try:
                    s = measure(srv, port, connections)
                except (OSError, RuntimeError) as e:
                    sys.exit(f"{name}: {e}\nits log:\n{srv.log_tail()}")
            samples[name].append(s)
            print(f"{name:16} run {run + 1}: RSS {s[0]:,} KiB → {s[1]:,} KiB with {connections:,} idle "
                  f"connections: {s[2]:,.0f} bytes each", file=sys.stderr)
    return samples


def report_table(samples):
    med = {n: statistics.median(x[2] for x in s) for n, s in samples.items()}
    lines = [
        "| server | bytes per idle connection (median) | min–max | RSS before → with the connections (median) | ratio to nginx |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, s in samples.items():
        per = [x[2] for x in s]
        bold = "**" if name != "nginx" else ""
        lines.append(
            f"| {name} | {med[name]:,.0f} | {min(per):,.0f}–{max(per):,.0f} | "
            f"{statistics.median(x[0] for x in s):,.0f} → {statistics.median(x[1] for x in s):,.0f} KiB | "
            f"{bold}{med[name] / med['nginx']:.2f}×{bold} |"
        )
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--connections", type=int, default=10_000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--no-build", action="store_true", help="use the existing release binary")
    ap.add_argument("--output", default=os.path.join(ROOT, "bench", "RESULTS.md"))
    args = ap.parse_args()

    ensure_tools()
    if not args.no_build:
        sh(["cargo", "build", "--release", "--locked"], cwd=ROOT)
    table = report_table(run_all(args.runs, args.connections))
    print(table)
    report = f"""## Memory per idle keep-alive connection (`bench/idle.py`)

Latest run: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}. Machine: {machine()}.

One worker each, pinned to core 0; {args.connections:,} connections, each after one 1 KiB
request, left open and idle; the growth of resident memory (all of the server's processes)
per connection; {args.runs} runs each, alternating, a fresh server each run; medians. Lower is
better.

{table}
"""
    results.update_section("idle-connections", report, args.output)
    print(f"\nwritten to {os.path.relpath(args.output, ROOT)}", file=sys.stderr)


if __name__ == "__main__":
    main()
