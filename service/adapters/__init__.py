"""Protocol adapters over the data plane: REST, KServe v2 over HTTP, KServe v2 over gRPC."""
