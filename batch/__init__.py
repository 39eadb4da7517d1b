"""Batch analysis executors for `chorus analyze`: the analyze package's runs, fed by a model.

local.py runs on one machine (worker processes for decoding and features, one model consumer);
the model comes from the same model store and runtime module as the service (no torch).
"""
