"""Schemathesis hooks for cardvault (scripts/schemathesis.sh).

- `application/x-ndjson` bodies (POST /v1/admin/import) are serialized as
  the text they are: the document describes the body as a string.
- A KEK rotation to a fresh split writes share files on the vault's host:
  every generated `out_dir` is moved under the run's scratch directory, so a
  generated "/x" never lands in the real file system. Everything else the
  fuzzer generates goes to the vault as it is.
"""

import os
import uuid

import schemathesis


@schemathesis.serializer("application/x-ndjson")
def ndjson(ctx, value):
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode("utf-8", "surrogatepass")
    return str(value).encode()


@schemathesis.hook
def map_body(ctx, body):
    scratch = os.environ.get("CARDVAULT_SCHEMATHESIS_SCRATCH")
    if scratch and isinstance(body, dict) and isinstance(body.get("out_dir"), str):
        body["out_dir"] = os.path.join(scratch, uuid.uuid4().hex)
    return body
