#!/usr/bin/env python3
"""A shopping cart's checkout talking to cardvault over mutual TLS.

The cart swaps the card number for a token as soon as it has it, keeps only
the token (and the BIN, last 4 and brand it may show), and reads the token's
metadata later. It never holds the PAN longer than one call and never logs it.
Standard library only (ssl, http.client, json).

    python3 examples/python/cart.py --dev ./cardvault-dev --addr https://127.0.0.1:8443

or with a production PKI: --ca CA.pem --cert cart.pem --key cart-key.pem.
The PAN comes from standard input when one is piped in, else the public
test card 4111 1111 1111 1111.
"""

import argparse
import http.client
import json
import os
import ssl
import sys
import urllib.parse


class Vault:
    """One keep-alive mTLS connection to the vault's API."""

    def __init__(self, addr, ca, cert, key):
        url = urllib.parse.urlparse(addr)
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ca)
        context.minimum_version = ssl.TLSVersion.TLSv1_3
        context.load_cert_chain(cert, key)
        self.conn = http.client.HTTPSConnection(url.hostname, url.port, context=context, timeout=10)

    def call(self, method, path, body=None):
        """Returns (status, parsed JSON or None). Errors are the vault's
        {"error": {"code", "message"}}: stable codes, fixed messages."""
        headers = {"content-type": "application/json"} if body is not None else {}
        payload = json.dumps(body).encode() if body is not None else None
        self.conn.request(method, path, body=payload, headers=headers)
        response = self.conn.getresponse()
        data = response.read()
        return response.status, (json.loads(data) if data else None)

    def tokenize(self, pan, expiry=None):
        body = {"pan": pan}
        if expiry:
            body["expiry"] = expiry
        return self.call("POST", "/v1/tokenize", body)

    def metadata(self, token):
        return self.call("GET", "/v1/tokens/" + urllib.parse.quote(token, safe=""))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--addr", default=os.environ.get("CARDVAULT_ADDR", "https://127.0.0.1:8443"))
    parser.add_argument("--dev", help="a `cardvault serve --dev` directory (uses its CA and the cart certificate)")
    parser.add_argument("--ca", default=os.environ.get("CARDVAULT_CACERT"))
    parser.add_argument("--cert", default=os.environ.get("CARDVAULT_CERT"))
    parser.add_argument("--key", default=os.environ.get("CARDVAULT_KEY"))
    args = parser.parse_args()
    if args.dev:
        pki = os.path.join(args.dev, "pki")
        args.ca, args.cert, args.key = (os.path.join(pki, f) for f in ("ca.pem", "cart.pem", "cart-key.pem"))
    if not (args.ca and args.cert and args.key):
        parser.error("give --dev DIR, or --ca, --cert and --key")

    pan = "4111111111111111" if sys.stdin.isatty() else (sys.stdin.readline().strip() or "4111111111111111")
    vault = Vault(args.addr, args.ca, args.cert, args.key)
    status, answer = vault.tokenize(pan, expiry="12/29")
    del pan  # the cart keeps only the token from here on
    if status != 200:
        print(json.dumps({"step": "tokenize", "status": status, "error": answer["error"]["code"]}))
        return 1
    token = answer["token"]
    status, meta = vault.metadata(token)
    if status != 200:
        print(json.dumps({"step": "metadata", "status": status, "error": meta["error"]["code"]}))
        return 1
    # What the order page may show: brand and last 4, never the PAN.
    print(json.dumps({"token": token, "brand": meta["brand"], "last4": meta["last4"], "expiry": meta.get("expiry")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
