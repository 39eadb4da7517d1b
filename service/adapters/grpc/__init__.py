"""KServe v2 over gRPC. The generated modules come from kserve_v2.proto (`make protos`)."""
