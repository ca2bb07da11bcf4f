"""A collector-shaped OTLP/HTTP receiver for the tests: POST /v1/traces with a protobuf
ExportTraceServiceRequest, decoded with the OpenTelemetry project's own Python types
(opentelemetry-proto), one JSON line per span on stdout.

Usage: otlp_receiver.py PORT_FILE [--status N] [--delay SECONDS]
The port it listens on (127.0.0.1, chosen by the kernel) is written to PORT_FILE.
"""

import json
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from opentelemetry.proto.collector.trace.v1 import trace_service_pb2

STATUS = 200
DELAY = 0.0


def value(v):
    kind = v.WhichOneof("value")
    return getattr(v, kind) if kind else None


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self):
        length = int(self.headers["Content-Length"])
        body = self.rfile.read(length)
        if DELAY:
            time.sleep(DELAY)
        ok = (
            self.path == "/v1/traces"
            and self.headers["Content-Type"] == "application/x-protobuf"
        )
        if ok and STATUS == 200:
            req = trace_service_pb2.ExportTraceServiceRequest()
            req.ParseFromString(body)
            for rs in req.resource_spans:
                resource = {a.key: value(a.value) for a in rs.resource.attributes}
                for ss in rs.scope_spans:
                    for s in ss.spans:
                        print(
                            json.dumps(
                                {
                                    "resource": resource,
                                    "scope": ss.scope.name,
                                    "trace_id": s.trace_id.hex(),
                                    "span_id": s.span_id.hex(),
                                    "parent_span_id": s.parent_span_id.hex(),
                                    "name": s.name,
                                    "kind": s.kind,
                                    "flags": s.flags,
                                    "start": s.start_time_unix_nano,
                                    "end": s.end_time_unix_nano,
                                    "status": s.status.code,
                                    "attributes": {
                                        a.key: value(a.value) for a in s.attributes
                                    },
                                }
                            ),
                            flush=True,
                        )
        status = STATUS if ok else 400
        answer = b"" if status == 200 else b"no"
        self.send_response(status)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, *args):
        pass


def main():
    global STATUS, DELAY
    port_file = sys.argv[1]
    args = sys.argv[2:]
    while args:
        flag, v = args[0], args[1]
        args = args[2:]
        if flag == "--status":
            STATUS = int(v)
        elif flag == "--delay":
            DELAY = float(v)
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    with open(port_file + ".tmp", "w") as f:
        f.write(str(server.server_address[1]))
    import os

    os.rename(port_file + ".tmp", port_file)
    server.serve_forever()


if __name__ == "__main__":
    main()
