"""Start-up objects are frozen out of garbage collection (app.factory.freeze_startup_objects).

A full collection walks every tracked object with the event loop stopped; the app's start-up leaves about
250,000 of them (torch, FastAPI, SQLAlchemy), so each full collection under load stalled every request in
flight for 70-150 ms. After start-up they are frozen, and unfrozen again at shutdown. Compared within this
process, before and after one app's start-up, so that a busy machine slows both sides alike.
"""

from __future__ import annotations

import gc
import time

from fastapi.testclient import TestClient

from app.core.config import Settings
from app.factory import create_app


def full_collection_ms() -> float:
    """The fastest of three full collections, in milliseconds (noise only ever adds)."""
    timings = []
    for _ in range(3):
        started = time.perf_counter()
        gc.collect()
        timings.append((time.perf_counter() - started) * 1000)
    return min(timings)


def test_start_up_objects_are_frozen_out_of_garbage_collection(settings: Settings) -> None:
    gc.unfreeze()  # whatever an app started earlier in this process left frozen
    before = full_collection_ms()
    with TestClient(create_app(settings)) as client:
        assert client.get("/readyz").status_code == 200
        frozen = gc.get_freeze_count()
        during = full_collection_ms()
    print(f"\nfull collection: {before:.1f} ms before start-up, {during:.1f} ms with {frozen} objects frozen")
    assert gc.get_freeze_count() == 0, "the app's shutdown left objects frozen"
    assert frozen > 50_000, f"only {frozen} objects frozen"
    assert during < before / 4, f"a full collection took {during:.1f} ms while serving, {before:.1f} ms before"
