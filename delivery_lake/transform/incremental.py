"""Which dates to build: the date window a lookback reads, the dates a raw change affects,
and the dates still holding cells back for a parent that may since have landed."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date, timedelta

from delivery_lake.storage import Lake
from delivery_lake.transform.base import ZONE, source_key
from delivery_lake.transform.held import parent_links
from delivery_lake.transform.project import Project


def date_window(dates: list[str], lookback: int) -> tuple[str, str]:
    first = date.fromisoformat(min(dates)) - timedelta(days=lookback)
    return first.isoformat(), max(dates)


def held_dates(lake: Lake, project: Project) -> list[str]:
    """Dates of the models that join a child fact to its parent whose last build held cells back
    for an unavailable parent. A parent that lands or is unblocked may be far from the child's
    date (beyond any lookback), so these dates are rebuilt whenever facts change; they are few."""
    out: set[str] = set()
    for m in project.materialized():
        if not m.is_partitioned or not parent_links(project.fact_sources(m.name)):
            continue
        for d, doc in lake.read_build_manifests(ZONE, m.name).items():
            if d and any("parent unavailable" in str(cell[-1]) for cell in doc.get("held_cells") or []):
                out.add(d)
    return sorted(out)


def affected_dates(
    project: Project, changed: dict[str, Iterable[str]], existing: Iterable[str] | None = None
) -> list[str]:
    """Curated dates to rebuild when raw fact `table -> dates` changed: each date plus the
    lookback after it with which a model reads that table (a re-landed order changes the
    deliveries dispatched up to that many days later), and so on down partitioned refs (a
    model reading another one N days back sees its rebuilt dates N days later too)."""

    def spread(dates: Iterable[str], lookback: int) -> set[str]:
        return {(date.fromisoformat(d) + timedelta(days=k)).isoformat() for d in dates for k in range(lookback + 1)}

    per_model: dict[str, set[str]] = {}
    for m in project.materialized():  # dependency order: a ref's dates are known before its readers'
        if not m.is_partitioned:
            continue
        refs, sources = project.inputs(m.name)
        lookbacks = project.input_lookbacks(m.name)
        hit: set[str] = set()
        for schema, t in sources:
            hit |= spread(changed.get(t, ()), lookbacks[source_key(schema, t)])
        for r in refs:
            hit |= spread(per_model.get(r, ()), lookbacks[r])
        per_model[m.name] = hit
    out = set().union(*per_model.values())
    if existing is not None:
        out &= set(existing)
    return sorted(out)
