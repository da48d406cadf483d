"""`ask` measured on the labelled question set (tests/questions/labelled.yaml) over a warehouse
the real pipeline built: at least 95 % of the answerable questions right, every out-of-scope one
refused, no wrong answer counted as right."""

from __future__ import annotations

import json

import pytest

from delivery_lake.cli import main
from delivery_lake.config import Settings
from delivery_lake.semantic import evaluation
from delivery_lake.semantic.service import MemoryCache, QuestionService
from tests.semantic_lake import LABELLED, semantic_settings  # noqa: F401  (session fixture)

pytestmark = pytest.mark.slow


def test_the_labelled_set_is_big_enough_and_well_formed() -> None:
    qs = evaluation.load_questions(LABELLED)
    answerable = [q for q in qs.questions if not q.refuse]
    assert len(answerable) >= 60 and len(qs.questions) - len(answerable) >= 15
    assert len({q.question.lower() for q in qs.questions}) == len(qs.questions)


def test_accuracy_on_the_labelled_questions(semantic_settings: Settings) -> None:  # noqa: F811
    report = evaluation.evaluate(
        evaluation.load_questions(LABELLED), QuestionService(semantic_settings.warehouse_path, MemoryCache())
    )
    failures = [f"{r.question}: {r.why}" for r in report.results if not r.ok]
    assert report.accuracy >= evaluation.TARGET_ACCURACY, failures
    assert all(r.ok for r in report.out_of_scope), failures
    assert report.meets_target()


def test_the_scorer_counts_a_wrong_answer_as_wrong(semantic_settings: Settings, tmp_path) -> None:  # noqa: F811
    # The same questions with every expected answer shifted: nothing may score as right.
    qs = evaluation.load_questions(LABELLED)
    skewed = tmp_path / "skewed.yaml"
    doc = {"dataset": qs.dataset, "as_of": "2026-03-11", "questions": []}
    for q in qs.questions:
        if q.refuse:
            continue
        doc["questions"].append({"q": q.question, "sql": f"SELECT * FROM ({q.sql}) LIMIT 0", "as_of": str(q.as_of)})
    skewed.write_text(json.dumps(doc, default=str))
    report = evaluation.evaluate(
        evaluation.load_questions(skewed), QuestionService(semantic_settings.warehouse_path, MemoryCache())
    )
    assert report.accuracy == 0.0 and report.wrong_answers == len(doc["questions"])


def test_ask_eval_command_prints_the_accuracy(
    semantic_settings: Settings,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("WAREHOUSE_PATH", str(semantic_settings.warehouse_path))
    monkeypatch.delenv("REDIS_URL", raising=False)
    assert main(["ask-eval"]) == 0
    out = capsys.readouterr().out
    assert "answered correctly" in out and "wrong answers 0" in out
