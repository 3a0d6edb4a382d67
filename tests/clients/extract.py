"""A DSR orchestrator's view of dsr-connector, in Python with grpcio.

Usage: extract.py GENERATED_DIR ADDRESS SOURCE KIND VALUE [TIMEOUT_SECONDS]

Calls with a deadline (timeout=) and a W3C traceparent, as an instrumented orchestrator would.

Generates nothing itself: GENERATED_DIR holds dsr/v1/dsr_pb2*.py from grpc_tools.protoc.
Prints one JSON summary: the status code, per-table row counts, the manifest's row count and
subject id, and whether every value carried a typed field.
"""
import json
import sys

sys.path.insert(0, sys.argv[1])

import grpc  # noqa: E402
from dsr.v1 import dsr_pb2, dsr_pb2_grpc  # noqa: E402


def main():
    _, _, address, source, kind, value, *rest = sys.argv
    timeout = float(rest[0]) if rest else 60.0
    summary = {"code": "OK", "tables": {}, "order": [], "typed": True}
    with grpc.insecure_channel(address) as channel:
        stub = dsr_pb2_grpc.DsrConnectorServiceStub(channel)
        request = dsr_pb2.ExtractRequest(
            source=source,
            subject=dsr_pb2.Identity(kind=kind, value=value),
            request_id="py-1",
            batch_size=3,
        )
        try:
            metadata = [
                ("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
                ("x-request-id", "py-request-1"),
            ]
            call = stub.Extract(request, timeout=timeout, metadata=metadata)
            for message in call:
                event = message.WhichOneof("event")
                summary["order"].append(event)
                if event == "batch":
                    table = summary["tables"].setdefault(message.batch.table, 0)
                    summary["tables"][message.batch.table] = table + len(message.batch.rows)
                    for row in message.batch.rows:
                        for v in row.values:
                            if v.WhichOneof("kind") is None:
                                summary["typed"] = False
                elif event == "manifest":
                    summary["row_count"] = message.manifest.row_count
                    summary["subject_id"] = message.manifest.subject_id
                    summary["verified"] = all(t.verified for t in message.manifest.tables)
            summary["request_id"] = dict(call.initial_metadata()).get("x-request-id")
        except grpc.RpcError as error:
            summary["code"] = error.code().name
            summary["details"] = error.details()
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
