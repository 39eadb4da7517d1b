"""The analyze command's options refuse values that would hang or break a run, before any work."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from analyze.pipeline import FrontEndSpec
from batch.command import AnalyzeOptions
from batch.ray import RayPipeline


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"workers": -1}, "workers must be 0 (one per core) or more, got -1"),  # used to start no worker and wait for ever
        ({"batch_windows": 0}, "batch_windows must be at least 1, got 0"),
        ({"ray_actors": 0}, "ray_actors must be at least 1, got 0"),
        ({"ray_gpus_per_actor": float("nan")}, "ray_gpus_per_actor must be 0 or more, got nan"),
        ({"ray_gpus_per_actor": 1.5}, "ray_gpus_per_actor above 1 must be a whole number of GPUs"),
        ({"workers": -2, "batch_windows": -1}, "workers must be 0 (one per core) or more, got -2; batch_windows must be at least 1"),
    ],
)
def test_out_of_range_options_are_refused_with_every_problem_named(options, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        AnalyzeOptions(sources=["x.wav"], out=Path("out"), **options)


def test_the_defaults_are_valid():
    assert AnalyzeOptions(sources=["x.wav"], out=Path("out")).workers == 0


def test_a_ray_run_says_what_the_cluster_lacks_for_it_now():
    """Actors on every CPU leave none to decode, GPU actors on a cluster without one never start:
    on a cluster without an autoscaler both wait for ever, so the run says so as it starts."""

    def pipeline(**kwargs) -> RayPipeline:
        return RayPipeline("auto", Path("m"), "birdcall", "v1", "fp32", FrontEndSpec({}, {}), **kwargs)

    assert pipeline(actors=1).short_of({"CPU": 2.0}) == []
    [cpus] = pipeline(actors=2).short_of({"CPU": 2.0})
    assert "2 model actor(s) hold a CPU each and the cluster has 2: none is left to decode" in cpus
    [gpus] = pipeline(actors=1, gpus_per_actor=1.0).short_of({"CPU": 8.0})
    assert "ask for 1 GPU(s) each and the cluster has 0" in gpus
