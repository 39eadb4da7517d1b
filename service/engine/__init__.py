"""The engine side: the process that owns the model runtimes and batches model calls, and the API
workers' client to it."""
