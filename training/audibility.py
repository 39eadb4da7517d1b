"""How much of the generated test split any model could hear, clean and under the robustness check's
pink noise: the ceiling on recording accuracy for a model that reports only what the audio shows.

A recording is heard at a level when at least one call of one of its species stands at or above it:
dB over everything else in the front end's own mel cells, the measure the events file carries
(training.birdcall_synth.call_levels). Under pink noise at 0 dB SNR (training.evaluate_birdcall's
condition, the noise's power in the audio band the recording's) the noise joins everything else; over silence it is all
that covers the calls. Scenes are rebuilt from the generator's plan, before clipping (4% of bird
recordings) and coding.

    uv run python -m training.audibility              # default profile; JSON as the last stdout line
"""

from __future__ import annotations

import argparse
import json

import numpy as np
from tqdm import tqdm

from layout.machine import worker_pool
from training.birdcall_generate import PlannedRecording, plan_recordings
from training.birdcall_synth import mel_power, scene_parts
from training.evaluate_birdcall import SNR_DB, pink_noise_for
from training.train_birdcall import PROFILES

LEVELS_DB = (-3.0, 0.0, 3.0)


def loudest_calls(planned: PlannedRecording, index: int) -> tuple[float, float]:
    """The loudest call of the recording's species, in dB over everything else: clean, and under pink noise."""
    parts = scene_parts(planned.scene, planned.rate, np.random.default_rng(planned.seed))
    signal = parts.signal()
    noise = pink_noise_for(signal, planned.rate, index)
    noise_power = mel_power(noise, planned.rate, parts.file_band_gain())  # added to the file: only its band limits the noise
    clean, noisy = parts.track_levels(), parts.track_levels(noise_power)
    return max(level for levels in clean for level in levels), max(level for levels in noisy for level in levels)


def _loudest(job: tuple[PlannedRecording, int]) -> tuple[float, float]:
    return loudest_calls(*job)


def audibility(profile: str = "default", levels: tuple[float, ...] = LEVELS_DB) -> dict:
    """Per level: test recordings with a species, and the share heard clean and under pink noise."""
    planned = [p for p in plan_recordings(PROFILES[profile].data) if p.split == "test" and p.scene.species]
    jobs = [(p, i) for i, p in enumerate(planned)]
    with worker_pool() as pool:
        loudest = np.array(list(tqdm(pool.map(_loudest, jobs, chunksize=4), total=len(jobs), desc="audibility", unit="rec")))
    return {
        "profile": profile,
        "recordings_with_species": len(planned),
        "pink_snr_db": SNR_DB,
        "heard_share": {
            f"{level:g} dB": {"clean": float(np.mean(loudest[:, 0] >= level)), "pink": float(np.mean(loudest[:, 1] >= level))}
            for level in levels
        },
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.audibility", description=__doc__.split("\n")[0])
    parser.add_argument("--profile", choices=list(PROFILES), default="default")
    args = parser.parse_args(argv)
    report = audibility(args.profile)
    for level, shares in report["heard_share"].items():
        print(f"a call at >= {level}: clean {shares['clean']:.3f}, pink noise at {SNR_DB:g} dB {shares['pink']:.3f}")
    print(json.dumps(report), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
