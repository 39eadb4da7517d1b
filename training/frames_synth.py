"""Rendered top-down piano keyboards: stand-ins for the piano-video frames the seed trained on.

White and black keys in the real 2-3 pattern, random pressed keys shaded, optional hand-like
blobs, slight camera jitter (shift, scale, rotation). Rendered at 4x and downsampled, so edges
are antialiased like a video frame. Deterministic for a seed.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

# Black keys follow white keys C, D, F, G, A (not E, B) within each octave of 7 white keys.
_BLACK_AFTER = {0, 1, 3, 4, 5}
_SKIN = [(224, 172, 105), (198, 134, 66), (141, 85, 36), (241, 194, 125), (255, 219, 172)]


def render_keyboard(rng: np.random.Generator, size: int = 32, scale: int = 4) -> np.ndarray:
    """One frame: [size, size, 3] uint8."""
    s = size * scale
    body = tuple(int(v) for v in rng.integers(15, 60, 3))
    img = Image.new("RGB", (s, s), body)
    draw = ImageDraw.Draw(img)
    n_white = int(rng.integers(9, 16))
    key_w = s / n_white
    top, bottom = s * rng.uniform(0.15, 0.3), s * rng.uniform(0.75, 0.92)
    black_h = (bottom - top) * rng.uniform(0.55, 0.65)
    first_note = int(rng.integers(0, 7))
    white_tone = int(rng.integers(225, 256))
    pressed_shade = np.array([rng.integers(120, 180), rng.integers(150, 200), rng.integers(190, 240)])
    for i in range(n_white):
        x0 = i * key_w
        color = tuple(int(c) for c in pressed_shade) if rng.random() < 0.12 else (white_tone,) * 3
        draw.rectangle([x0, top, x0 + key_w - max(1, scale // 2), bottom], fill=color)
    for i in range(n_white - 1):
        if (first_note + i) % 7 in _BLACK_AFTER:
            cx = (i + 1) * key_w
            color = (110, 110, 140) if rng.random() < 0.12 else (12, 12, 12)
            draw.rectangle([cx - key_w * 0.3, top, cx + key_w * 0.3, top + black_h], fill=color)
    for _ in range(int(rng.integers(0, 3))):
        cx, cy = rng.uniform(0.1, 0.9) * s, rng.uniform(0.5, 1.0) * s
        w, h = rng.uniform(0.12, 0.22) * s, rng.uniform(0.15, 0.3) * s
        draw.ellipse([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], fill=_SKIN[int(rng.integers(len(_SKIN)))])
    img = img.rotate(
        float(rng.uniform(-3, 3)),
        resample=Image.BILINEAR,
        translate=(float(rng.uniform(-0.04, 0.04) * s), float(rng.uniform(-0.04, 0.04) * s)),
        fillcolor=body,
    )
    zoom = rng.uniform(1.0, 1.08)
    crop = s / zoom
    off = (s - crop) / 2
    img = img.crop((off, off, off + crop, off + crop)).filter(ImageFilter.GaussianBlur(scale * 0.3))
    return np.asarray(img.resize((size, size), Image.BOX), dtype=np.uint8)


def render_frames(n: int, size: int, seed: int) -> np.ndarray:
    """[n, size, size, 3] uint8; each frame has its own child seed, so prefixes are stable."""
    seeds = np.random.SeedSequence(seed).spawn(n)
    return np.stack([render_keyboard(np.random.default_rng(s), size) for s in seeds])
