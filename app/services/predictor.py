"""Per-process cache of trained networks, keyed by model id and weights version.

This is the hot path, so it runs on the event loop (see app.services.reads). Each prediction asks the
database one small indexed question (one round trip, prepared, no transaction): does the model exist
and which weights version is current.
Weights are read and deserialised only when that version is not cached yet, so a retrain on any
host is picked up by the next request everywhere.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from typing import Any

import anyio.to_thread
from torch import nn

from app.ml.inference import LoadedModel
from app.ml.network import build_network, layer_specs, load_state_dict_bytes
from app.services.errors import ConflictError, NotFoundError
from app.services.owners import Reader
from app.services.reads import Reads

logger = logging.getLogger(__name__)

_VERSION_SQL = """
    SELECT w.session_id, m.owner_id FROM models m LEFT JOIN model_weights w ON w.model_id = m.id WHERE m.id = %s
"""
_TOUCH_SQL = "UPDATE models SET last_used_at = now() WHERE id = %s"
_LOAD_SQL = """
    SELECT m.task, m.layers, m.input_dim, m.output_dim, w.session_id, w.data
    FROM models m JOIN model_weights w ON w.model_id = m.id WHERE m.id = %s
"""


class PredictorCache:
    def __init__(self, reads: Reads, max_models: int = 32, touch_seconds: float = 3600.0) -> None:
        self._reads = reads
        self._max_models = max_models
        self._models: OrderedDict[int, LoadedModel] = OrderedDict()
        self._load_lock: asyncio.Lock | None = None
        # When this process last recorded each model's use (models.last_used_at, for retention).
        self._touch_seconds = touch_seconds
        self._touched: dict[int, float] = {}
        self._touches: set[asyncio.Task[None]] = set()

    async def get(self, model_id: int, reader: Reader) -> LoadedModel:
        """The model's current network; NotFoundError (also for a model the reader may not see), or
        ConflictError while it has no trained weights."""
        version = await self._current_version(model_id, reader)
        self._touch(model_id)
        cached = self._models.get(model_id)
        if cached is not None and cached.version == version:
            self._models.move_to_end(model_id)
            return cached
        # One load at a time: a burst of requests for a cold model must not deserialise it N times.
        self._load_lock = self._load_lock or asyncio.Lock()
        async with self._load_lock:
            cached = self._models.get(model_id)
            if cached is not None and cached.version == version:
                return cached
            loaded = await self._load(model_id)
            self._models[model_id] = loaded
            self._models.move_to_end(model_id)
            while len(self._models) > self._max_models:
                self._models.popitem(last=False)
            return loaded

    def _touch(self, model_id: int) -> None:
        """Record the use at most once per touch_seconds per process, beside the request (not in its way)."""
        now = time.monotonic()
        last = self._touched.get(model_id)
        if last is not None and now - last < self._touch_seconds:
            return
        if len(self._touched) > 10_000:  # models come and go: forget the oldest record of use
            self._touched.clear()
        self._touched[model_id] = now
        task = asyncio.create_task(self._record_use(model_id))
        self._touches.add(task)
        task.add_done_callback(self._touches.discard)

    async def _record_use(self, model_id: int) -> None:
        try:
            await self._reads.execute(_TOUCH_SQL, (model_id,))
        except Exception as exc:  # a lost record of use costs nothing but an earlier retention
            self._touched.pop(model_id, None)
            logger.warning("recording a model's use failed: %s", type(exc).__name__)

    async def _current_version(self, model_id: int, reader: Reader) -> int:
        row = await self._reads.one(_VERSION_SQL, (model_id,))
        if row is None or not reader.may_read(row["owner_id"]):
            raise NotFoundError(f"model {model_id} not found")
        if row["session_id"] is None:
            raise ConflictError(f"model {model_id} has not been trained yet; start a training session first")
        return int(row["session_id"])

    async def _load(self, model_id: int) -> LoadedModel:
        row = await self._reads.one(_LOAD_SQL, (model_id,))
        if row is None:  # deleted since the version check
            raise NotFoundError(f"model {model_id} not found")
        # Deserialising and building can take milliseconds for big networks: keep them off the loop.
        net = await anyio.to_thread.run_sync(_build, row["input_dim"], row["output_dim"], row["layers"], row["data"])
        return LoadedModel(net, row["task"], row["input_dim"], row["output_dim"], row["session_id"])


def _build(input_dim: int, output_dim: int, layers: list[dict[str, Any]], data: bytes) -> nn.Module:
    net = build_network(input_dim, output_dim, layer_specs(layers))
    load_state_dict_bytes(net, bytes(data))
    return net.eval()
