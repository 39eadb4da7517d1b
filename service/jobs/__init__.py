"""Analysis jobs in the service: `chorus analyze` through the data plane, durable on disk."""
