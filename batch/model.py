"""The birdcall model as a batch analysis uses it: the exported model from the model store, checked
and opened by the service's runtime module, its front end and labels from the stored files."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np

from analyze.records import ModelInfo
from features import FrontEnd, FrontEndConfigError
from layout import artifacts
from layout.machine import usable_cores
from service.engine.loaded import LoadedModel, open_model
from service.engine.runtime import choose_providers
from service.models.birdcall import BirdcallModel, stored_frontend, stored_threshold
from service.store import StoredModel

SCORES = "scores"
"""The exported model's output of independent calibrated per-species scores."""
RUN_WINDOWS = 8
"""Windows per runtime run, always: a window's scores differ in their last bits with the size of
the run it rides in (1e-7: the kernels' blocking), and which windows share a run depends on timing
(the queue, the tail's lanes). Runs of one size make a resumed run's tables equal an uninterrupted
one's, byte for byte; the last run of a call is padded. Where a window sits in its run does not matter."""


@dataclass
class AnalysisModel:
    """What a run needs to know of the model (front end, labels, threshold), read from the store, and
    its runtime session, opened by `open` (at the latest by the first `score`)."""

    stored: StoredModel
    variant: str
    providers: list[str]
    frontend: FrontEnd
    labels: tuple[str, ...]
    threshold: float
    """The calibrated decision threshold stored with the model: the default min_confidence."""
    _loaded: LoadedModel | None = field(default=None, init=False, repr=False)

    def open(self) -> LoadedModel:
        """Check the stored files against their digests and open the variant; once. Raises
        ArtifactError, or ValueError for a model without the scores output.

        One runtime thread per run, and a lane (a run at a time) per core: `score` runs one lane
        while the decode workers have the other cores, and all of them once the workers are done."""
        if self._loaded is None:
            loaded = open_model(
                self.stored,
                self.variant,
                self.providers,
                required=BirdcallModel.stored_files,
                threads=1,
                lanes=usable_cores(),
                max_run_items=RUN_WINDOWS,
            )
            if SCORES not in loaded.output_names:
                name = f"{self.stored.name}:{self.stored.version}"
                raise ValueError(f"{name} has no {SCORES!r} output; export it again with chorus export birdcall")
            self._loaded = loaded
        return self._loaded

    def score(self, windows: np.ndarray) -> np.ndarray:
        """Normalized log-mel windows -> [n, n_labels] scores, in runs of RUN_WINDOWS one at a time."""
        return self._score(windows, lanes=1)

    def score_on_every_core(self, windows: np.ndarray) -> np.ndarray:
        """`score` with a run at once on every lane: for when the decode workers have left."""
        return self._score(windows, lanes=None)

    def _score(self, windows: np.ndarray, lanes: int | None) -> np.ndarray:
        loaded = self.open()
        n = len(windows)
        if n == 0:
            return np.zeros((0, len(self.labels)), np.float32)
        padding = -n % RUN_WINDOWS
        if padding:
            windows = np.concatenate([windows, np.zeros((padding, *windows.shape[1:]), windows.dtype)])
        # At most a lane per whole run: the runner would otherwise split a batch into smaller runs.
        lanes = min(lanes or usable_cores(), len(windows) // RUN_WINDOWS)
        return loaded.run({"features": windows}, lanes)[loaded.output_names.index(SCORES)][:n]

    def info(self) -> ModelInfo:
        config = self.frontend.config
        return ModelInfo(self.stored.name, self.stored.version, self.labels, low_hz=config.f_min, high_hz=config.f_max)


def load_analysis_model(
    tag: str = "birdcall:latest",
    variant: str = "fp32",
    providers: str = "auto",
    stride_seconds: float | None = None,
    *,
    open_now: bool = True,
) -> AnalysisModel:
    """The model of `tag` in the store. `stride_seconds` moves the windows (a whole number of hops).
    open_now=False leaves checking the files and opening the runtime session to `open` (~0.05 s),
    so that it can overlap other work."""
    stored = StoredModel.resolve(tag)
    frontend = stored_frontend(stored)
    if stride_seconds is not None:
        clip = frontend.config.clip_seconds
        if stride_seconds > clip:
            raise ValueError(
                f"stride {stride_seconds:g} s is longer than the model's {clip:g} s windows: the audio between them would never be "
                f"analyzed; give a stride of at most {clip:g} s (windows overlap when it is shorter)"
            )
        try:
            config = dataclasses.replace(frontend.config, stride_seconds=stride_seconds)
        except FrontEndConfigError:  # its message speaks of stored models to retrain: this is the option
            hop = frontend.config.hop_length / frontend.config.sample_rate
            raise ValueError(
                f"stride {stride_seconds:g} s is not a whole number of the model's {hop * 1000:g} ms frames; give one that is, "
                f"from {hop:g} s to {clip:g} s (e.g. {clip / 2:g} s, the default, or {clip / 4:g} s)"
            ) from None
        frontend = FrontEnd(config, frontend.stats)
    labels = tuple(stored.read_json(artifacts.LABELS))
    model = AnalysisModel(stored, variant, choose_providers(providers), frontend, labels, stored_threshold(stored))
    if open_now:
        model.open()
    return model
