"""Scoring `ask` on a labelled question set: how often it is right, and that it refuses.

Each labelled question carries the SQL that computes its expected answer over the warehouse
(written by hand, independent of the compiler), or `refuse: true`. An answer is right only if
its rows equal the expected rows: the breakdown's values and every metric (floats to 1e-9
relative), in order when the question ranks. A refusal of an answerable question is not right;
an answer to a question that should be refused is wrong.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from delivery_lake.semantic.answer import plain
from delivery_lake.semantic.service import QuestionService
from delivery_lake.warehouse import open_reader

TARGET_ACCURACY = 0.95


@dataclass(frozen=True)
class Labelled:
    question: str
    sql: str | None
    refuse: bool
    ordered: bool
    as_of: dt.date


@dataclass(frozen=True)
class QuestionSet:
    dataset: dict[str, Any]
    questions: list[Labelled]


@dataclass(frozen=True)
class Result:
    question: str
    refuse_expected: bool
    ok: bool
    refused: bool
    why: str


@dataclass
class Report:
    results: list[Result] = field(default_factory=list)

    @property
    def answerable(self) -> list[Result]:
        return [r for r in self.results if not r.refuse_expected]

    @property
    def out_of_scope(self) -> list[Result]:
        return [r for r in self.results if r.refuse_expected]

    @property
    def accuracy(self) -> float:
        return sum(r.ok for r in self.answerable) / max(1, len(self.answerable))

    @property
    def wrong_answers(self) -> int:
        """Answers given that are not right (refusals of answerable questions not counted)."""
        return sum(1 for r in self.results if not r.ok and not r.refused)

    def meets_target(self) -> bool:
        return self.accuracy >= TARGET_ACCURACY and all(r.ok for r in self.out_of_scope)

    def summary(self) -> str:
        refused_ok = sum(r.ok for r in self.out_of_scope)
        return (
            f"answered correctly {sum(r.ok for r in self.answerable)}/{len(self.answerable)} "
            f"({self.accuracy:.1%}); refused {refused_ok}/{len(self.out_of_scope)} out-of-scope; "
            f"wrong answers {self.wrong_answers}; refusals of answerable questions "
            f"{sum(1 for r in self.answerable if r.refused)}"
        )


def load_questions(path: Path | str) -> QuestionSet:
    doc = yaml.safe_load(Path(path).read_text())
    default_as_of = dt.date.fromisoformat(str(doc["as_of"]))
    out = []
    for i, raw in enumerate(doc["questions"]):
        if ("sql" in raw) == bool(raw.get("refuse")):
            raise ValueError(f"{path}: question {i + 1} needs exactly one of `sql` or `refuse: true`")
        out.append(
            Labelled(
                question=str(raw["q"]),
                sql=raw.get("sql"),
                refuse=bool(raw.get("refuse")),
                ordered=bool(raw.get("ordered", False)),
                as_of=dt.date.fromisoformat(str(raw.get("as_of", default_as_of))),
            )
        )
    return QuestionSet(doc.get("dataset", {}), out)


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, int | float) and isinstance(b, int | float) and not isinstance(a, bool):
        return math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=1e-9)
    return a == b


def _rows_equal(got: list[list[Any]], want: list[list[Any]], ordered: bool) -> bool:
    if len(got) != len(want):
        return False
    if not ordered:
        key = lambda r: [(v is None, str(v)) for v in r]  # noqa: E731
        got, want = sorted(got, key=key), sorted(want, key=key)
    return all(
        len(g) == len(w) and all(_same(x, y) for x, y in zip(g, w, strict=True)) for g, w in zip(got, want, strict=True)
    )


def evaluate(qs: QuestionSet, service: QuestionService) -> Report:
    report = Report()
    labels = {d.entity.name for d in service.layer.dimensions.values() if d.entity}
    con = open_reader(service.warehouse)
    try:
        for item in qs.questions:
            result, _ = service.ask(item.question, item.as_of)
            refused = bool(result.get("refused"))
            if item.refuse:
                why = (
                    f"refused: {result.get('reason')}"
                    if refused
                    else f"answered, should refuse: {result.get('interpretation', {}).get('text')}"
                )
                report.results.append(Result(item.question, True, refused, refused, why))
                continue
            if refused:
                report.results.append(Result(item.question, False, False, True, f"refused: {result['reason']}"))
                continue
            keep = [i for i, c in enumerate(result["columns"]) if c not in labels]
            got = [[row[i] for i in keep] for row in result["rows"]]
            want = [[plain(v) for v in row] for row in con.execute(str(item.sql)).fetchall()]
            ok = _rows_equal(got, want, item.ordered)
            why = result["interpretation"]["text"]
            if not ok:
                why += f" | got {got[:4]} want {want[:4]}"
            report.results.append(Result(item.question, False, ok, False, why))
    finally:
        con.close()
    return report
