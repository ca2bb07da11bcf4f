#!/usr/bin/env python3
"""Reload benchmark: how fast a config change is served, and what reloading costs under load.

    python3 bench/reload.py            (run after `cargo build --release`)

1. Reload latency: the config file is rewritten 50 times; each time, a keep-alive client polls
   until a response comes from the new generation (each config serves a different file
   content). Reports the median and p99 of "file written -> first new response".
2. Throughput during reloads: wrk (keep-alive, 1 KiB file) runs for 10 s in steady state, then
   10 s while the config is rewritten every 100 ms; reports requests/s of both and the loss.
Server and load generator are pinned to different cores. The table is printed and written to
its section of bench/RESULTS.md.
"""

import json
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import results  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, "target", "release", "zerocopy-server")
PORT = 18180

CONFIG = """[server]
listen = "127.0.0.1:{port}"
threads = 1
[logging]
level = "warn"
[admin]
socket = "{tmp}/admin.sock"
[host_routes."127.0.0.1"]
path = "{tmp}/{root}"
"""


def write_config(tmp, root):
    path = os.path.join(tmp, "config.toml")
    with open(path + ".tmp", "w") as f:
        f.write(CONFIG.format(port=PORT, tmp=tmp, root=root))
    os.rename(path + ".tmp", path)


def generation(tmp):
    """The serving generation, from the admin socket."""
    s = socket.socket(socket.AF_UNIX)
    s.connect(os.path.join(tmp, "admin.sock"))
    s.sendall(b'{"version":1,"command":"status"}\n')
    line = s.makefile().readline()
    s.close()
    return json.loads(line)["data"]["generation"]


def get(sock):
    sock.sendall(b"GET /gen.txt HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(4096)
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(re.search(rb"Content-Length: (\d+)", head).group(1))
    while len(body) < length:
        body += sock.recv(4096)
    return body.decode()


def main():
    tmp = tempfile.mkdtemp(prefix="zcs-reload-")
    for root in ("a", "b"):
        os.makedirs(os.path.join(tmp, root))
        with open(os.path.join(tmp, root, "gen.txt"), "w") as f:
            f.write(root)
        with open(os.path.join(tmp, root, "1k.bin"), "wb") as f:
            f.write(os.urandom(1024))
    write_config(tmp, "a")
    server = subprocess.Popen(["taskset", "-c", "0", BIN, "--config", os.path.join(tmp, "config.toml")])
    try:
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", PORT), timeout=0.1).close()
                break
            except OSError:
                time.sleep(0.05)
        # 1. Latency.
        sock = socket.create_connection(("127.0.0.1", PORT))
        latencies = []
        current = "a"
        for _ in range(50):
            current = "b" if current == "a" else "a"
            start = time.perf_counter()
            write_config(tmp, current)
            while get(sock) != current:
                time.sleep(0.001)
            latencies.append((time.perf_counter() - start) * 1000)
            time.sleep(0.05)
        assert generation(tmp) == 51, "each of the 50 rewrites must be one swap"
        latencies.sort()
        p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
        # 2. Throughput.
        def wrk():
            out = subprocess.run(
                ["taskset", "-c", "1", "wrk", "-t1", "-c50", "-d10s", f"http://127.0.0.1:{PORT}/1k.bin"],
                capture_output=True, text=True, check=True).stdout
            return float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
        steady = wrk()
        stop = threading.Event()
        reloads = [0]

        def flipper():
            root = "a"
            while not stop.is_set():
                root = "b" if root == "a" else "a"
                write_config(tmp, root)
                reloads[0] += 1
                time.sleep(0.1)
        t = threading.Thread(target=flipper)
        t.start()
        gen_before = generation(tmp)
        during = wrk()
        stop.set()
        t.join()
        time.sleep(0.2)
        swaps = generation(tmp) - gen_before
    finally:
        server.terminate()
        server.wait()
    loss = (1 - during / steady) * 100
    table = "\n".join([
        "| measure | value |",
        "|---|---|",
        f"| reload latency, median (file written → first response of the new generation) | {statistics.median(latencies):.1f} ms |",
        f"| reload latency, p99 (50 reloads) | {p99:.1f} ms |",
        f"| requests/s, steady state (1 KiB, keep-alive, 50 connections) | {steady:,.0f} |",
        f"| requests/s, config rewritten every 100 ms ({reloads[0]} rewrites, {swaps} swaps) | {during:,.0f} |",
        f"| throughput lost to reloads | {loss:.1f} % |",
    ])
    print(table)
    results.update_section("reload", f"""## Live reload (`bench/reload.py`)

Latest run: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}. One worker pinned to core 0, wrk on core 1.
The latency includes the watcher's 25 ms debounce (quiet time after the last file event).

{table}
""")

if __name__ == "__main__":
    sys.exit(main())
