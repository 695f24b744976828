#!/usr/bin/env python3
"""A stand-in payment provider for the checkout example: an HTTPS endpoint
that takes {"amount", "currency", "card": {"number", "expiry", "cvc"}} as the
vault's reveal proxy forwards it (the PAN put in by the vault), approves a
card that passes the Luhn check, and answers with its last 4 -- it never
logs or returns the number. Standard library only.

    python3 examples/checkout/psp.py --cert cardvault-dev/pki/server.pem \
        --key cardvault-dev/pki/server-key.pem --listen 127.0.0.1:9443
"""

import argparse
import http.server
import json
import ssl
import sys


def luhn(number):
    total = 0
    for i, c in enumerate(reversed(number)):
        v = int(c)
        if i % 2:
            v = v * 2 - 9 if v > 4 else v * 2
        total += v
    return total % 10 == 0


class Handler(http.server.BaseHTTPRequestHandler):
    def log_message(self, fmt, *args):
        sys.stderr.write("psp: %s %s\n" % (self.command, self.path))

    def do_POST(self):
        length = min(int(self.headers.get("content-length", "0")), 65536)
        try:
            card = json.loads(self.rfile.read(length))["card"]
            number = str(card["number"])
            approved = number.isdigit() and 12 <= len(number) <= 19 and luhn(number)
            answer = {"approved": approved, "last4": number[-4:], "cvc_received": bool(card.get("cvc"))}
            status = 200
        except (ValueError, KeyError, TypeError):
            answer, status = {"approved": False, "error": "bad request"}, 400
        data = json.dumps(answer).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cert", required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--listen", default="127.0.0.1:9443")
    args = parser.parse_args()
    host, port = args.listen.rsplit(":", 1)
    server = http.server.ThreadingHTTPServer((host, int(port)), Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(args.cert, args.key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    print("psp listening on https://%s:%d/" % (host, server.server_address[1]), flush=True)
    server.serve_forever()


if __name__ == "__main__":
    sys.exit(main())
