"""The malformed-audio corpus (tests/audio_corpus.py) against /classify: the real front end (decode,
resample, features) over the fake engine, as a raw body and as a multipart upload, and the whole
corpus in /classify/batch requests.

Each file is classified (200) or refused with 400/413/415/422 and a REST error body, never a 5xx,
within a time bound.
"""

from __future__ import annotations

import anyio
import pytest

from tests.audio_corpus import ANSWERS, Specimen, check_answer, corpus
from tests.fuzzing import HOSTILE_NUMBERS

pytestmark = [pytest.mark.anyio, HOSTILE_NUMBERS]
BOUND_SECONDS = 20.0
"""Longest one small file may take on 2 busy cores (the largest, 8 channels at 192 kHz, takes well under)."""
CORPUS = corpus()


@pytest.mark.parametrize("specimen", CORPUS, ids=[s.name for s in CORPUS])
async def test_classify_answers_every_file_of_the_corpus(http, specimen: Specimen) -> None:
    with anyio.fail_after(BOUND_SECONDS):
        raw = await http.post("/classify", content=specimen.data)
    check_answer(raw, specimen)
    if specimen.data:  # an empty upload is a different mistake in a multipart body (no file), and says so
        with anyio.fail_after(BOUND_SECONDS):
            upload = await http.post("/classify", files={"audio": (specimen.filename, specimen.data)})
        assert upload.status_code == raw.status_code, f"{specimen.name}: raw {raw.status_code}, multipart {upload.text[:300]}"


async def test_classify_batch_answers_every_file_of_the_corpus(http) -> None:
    """Files go 8 at a time: each batch is classified whole or refused (naming the file), never a 5xx."""
    files = [s for s in CORPUS if s.data]
    for start in range(0, len(files), 8):
        chunk = files[start : start + 8]
        with anyio.fail_after(BOUND_SECONDS * len(chunk)):
            response = await http.post("/classify/batch", files=[("audio", (s.name, s.data)) for s in chunk])
        names = [s.name for s in chunk]
        assert response.status_code in ANSWERS, f"{names}: {response.status_code} {response.text[:300]}"
        if response.status_code == 200:
            assert [r["file"] for r in response.json()["results"]] == names
        else:
            assert response.json()["error"]["file"] in names, response.text[:300]
