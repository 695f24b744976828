#!/usr/bin/env python3
"""A web shop's checkout that never sees a card number (cardvault's hosted
card fields). Standard library only.

1. GET /           the shop's server creates a collection session over mTLS
                   (POST /v1/collect/sessions, the cart certificate) and
                   renders the checkout page: cardvault.js, pinned by its
                   integrity hash, mounts the vault's card frame.
2. the shopper types the card into the frame, which sends it straight to
   the vault; the page only gets the token, and posts the session id here.
3. POST /confirm   the shop's server asks the vault what the session holds
                   (GET /v1/collect/sessions/{id}) -- it trusts that answer,
                   not the page -- and pays through the vault's reveal proxy
                   (POST /v1/proxy/ROUTE as `payments`, the token where the
                   card number goes): the vault puts the PAN in and forwards
                   the request to the payment provider.

    python3 examples/checkout/shop.py --dev ./cardvault-dev \
        --api https://127.0.0.1:8443 --listen 127.0.0.1:8080 --route psp

Open http://127.0.0.1:8080/ in a browser. Every request the shop's server
receives is logged to standard error (or --log FILE): none holds a card.
"""

import argparse
import base64
import hashlib
import html
import http.client
import http.server
import json
import os
import ssl
import sys
import threading
import urllib.parse


class Vault:
    """mTLS calls to the vault's API as one principal (a fresh connection
    per call: the shop's server is multi-threaded)."""

    def __init__(self, api, ca, cert, key):
        self.url = urllib.parse.urlparse(api)
        self.context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ca)
        self.context.minimum_version = ssl.TLSVersion.TLSv1_3
        self.context.load_cert_chain(cert, key)

    def call(self, method, path, body=None):
        conn = http.client.HTTPSConnection(self.url.hostname, self.url.port, context=self.context, timeout=15)
        try:
            headers = {"content-type": "application/json"} if body is not None else {}
            conn.request(method, path, body=json.dumps(body).encode() if body is not None else None, headers=headers)
            response = conn.getresponse()
            data = response.read()
            return response.status, (json.loads(data) if data else None)
        finally:
            conn.close()


def integrity_of(script_url, ca):
    """sha384 of cardvault.js as served now (pin the value `cardvault
    collect snippet` prints in production instead)."""
    url = urllib.parse.urlparse(script_url)
    context = ssl.create_default_context(cafile=ca)
    conn = http.client.HTTPSConnection(url.hostname, url.port, context=context, timeout=10)
    conn.request("GET", url.path)
    body = conn.getresponse().read()
    return "sha384-" + base64.b64encode(hashlib.sha384(body).digest()).decode()


PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Checkout</title>
<script src="{script}" integrity="{integrity}" crossorigin="anonymous"></script>
</head><body><main>
<h1>Checkout: order {order}</h1>
<p>Total: 42.00 EUR</p>
<div id="card"></div>
<p id="result" role="status"></p>
</main>
<script>
var result = document.getElementById('result');
CardVault.mount({{
  frameUrl: {frame_url},
  element: '#card',
  onToken: function (card) {{
    result.textContent = 'Paying with ' + card.brand + ' ending in ' + card.last4 + '...';
    fetch('/confirm', {{method: 'POST', headers: {{'content-type': 'application/json'}},
      body: JSON.stringify({{session: card.session}})}})
      .then(function (r) {{ return r.json(); }})
      .then(function (paid) {{ result.textContent = paid.paid ? 'Paid. Thank you!' : 'Payment failed: ' + paid.error; }});
  }},
  onError: function (e) {{ result.textContent = 'The card form says: ' + e.code; }}
}});
</script></body></html>
"""


def make_handler(shop):
    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, fmt, *args):
            shop.log(self.command + " " + self.path + " " + (fmt % args))

        def answer(self, status, content_type, body):
            data = body.encode()
            self.send_response(status)
            self.send_header("content-type", content_type)
            self.send_header("content-length", str(len(data)))
            self.send_header("cache-control", "no-store")
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self):
            if self.path != "/":
                return self.answer(404, "text/plain", "not found")
            order = shop.next_order()
            status, session = shop.cart.call("POST", "/v1/collect/sessions", {
                "origin": shop.origin, "ttl_s": 900, "cvc": "required", "reference": "order-%d" % order})
            if status != 201:
                return self.answer(502, "text/plain", "the vault refused the session: %s" % session["error"]["code"])
            frame_url = session["frame_url"]
            public = frame_url.split("/collect/v1/frame/")[0]
            script = public + "/collect/v1/cardvault.js"
            page = PAGE.format(script=html.escape(script), integrity=shop.integrity(script), order=order,
                               frame_url=json.dumps(frame_url))
            self.answer(200, "text/html; charset=utf-8", page)

        def do_POST(self):
            if self.path != "/confirm":
                return self.answer(404, "text/plain", "not found")
            length = min(int(self.headers.get("content-length", "0")), 4096)
            body = self.rfile.read(length)
            shop.log("body " + body.decode("utf-8", "replace"))
            try:
                session = str(json.loads(body)["session"])
            except (ValueError, KeyError, TypeError):
                return self.answer(400, "application/json", json.dumps({"paid": False, "error": "bad request"}))
            self.answer(200, "application/json", json.dumps(shop.confirm_and_pay(session)))

    return Handler


class Shop:
    def __init__(self, args):
        pki = os.path.join(args.dev, "pki") if args.dev else None
        ca = args.ca or os.path.join(pki, "ca.pem")
        cert = lambda name: (getattr(args, name + "_cert") or os.path.join(pki, name + ".pem"),
                             getattr(args, name + "_key") or os.path.join(pki, name + "-key.pem"))
        self.ca = ca
        self.cart = Vault(args.api, ca, *cert("cart"))
        self.payments = Vault(args.api, ca, *cert("payments"))
        self.route = args.route
        self.origin = "http://" + args.listen
        self.orders = 1000
        self.lock = threading.Lock()
        self.pinned = {}
        self.logfile = open(args.log, "a", buffering=1) if args.log else sys.stderr

    def log(self, line):
        with self.lock:
            self.logfile.write(line + "\n")

    def next_order(self):
        with self.lock:
            self.orders += 1
            return self.orders

    def integrity(self, script):
        with self.lock:
            if script not in self.pinned:
                self.pinned[script] = integrity_of(script, self.ca)
            return self.pinned[script]

    def confirm_and_pay(self, session):
        status, state = self.cart.call("GET", "/v1/collect/sessions/" + urllib.parse.quote(session, safe=""))
        if status != 200 or state["state"] != "completed":
            return {"paid": False, "error": (state or {}).get("state") or "unknown session"}
        token = state["token"]
        if not self.route:
            return {"paid": False, "error": "no payment route configured", "token": token}
        status, paid = self.payments.call("POST", "/v1/proxy/" + self.route, {
            "amount": 4200, "currency": "EUR", "reference": state.get("reference"),
            "card": {"number": token, "expiry": "%02d/%d" % (state["exp_month"], state["exp_year"])}})
        ok = status == 200 and bool(paid and paid.get("approved"))
        self.log("paid order %s with token %s: %s" % (state.get("reference"), token, "approved" if ok else status))
        return {"paid": ok, "token": token, "last4": state["last4"], "brand": state["brand"],
                "error": None if ok else "the payment provider said %s" % status}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--api", default=os.environ.get("CARDVAULT_ADDR", "https://127.0.0.1:8443"))
    parser.add_argument("--dev", help="a `cardvault serve --dev` directory (its CA, cart and payments certificates)")
    parser.add_argument("--ca")
    parser.add_argument("--cart-cert")
    parser.add_argument("--cart-key")
    parser.add_argument("--payments-cert")
    parser.add_argument("--payments-key")
    parser.add_argument("--listen", default="127.0.0.1:8080", help="HOST:PORT (the page's origin is http://HOST:PORT)")
    parser.add_argument("--route", help="the reveal proxy route that reaches the payment provider")
    parser.add_argument("--log", help="append the request log here instead of standard error")
    args = parser.parse_args()
    if not args.dev and not (args.ca and args.cart_cert and args.cart_key):
        parser.error("give --dev DIR, or --ca and the cart's (and payments') certificates")
    shop = Shop(args)
    host, port = args.listen.rsplit(":", 1)
    server = http.server.ThreadingHTTPServer((host, int(port)), make_handler(shop))
    print("shop listening on http://%s:%d/" % (host, server.server_address[1]), flush=True)
    server.serve_forever()


if __name__ == "__main__":
    sys.exit(main())
