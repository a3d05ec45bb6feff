"""Generates the Python protobuf and gRPC code of Trellis's protos (proto/workflow/v1/*.proto).

    python3 generate.py OUT_DIR

writes OUT_DIR/workflow/v1/{workflow,node_service}_pb2.py and *_pb2_grpc.py with grpc_tools.protoc
(Debian: python3-grpc-tools; pip: grpcio-tools). server.py calls generate() itself when it is not
given a directory of generated code, so nothing generated is committed.
"""

import os
import sys
from pathlib import Path

PROTO_ROOT = Path(__file__).resolve().parent.parent.parent / "proto"


def generate(out_dir: str) -> None:
    """Runs protoc over proto/workflow/v1/*.proto into out_dir (created if missing)."""
    from grpc_tools import protoc  # imported here so `--help` works without grpc_tools

    os.makedirs(out_dir, exist_ok=True)
    # The well-known types (google/protobuf/*.proto) ship inside grpc_tools.
    well_known = Path(protoc.__file__).resolve().parent / "_proto"
    protos = sorted(str(p) for p in (PROTO_ROOT / "workflow" / "v1").glob("*.proto"))
    if not protos:
        raise RuntimeError(f"no .proto files under {PROTO_ROOT / 'workflow' / 'v1'}")
    args = [
        "grpc_tools.protoc",
        f"-I{PROTO_ROOT}",
        f"-I{well_known}",
        f"--python_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        *protos,
    ]
    if protoc.main(args) != 0:
        raise RuntimeError(f"protoc failed on {', '.join(protos)}")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python3 generate.py OUT_DIR")
    generate(sys.argv[1])
