"""The seed project's way of serving birdcall, as a baseline: FastAPI + torch/torchaudio eager,
model loaded once, windows classified one by one. Run: uvicorn benchmarks.baseline_app:app

Reads the same checkpoint chorus exported (CHORUS_HOME) so both serve identical weights; the model
runs on CHORUS_BASELINE_DEVICE (cpu, or cuda for the GPU bench).
"""

from __future__ import annotations

import io
import os

import soundfile as sf
import torch
import torchaudio
from fastapi import FastAPI, Request

from layout.workspace import Workspace
from training.birdcall_model import BirdCallArch, BirdCallNet
from training.checkpoint import load_checkpoint, load_weights

torch.set_num_threads(os.cpu_count() or 1)
device = torch.device(os.environ.get("CHORUS_BASELINE_DEVICE", "cpu"))
checkpoint = load_checkpoint(Workspace.from_env().checkpoint_dir("birdcall"))
model = load_weights(BirdCallNet(BirdCallArch(**checkpoint.config["arch"])), checkpoint).to(device)
fe = checkpoint.config["frontend"]
mel = torchaudio.transforms.MelSpectrogram(
    sample_rate=fe["sample_rate"], n_fft=fe["n_fft"], hop_length=fe["hop_length"], f_min=fe["f_min"], f_max=fe["f_max"], n_mels=fe["n_mels"]
).to(device)
mean = torch.tensor(checkpoint.norm_stats["mean"], device=device).view(1, -1, 1)
std = torch.tensor(checkpoint.norm_stats["std"], device=device).view(1, -1, 1)
clip, stride = int(fe["clip_seconds"] * fe["sample_rate"]), int(fe["stride_seconds"] * fe["sample_rate"])
app = FastAPI()


@app.post("/classify")
async def classify(request: Request) -> dict:
    audio, rate = sf.read(io.BytesIO(await request.body()), dtype="float32", always_2d=True)
    wave = torchaudio.functional.resample(torch.from_numpy(audio.mean(axis=1)), rate, fe["sample_rate"])
    results = []
    start = 0
    while True:
        window = torch.zeros(clip, device=device)
        piece = wave[start : start + clip]
        window[: len(piece)] = piece.to(device)
        with torch.inference_mode():
            features = ((torch.log(mel(window) + fe["log_eps"]) - mean) / std).unsqueeze(0)
            probs = torch.softmax(model(features), dim=1)[0]
        results.append({"start": start / fe["sample_rate"], "label": checkpoint.labels[int(probs.argmax())]})
        start += stride
        if start + clip - stride >= len(wave):
            break
    return {"windows": results}
