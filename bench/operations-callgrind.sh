#!/bin/bash
# Instructions per request (callgrind; one worker, epoll, 3000 keep-alive GETs of a 1 KiB file
# after 200 warm-up ones), with request ids and trace context off, then on (the defaults):
#   bash bench/operations-callgrind.sh        (after cargo build --release; needs valgrind)
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
W=$(mktemp -d)
head -c 1024 /dev/urandom > "$W/1k.bin"
# N keep-alive GETs of the file, each read whole before the next.
cat > "$W/get.py" <<'P'
import socket, sys
port, n = int(sys.argv[1]), int(sys.argv[2])
s = socket.create_connection(("127.0.0.1", port))
req = b"GET /files/1k.bin HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
for _ in range(n):
    s.sendall(req)
    got = b""
    while not (b"\r\n\r\n" in got and len(got.split(b"\r\n\r\n", 1)[1]) >= 1024):
        got += s.recv(65536)
P
measure() {
name=$1; server=$2; tracing=$3
port=18611
cat > $W/$name.toml <<T
[server]
listen = "127.0.0.1:$port"
threads = 1
$server
[logging]
level = "warn"
[admin]
socket = "$W/$name.sock"
$tracing
[path_routes."127.0.0.1"]
"/files/" = { path = "$W" }
T
valgrind --tool=callgrind --callgrind-out-file=$W/callgrind.out.$name --dump-instr=no --collect-atstart=yes $ROOT/target/release/zerocopy-server --io-driver epoll --config $W/$name.toml >$W/$name.log 2>&1 &
pid=$!
for i in $(seq 100); do curl -s -o /dev/null http://127.0.0.1:$port/files/1k.bin && break; sleep 0.2; done
python3 "$W/get.py" $port 200
callgrind_control -z $pid >/dev/null
python3 "$W/get.py" $port 3000
callgrind_control -d $pid >/dev/null
sleep 1
kill -TERM $pid; wait $pid 2>/dev/null
total=0
for f in $W/callgrind.out.$name.*; do
  t=$(grep -m1 "^summary:\|^totals:" $f | awk '{print $2}'); [ -n "$t" ] && total=$((total + t))
done
echo "$name: $total instructions, $((total / 3000)) per request (files: $(ls $W/callgrind.out.$name.* | wc -l))"
}
measure off 'request_id_header = ""' $'[tracing]\npropagate = false'
measure on '' ''
rm -rf "$W"
