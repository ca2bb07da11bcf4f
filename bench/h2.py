#!/usr/bin/env python3
"""HTTP/2 side by side: zerocopy-server against nginx (`http2 on`), h2load as the client.

One command:  sudo python3 bench/h2.py   (root only to apt-get nginx and nghttp2-client when
missing)

Both servers: one worker pinned to core 0, TLS with the same ECDSA P-256 certificate, ALPN h2.
h2load runs pinned to core 1. The proxy case's upstream (nginx over HTTP/1.1, 64 idle
connections kept by both) shares core 0 with the server under test. Cases:

- 1 KiB file, 100 streams at once over 10 connections (`-c 10 -m 10`);
- 1 MiB file, 10 connections, 1 stream each;
- proxy 1 KiB (h2 client -> HTTP/1.1 upstream), `-c 10 -m 10`; nginx is told to send the
  forwarding fields the daemon sends (`X-Forwarded-For`, `-Proto`, `-Host`, `Forwarded`), so
  both do the same work.

Each case runs three times per server, alternating; the table reports the median requests/s
(min-max), the ratio of the medians, and core 0's busy time per request (the server's CPU cost,
with the upstream's in the proxy case). Results go to stdout and bench/RESULTS-h2.md.
Both servers run with the glibc tunable the systemd unit sets (`rep movsb` off below 4 MiB:
slow on AMD Zen with glibc before 2.39; see the README's "Running as a service").
`H2_BENCH_ONLY=proxy` (any part of a case's name) runs only the matching cases (printed, not
written to the results file).
"""

import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from run import cpu_jiffies, free_port, machine, wait_port  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, "target", "release", "zerocopy-server")
SERVER_CORE, CLIENT_CORE = "0", "1"
# What systemd/zerocopy-server.service sets, for both servers.
TUNABLES = "glibc.cpu.x86_rep_movsb_threshold=4194304"

# (name, path, h2load args, requests)
CASES = [
    ("1 KiB file, 10 connections x 10 streams", "/1k.bin", ["-c", "10", "-m", "10"], 200_000),
    ("1 MiB file, 10 connections", "/1m.bin", ["-c", "10", "-m", "1"], 4_000),
    ("proxy 1 KiB (h2 -> HTTP/1.1 upstream), 10 x 10", "/p/1k.bin", ["-c", "10", "-m", "10"], 100_000),
]

NGINX_CONF = """
worker_processes 1;
worker_cpu_affinity 1;
daemon off;
pid {tmp}/nginx.pid;
error_log {tmp}/nginx-error.log warn;
events {{ worker_connections 16384; use epoll; }}
http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    tcp_nodelay on;
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
        listen 127.0.0.1:{port} ssl http2 reuseport backlog=4096;
        root {www};
        ssl_certificate {tmp}/cert.pem;
        ssl_certificate_key {tmp}/key.pem;
        location /p/ {{
            proxy_pass http://up/;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto $scheme;
            proxy_set_header X-Forwarded-Host $host;
            proxy_set_header Forwarded "for=$remote_addr;proto=$scheme;host=$host";
        }}
    }}
}}
"""

UPSTREAM_CONF = """
worker_processes 1;
worker_cpu_affinity 1;
daemon off;
pid {tmp}/upstream.pid;
error_log {tmp}/upstream-error.log warn;
events {{ worker_connections 16384; use epoll; }}
http {{
    access_log off;
    sendfile on;
    keepalive_requests 100000000;
    default_type application/octet-stream;
    client_body_temp_path {tmp}/ubody;
    proxy_temp_path {tmp}/uproxy;
    fastcgi_temp_path {tmp}/ufastcgi;
    uwsgi_temp_path {tmp}/uuwsgi;
    scgi_temp_path {tmp}/uscgi;
    server {{
        listen 127.0.0.1:{upstream} reuseport backlog=4096;
        root {www};
    }}
}}
"""

DAEMON_CONF = """
[server]
listen = "127.0.0.1:{port}"
threads = 1

[logging]
level = "warn"

[tls]
cert_path = "{tmp}/cert.pem"
key_path = "{tmp}/key.pem"

[http2]
max_requests_per_connection = 100000000

[path_routes."127.0.0.1"]
"/" = {{ path = "{www}" }}
"/p/" = {{ type = "Proxy", url = "http://127.0.0.1:{upstream}/", security = {{ max_idle_connections_per_host = 64 }} }}
"""


def sh(cmd, **kw):
    return subprocess.run(cmd, check=True, **kw)


def ensure_tools():
    missing = [pkg for tool, pkg in (("nginx", "nginx"), ("h2load", "nghttp2-client"), ("openssl", "openssl"))
               if shutil.which(tool) is None and not os.path.exists("/usr/sbin/" + tool)]
    if missing:
        sh(["apt-get", "update", "-qq"])
        sh(["apt-get", "install", "-y", "-qq", *missing], env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})


def h2load(port, path, args, n):
    """Runs h2load on the client core: (requests/s, requests done)."""
    busy0, _ = cpu_jiffies(SERVER_CORE)
    # (h2load's own progress lines are not wanted.)
    out = subprocess.run(
        ["taskset", "-c", CLIENT_CORE, "h2load", "-n", str(n), *args, f"https://127.0.0.1:{port}{path}"],
        capture_output=True, text=True, check=False,
    ).stdout
    busy1, _ = cpu_jiffies(SERVER_CORE)
    rps = float(re.search(r"finished in [\d.]+\w+, ([\d.]+) req/s", out).group(1))
    done = int(re.search(r"requests: \d+ total, \d+ started, (\d+) done, (\d+) succeeded", out).group(2))
    if done < n:
        print(f"warning: {n - done} of {n} requests failed on port {port}:\n{out}", file=sys.stderr)
    ticks = os.sysconf("SC_CLK_TCK")
    cpu_us = (busy1 - busy0) / ticks * 1e6 / max(done, 1)
    return rps, cpu_us


def main():
    if not os.path.exists(BIN):
        sh(["cargo", "build", "--release", "--locked"], cwd=ROOT)
    ensure_tools()
    tmp = tempfile.mkdtemp(prefix="zcs-h2-bench-")
    # nginx's workers (www-data when started as root) read the files too.
    os.chmod(tmp, 0o755)
    www = os.path.join(tmp, "www")
    os.makedirs(www, mode=0o755)
    for name, size in (("1k.bin", 1024), ("1m.bin", 1 << 20)):
        with open(os.path.join(www, name), "wb") as f:
            f.write(os.urandom(size))
    sh(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
        "-nodes", "-keyout", os.path.join(tmp, "key.pem"), "-out", os.path.join(tmp, "cert.pem"),
        "-days", "2", "-subj", "/CN=127.0.0.1"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ours, theirs, upstream = free_port(19443), free_port(19543), free_port(19643)
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    with open(os.path.join(tmp, "up.conf"), "w") as f:
        f.write(UPSTREAM_CONF.format(tmp=tmp, www=www, upstream=upstream))
    with open(os.path.join(tmp, "nginx.conf"), "w") as f:
        f.write(NGINX_CONF.format(tmp=tmp, www=www, port=theirs, upstream=upstream))
    with open(os.path.join(tmp, "zcs.toml"), "w") as f:
        f.write(DAEMON_CONF.format(tmp=tmp, www=www, port=ours, upstream=upstream))
    env = {**os.environ, "GLIBC_TUNABLES": TUNABLES}
    procs = [
        subprocess.Popen(["taskset", "-c", SERVER_CORE, nginx, "-c", os.path.join(tmp, "up.conf")], env=env),
        subprocess.Popen(["taskset", "-c", SERVER_CORE, nginx, "-c", os.path.join(tmp, "nginx.conf")], env=env),
        subprocess.Popen(["taskset", "-c", SERVER_CORE, BIN, "--config", os.path.join(tmp, "zcs.toml")],
                         stderr=subprocess.DEVNULL, env=env),
    ]
    try:
        for p in (upstream, theirs, ours):
            wait_port(p)
        rows = []
        only = os.environ.get("H2_BENCH_ONLY", "")
        for name, path, args, n in CASES:
            if only not in name:
                continue
            # Warm both (the file caches, upstream connections).
            for port in (ours, theirs):
                h2load(port, path, args, n // 10)
            results = {"ours": [], "nginx": []}
            for _ in range(3):
                results["ours"].append(h2load(ours, path, args, n))
                results["nginx"].append(h2load(theirs, path, args, n))
            med = {k: statistics.median(r for r, _ in v) for k, v in results.items()}
            cpu = {k: statistics.median(c for _, c in v) for k, v in results.items()}
            span = {k: (min(r for r, _ in v), max(r for r, _ in v)) for k, v in results.items()}
            rows.append((name, med, span, cpu))
            print(f"{name}: ours {med['ours']:.0f} ({cpu['ours']:.1f} µs CPU), nginx {med['nginx']:.0f} "
                  f"({cpu['nginx']:.1f} µs CPU), ratio {med['ours'] / med['nginx']:.2f}", flush=True)
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait()
    lines = [
        "# HTTP/2 benchmark (`python3 bench/h2.py`)",
        "",
        machine(),
        "",
        "One worker each on core 0 (the proxy case's nginx upstream there too), h2load on core 1, TLS "
        "with the same ECDSA P-256 certificate (zerocopy-server: rustls in userspace; nginx: OpenSSL), "
        f"both with `GLIBC_TUNABLES={TUNABLES}` as the systemd unit sets it. "
        "Medians of 3 alternating runs; CPU is core 0's busy time per request.",
        "",
        "| case | zerocopy-server req/s (min-max) | nginx req/s (min-max) | ratio | CPU/request ours | nginx |",
        "|---|---|---|---|---|---|",
    ]
    for name, med, span, cpu in rows:
        lines.append(
            f"| {name} | {med['ours']:.0f} ({span['ours'][0]:.0f}-{span['ours'][1]:.0f}) | "
            f"{med['nginx']:.0f} ({span['nginx'][0]:.0f}-{span['nginx'][1]:.0f}) | "
            f"{med['ours'] / med['nginx']:.2f}x | {cpu['ours']:.1f} µs | {cpu['nginx']:.1f} µs |"
        )
    text = "\n".join(lines) + "\n"
    print(text)
    # A partial run (H2_BENCH_ONLY) does not replace the full table.
    if not os.environ.get("H2_BENCH_ONLY"):
        with open(os.path.join(ROOT, "bench", "RESULTS-h2.md"), "w") as f:
            f.write(text)


if __name__ == "__main__":
    main()
