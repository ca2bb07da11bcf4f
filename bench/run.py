#!/usr/bin/env python3
"""Side-by-side benchmark of zerocopy-server against nginx on this machine.

One command:  sudo python3 bench/run.py   (root only to apt-get nginx and wrk when missing;
installs oha with cargo for the fixed-rate case)

Both servers serve the same files with the same number of workers, pinned to the same cores;
wrk runs pinned to the other cores. Each case runs three times per server, alternating, and the
table reports the median requests/s (min-max), median p50 and p99 latency and the ratio of the
medians. Beside them: the ceiling (a minimal io_uring server answering every request with a fixed
1 KiB response, `bench/ceiling/main.rs`) with every case as a share of it; p99 latency at a fixed
request rate below saturation (oha, open loop); and resident memory per idle keep-alive
connection (`bench/idle.py`). The tables go to stdout and to bench/RESULTS.md with a
description of the machine.
"""

import argparse
import os
import platform
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import results  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, "target", "release", "zerocopy-server")

# (name, path, connections, extra wrk headers, over TLS)
CASES = [
    ("1 KiB file, keep-alive", "/1k.bin", 50, [], False),
    ("1 MiB file, keep-alive", "/1m.bin", 10, [], False),
    ("1 KiB file, new connection per request", "/1k.bin", 50, ["Connection: close"], False),
    # Proxied to the same upstream (an nginx serving the files), kept alive on both sides.
    ("proxy 1 KiB, keep-alive", "/p/1k.bin", 50, [], False),
    # The same upstream on three loopback addresses, as a group of three servers.
    ("proxy 1 KiB, 3-server round-robin group", "/g/1k.bin", 50, [], False),
    ("proxy 1 KiB, 3-server least-request group", "/l/1k.bin", 50, [], False),
    ("proxy 100 KiB, keep-alive", "/p/100k.bin", 20, [], False),
    ("proxy 1 MiB, keep-alive", "/p/1m.bin", 10, [], False),
    # HTTPS with the same ECDSA P-256 certificate. wrk resumes no sessions (and both servers
    # have resumption off), so every new connection is a full handshake.
    ("TLS 1 KiB file, keep-alive", "/1k.bin", 50, [], True),
    ("TLS full handshake per request (1 KiB file)", "/1k.bin", 50, ["Connection: close"], True),
]

UPSTREAM_CONF = """
worker_processes 1;
worker_cpu_affinity {affinity};
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
        listen 127.0.0.2:{port} reuseport backlog=4096;
        listen 127.0.0.3:{port} reuseport backlog=4096;
        root {www};
    }}
}}
"""

NGINX_CONF = """
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
    keepalive_timeout 65;
    keepalive_requests 100000000;
    default_type application/octet-stream;
    types {{ text/html html; application/octet-stream bin; }}
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    upstream up {{
        server 127.0.0.1:{upstream};
        keepalive 64;
    }}
    upstream three {{
        server 127.0.0.1:{upstream};
        server 127.0.0.2:{upstream};
        server 127.0.0.3:{upstream};
        keepalive 64;
    }}
    upstream three_least {{
        least_conn;
        server 127.0.0.1:{upstream};
        server 127.0.0.2:{upstream};
        server 127.0.0.3:{upstream};
        keepalive 64;
    }}
    server {{
        listen 127.0.0.1:{port} reuseport backlog=4096;
        server_name _;
        root {www};
        location /p/ {{
            proxy_pass http://up/;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_buffering on;
        }}
        location /g/ {{
            proxy_pass http://three/;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_buffering on;
        }}
        location /l/ {{
            proxy_pass http://three_least/;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_buffering on;
        }}
    }}
    server {{
        listen 127.0.0.1:{tls_port} ssl reuseport backlog=4096;
        server_name _;
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
threads = {workers}

[logging]
level = "warn"

[path_routes."127.0.0.1"]
"/" = {{ path = "{www}" }}
# Idle upstream connections kept as nginx's `keepalive 64` keeps them (the default is 8).
"/p/" = {{ type = "Proxy", url = "http://127.0.0.1:{upstream}/", security = {{ max_idle_connections_per_host = 64 }} }}
"""

# The proxy group cases: the upstream on three loopback addresses.
GROUPS_CONF = """
[path_routes."127.0.0.1"."/g/"]
type = "Proxy"
upstream = "three"

[path_routes."127.0.0.1"."/l/"]
type = "Proxy"
upstream = "three_least"

[upstreams.three]
servers = [{{ address = "127.0.0.1:{upstream}" }}, {{ address = "127.0.0.2:{upstream}" }}, {{ address = "127.0.0.3:{upstream}" }}]
max_idle_connections_per_server = 64

[upstreams.three_least]
servers = [{{ address = "127.0.0.1:{upstream}" }}, {{ address = "127.0.0.2:{upstream}" }}, {{ address = "127.0.0.3:{upstream}" }}]
balance = "least_request"
max_idle_connections_per_server = 64
"""

# The same daemon serving HTTPS on its own port (one listener per daemon).
DAEMON_TLS_CONF = """
[server]
listen = "127.0.0.1:{port}"
threads = {workers}

[logging]
level = "warn"

[tls]
cert_path = "{tmp}/cert.pem"
key_path = "{tmp}/key.pem"

[path_routes."127.0.0.1"]
"/" = {{ path = "{www}" }}
"""


CEILING = os.path.join(ROOT, "target", "release", "examples", "ceiling")


def oha_bin():
    """oha (an open-loop HTTP load generator with percentiles), installed with cargo if missing."""
    found = shutil.which("oha") or os.path.expanduser("~/.cargo/bin/oha")
    if not os.path.exists(found):
        sh(["cargo", "install", "oha", "--locked"])
    return found


def run_fixed_rate(port, path, rate, duration, cores):
    """p50 and p99 (µs) of `rate` requests/s over 50 keep-alive connections for `duration` s."""
    cmd = ["taskset", "-c", cores, oha_bin(), "--no-tui", "--output-format", "json", "-z", f"{duration}s",
           "-c", "50", "-q", str(rate), "--latency-correction", f"http://127.0.0.1:{port}{path}"]
    run = subprocess.run(cmd, capture_output=True, text=True)
    if run.returncode != 0:
        raise RuntimeError(f"oha failed ({run.returncode}): {run.stdout[-500:]}{run.stderr[-500:]}")
    import json
    report = json.loads(run.stdout)
    pct = report["latencyPercentiles"]
    codes = report.get("statusCodeDistribution", {})
    bad = sum(n for code, n in codes.items() if not code.startswith("2"))
    return pct["p50"] * 1e6, pct["p99"] * 1e6, report["summary"]["requestsPerSec"], bad


def sh(cmd, **kw):
    return subprocess.run(cmd, shell=isinstance(cmd, str), check=True, **kw)


def ensure_tools():
    missing = [t for t in ("nginx", "wrk", "openssl") if shutil.which(t) is None and not os.path.exists("/usr/sbin/" + t)]
    if missing:
        print(f"installing {' '.join(missing)} from Debian", file=sys.stderr)
        sh("apt-get update -qq")
        sh(["apt-get", "install", "-y", "-qq", *missing], env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})


def nginx_bin():
    return shutil.which("nginx") or "/usr/sbin/nginx"


def wait_port(port, timeout=10.0):
    end = time.time() + timeout
    while time.time() < end:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port}")


def free_port(start):
    """A free port at or above `start`, below the ephemeral range that wrk's own connections
    use (a listen port picked from that range can collide with a client's source port)."""
    for port in range(start, start + 500):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
                return port
            except OSError:
                continue
    raise RuntimeError(f"no free port from {start}")


def to_us(v):
    m = re.match(r"([\d.]+)(us|ms|s)", v)
    if not m:
        return float("nan")
    n, unit = float(m.group(1)), m.group(2)
    return n * {"us": 1, "ms": 1000, "s": 1_000_000}[unit]


def cpu_jiffies(cores):
    """(busy, total) clock ticks of the listed cores ("0,1") so far, from /proc/stat. Busy is
    user, nice, system, irq and softirq time; steal (the hypervisor's) is not."""
    want = {f"cpu{c}" for c in cores.split(",")}
    busy = total = 0
    with open("/proc/stat") as f:
        for line in f:
            parts = line.split()
            if parts and parts[0] in want:
                user, nice, system, idle, iowait, irq, softirq, steal = map(int, parts[1:9])
                busy += user + nice + system + irq + softirq
                total += user + nice + system + idle + iowait + irq + softirq + steal
    return busy, total


def run_wrk(port, path, conns, headers, duration, wrk_cores, threads, tls=False, server_cores=None):
    """req/s, p50 and p99 (µs), errors; with `server_cores`, also how busy those cores were (0-1)
    and their CPU time per request (µs): the server's cost, also when the load generator's
    core is the limit. The server must be alone on its cores."""
    cmd = ["taskset", "-c", wrk_cores, "wrk", f"-t{threads}", f"-c{conns}", f"-d{duration}s", "--latency"]
    for h in headers:
        cmd += ["-H", h]
    cmd.append(f"{'https' if tls else 'http'}://127.0.0.1:{port}{path}")
    before = cpu_jiffies(server_cores) if server_cores else None
    run = subprocess.run(cmd, capture_output=True, text=True)
    after = cpu_jiffies(server_cores) if server_cores else None
    if run.returncode != 0 or "Requests/sec" not in run.stdout:
        raise RuntimeError(f"wrk failed ({run.returncode}): {run.stdout}{run.stderr}")
    out = run.stdout
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
        # With Connection: close, wrk counts the server's close after each response as a read
        # error; on keep-alive connections a read error is a real one.
        if not any(h.lower().startswith("connection: close") for h in headers):
            errors += int(m.group(2))
    if before is None:
        return rps, p50, p99, errors
    busy, total = after[0] - before[0], after[1] - before[1]
    requests = int(re.search(r"(\d+) requests in", out).group(1))
    cpu_us = busy / os.sysconf("SC_CLK_TCK") * 1e6 / max(requests, 1)
    return rps, p50, p99, errors, busy / max(total, 1), cpu_us


class Server:
    def __init__(self, name, cmd, port):
        self.name, self.cmd, self.port = name, cmd, port
        self.proc = None

    def __enter__(self):
        self.log = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(self.cmd, stdout=self.log, stderr=self.log)
        try:
            wait_port(self.port)
        except RuntimeError as e:
            self.proc.kill()
            raise RuntimeError(f"{self.name}: {e}; its output:\n{self.log_tail()}") from None
        # A moment for every worker to reach its accept loop (the connection above may have
        # been taken by a listener still starting up).
        time.sleep(0.3)
        return self

    def log_tail(self):
        self.log.seek(0)
        return self.log.read().decode(errors="replace")[-2000:]

    def __exit__(self, *exc):
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def fmt_us(us):
    return f"{us / 1000:.2f} ms" if us >= 1000 else f"{us:.0f} µs"


def machine():
    model = "unknown CPU"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    ngx = subprocess.run([nginx_bin(), "-v"], capture_output=True, text=True).stderr.strip()
    return f"{os.cpu_count()} cores ({model}), {mem:.0f} GiB, Linux {platform.release()}, {ngx}"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", type=int, default=10, help="seconds per run (default 10)")
    ap.add_argument("--runs", type=int, default=3, help="runs per case and server (default 3)")
    ap.add_argument("--workers", type=int, default=0, help="server workers (default: half the cores, at least 1)")
    ap.add_argument("--no-build", action="store_true", help="use the existing release binary")
    ap.add_argument("--output", default=os.path.join(ROOT, "bench", "RESULTS.md"))
    ap.add_argument("--cases", default="", help="run only cases whose name contains this text (no RESULTS.md written)")
    ap.add_argument("--baseline", default="", help="another zerocopy-server binary (an older build) run beside "
                    "the others with the same config, alternating: its medians and the ratio of this build to it "
                    "are printed (no RESULTS.md written)")
    args = ap.parse_args()

    ensure_tools()
    if not args.no_build:
        sh(["cargo", "build", "--release", "--locked", "--workspace"], cwd=ROOT)
        sh(["cargo", "build", "--release", "--locked", "--example", "ceiling"], cwd=ROOT)
    ncpu = os.cpu_count() or 2
    workers = args.workers or max(1, ncpu // 2)
    if workers >= ncpu:
        sys.exit("need at least one core left for wrk")
    server_cores = ",".join(str(c) for c in range(workers))
    wrk_cores = ",".join(str(c) for c in range(workers, ncpu))
    wrk_threads = ncpu - workers

    tmp = tempfile.mkdtemp(prefix="zcs-bench-")
    www = os.path.join(tmp, "www")
    os.makedirs(www)
    with open(os.path.join(www, "1k.bin"), "wb") as f:
        f.write(os.urandom(1024))
    with open(os.path.join(www, "1m.bin"), "wb") as f:
        f.write(os.urandom(1024 * 1024))
    with open(os.path.join(www, "100k.bin"), "wb") as f:
        f.write(os.urandom(100 * 1024))
    for d in ("body", "proxy", "fastcgi", "uwsgi", "scgi", "ubody", "uproxy", "ufastcgi", "uuwsgi", "uscgi"):
        os.makedirs(os.path.join(tmp, d))
    os.chmod(tmp, 0o755)

    ours_port = free_port(18080)
    nginx_port = free_port(ours_port + 1)
    upstream_port = free_port(nginx_port + 1)
    ours_tls_port = free_port(upstream_port + 1)
    nginx_tls_port = free_port(ours_tls_port + 1)
    # One ECDSA P-256 certificate for both servers.
    sh(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
        "-nodes", "-keyout", os.path.join(tmp, "key.pem"), "-out", os.path.join(tmp, "cert.pem"),
        "-days", "2", "-subj", "/CN=127.0.0.1"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    with open(os.path.join(tmp, "zcs.toml"), "w") as f:
        f.write(DAEMON_CONF.format(port=ours_port, workers=workers, www=www, upstream=upstream_port))
        f.write(GROUPS_CONF.format(upstream=upstream_port))
    # An older build (--baseline) may not know upstream groups: it gets the config without them
    # and sits out the group cases.
    with open(os.path.join(tmp, "zcs-base.toml"), "w") as f:
        f.write(DAEMON_CONF.format(port=ours_port, workers=workers, www=www, upstream=upstream_port))
    with open(os.path.join(tmp, "zcs-tls.toml"), "w") as f:
        f.write(DAEMON_TLS_CONF.format(port=ours_tls_port, workers=workers, www=www, tmp=tmp))
    affinity = " ".join(format(1 << c, "b") for c in range(workers))
    with open(os.path.join(tmp, "nginx.conf"), "w") as f:
        f.write(NGINX_CONF.format(workers=workers, affinity=affinity, tmp=tmp, port=nginx_port, www=www, upstream=upstream_port, tls_port=nginx_tls_port))
    # The upstream of the proxy cases runs beside wrk, off the servers' cores.
    upstream_affinity = format(1 << (ncpu - 1), "b")
    with open(os.path.join(tmp, "upstream.conf"), "w") as f:
        f.write(UPSTREAM_CONF.format(affinity=upstream_affinity, tmp=tmp, port=upstream_port, www=www))
    upstream = subprocess.Popen(
        ["taskset", "-c", str(ncpu - 1), nginx_bin(), "-p", tmp, "-c", os.path.join(tmp, "upstream.conf")],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_port(upstream_port)

    nginx_cmd = ["taskset", "-c", server_cores, nginx_bin(), "-p", tmp, "-c", os.path.join(tmp, "nginx.conf")]
    plain_servers = {
        "zerocopy-server": (["taskset", "-c", server_cores, BIN, "--config", os.path.join(tmp, "zcs.toml")], ours_port),
        "nginx": (nginx_cmd, nginx_port),
    }
    tls_servers = {
        "zerocopy-server": (["taskset", "-c", server_cores, BIN, "--config", os.path.join(tmp, "zcs-tls.toml")], ours_tls_port),
        "nginx": (nginx_cmd, nginx_tls_port),
    }
    if args.baseline:
        base_bin = os.path.abspath(args.baseline)
        plain_servers["baseline"] = (["taskset", "-c", server_cores, base_bin, "--config", os.path.join(tmp, "zcs-base.toml")], ours_port)
        tls_servers["baseline"] = (["taskset", "-c", server_cores, base_bin, "--config", os.path.join(tmp, "zcs-tls.toml")], ours_tls_port)
    measured = {}
    # The ceiling runs inside the 1 KiB keep-alive case, alternating with both servers, so that
    # its figure comes from the same minutes as theirs (this machine's noise comes and goes).
    ceiling_port = free_port(nginx_tls_port + 1)
    ceiling_server = (["taskset", "-c", server_cores.split(",")[0], CEILING, f"127.0.0.1:{ceiling_port}"],
                      ceiling_port)
    ceiling = []
    for case, path, conns, headers, tls in CASES:
        servers = tls_servers if tls else plain_servers
        if args.cases and args.cases not in case:
            continue
        with_ceiling = case == "1 KiB file, keep-alive"
        if "group" in case:
            servers = {k: v for k, v in servers.items() if k != "baseline"}
        if with_ceiling:
            servers = {**servers, "ceiling": ceiling_server}
        samples = {name: [] for name in servers}
        for run in range(args.runs):
            order = list(servers) if run % 2 == 0 else list(reversed(servers))
            for name in order:
                cmd, port = servers[name]
                with Server(name, cmd, port) as srv:
                    try:
                        run_wrk(port, path, conns, headers, 2, wrk_cores, wrk_threads, tls)  # warm-up
                        s = run_wrk(port, path, conns, headers, args.duration, wrk_cores, wrk_threads, tls,
                                    server_cores)
                    except RuntimeError as e:
                        alive = srv.proc.poll() is None
                        sys.exit(f"{case} / {name}: {e}\nserver {'alive' if alive else 'exited'}; its log:\n{srv.log_tail()}")
                samples[name].append(s)
                print(f"{case:42} {name:16} run {run + 1}: {s[0]:>10.0f} req/s  p50 {fmt_us(s[1])}  p99 {fmt_us(s[2])}  errors {s[3]}  server cores {s[4] * 100:.0f} % busy, {s[5]:.1f} µs CPU/req", file=sys.stderr)
        if with_ceiling:
            ceiling = samples.pop("ceiling")
        measured[case] = samples

    lines = [
        "| case | server | req/s (median) | min–max | p50 | p99 | errors | ratio to nginx "
        "| server cores busy | CPU per request | CPU ratio to nginx |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for case, samples in measured.items():
        med = {n: statistics.median(x[0] for x in s) for n, s in samples.items()}
        cpu = {n: statistics.median(x[5] for x in s) for n, s in samples.items()}
        for name, s in samples.items():
            rps = [x[0] for x in s]
            ratio = f"**{med[name] / med['nginx']:.2f}×**" if name != "nginx" else "1.00×"
            cpu_ratio = f"{cpu[name] / cpu['nginx']:.2f}×"
            lines.append(
                f"| {case} | {name} | {med[name]:,.0f} | {min(rps):,.0f}–{max(rps):,.0f} | "
                f"{fmt_us(statistics.median(x[1] for x in s))} | {fmt_us(statistics.median(x[2] for x in s))} | "
                f"{sum(x[3] for x in s)} | {ratio} | {statistics.median(x[4] for x in s) * 100:.0f} % | "
                f"{cpu[name]:.1f} µs | {cpu_ratio} |"
            )
    # The ceiling: the same load on a server that does nothing but answer.
    extra = []
    if args.baseline:
        extra.append("\n**This build against the baseline** (`--baseline`), medians:\n")
        extra.append("| case | this build req/s | baseline req/s | ratio | this build CPU/req | baseline CPU/req |\n|---|---:|---:|---:|---:|---:|")
        for case, samples in measured.items():
            if "baseline" not in samples:
                continue
            new = statistics.median(x[0] for x in samples["zerocopy-server"])
            old = statistics.median(x[0] for x in samples["baseline"])
            cnew = statistics.median(x[5] for x in samples["zerocopy-server"])
            cold = statistics.median(x[5] for x in samples["baseline"])
            extra.append(f"| {case} | {new:,.0f} | {old:,.0f} | **{new / old:.3f}×** | {cnew:.1f} µs | {cold:.1f} µs |")
    top = statistics.median(x[0] for x in ceiling) if ceiling else None
    if top:
        lines[0] += " share of ceiling |"
        lines[1] += "---:|"
        for i in range(2, len(lines)):
            case, name = [c.strip() for c in lines[i].split("|")[1:3]]
            med = statistics.median(x[0] for x in measured[case][name])
            lines[i] += f" {med / top * 100:.0f} % |"
        lines.append(f"| ceiling: fixed 1 KiB response, keep-alive | `bench/ceiling` | {top:,.0f} | "
                     f"{min(x[0] for x in ceiling):,.0f}–{max(x[0] for x in ceiling):,.0f} | "
                     f"{fmt_us(statistics.median(x[1] for x in ceiling))} | {fmt_us(statistics.median(x[2] for x in ceiling))} | 0 | | "
                     f"{statistics.median(x[4] for x in ceiling) * 100:.0f} % | {statistics.median(x[5] for x in ceiling):.1f} µs | | 100 % |")

    # p99 at a fixed rate below saturation: a quarter of nginx's 1 KiB keep-alive rate.
    fixed = {}
    if not args.cases or "fixed" in args.cases:
        base = measured.get("1 KiB file, keep-alive", {}).get("nginx")
        rate = int(statistics.median(x[0] for x in base) / 4) if base else 10_000
        # The ceiling too: how much of the tail the machine and the load generator make on
        # their own, with a server that does nothing but answer.
        fixed_servers = dict(plain_servers)
        ceiling_port = free_port(nginx_tls_port + 2)
        fixed_servers["ceiling"] = (["taskset", "-c", server_cores.split(",")[0], CEILING,
                                     f"127.0.0.1:{ceiling_port}"], ceiling_port)
        fixed = {name: [] for name in fixed_servers}
        for run in range(args.runs):
            order = list(fixed_servers) if run % 2 == 0 else list(reversed(fixed_servers))
            for name in order:
                cmd, port = fixed_servers[name]
                with Server(name, cmd, port):
                    run_wrk(port, "/1k.bin", 50, [], 2, wrk_cores, wrk_threads)
                    s = run_fixed_rate(port, "/1k.bin", rate, args.duration, wrk_cores)
                fixed[name].append(s)
                print(f"{'1 KiB at ' + str(rate) + ' req/s (fixed rate)':42} {name:16} run {run + 1}: p50 {fmt_us(s[0])}  p99 {fmt_us(s[1])}  ({s[2]:.0f} req/s done, {s[3]} errors)", file=sys.stderr)
        extra.append(f"\n**p99 at a fixed rate** — 1 KiB file, {rate:,} requests/s (a quarter of nginx's "
                     f"keep-alive rate above), 50 connections, oha open loop with latency correction, {args.duration} s, "
                     f"medians of {args.runs}. The ceiling row is `bench/ceiling` under the same load: "
                     f"the tail that the machine and the load generator make with a server that only answers.\n")
        extra.append("| server | p50 | p99 | req/s done | errors | p99 ratio to nginx |\n|---|---:|---:|---:|---:|---:|")
        p99n = statistics.median(x[1] for x in fixed["nginx"])
        for name, s in fixed.items():
            p99 = statistics.median(x[1] for x in s)
            label = "ceiling (`bench/ceiling`)" if name == "ceiling" else name
            extra.append(f"| {label} | {fmt_us(statistics.median(x[0] for x in s))} | {fmt_us(p99)} | "
                         f"{statistics.median(x[2] for x in s):,.0f} | {sum(x[3] for x in s)} | {p99 / p99n:.2f}× |")

    # Memory per idle keep-alive connection.
    if not args.cases or "idle" in args.cases:
        import idle
        extra.append("\n" + idle.report_table(idle.run_all(args.runs, 10_000)))

    upstream.terminate()
    upstream.wait()
    table = "\n".join(lines) + "\n" + "\n".join(extra)
    print(table)
    if args.cases or args.baseline:
        # A partial run, or one against another build, is for looking, not for the record.
        return
    desc = machine()
    report = f"""## Static files against nginx (`bench/run.py`)

Latest run: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}.

- Machine: {desc}.
- Servers: zerocopy-server (release build, {workers} worker(s), io driver auto) and nginx
  ({workers} worker process(es), sendfile on, tcp_nopush on, access_log off, keepalive_requests
  unlimited), each pinned to core(s) {server_cores}; the same files.
- Load: wrk with {wrk_threads} thread(s) pinned to core(s) {wrk_cores}; {args.duration} s per run after a
  2 s warm-up; {args.runs} runs per case and server, alternating servers; medians.
- Proxy cases: both servers forward `/p/` to the same upstream (an nginx serving the same files,
  1 worker on core {ncpu - 1}, beside wrk) over kept-alive upstream connections (nginx:
  `proxy_pass` with `keepalive 64`, HTTP/1.1).
- Ceiling: `bench/ceiling/main.rs`, one monoio io_uring thread on core {server_cores.split(",")[0]} answering
  every request with a fixed 1 KiB response (no parsing beyond the end of each head, no
  routing, no files), run within the 1 KiB keep-alive case, alternating with both servers;
  "share of ceiling" is each median against its median.
- TLS cases: the same ECDSA P-256 certificate (openssl) for both; zerocopy-server with rustls in
  userspace (this kernel has no kTLS), nginx with OpenSSL, TLS 1.2 and 1.3 offered, session
  resumption off on nginx and never attempted by wrk, so "full handshake" is one complete
  handshake per request.
- Server cores busy and CPU per request: the server cores' busy time (user, system, irq and
  softirq, from `/proc/stat`; loopback's receive work for what a core sends runs on that core)
  over the run, and that time divided by the requests done. The server is alone on its cores,
  so this is its cost per request even when the other core (wrk, and the proxy cases' upstream)
  is the limit — a case where neither server keeps its cores busy measures the load generator.
- zerocopy-server's file cache is on, as by default (`[performance] file_cache_*`: small files
  served from memory, checked after a second); nginx runs without `open_file_cache`, its
  default.

{table}
"""
    results.update_section("static-files", report, args.output)
    print(f"\nwritten to {os.path.relpath(args.output, ROOT)}", file=sys.stderr)
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
