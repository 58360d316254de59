"""A local OTLP/HTTP traces sink for bench/tracing.sh: accepts every
POST /v1/traces on 127.0.0.1 and counts requests and bytes (written to the
file given as the second argument on SIGTERM)."""

import signal
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

port, report = int(sys.argv[1]), sys.argv[2]
seen = {"requests": 0, "bytes": 0}


class Sink(BaseHTTPRequestHandler):
    def do_POST(self):
        n = int(self.headers.get("content-length", 0))
        self.rfile.read(n)
        seen["requests"] += 1
        seen["bytes"] += n
        self.send_response(200)
        self.send_header("content-type", "application/x-protobuf")
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


def stop(*_):
    with open(report, "w") as f:
        f.write(f"otlp_requests={seen['requests']} otlp_bytes={seen['bytes']}\n")
    sys.exit(0)


signal.signal(signal.SIGTERM, stop)
ThreadingHTTPServer(("127.0.0.1", port), Sink).serve_forever()
