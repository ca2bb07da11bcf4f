#!/usr/bin/env python3
"""A gRPC service and its client for the end-to-end tests (Python `grpcio`, raw bytes as
messages: no generated code).

    grpc_peer.py serve EVENTS_FILE [--tls CERT KEY]
        Listens on 127.0.0.1 (a free port), prints the port, serves until stdin closes.
        Writes one line per notable event to EVENTS_FILE ("cancelled", "deadline-seen ...").
    grpc_peer.py call TARGET [--tls CA AUTHORITY | --authority AUTHORITY] [--case unary|slow]
        Runs every case (or one) against TARGET and prints one JSON object with the results.
"""

import json
import sys
import threading
import time

import grpc

SERVICE = "test.Echo"


def serve(args):
    events = open(args[0], "a", buffering=1)

    def note(line):
        events.write(line + "\n")

    def unary(request, context):
        if request == b"fail":
            context.abort(grpc.StatusCode.FAILED_PRECONDITION, "asked to fail")
        context.set_trailing_metadata((("x-trailer", "unary"),))
        return b"echo:" + request

    def server_stream(request, context):
        for i in range(int(request)):
            yield b"part-%d" % i

    def client_stream(requests, context):
        return b"+".join(requests)

    def bidi(requests, context):
        for r in requests:
            yield b"re:" + r

    def slow(request, context):
        remaining = context.time_remaining()
        note("deadline-seen %s" % ("none" if remaining is None else "%.1f" % remaining))
        time.sleep(3)
        return b"late"

    def endless(request, context):
        context.add_callback(lambda: note("cancelled"))
        i = 0
        while context.is_active():
            yield b"tick-%d" % i
            i += 1
            time.sleep(0.05)

    handlers = {
        "Unary": grpc.unary_unary_rpc_method_handler(unary),
        "ServerStream": grpc.unary_stream_rpc_method_handler(server_stream),
        "ClientStream": grpc.stream_unary_rpc_method_handler(client_stream),
        "Bidi": grpc.stream_stream_rpc_method_handler(bidi),
        "Slow": grpc.unary_unary_rpc_method_handler(slow),
        "Endless": grpc.unary_stream_rpc_method_handler(endless),
    }
    from concurrent import futures

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=16))
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
    if "--tls" in args:
        i = args.index("--tls")
        cert, key = open(args[i + 1], "rb").read(), open(args[i + 2], "rb").read()
        port = server.add_secure_port("127.0.0.1:0", grpc.ssl_server_credentials([(key, cert)]))
    else:
        port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    print(port, flush=True)
    sys.stdin.read()
    server.stop(0)


def call(args):
    target = args[0]
    if "--tls" in args:
        i = args.index("--tls")
        ca, authority = open(args[i + 1], "rb").read(), args[i + 2]
        channel = grpc.secure_channel(target, grpc.ssl_channel_credentials(ca),
                                      options=(("grpc.ssl_target_name_override", authority),
                                               ("grpc.default_authority", authority)))
    else:
        authority = args[args.index("--authority") + 1] if "--authority" in args else None
        options = (("grpc.default_authority", authority),) if authority else ()
        channel = grpc.insecure_channel(target, options=options)
    m = lambda name, kind: getattr(channel, kind)("/%s/%s" % (SERVICE, name))
    out = {}

    def code(e):
        return e.code().value[0]

    if "--case" in args:
        # One call, for the daemon's own errors: its status code and details.
        name = args[args.index("--case") + 1]
        method, request = {"unary": ("Unary", b"hi"), "slow": ("Slow", b"x")}[name]
        try:
            out[name] = m(method, "unary_unary")(request, timeout=10).decode()
        except grpc.RpcError as e:
            out[name] = {"code": code(e), "details": e.details()}
        print(json.dumps(out))
        return

    try:
        reply, info = m("Unary", "unary_unary").with_call(b"hi", timeout=10)
        out["unary"] = reply.decode()
        out["unary_trailer"] = dict(info.trailing_metadata()).get("x-trailer")
    except grpc.RpcError as e:
        out["unary"] = {"code": code(e), "details": e.details()}
    if isinstance(out["unary"], dict):
        # Nothing else works either: report what the daemon said.
        print(json.dumps(out))
        return
    out["server_stream"] = [r.decode() for r in m("ServerStream", "unary_stream")(b"5", timeout=10)]
    out["client_stream"] = m("ClientStream", "stream_unary")(iter([b"a", b"b", b"c"]), timeout=10).decode()

    # Bidi, in lock step: each message is sent only after the previous one's answer came
    # back, which needs both directions open through the daemon at once.
    answers, waits = [], []
    cond = threading.Condition()

    def requests():
        for n, word in enumerate([b"one", b"two", b"three"], start=1):
            yield word
            with cond:
                waits.append(cond.wait_for(lambda: len(answers) >= n, timeout=5))

    for r in m("Bidi", "stream_stream")(requests(), timeout=20):
        with cond:
            answers.append(r.decode())
            cond.notify_all()
    out["bidi"] = answers
    out["bidi_lockstep"] = all(waits)

    try:
        m("Slow", "unary_unary")(b"x", timeout=0.5)
        out["deadline"] = 0
    except grpc.RpcError as e:
        out["deadline"] = code(e)

    try:
        m("Unary", "unary_unary")(b"fail", timeout=10)
    except grpc.RpcError as e:
        out["fail"] = {"code": code(e), "details": e.details()}

    stream = m("Endless", "unary_stream")(b"", timeout=30)
    got = [next(stream), next(stream)]
    stream.cancel()
    out["cancelled_after"] = len(got)
    print(json.dumps(out))


if __name__ == "__main__":
    {"serve": serve, "call": call}[sys.argv[1]](sys.argv[2:])
