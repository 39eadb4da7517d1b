"""A realistic chorus traffic mix for Locust.

Recordings of 3-60 s in WAV/FLAC/MP3/OGG at 16-48 kHz (some stereo) sent as multipart and raw
bodies, some batch calls, some /generate calls, and a share of bad inputs that must get a 4xx
with a JSON error body (a 2xx or 5xx there counts as a failure). Each user starts with one bad
input, so even a short run checks that route.
Run headless through `chorus loadtest`, or `locust -f loadtests/locustfile.py --host URL`.
"""

from __future__ import annotations

import os
import random

from locust import HttpUser, between, events, task

from loadtests.recordings import POOL_SEED, cached_pool, pool_dir, pool_size

POOL = []
BAD_INPUTS = [
    ("/classify", {"data": b"this is plain text, not audio"}, 415),
    ("/classify", {"data": b""}, 400),
    ("/classify", {"data": b"RIFF\x24\x00\x00\x00WAVEfmt " + b"\x00" * 8}, 415),
    ("/generate", {"json": {"steps": 1000}}, 422),
    ("/classify?top_k=0", {"data": b"fLaC"}, 422),
]


@events.test_start.add_listener
def build_pool(environment, **_kwargs) -> None:
    POOL.extend(cached_pool(pool_dir(), pool_size(), POOL_SEED))


class ChorusUser(HttpUser):
    wait_time = between(0.05, 0.3)

    def on_start(self) -> None:
        token = os.environ.get("CHORUS_API_TOKEN")
        if token:
            self.client.headers["Authorization"] = f"Bearer {token}"
        self.bad_input()

    @task(10)
    def classify_upload(self) -> None:
        rec = random.choice(POOL)
        self.client.post("/classify", files={"audio": (rec.name, rec.data, rec.mime)}, name="/classify [multipart]")

    @task(4)
    def classify_raw(self) -> None:
        rec = random.choice(POOL)
        self.client.post("/classify?timeline=false", data=rec.data, name="/classify [raw]")

    @task(1)
    def classify_batch(self) -> None:
        files = [("audio", (r.name, r.data, r.mime)) for r in random.sample(POOL, 3)]
        self.client.post("/classify/batch", files=files, name="/classify/batch")

    @task(1)
    def generate(self) -> None:
        self.client.post("/generate", json={"steps": 10, "seed": random.randrange(10_000)}, name="/generate")

    @task(1)
    def bad_input(self) -> None:
        path, kwargs, status = random.choice(BAD_INPUTS)
        with self.client.post(path, catch_response=True, name="bad input (expects 4xx)", **kwargs) as response:
            try:
                has_message = bool(response.json()["error"]["message"])
            except (ValueError, KeyError, TypeError):
                has_message = False
            if response.status_code == status and has_message:
                response.success()
            else:
                response.failure(f"expected {status} with a JSON error, got {response.status_code}")
