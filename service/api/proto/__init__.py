"""Service layer (api): typed gRPC API `mfd.v1.Predictor` (mfd_v1.proto) and its generated modules.

Regenerate after editing the .proto (grpcio-tools is needed only for this, not at run time), from the repo root:
    pip install grpcio-tools==1.75.1   # its protobuf gencode (6.31) must not be newer than the protobuf runtime
    python -m grpc_tools.protoc -I . --python_out=. --pyi_out=. --grpc_python_out=. service/api/proto/mfd_v1.proto
"""
