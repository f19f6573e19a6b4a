#!/usr/bin/env python3
"""A backend that speaks only mutual TLS: it refuses a client without a certificate
signed by the CA, and answers every request with JSON naming itself, the request,
and the subject of the client certificate it saw (the gateway's).

usage: tls_echo.py NAME PORT CERT KEY CA     (PORT 0: any; prints "listening PORT")
"""

import json
import ssl
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit


class Echo(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def answer(self):
        length = int(self.headers.get("content-length") or 0)
        if length:
            self.rfile.read(length)
        peer = self.connection.getpeercert() or {}
        subject = {key: value for part in peer.get("subject", ()) for key, value in part}
        issuer = {key: value for part in peer.get("issuer", ()) for key, value in part}
        target = urlsplit(self.path)
        body = json.dumps({
            "backend": self.server.name,
            "method": self.command,
            "path": target.path,
            "query": target.query or None,
            "headers": {key.lower(): value for key, value in self.headers.items()},
            "client_certificate": {"subject": subject, "issuer": issuer},
            "tls_version": self.connection.version(),
        }).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = answer

    def log_message(self, *args):
        pass


def main(argv):
    if len(argv) != 5:
        sys.exit(__doc__)
    name, port, cert, key, ca = argv
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert, key)
    context.load_verify_locations(ca)
    context.verify_mode = ssl.CERT_REQUIRED
    server = ThreadingHTTPServer(("127.0.0.1", int(port)), Echo)
    server.name = name
    server.socket = context.wrap_socket(server.socket, server_side=True)
    print(f"listening {server.server_address[1]}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main(sys.argv[1:])
