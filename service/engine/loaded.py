"""A stored model opened in the runtime: what the engine (and in-process callers) run."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from layout.artifacts import ArtifactError, onnx_file
from service.engine.runtime import Runner, open_runner
from service.store import StoredModel


@dataclass
class LoadedModel:
    stored: StoredModel
    variant: str
    """ONNX variant: fp32, int8 or fp16."""
    runner: Runner

    @property
    def name(self) -> str:
        return self.stored.name

    @property
    def config(self) -> dict[str, Any]:
        return self.stored.config

    @property
    def output_names(self) -> list[str]:
        return [spec.name for spec in self.runner.outputs]

    def outputs_named(self, feeds: dict[str, np.ndarray], names: tuple[str, ...]) -> list[np.ndarray]:
        """The named outputs of a batch, in the order asked."""
        outputs = self.run(feeds)
        return [outputs[self.output_names.index(name)] for name in names]

    def run(self, feeds: dict[str, np.ndarray], lanes: int | None = None) -> list[np.ndarray]:
        """Every output of the model for a whole batch, its slices run on all lanes at once (or on `lanes`)."""
        return self.runner.run(feeds, lanes)

    def check_outputs(self) -> None:
        """Run one example batch and refuse a model whose outputs are not finite (NaN weights pass a
        digest check when they were exported so)."""
        outputs = self.run({spec.name: spec.example(2) for spec in self.runner.inputs})
        for spec, output in zip(self.runner.outputs, outputs, strict=True):
            if not np.isfinite(output).all():
                raise ArtifactError(f"{self.name}:{self.stored.version} {self.variant} computes non-finite {spec.name!r}; export it again")

    def info(self) -> dict[str, str]:
        """Name, version, variant and provider: what /v2 metadata, responses and metrics report."""
        return {"name": self.stored.name, "version": self.stored.version, "variant": self.variant, "provider": self.runner.provider}


def load_model(
    tag: str, variant: str, providers: list[str], *, required: tuple[str, ...] = (), outputs: tuple[str, ...] = (), **runner: int
) -> LoadedModel:
    """Resolve a tag (e.g. name:latest) in the model store and open it (see open_model)."""
    return open_model(StoredModel.resolve(tag), variant, providers, required=required, outputs=outputs, **runner)


def open_model(
    stored: StoredModel,
    variant: str,
    providers: list[str],
    *,
    required: tuple[str, ...] = (),
    outputs: tuple[str, ...] = (),
    threads: int = 0,
    lanes: int = 0,
    max_run_items: int = 0,
    pad_limit: int = 0,
) -> LoadedModel:
    """Check a stored model's files against the export's digests, then open the variant.

    `required` names the artifact files the model's readers need besides the ONNX file, `outputs`
    the outputs they read (a missing one fails here, not at the first request). threads, lanes and max_run_items as the
    ServiceSettings ort_* fields, pad_limit as runtime.Runner's. Raises ArtifactError on a missing, changed
    or truncated file, or a model that computes non-finite outputs.
    """
    stored.verify((*required, onnx_file(stored.name, variant)))
    try:
        runner = open_runner(stored.onnx_path(variant), providers, threads, lanes, max_run_items, pad_limit)
    except Exception as exc:  # ONNX Runtime's own errors: a file that passed its digest but does not load
        raise ArtifactError(f"{stored.name}:{stored.version} {variant} does not load in ONNX Runtime: {exc}") from exc
    model = LoadedModel(stored, variant, runner)
    missing = [name for name in outputs if name not in model.output_names]
    if missing:
        raise ArtifactError(
            f"{stored.name}:{stored.version} {variant} has no output(s) {missing} (it has {model.output_names}): "
            "it was exported by an older chorus; train and export it again"
        )
    model.check_outputs()
    return model
