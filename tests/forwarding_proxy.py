"""A reverse proxy for tests, doing what nginx's ``proxy_pass`` with ``proxy_set_header
X-Forwarded-For $proxy_add_x_forwarded_for`` does: each request goes to the upstream server
with the client's address appended to ``X-Forwarded-For`` (after whatever the client sent, so a
forged value stays on the left), and the answer comes back as it was.

    python -m tests.forwarding_proxy LISTEN_PORT UPSTREAM_PORT

Prints ``ready`` once it listens on 127.0.0.1. Clients that bind their socket to other
loopback addresses (127.0.0.2, ...) appear as different clients.
"""

from __future__ import annotations

import http.client
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

#: Hop-by-hop headers a proxy does not pass on (RFC 9110, 7.6.1).
HOP_BY_HOP = {"connection", "keep-alive", "proxy-connection", "te", "trailer",
              "transfer-encoding", "upgrade"}


def make_handler(upstream_port: int) -> type[BaseHTTPRequestHandler]:
    class Forward(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: Any) -> None:
            pass

        def _forward(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else None
            headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP
                       and k.lower() != "x-forwarded-for"}
            sent = self.headers.get("X-Forwarded-For")
            client = self.client_address[0]
            headers["X-Forwarded-For"] = f"{sent}, {client}" if sent else client
            upstream = http.client.HTTPConnection("127.0.0.1", upstream_port, timeout=30)
            try:
                try:
                    upstream.request(self.command, self.path, body=body, headers=headers)
                    answer = upstream.getresponse()
                    content = answer.read()
                except OSError:  # the upstream is not up (yet): as nginx does
                    self.send_error(502)
                    return
                self.send_response(answer.status, answer.reason)
                for name, value in answer.getheaders():
                    if name.lower() not in HOP_BY_HOP and name.lower() != "content-length":
                        self.send_header(name, value)
                self.send_header("Content-Length", str(len(content)))
                self.end_headers()
                self.wfile.write(content)
            finally:
                upstream.close()

        do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _forward  # noqa: N815

    return Forward


def main(listen_port: int, upstream_port: int) -> None:
    server = ThreadingHTTPServer(("127.0.0.1", listen_port), make_handler(upstream_port))
    server.daemon_threads = True
    print("ready", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]))
