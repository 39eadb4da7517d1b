"""Batch analysis executors for `chorus analyze`: the analyze package's runs, fed by a model.

On one machine the run uses analyze.pipeline (worker processes for decoding and features, one
model consumer) with the model opened here (model.py); ray.py runs it on a Ray cluster. The model
comes from the same model store and runtime module as the service (no torch).
"""
