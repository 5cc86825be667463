"""One gRPC call with grpcio (gRPC's C core), for the end-to-end tests.

Usage: grpc_call.py TARGET METHOD unary|stream [options]

  --header KEY=VALUE   metadata to send (repeatable)
  --authority VALUE    set grpc.default_authority (default: grpcio's own)
  --pad-metadata N     add an `x-pad` metadata value of N bytes
  --timeout SECONDS    deadline of the call (default 20)

The request is the empty message (b''). Prints one JSON line: the status
code name, its details, and the responses received (the first one only for
a stream), each as latin-1 text so the caller can look for a SPIFFE ID.
No generated stubs: the method is called with grpcio's generic API.
"""

import argparse
import json
import sys

import grpc


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("target")
    parser.add_argument("method")
    parser.add_argument("kind", choices=["unary", "stream"])
    parser.add_argument("--header", action="append", default=[])
    parser.add_argument("--authority")
    parser.add_argument("--pad-metadata", type=int, default=0)
    parser.add_argument("--timeout", type=float, default=20)
    args = parser.parse_args()

    metadata = [tuple(h.split("=", 1)) for h in args.header]
    if args.pad_metadata:
        metadata.append(("x-pad", "p" * args.pad_metadata))
    options = []
    if args.authority is not None:
        options.append(("grpc.default_authority", args.authority))

    identity = lambda b: b  # noqa: E731 - raw protobuf bytes both ways
    responses = []
    code, details = "OK", ""
    with grpc.insecure_channel(args.target, options=options) as channel:
        try:
            if args.kind == "unary":
                call = channel.unary_unary(
                    args.method, request_serializer=identity, response_deserializer=identity
                )
                responses.append(call(b"", metadata=metadata, timeout=args.timeout))
            else:
                call = channel.unary_stream(
                    args.method, request_serializer=identity, response_deserializer=identity
                )
                stream = call(b"", metadata=metadata, timeout=args.timeout)
                for response in stream:
                    responses.append(response)
                    stream.cancel()
                    break
        except grpc.RpcError as error:
            if not (responses and error.code() == grpc.StatusCode.CANCELLED):
                code, details = error.code().name, error.details() or ""
    print(
        json.dumps(
            {
                "code": code,
                "details": details,
                "grpc_version": grpc.__version__,
                "responses": [r.decode("latin-1") for r in responses],
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
