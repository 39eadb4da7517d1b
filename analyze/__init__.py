"""Engine-free building blocks of `chorus analyze`: sources, clock times, detections, outputs, resume journal.

Nothing here decodes audio or runs a model: the run takes an analyzer callable (see
`analyze.analyzer`) that the engine provides, so every step here is testable with fakes.
"""
