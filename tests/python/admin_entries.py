"""Lists registration entries over the Admin API with grpcio, decoding them
with message classes built from Lanyard's published descriptors, as a
client in another language would after generating code from admin.proto
and the lanyard/types/v1/entry.proto it imports.

    admin_entries.py TARGET DESCRIPTORS

DESCRIPTORS is lanyard_proto::FILE_DESCRIPTOR_SET written to a file. Prints
one JSON line: the status code name, and the entries as the generated
classes read them.
"""

import json
import sys

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory


def load_pool(path):
    files = descriptor_pb2.FileDescriptorSet.FromString(open(path, "rb").read()).file
    pool = descriptor_pool.DescriptorPool()
    added = set()
    # Each file after the files it imports.
    while len(added) < len(files):
        progress = False
        for f in files:
            if f.name not in added and all(d in added for d in f.dependency):
                pool.Add(f)
                added.add(f.name)
                progress = True
        if not progress:
            raise SystemExit("descriptor set with a missing import")
    return pool


def main() -> int:
    target, descriptors = sys.argv[1:3]
    pool = load_pool(descriptors)
    message = lambda name: message_factory.GetMessageClass(pool.FindMessageTypeByName(name))
    request = message("lanyard.admin.v1.ListEntriesRequest")
    response = message("lanyard.admin.v1.ListEntriesResponse")
    channel = grpc.insecure_channel(target)
    call = channel.unary_unary(
        "/lanyard.admin.v1.Admin/ListEntries",
        request_serializer=request.SerializeToString,
        response_deserializer=response.FromString,
    )
    try:
        answer = call(request(), timeout=20)
        out = {
            "code": "OK",
            "entry_type": answer.DESCRIPTOR.fields_by_name["entries"].message_type.full_name,
            "entries": [
                {
                    "spiffe_id": e.spiffe_id,
                    "parent_id": e.parent_id,
                    "selectors": list(e.selectors),
                    "dns_names": list(e.dns_names),
                    "hint": e.hint,
                    "x509_svid_ttl_seconds": e.x509_svid_ttl_seconds,
                }
                for e in answer.entries
            ],
        }
    except grpc.RpcError as e:
        out = {"code": e.code().name, "details": e.details()}
    print(json.dumps(out))
    return 0


sys.exit(main())
