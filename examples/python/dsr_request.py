"""Submit one data-subject request across every source with dsr-connector, and wait for it,
from Python, with google-api-core's long-running-operation client.

    python3 examples/python/dsr_request.py --addr 127.0.0.1:50051 --id dsr-py-1 \
        --kind email --value alice@example.com
    python3 examples/python/dsr_request.py --addr 127.0.0.1:50051 --id dsr-py-2 \
        --kind email --value user1004@example.net --erase --approve

What an orchestrator does with a durable request:
  * stubs for dsr/v1/requests.proto generated from proto/ with grpc_tools at start-up; the
    google.longrunning messages and client come from googleapis-common-protos and
    google-api-core (examples/python/requirements.txt);
  * SubmitRequest with the request's own id: submitting it again (after a crash of the
    orchestrator, say) returns the same operation, never a second request;
  * the operation wrapped in google.api_core.operation.Operation, whose result() polls
    GetOperation until the request is done; its metadata (RequestProgress) says where each
    source stands meanwhile;
  * an erasure request stops in AWAITING_APPROVAL with each source's preview: with --approve
    it is approved with the digests shown (a person would read them first), then followed to
    its end;
  * a bearer token (--token-env) and x-request-id on every call, from a channel interceptor.

Exit status: 0 the request succeeded; 2 refused (fix the request or the caller's scopes);
4 the request failed or was cancelled; 5 the server was unavailable or it did not end in time;
1 anything else.
"""
import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid

import grpc
from google.api_core import exceptions, operation, operations_v1

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def load_stubs():
    """Generates the Python stubs of dsr.proto and requests.proto from proto/."""
    out = tempfile.mkdtemp(prefix="dsr-stubs-")
    proto = os.path.join(ROOT, "proto")
    subprocess.run(
        [sys.executable, "-m", "grpc_tools.protoc", "-I", proto,
         "--python_out", out, "--grpc_python_out", out,
         os.path.join(proto, "dsr", "v1", "dsr.proto"),
         os.path.join(proto, "dsr", "v1", "requests.proto")],
        check=True,
    )
    sys.path.insert(0, out)
    from dsr.v1 import dsr_pb2, requests_pb2, requests_pb2_grpc  # noqa: E402
    shutil.rmtree(out, ignore_errors=True)
    return dsr_pb2, requests_pb2, requests_pb2_grpc


class CallMetadata(grpc.UnaryUnaryClientInterceptor):
    """Adds x-request-id and, when given, the bearer token to every unary call."""

    def __init__(self, token):
        self.token = token

    def intercept_unary_unary(self, continuation, details, request):
        metadata = list(details.metadata or [])
        metadata.append(("x-request-id", f"py-{uuid.uuid4()}"))
        if self.token:
            metadata.append(("authorization", f"Bearer {self.token}"))
        details = details._replace(metadata=metadata)
        return continuation(details, request)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--addr", required=True)
    parser.add_argument("--id", required=True, help="the request's id (its idempotency key)")
    parser.add_argument("--kind", required=True)
    parser.add_argument("--value", required=True)
    parser.add_argument("--source", action="append", default=[],
                        help="a source to ask (repeatable); default every source of the kind")
    parser.add_argument("--erase", action="store_true", help="an erasure request")
    parser.add_argument("--approve", action="store_true",
                        help="approve the erasure's previews as shown")
    parser.add_argument("--token-env", help="environment variable holding the bearer token")
    parser.add_argument("--timeout", type=float, default=300, help="seconds to wait for it")
    args = parser.parse_args()

    dsr_pb2, requests_pb2, requests_pb2_grpc = load_stubs()
    token = os.environ.get(args.token_env) if args.token_env else None
    channel = grpc.intercept_channel(grpc.insecure_channel(args.addr), CallMetadata(token))
    service = requests_pb2_grpc.DsrRequestServiceStub(channel)
    operations = operations_v1.OperationsClient(channel)

    kind = (requests_pb2.REQUEST_KIND_ERASURE if args.erase
            else requests_pb2.REQUEST_KIND_ACCESS)
    try:
        submitted = service.SubmitRequest(
            requests_pb2.SubmitRequestRequest(
                request_id=args.id, kind=kind,
                subject=dsr_pb2.Identity(kind=args.kind, value=args.value),
                sources=args.source, compliance_tag="gdpr"),
            timeout=30)
    except grpc.RpcError as error:
        return refused(error)
    print(f"submitted: {submitted.name}")
    future = operation.from_gapic(
        submitted, operations, requests_pb2.RequestResult,
        metadata_type=requests_pb2.RequestProgress)

    if args.erase:
        if not wait_for_approval(future, requests_pb2, args.timeout):
            return 5
        progress = future.metadata
        digests = {}
        for source in progress.sources:
            if source.state == requests_pb2.REQUEST_STATE_AWAITING_APPROVAL:
                preview = source.preview
                print(f"preview {source.source}: {preview.rows_deleted} deleted, "
                      f"{preview.rows_masked} masked, {preview.rows_retained} retained")
                # keyed by the task's folder: one per identity a source was asked with
                digests[source.folder] = source.preview_digest
        if not args.approve:
            print(f"waiting for approval: {submitted.name}")
            return 0
        try:
            service.ApproveRequest(
                requests_pb2.ApproveRequestRequest(name=submitted.name, digests=digests),
                timeout=30)
        except grpc.RpcError as error:
            return refused(error)

    try:
        result = future.result(timeout=args.timeout)
    except exceptions.GoogleAPICallError as error:
        print(f"the request ended {error.grpc_status_code}: {error.message}", file=sys.stderr)
        return 4
    except TimeoutError:
        print(f"{submitted.name} has not ended after {args.timeout}s; it goes on",
              file=sys.stderr)
        return 5
    for source in result.sources:
        which = source.WhichOneof("result")
        if which == "manifest":
            print(f"{source.source}: {source.manifest.row_count} row(s), every count verified")
        elif which == "receipt":
            print(f"{source.source}: {source.receipt.rows_deleted} deleted, "
                  f"{source.receipt.rows_masked} masked")
    if result.package_path:
        print(f"package: {result.package_path} (sha256 {result.package_sha256})")
    return 0


def wait_for_approval(future, requests_pb2, timeout):
    """Polls the operation until every preview is ready (or it ended)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if future.done():
            return True
        progress = future.metadata
        if progress is not None and progress.state == requests_pb2.REQUEST_STATE_AWAITING_APPROVAL:
            return True
        time.sleep(0.5)
    print("the previews were not ready in time", file=sys.stderr)
    return False


def refused(error):
    code = error.code()
    print(f"refused: {code.name}: {error.details()}", file=sys.stderr)
    if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
        return 5
    if code in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND,
                grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.UNAUTHENTICATED,
                grpc.StatusCode.ALREADY_EXISTS, grpc.StatusCode.FAILED_PRECONDITION):
        return 2
    return 1


if __name__ == "__main__":
    sys.exit(main())
