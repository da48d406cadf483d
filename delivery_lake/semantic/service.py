"""The question service: one object the CLI, the HTTP API and the page share.

It answers plain-English questions (`ask`) and structured metric queries (`metric`) from the
warehouse file, read-only, and caches answers: in Redis when a URL is given (`REDIS_URL`), in
process otherwise. Every cache key holds the warehouse build (the published file's
fingerprint): a refresh swaps in a new file, so the next question misses the cache and is
answered from the new data; a cached answer is never stale.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from delivery_lake.semantic.answer import build_id, run_query, table_columns
from delivery_lake.semantic.compiler import MetricQuery
from delivery_lake.semantic.language import Interpretation, Refusal, Vocabulary, interpret
from delivery_lake.semantic.layer import SemanticError, SemanticLayer, check_columns
from delivery_lake.semantic.layer import default as default_layer
from delivery_lake.warehouse import open_reader

CACHE_TTL_S = 24 * 3600  # a bound on memory in Redis; correctness comes from the build in the key
CACHE_PREFIX = "delivery_lake:answer:"


class Cache(Protocol):
    kind: str

    def get(self, key: str) -> str | None: ...

    def set(self, key: str, value: str) -> None: ...


class MemoryCache:
    """Least-recently-used answers of this process."""

    kind = "memory"

    def __init__(self, size: int = 1024):
        self.size = size
        self._items: OrderedDict[str, str] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: str) -> str | None:
        with self._lock:
            value = self._items.get(key)
            if value is not None:
                self._items.move_to_end(key)
            return value

    def set(self, key: str, value: str) -> None:
        with self._lock:
            self._items[key] = value
            self._items.move_to_end(key)
            while len(self._items) > self.size:
                self._items.popitem(last=False)


class RedisCache:
    """Answers shared by every service process through Redis."""

    kind = "redis"

    def __init__(self, url: str):
        import redis  # only when a Redis URL is configured

        self.client = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
        self.client.ping()  # fail at start-up, naming the URL's host, not on the first question

    def get(self, key: str) -> str | None:
        value = self.client.get(CACHE_PREFIX + key)
        return value.decode() if isinstance(value, bytes) else None

    def set(self, key: str, value: str) -> None:
        self.client.set(CACHE_PREFIX + key, value, ex=CACHE_TTL_S)


def make_cache(redis_url: str | None) -> Cache:
    return RedisCache(redis_url) if redis_url else MemoryCache()


@dataclass
class Stats:
    hits: int = 0
    misses: int = 0

    @property
    def hit_ratio(self) -> float:
        total = self.hits + self.misses
        return self.hits / total if total else 0.0


class QuestionService:
    def __init__(self, warehouse: Path | str, cache: Cache | None = None, layer: SemanticLayer | None = None):
        self.warehouse = Path(warehouse)
        self.layer = layer or default_layer()
        self.cache: Cache = cache or MemoryCache()
        self.stats = Stats()
        self._vocab: tuple[str, Vocabulary] | None = None
        self._lock = threading.Lock()

    # -- what the service knows ------------------------------------------------------------
    def catalogue(self) -> dict[str, Any]:
        layer = self.layer
        return {
            "metrics": [
                {
                    "name": m.name,
                    "label": m.label,
                    "description": m.description,
                    "model": m.model,
                    "format": m.format,
                    "better": m.better,
                    "definition": m.definition(),
                    "dimensions": layer.dimensions_of(m.model),
                    "synonyms": list(m.synonyms),
                }
                for m in layer.metrics.values()
            ],
            "dimensions": [
                {
                    "name": d.name,
                    "description": d.description,
                    "grains": list(d.grains) if d.time else None,
                    "synonyms": list(d.synonyms),
                }
                for d in layer.dimensions.values()
            ],
        }

    def build(self) -> str:
        return build_id(self.warehouse) if self.warehouse.exists() else "none"

    def vocabulary(self, build: str) -> Vocabulary:
        with self._lock:
            if self._vocab is None or self._vocab[0] != build:
                con = open_reader(self.warehouse)
                try:
                    problems = check_columns(self.layer, table_columns(con))
                    if problems:
                        raise SemanticError(
                            "the semantic layer does not match the warehouse: "
                            + "; ".join(problems)
                            + " (a warehouse built before the model changed: `delivery-lake build --full-refresh`)"
                        )
                    self._vocab = (build, Vocabulary.build(self.layer, con))
                finally:
                    con.close()
            return self._vocab[1]

    # -- answers ---------------------------------------------------------------------------
    def _cached(self, kind: str, payload: Any, compute: Any) -> tuple[dict[str, Any], bool]:
        build = self.build()
        key = hashlib.sha256(json.dumps([kind, payload, build], sort_keys=True, default=str).encode()).hexdigest()
        hit = self.cache.get(key)
        if hit is not None:
            self.stats.hits += 1
            return json.loads(hit), True
        self.stats.misses += 1
        result = compute(build)
        self.cache.set(key, json.dumps(result))
        return result, False

    def ask(self, question: str, as_of: dt.date | None = None) -> tuple[dict[str, Any], bool]:
        """The answer to a question (or its refusal), and whether it came from the cache."""
        as_of = as_of or dt.datetime.now(dt.UTC).date()

        def compute(build: str) -> dict[str, Any]:
            vocab = self.vocabulary(build)
            found = interpret(question, self.layer, vocab, as_of)
            if isinstance(found, Refusal):
                return {"question": question, "as_of": as_of.isoformat(), **found.to_json()}
            return {"question": question, "as_of": as_of.isoformat(), **self._answer(found)}

        return self._cached("ask", [question.strip(), as_of.isoformat()], compute)

    def _answer(self, found: Interpretation) -> dict[str, Any]:
        answer = run_query(self.layer, found.query, self.warehouse)
        return {
            "refused": False,
            **answer.to_json(),
            "interpretation": {"text": found.words, **found.details},
            "formats": {m: self.layer.metrics[m].format for m in found.query.metrics},
            "chart": _chart(answer.columns, found.query),
        }

    def metric(self, query: MetricQuery) -> tuple[dict[str, Any], bool]:
        """A structured metric query's answer (raises SemanticError if it cannot be compiled)."""
        payload = [query.__dict__[k] for k in sorted(query.__dict__)]

        def compute(build: str) -> dict[str, Any]:
            answer = run_query(self.layer, query, self.warehouse)
            return {
                **answer.to_json(),
                "formats": {m: self.layer.metrics[m].format for m in query.metrics},
                "chart": _chart(answer.columns, query),
            }

        return self._cached("metric", payload, compute)


def _chart(columns: list[str], q: MetricQuery) -> dict[str, Any] | None:
    """How the page should draw it: a line over time, bars for a breakdown, nothing for a number."""
    if not q.group_by:
        return None
    first = q.group_by[0]
    x = {"day": "date", "week": "week", "month": "month"}[q.grain] if first == "date" else first
    return {"type": "line" if first == "date" else "bar", "x": x, "y": q.metrics[0], "series": None}
