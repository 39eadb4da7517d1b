"""Train the birdcall classifier on windows made by the shared front end."""

from __future__ import annotations

import copy
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from layout.workspace import Workspace
from features import FrontEnd, FrontEndConfig, NormStats
from training.birdcall_data import GenerateSpec, WindowSet, clip_filter, dataset_hash, featurize, generate_dataset, read_manifest
from training.birdcall_model import BirdCallArch, BirdCallNet
from layout import artifacts
from training.checkpoint import save_checkpoint
from training.plots import plot_confusion, plot_curves


@dataclass(frozen=True)
class BirdcallProfile:
    """One named set of data and training sizes."""

    name: str
    data: GenerateSpec
    max_epochs: int
    patience: int
    """Stop after this many epochs without a better validation accuracy."""
    max_minutes: float
    """Wall-clock budget for the epoch loop."""
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 1e-4
    lr_step_epochs: int = 4
    """Halve the learning rate every this many epochs (the seed used StepLR)."""
    seed: int = 0


PROFILES = {
    "default": BirdcallProfile("default", GenerateSpec(recordings_per_species=40), max_epochs=30, patience=5, max_minutes=2.3),
    "full": BirdcallProfile("full", GenerateSpec(recordings_per_species=200), max_epochs=100, patience=10, max_minutes=120, lr=3e-4),
    # For tests: seconds, not minutes; accuracy is not the point.
    "tiny": BirdcallProfile(
        "tiny", GenerateSpec(recordings_per_species=7, min_seconds=3, max_seconds=7, n_species=12), max_epochs=2, patience=2, max_minutes=1
    ),
}


def _evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 256) -> tuple[float, float, np.ndarray]:
    """Mean loss, accuracy and the predicted logits over a whole split."""
    model.eval()
    logits = []
    with torch.inference_mode():
        for i in range(0, len(x), batch_size):
            logits.append(model(x[i : i + batch_size]))
    out = torch.cat(logits)
    loss = nn.functional.cross_entropy(out, y).item()
    acc = (out.argmax(1) == y).float().mean().item()
    return loss, acc, out.numpy()


def _recording_accuracy(logits: np.ndarray, windows: WindowSet) -> float:
    """Accuracy when each recording is labelled by the mean of its windows' probabilities."""
    probs = np.exp(logits - logits.max(1, keepdims=True))
    probs /= probs.sum(1, keepdims=True)
    correct = []
    for rec in np.unique(windows.recording):
        mask = windows.recording == rec
        correct.append(probs[mask].mean(0).argmax() == windows.labels[mask][0])
    return float(np.mean(correct))


def train_birdcall(profile: BirdcallProfile, workspace: Workspace, data_csv: Path | None = None) -> dict:
    """Generate data if none is given, train with early stopping, save checkpoint and plots; return metrics."""
    started = time.perf_counter()
    torch.manual_seed(profile.seed)
    torch.set_num_threads(os.cpu_count() or 1)
    if data_csv is None:
        data_dir = workspace.data_dir("birdcall") / profile.name
        data_csv = data_dir / "labels.csv"
        if not data_csv.exists():
            generate_dataset(data_dir, profile.data)
    items = read_manifest(data_csv)
    labels = sorted({item.label for item in items})
    frontend_config = FrontEndConfig()
    splits = {
        name: featurize([i for i in items if i.split == name], labels, frontend_config, desc=f"features {name}")
        for name in ("train", "val", "test")
    }
    splits = {name: ws.select(clip_filter(ws)) for name, ws in splits.items()}
    stats = NormStats.fit(splits["train"].log_mels)
    frontend = FrontEnd(frontend_config, stats)
    tensors = {
        name: (torch.from_numpy(frontend.normalize(ws.log_mels)), torch.from_numpy(ws.labels))
        for name, ws in splits.items()
    }
    arch = BirdCallArch(n_classes=len(labels), n_mels=frontend_config.n_mels, n_frames=frontend_config.n_frames)
    model = BirdCallNet(arch)
    # channels_last makes the conv blocks ~15% faster on CPU; the saved weights are the same.
    model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(model.parameters(), lr=profile.lr, weight_decay=profile.weight_decay)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=profile.lr_step_epochs, gamma=0.5)
    x_train, y_train = tensors["train"]
    history: dict[str, list[float]] = {"train_loss": [], "val_loss": [], "train_accuracy": [], "val_accuracy": []}
    best_acc, best_state, best_epoch, stale = -1.0, None, 0, 0
    deadline = time.perf_counter() + profile.max_minutes * 60
    generator = torch.Generator().manual_seed(profile.seed)
    for epoch in range(1, profile.max_epochs + 1):
        model.train()
        order = torch.randperm(len(x_train), generator=generator)
        total, correct, seen = 0.0, 0, 0
        bar = tqdm(range(0, len(order), profile.batch_size), desc=f"epoch {epoch}", unit="batch", leave=False)
        for i in bar:
            idx = order[i : i + profile.batch_size]
            logits = model(x_train[idx])
            loss = nn.functional.cross_entropy(logits, y_train[idx])
            optimizer.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            total += loss.item() * len(idx)
            correct += (logits.argmax(1) == y_train[idx]).sum().item()
            seen += len(idx)
        scheduler.step()
        val_loss, val_acc, _ = _evaluate(model, *tensors["val"])
        history["train_loss"].append(total / seen)
        history["train_accuracy"].append(correct / seen)
        history["val_loss"].append(val_loss)
        history["val_accuracy"].append(val_acc)
        tqdm.write(f"epoch {epoch}: train loss {total / seen:.4f} acc {correct / seen:.4f} | val loss {val_loss:.4f} acc {val_acc:.4f}")
        if val_acc > best_acc or (val_acc == best_acc and val_loss < min(history["val_loss"][:-1], default=np.inf)):
            best_acc, best_state, best_epoch, stale = val_acc, copy.deepcopy(model.state_dict()), epoch, 0
        else:
            stale += 1
        if stale >= profile.patience or time.perf_counter() > deadline:
            break
    model.load_state_dict(best_state)
    test_loss, test_acc, test_logits = _evaluate(model, *tensors["test"])
    _, val_acc, _ = _evaluate(model, *tensors["val"])
    confusion = np.zeros((len(labels), len(labels)), dtype=np.int64)
    np.add.at(confusion, (splits["test"].labels, test_logits.argmax(1)), 1)

    checkpoint_dir = workspace.checkpoint_dir("birdcall")
    reports = workspace.reports_dir("birdcall")
    plot_curves(history, reports / "training_curves.png", f"birdcall ({profile.name})")
    plot_confusion(confusion, labels, reports / "confusion_matrix.png", f"birdcall test split, accuracy {test_acc:.3f}")
    metrics = {
        "model": "birdcall",
        "profile": profile.name,
        "val_accuracy": round(val_acc, 5),
        "test_accuracy": round(test_acc, 5),
        "test_loss": round(test_loss, 5),
        "test_recording_accuracy": round(_recording_accuracy(test_logits, splits["test"]), 5),
        "best_epoch": best_epoch,
        "epochs_run": len(history["val_loss"]),
        "windows": {name: len(ws) for name, ws in splits.items()},
        # What the model saw in training; the service exports it so drift alerts can compare.
        "train_class_share": {
            label: round(float(np.mean(splits["train"].labels == i)), 6) for i, label in enumerate(labels)
        },
        "n_classes": len(labels),
        "data_hash": dataset_hash(data_csv),
        "data_csv": str(data_csv),
        "seconds": round(time.perf_counter() - started, 1),
        "checkpoint": str(checkpoint_dir),
        "reports": str(reports),
    }
    config = {
        "model": "birdcall",
        artifacts.ARCH: arch.to_dict(),
        artifacts.FRONTEND: frontend_config.to_dict(),
        "training": {"profile": asdict(profile), "history": history},
    }
    save_checkpoint(checkpoint_dir, model, config, metrics, labels=labels, norm_stats=stats.to_dict())
    return metrics
