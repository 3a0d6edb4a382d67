"""Answer one data-subject request with dsr-connector, from Python (grpcio).

    python3 examples/python/dsr_extract.py --addr 127.0.0.1:50051 --source demo \
        --kind email --value alice@example.com --out alice-python
    python3 examples/python/dsr_extract.py --addr 127.0.0.1:50051 --source demo \
        --kind email --value user1001@example.net --erase

What an orchestrator should do, shown end to end:
  * stubs generated from proto/ with grpc_tools (at start-up, into a temporary directory);
  * a deadline on every call, x-request-id, and a bearer token when --token-env names one;
  * the documented statuses: UNAVAILABLE is retried with backoff (at least as long as the
    server's grpc-retry-pushback-ms asks); every other error stops, with what to do about it;
  * the data package: one JSON-lines file per table, manifest.json and README.txt, written to a
    temporary directory and renamed into place only once the manifest has arrived;
  * with --erase, an erasure instead: a preview (dry run), then the erasure confirmed by the
    preview's digest (ABORTED when the rows changed in between: preview again).

Exit status: 0 written; 2 bad request or caller (fix and resend); 3 the service cannot answer
as configured (schema drift); 4 the answer cannot be trusted (DATA_LOSS): escalate; 5 gave up
after retries or the deadline; 1 anything else.
"""
import argparse
import base64
import json
import math
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
import uuid

import grpc

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# What each status means for the caller: (exit status, advice). UNAVAILABLE is retried first.
STOP = {
    grpc.StatusCode.INVALID_ARGUMENT: (2, "the request is malformed; fix it"),
    grpc.StatusCode.NOT_FOUND: (2, "unknown source or table"),
    grpc.StatusCode.UNAUTHENTICATED: (2, "no valid bearer token (see --token-env)"),
    grpc.StatusCode.PERMISSION_DENIED: (2, "this caller may not read this source"),
    grpc.StatusCode.FAILED_PRECONDITION: (3, "the live schema no longer matches the data map"),
    grpc.StatusCode.DATA_LOSS: (4, "counts did not verify: discard everything and escalate"),
    grpc.StatusCode.DEADLINE_EXCEEDED: (5, "the deadline passed; raise --deadline"),
    grpc.StatusCode.RESOURCE_EXHAUSTED: (5, "the service is busy or a row is too large"),
    grpc.StatusCode.UNAVAILABLE: (5, "still unavailable after every attempt; try later"),
    grpc.StatusCode.ABORTED: (5, "the rows changed since the preview; preview again"),
    grpc.StatusCode.UNKNOWN: (4, "the erasure's outcome is unknown: escalate"),
}


def load_stubs():
    """Generates the Python stubs from proto/ and imports them."""
    out = tempfile.mkdtemp(prefix="dsr-stubs-")
    proto = os.path.join(ROOT, "proto")
    subprocess.run(
        [sys.executable, "-m", "grpc_tools.protoc", "-I", proto,
         "--python_out", out, "--grpc_python_out", out,
         os.path.join(proto, "dsr", "v1", "dsr.proto")],
        check=True,
    )
    sys.path.insert(0, out)
    from dsr.v1 import dsr_pb2, dsr_pb2_grpc  # noqa: E402
    shutil.rmtree(out, ignore_errors=True)
    return dsr_pb2, dsr_pb2_grpc


def duration(text):
    """Seconds from "90", "90s", "500ms", "10m" or "1h"."""
    for unit, scale in (("ms", 0.001), ("s", 1), ("m", 60), ("h", 3600)):
        if text.endswith(unit) and text[: -len(unit)].replace(".", "", 1).isdigit():
            return float(text[: -len(unit)]) * scale
    return float(text)


def render(value):
    """A typed Value as JSON: the same rendering as `dsr-connector extract`."""
    kind = value.WhichOneof("kind")
    if kind is None or kind == "null_value":
        return None
    v = getattr(value, kind)
    if kind == "double_value" and not math.isfinite(v):
        return "NaN" if math.isnan(v) else ("Infinity" if v > 0 else "-Infinity")
    if kind == "bytes_value":
        return base64.b64encode(v).decode()
    if kind == "timestamp_value":
        return v.ToJsonString()
    if kind == "json_value":
        return json.loads(v)
    return v


def file_name(table, used):
    """A table's file name in the package: plain characters kept, anything else replaced, so
    that no name from the server reaches outside it; unique within the package."""
    base = "".join(c if (c.isascii() and c.isalnum()) or c in "_-." else "_" for c in table[:100])
    if not base or base.startswith("."):
        base = "_" + base
    name, n = f"{base}.jsonl", 2
    while name in used:
        name, n = f"{base}-{n}.jsonl", n + 1
    used.add(name)
    return name


def plural(n, one, many):
    return one if n == 1 else many


def readme(started, names, rows, done, manifest):
    """The package's explanation, for the data subject: the same text as every client's."""
    source, kind = manifest.source, manifest.subject_kind
    out = [f'Your personal data from "{source}"', "=" * (26 + len(source)), "",
           f'This package holds every record about you that was found in "{source}", looked up by',
           f"your {kind}. All of it was read from one consistent copy (snapshot) of the database, taken",
           f"at {manifest.extraction_timestamp.ToJsonString()}. For each table, the number of records written here was checked",
           "against the database's own count in the same snapshot.", "",
           f"Request:     {manifest.request_id}",
           f"Extraction:  {manifest.extraction_id}",
           f"Reference:   {manifest.subject_id} (a keyed fingerprint of the identity you gave, not the identity itself)",
           "", "Files", "-----", "",
           "manifest.json",
           "    The verified record of this extraction: the tables, their record counts, the",
           "    fields searched and when. It is protobuf JSON (dsr.v1.Manifest)."]
    for table in started.tables:
        n = rows[table.table]
        described = f" {table.description}" if table.description else ""
        out += ["", names[table.table],
                f'    Table "{table.table}": {n} record{plural(n, "", "s")}.{described}',
                "    One record per line, as a JSON object with these fields:"]
        width = max((len(c.name) for c in table.columns), default=0)
        for c in table.columns:
            category = "not personal data on its own" if c.category == "not_pii" else c.category
            out.append(f"      {c.name.ljust(width)}  {category}")
        completed = done.get(table.table)
        if completed is not None and completed.rejected_count > 0:
            r = completed.rejected_count
            out += [f"    {r} more record{plural(r, '', 's')} of this table could not be read as "
                    f"declared and {plural(r, 'is', 'are')} not",
                    f"    included here; ask us about {plural(r, 'it', 'them')}, quoting the "
                    "extraction id above."]
        if completed is not None and completed.pii_fields:
            out.append("    Inside its JSON fields we also found:")
            for field in completed.pii_fields:
                path, _, category = field.rpartition(":") if ":" in field else (field, "", "")
                out.append(f"      {path}  {category}")
    if started.unreachable_tables:
        out += ["", "Not searched", "------------", "",
                f"These tables cannot be reached from your {kind}, so they were not searched:"]
        out += [f"  {u.table}: {u.reason}" for u in started.unreachable_tables]
    out += ["", "What the categories mean", "------------------------", ""]
    described = {c.name: c.description for c in started.categories}
    for name in sorted(described):
        if name != "not_pii":
            out.append(f"  {name}: {described[name] or '(no description given)'}")
    out += ["", "How values are written", "----------------------", "",
            "  Times are UTC, in ISO 8601 (2024-03-14T09:26:53Z); dates are YYYY-MM-DD.",
            "  Exact decimal numbers (amounts of money, for example) are text, so that no digit is",
            "  lost. Binary data is base64. Nested documents are JSON, as stored. A missing value",
            "  is null."]
    return "\n".join(out) + "\n"


class Package:
    """A data package written to a private temporary directory beside `out`."""

    def __init__(self, out):
        if os.path.exists(out):
            raise SystemExit(f"{out} already exists; choose a new directory")
        parent = os.path.dirname(os.path.abspath(out))
        self.out = out
        self.dir = tempfile.mkdtemp(prefix=f".{os.path.basename(out)}.partial-", dir=parent)
        self.files = {}
        self.columns = {}
        self.rows = {}
        self.names = {}
        self.done = {}
        self.started = None

    def start(self, started):
        self.started = started
        used = set()
        for table in started.tables:
            name = file_name(table.table, used)
            self.names[table.table] = name
            fd = os.open(os.path.join(self.dir, name), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            self.files[table.table] = os.fdopen(fd, "w", encoding="utf-8")
            self.columns[table.table] = [c.name for c in table.columns]
            self.rows[table.table] = 0

    def batch(self, batch):
        f, names = self.files[batch.table], self.columns[batch.table]
        for row in batch.rows:
            obj = {name: render(v) for name, v in zip(names, row.values)}
            f.write(json.dumps(obj, ensure_ascii=False, separators=(",", ":")) + "\n")
        self.rows[batch.table] += len(batch.rows)

    def completed(self, done):
        if done.row_count != self.rows[done.table]:
            raise RuntimeError(f"{done.table}: {self.rows[done.table]} rows received, "
                               f"the server says {done.row_count}")
        self.files[done.table].close()
        self.done[done.table] = done
        left_out = f" ({done.rejected_count} left out)" if done.rejected_count else ""
        print(f"{done.table}: {done.row_count} row(s){left_out}, count verified", file=sys.stderr)

    def finish(self, manifest, json_format):
        for table in manifest.tables:
            if not table.verified or table.row_count != self.rows[table.table]:
                raise RuntimeError(f"{table.table}: the manifest does not match the stream")
        self._write("manifest.json", json_format.MessageToJson(manifest) + "\n")
        self._write("README.txt", readme(self.started, self.names, self.rows, self.done, manifest))
        os.rename(self.dir, self.out)

    def discard(self):
        for f in self.files.values():
            f.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    def _write(self, name, text):
        fd = os.open(os.path.join(self.dir, name), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)


def extract_once(stub, dsr_pb2, json_format, args, value, metadata, deadline):
    package = Package(args.out)
    try:
        request = dsr_pb2.ExtractRequest(
            source=args.source,
            subject=dsr_pb2.Identity(kind=args.kind, value=value),
            request_id=args.request_id,
            compliance_tag=args.compliance_tag,
        )
        call = stub.Extract(request, timeout=max(deadline - time.monotonic(), 0.001),
                            metadata=metadata)
        for message in call:
            event = message.WhichOneof("event")
            if event == "started":
                package.start(message.started)
            elif event == "batch":
                package.batch(message.batch)
            elif event == "table_completed":
                package.completed(message.table_completed)
            elif event == "manifest":
                package.finish(message.manifest, json_format)
                return message.manifest
        raise RuntimeError("the stream ended without a manifest")
    except BaseException:
        package.discard()
        raise


ACTIONS = {0: "?", 1: "delete", 2: "mask", 3: "retain"}


def erase(stub, dsr_pb2, args, value, metadata, deadline):
    """Erases one subject: a preview (dry run) first, then the erasure confirmed by the
    preview's digest, so that rows that changed in between are not erased unseen (ABORTED)."""
    request = dsr_pb2.EraseRequest(
        source=args.source,
        subject=dsr_pb2.Identity(kind=args.kind, value=value),
        request_id=args.request_id,
        compliance_tag=args.compliance_tag,
        dry_run=True,
    )
    receipts = []
    for dry_run in (True, False):
        request.dry_run = dry_run
        call = stub.Erase(request, timeout=max(deadline - time.monotonic(), 0.001),
                          metadata=metadata)
        receipt = None
        for message in call:
            if message.WhichOneof("event") == "receipt":
                receipt = message.receipt
        if receipt is None:
            raise RuntimeError("the stream ended without a receipt")
        for table in receipt.tables:
            print(f"{'would ' if dry_run else ''}{ACTIONS.get(table.action, '?')} "
                  f"{table.table}: {table.rows} row(s)", file=sys.stderr)
        receipts.append(receipt)
        request.preview_digest = receipt.preview_digest
    return receipts[-1]


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--addr", required=True, help="host:port of dsr-connector")
    p.add_argument("--source", required=True)
    p.add_argument("--kind", required=True)
    p.add_argument("--value", help="the identity value (or --value-env)")
    p.add_argument("--value-env", help="environment variable holding the identity value")
    p.add_argument("--out", help="the package directory to create")
    p.add_argument("--erase", action="store_true",
                   help="erase the subject (a preview, then the erasure) instead of extracting")
    p.add_argument("--token-env", help="environment variable holding the bearer token")
    p.add_argument("--request-id", default=f"py-{uuid.uuid4()}")
    p.add_argument("--compliance-tag", default="")
    p.add_argument("--deadline", type=duration, default="10m",
                   help="how long the request may take, retries included (90s, 10m)")
    p.add_argument("--attempts", type=int, default=5)
    args = p.parse_args()
    value = args.value if args.value is not None else os.environ.get(args.value_env or "", "")
    if not value:
        raise SystemExit("give the identity with --value or --value-env")
    if not args.erase and not args.out:
        raise SystemExit("give the package directory with --out (or --erase)")

    dsr_pb2, dsr_pb2_grpc = load_stubs()
    from google.protobuf import json_format

    metadata = [("x-request-id", args.request_id)]
    if args.token_env:
        metadata.append(("authorization", f"Bearer {os.environ[args.token_env]}"))
    deadline = time.monotonic() + args.deadline
    delay = 0.5
    with grpc.insecure_channel(args.addr) as channel:
        stub = dsr_pb2_grpc.DsrConnectorServiceStub(channel)
        for attempt in range(1, args.attempts + 1):
            try:
                if args.erase:
                    receipt = erase(stub, dsr_pb2, args, value, metadata, deadline)
                    print(f"erased: {receipt.rows_deleted} deleted, {receipt.rows_masked} masked, "
                          f"{receipt.rows_retained} retained (erasure {receipt.erasure_id}, "
                          f"receipt sha256 {receipt.receipt_sha256})")
                    return 0
                manifest = extract_once(stub, dsr_pb2, json_format, args, value, metadata,
                                        deadline)
                print(f"{args.out}: {manifest.row_count} row(s), every count verified "
                      f"(extraction {manifest.extraction_id})")
                return 0
            except grpc.RpcError as error:
                code = error.code()
                if code == grpc.StatusCode.UNAVAILABLE and attempt < args.attempts:
                    pushback = dict(error.trailing_metadata() or ()).get("grpc-retry-pushback-ms")
                    wait = max(delay, int(pushback) / 1000 if pushback else 0)
                    wait *= random.uniform(1.0, 1.25)  # jitter, so callers do not retry in step
                    if time.monotonic() + wait < deadline:
                        print(f"attempt {attempt}: UNAVAILABLE ({error.details()}); "
                              f"again in {wait:.1f}s", file=sys.stderr)
                        time.sleep(wait)
                        delay = min(delay * 2, 30)
                        continue
                status, advice = STOP.get(code, (1, "unexpected"))
                done = "nothing was erased" if args.erase else "nothing was written"
                print(f"error: {code.name}: {error.details()} ({advice}); {done}",
                      file=sys.stderr)
                return status
    return 5


if __name__ == "__main__":
    sys.exit(main())
