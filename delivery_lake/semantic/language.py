"""Plain-English questions turned into metric queries, or refused.

Offline and deterministic: the words it knows are the semantic layer's (metric and dimension
names and synonyms) and the warehouse's own values (client and driver names, depot cities,
statuses...). Names are matched exactly first, then with rapidfuzz for typos; time expressions
go through `dates.find_range`. Every word of a question must be understood: a word that is
neither a known name, a metric, a dimension, a time expression nor a function word makes the
question refused with the closest things it does know, because answering while ignoring a word
("deliveries to hospitals", "clients with more than 100 deliveries") would be a confident
wrong answer. Nothing from the text reaches SQL except values matched against the warehouse's
own values.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, field
from typing import Any

import duckdb
from rapidfuzz import fuzz, process
from rapidfuzz.distance import OSA

from delivery_lake.semantic.compiler import MetricQuery, compile_query
from delivery_lake.semantic.dates import DateError, TimeRange, find_range
from delivery_lake.semantic.layer import SemanticError, SemanticLayer
from delivery_lake.sql import ident

MAX_N = 6  # longest phrase (in words) matched


# A typo counts as a known word within one edit (a transposition is one) for words of 5 to 8
# letters, two edits for longer ones; shorter words must be exact (ids, "van", "C001").
def _max_typos(word: str) -> int:
    return 0 if len(word) < 5 else 1 if len(word) <= 8 else 2


UNSAFE = re.compile(
    r"\b(delete|drop|truncate|update|insert|alter|grant|revoke|remove|erase|wipe|overwrite|attach|detach|"
    r"install|pragma|exec|execute|vacuum|export|import|shutdown|kill)\b|;|--|/\*|\bselect\b.*\bfrom\b|"
    r"\bcreate\s+(table|view|schema|index|secret|macro)\b|\bset\s+\w+\s*=",
    re.IGNORECASE,
)

# Words that carry no meaning of their own in a metric question.
STOPWORDS = frozenset(
    [
        "a",
        "an",
        "the",
        "of",
        "for",
        "in",
        "on",
        "at",
        "to",
        "from",
        "with",
        "and",
        "or",
        "vs",
        "versus",
        "v",
        "than",
        "as",
        "is",
        "are",
        "was",
        "were",
        "be",
        "been",
        "being",
        "am",
        "do",
        "does",
        "did",
        "done",
        "have",
        "has",
        "had",
        "having",
        "will",
        "would",
        "could",
        "should",
        "can",
        "may",
        "might",
        "must",
        "shall",
        "what",
        "what's",
        "whats",
        "which",
        "who",
        "whose",
        "whom",
        "how",
        "when",
        "where",
        "why",
        "show",
        "me",
        "us",
        "our",
        "we",
        "i",
        "you",
        "list",
        "give",
        "tell",
        "get",
        "got",
        "make",
        "made",
        "see",
        "find",
        "display",
        "report",
        "please",
        "pls",
        "there",
        "that",
        "this",
        "those",
        "these",
        "it",
        "its",
        "their",
        "they",
        "total",
        "overall",
        "number",
        "numbers",
        "count",
        "counts",
        "amount",
        "figure",
        "figures",
        "value",
        "values",
        "stat",
        "stats",
        "statistics",
        "all",
        "each",
        "every",
        "any",
        "per",
        "by",
        "across",
        "among",
        "within",
        "during",
        "over",
        "split",
        "broken",
        "down",
        "breakdown",
        "break",
        "compare",
        "comparing",
        "comparison",
        "between",
        "ranked",
        "rank",
        "ranking",
        "rankings",
        "order",
        "ordered",
        "sorted",
        "sort",
        "top",
        "bottom",
        "best",
        "worst",
        "most",
        "least",
        "highest",
        "lowest",
        "fewest",
        "biggest",
        "smallest",
        "largest",
        "greatest",
        "many",
        "much",
        "some",
        "so",
        "far",
        "up",
        "just",
        "only",
        "exactly",
        "approx",
        "approximately",
        "roughly",
        "about",
        "around",
        "happen",
        "happened",
        "look",
        "looked",
        "looking",
        "like",
        "performed",
        "perform",
        "performance",
        "doing",
        "going",
        "kpi",
        "kpis",
        "metric",
        "metrics",
        "level",
        "levels",
        "data",
        "trend",
        "trends",
        "time",
        "period",
        "days",
        "date",
        "dates",
        "my",
        "company",
        "business",
        "ones",
        "one",
        "receive",
        "received",
        "left",
        "leave",
        "leaving",
        "went",
        "go",
        "sent",
        "ship",
        "shipped",
        "handle",
        "minutes",
        "mins",
        "driven",
        "drive",
        "drove",
        "handled",
    ]
)
DESC_WORDS = {"top", "most", "highest", "biggest", "largest", "greatest", "max", "maximum"}
ASC_WORDS = {"bottom", "least", "lowest", "fewest", "smallest", "min", "minimum"}
BEST, WORST = {"best"}, {"worst"}
GROUP_WORDS = {"by", "per", "each", "every", "across", "among", "for each", "broken down by", "split by"}
GRAIN_WORDS = {
    "daily": "day",
    "day": "day",
    "days": "day",
    "date": "day",
    "per day": "day",
    "each day": "day",
    "day by day": "day",
    "over time": "day",
    "trend": "day",
    "weekly": "week",
    "week": "week",
    "weeks": "week",
    "per week": "week",
    "each week": "week",
    "week by week": "week",
    "monthly": "month",
    "month": "month",
    "months": "month",
    "per month": "month",
    "each month": "month",
}
COMPARE_WORDS = {"compare", "comparing", "comparison", "vs", "versus", "v", "against"}


@dataclass(frozen=True)
class Refusal:
    reason: str
    suggestions: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"refused": True, "reason": self.reason, "suggestions": self.suggestions}


@dataclass(frozen=True)
class Interpretation:
    query: MetricQuery
    time: TimeRange | None
    words: str  # the query, in words
    details: dict[str, Any]


@dataclass(frozen=True)
class Term:
    kind: str  # metric | dimension | value | grain | word
    target: str
    key: str = ""  # the value's key (client id...) for kind == value
    text: str = ""  # the words of the question it came from


@dataclass
class Vocabulary:
    """Every phrase the parser knows, lower-cased, with what it means."""

    phrases: dict[str, list[Term]]
    labels: dict[tuple[str, str], str]  # (dimension, key) -> display name
    id_patterns: list[re.Pattern[str]]
    plain_dimensions: set[str] = field(default_factory=set)  # dimensions whose values are not entity names

    @classmethod
    def build(cls, layer: SemanticLayer, con: duckdb.DuckDBPyConnection | None) -> Vocabulary:
        phrases: dict[str, list[Term]] = {}
        labels: dict[tuple[str, str], str] = {}

        def add(phrase: str, term: Term) -> None:
            key = normalise(phrase)
            if key and term not in phrases.setdefault(key, []):
                phrases[key].append(term)

        for m in layer.metrics.values():
            for p in (m.name.replace("_", " "), m.label, *m.synonyms):
                add(p, Term("metric", m.name))
        for d in layer.dimensions.values():
            if d.time:
                continue
            for p in (d.name.replace("_", " "), *d.synonyms):
                add(p, Term("dimension", d.name))
            for key, words in d.value_synonyms.items():
                for w in words:
                    add(w, Term("value", d.name, key))
        tables = _tables(con)
        for d in layer.dimensions.values():
            if con is None:
                break
            if d.entity and d.entity.table in tables:
                key, name_col = ident(d.entity.key), ident(d.entity.name)
                rows = con.execute(
                    f"SELECT DISTINCT CAST({key} AS VARCHAR), CAST({name_col} AS VARCHAR) "
                    f"FROM {ident(d.entity.table)} WHERE {key} IS NOT NULL"
                ).fetchall()
                for key, name in rows:
                    add(key, Term("value", d.name, key))
                    if name:
                        add(name, Term("value", d.name, key))
                        labels[(d.name, key)] = name
            elif d.values_from and d.values_from[0] in tables:
                table, column = d.values_from
                col = ident(column)
                for (value,) in con.execute(
                    f"SELECT DISTINCT CAST({col} AS VARCHAR) FROM {ident(table)} WHERE {col} IS NOT NULL"
                ).fetchall():
                    add(value, Term("value", d.name, value))
                    add(value.replace("_", " "), Term("value", d.name, value))
        # Ids people type that look like ours (C001, D03, DR0007, V0012) but match nothing are
        # unknown entities, never ignored.
        id_patterns = [re.compile(r"^(c|d|dr|v)\d{1,5}$")]
        plain = {d.name for d in layer.dimensions.values() if not d.entity and not d.time}
        return cls(phrases, labels, id_patterns, plain)


def _tables(con: duckdb.DuckDBPyConnection | None) -> set[str]:
    if con is None:
        return set()
    return {
        str(r[0]) for r in con.execute("SELECT table_name FROM duckdb_tables() WHERE schema_name = 'main'").fetchall()
    }


def normalise(text: str) -> str:
    text = text.lower().replace("’", "'").replace("%", " percent ")
    text = re.sub(r"[^\w\s'-]", " ", text)
    text = re.sub(r"(?<!\w)-|-(?!\w)|'s\b|'", " ", text)
    return " ".join(text.split())


def _match_terms(tokens: list[str], vocab: Vocabulary) -> list[tuple[Term | None, str]]:
    """Greedy longest match of the tokens against the vocabulary; exact, then fuzzy."""
    out: list[tuple[Term | None, str]] = []
    i = 0
    phrase_keys = list(vocab.phrases)
    while i < len(tokens):
        found: tuple[int, str, str | None] | None = None
        for n in range(min(MAX_N, len(tokens) - i), 0, -1):
            words = " ".join(tokens[i : i + n])
            if words in vocab.phrases:
                found = (n, words, words)
                break
            if words in GRAIN_WORDS:
                found = (n, words, None)
                break
        if found is None:
            # A typo: only for words long enough that a near match means something.
            for n in range(min(3, len(tokens) - i), 0, -1):
                words = " ".join(tokens[i : i + n])
                parts = tokens[i : i + n]
                if (
                    _max_typos(words) == 0
                    or words in GRAIN_WORDS
                    or any(w in STOPWORDS or w in GROUP_WORDS or not w.isalpha() for w in parts)
                ):
                    continue
                best = process.extractOne(words, phrase_keys, scorer=OSA.distance, score_cutoff=_max_typos(words))
                if best and _max_typos(best[0]) > 0:
                    found = (n, words, best[0])
                    break
        if found is None:
            out.append((None, tokens[i]))
            i += 1
            continue
        n, words, key = found
        if key is None:
            out.append((Term("grain", GRAIN_WORDS[words], text=words), words))
        elif len(vocab.phrases[key]) > 1:
            plain = [t for t in vocab.phrases[key] if t.kind == "value" and t.target in vocab.plain_dimensions]
            if len(plain) == 1:
                out.append((Term("value", plain[0].target, plain[0].key, words), words))
            else:
                out.append((Term("ambiguous", key, text=words), words))
        else:
            t = vocab.phrases[key][0]
            out.append((Term(t.kind, t.target, t.key, words), words))
        i += n
    return out


RANK_WORDS = DESC_WORDS | ASC_WORDS | BEST | WORST
SHARE_WORDS = {"percentage", "percent", "share", "proportion", "fraction", "ratio", "rate"}
AVERAGE_WORDS = {"average", "avg", "mean"}
GENERIC_METRIC = "deliveries"
GENERIC_NOUNS = {"deliveries", "delivery", "shipments", "shipment", "parcels", "parcel", "packages", "package", "jobs"}


def _before_ratio(matched: list[tuple[Term | None, str]], idx: int, layer: SemanticLayer) -> bool:
    nxt = matched[idx + 1][0] if idx + 1 < len(matched) else None
    return nxt is not None and nxt.kind == "metric" and layer.metrics[nxt.target].is_ratio


def _joined(matched: list[tuple[Term | None, str]], idx: int) -> bool:
    """Whether the metric at `idx` is listed with another ("deliveries and revenue")."""
    near = {matched[j][1] for j in (idx - 1, idx + 1) if 0 <= j < len(matched)}
    return bool(near & {"and", "plus", "with", "as", "well"})


def _next_to_rank_word(matched: list[tuple[Term | None, str]], idx: int) -> bool:
    """`5` in "top 5 drivers", "the 5 worst depots", "5 busiest"."""
    before = matched[idx - 1][1] if idx > 0 else ""
    after = matched[idx + 1] if idx + 1 < len(matched) else (None, "")
    return before in RANK_WORDS or after[1] in RANK_WORDS or (after[0] is not None and after[0].kind == "dimension")


def _suggest(text: str, layer: SemanticLayer, vocab: Vocabulary, limit: int = 3) -> list[str]:
    choices = {}
    for phrase, terms in vocab.phrases.items():
        for t in terms:
            if t.kind == "metric":
                choices[phrase] = t.target
    picked: list[str] = []
    for phrase, _score, _ in process.extract(text, list(choices), scorer=fuzz.WRatio, limit=12):
        name = choices[phrase]
        if name not in picked:
            picked.append(name)
        if len(picked) == limit:
            break
    return [f"{n}: {layer.metrics[n].description}" for n in picked]


def interpret(question: str, layer: SemanticLayer, vocab: Vocabulary, as_of: dt.date) -> Interpretation | Refusal:
    """The metric query `question` asks for, or why it cannot be answered."""
    text = question.strip()
    if not text:
        return Refusal("the question is empty", _suggest("deliveries", layer, vocab))
    if len(text) > 500:
        return Refusal("the question is longer than 500 characters")
    if UNSAFE.search(text):
        return Refusal(
            "this service only answers questions about the governed metrics, read-only: "
            "it never changes data and never runs SQL from a question",
            _suggest(text, layer, vocab),
        )
    try:
        time_range, rest = find_range(text, as_of)
    except DateError as e:
        return Refusal(str(e), [])
    if re.search(r"\b(tomorrow|next\s+(week|month|year|\w+day))\b", rest, re.IGNORECASE):
        return Refusal("the lake holds what happened, not forecasts of future days", _suggest(rest, layer, vocab))
    if time_range and time_range.start > as_of:
        return Refusal(f"{time_range.text!r} is after {as_of}: the lake holds what happened, not the future")

    tokens = normalise(rest).split()
    matched = _match_terms(tokens, vocab)
    metrics: list[str] = []
    group_by: list[str] = []
    grain = "day"
    values: dict[str, list[str]] = {}
    unknown: list[str] = []
    ambiguous: list[str] = []
    order: str | None = None
    limit: int | None = None
    which = False
    compare = False
    numbers: list[int] = []
    dimension_words: list[tuple[str, bool]] = []  # (dimension, asked "by"/"per"/"each" it)
    generic: list[int] = []  # positions of a bare "deliveries"/"parcels" noun
    plural = False  # "which drivers" ranks several, "which driver" one
    share = False  # "what share of deliveries failed": a rate, not a count
    for idx, (term, word) in enumerate(matched):
        previous = matched[idx - 1][1] if idx > 0 else ""
        if term is None:
            if word in {"which", "who", "whose"}:
                which = True
            elif word in DESC_WORDS:
                order = order or "desc"
            elif word in ASC_WORDS:
                order = order or "asc"
            elif word in BEST:
                order = order or "best"
            elif word in WORST:
                order = order or "worst"
            elif word in COMPARE_WORDS:
                compare = True
            if word.isdigit() and _next_to_rank_word(matched, idx):
                numbers.append(int(word))
                continue
            if word in AVERAGE_WORDS and _before_ratio(matched, idx, layer):
                continue  # "average rating", "mean late probability": the metric is already an average
            if word in SHARE_WORDS:
                share = True
                continue
            if word in STOPWORDS or word in GROUP_WORDS or word in COMPARE_WORDS:
                continue
            if any(p.match(word) for p in vocab.id_patterns):
                unknown.append(word.upper())
            else:
                unknown.append(word)
            continue
        if term.kind == "ambiguous":
            ambiguous.append(term.text)
        elif term.kind == "metric":
            if term.target == GENERIC_METRIC and term.text.split()[-1] in GENERIC_NOUNS:
                generic.append(idx)
            if term.target not in metrics:
                metrics.append(term.target)
        elif term.kind == "grain":
            grain = term.target
            if "date" not in group_by:
                group_by.append("date")
        elif term.kind == "dimension":
            dimension_words.append((term.target, previous in GROUP_WORDS))
            plural = plural or (term.text.endswith("s") and not term.text.endswith("ss"))
        elif term.kind == "value":
            values.setdefault(term.target, [])
            if term.key not in values[term.target]:
                values[term.target].append(term.key)
    # "Oakridge's deliveries for client C001": a dimension word next to a value of its own is a
    # filter, not a breakdown; "by client", "per driver" or a dimension without a value is one.
    for dim, asked_by in dimension_words:
        if (asked_by or dim not in values) and dim not in group_by:
            group_by.append(dim)
    # "on-time rate of express deliveries", "parcels delivered": the bare noun names what is
    # counted, not a second metric, unless the question joins them ("deliveries and revenue").
    if len(metrics) > 1 and generic and not any(_joined(matched, i) for i in generic):
        metrics.remove(GENERIC_METRIC)
    # "deliveries that failed" counts what the `failed` metric counts: one status value on the
    # generic count is that status's own metric, when one is declared.
    statuses = values.get("status", [])
    if metrics == [GENERIC_METRIC] and len(statuses) == 1 and statuses[0] in layer.metrics and "status" not in group_by:
        metrics = [statuses[0]]
        del values["status"]
    if share:
        rates = [layer.metrics[m].rate or m for m in metrics]
        if not all(layer.metrics[r].is_ratio for r in rates):
            plain = [m for m, r in zip(metrics, rates, strict=True) if not layer.metrics[r].is_ratio]
            return Refusal(
                f"there is no governed rate for the share of {', '.join(plain)}",
                _suggest(" ".join(plain) + " rate", layer, vocab),
            )
        metrics = list(dict.fromkeys(rates))

    if unknown:
        what = ", ".join(repr(w) for w in unknown)
        return Refusal(
            f"I do not know {what}: it is not a metric, a dimension or a name in the warehouse",
            _suggest(" ".join(unknown), layer, vocab),
        )
    if ambiguous:
        return Refusal(f"{', '.join(repr(a) for a in ambiguous)} could mean several things; say which")
    if not metrics:
        return Refusal(
            "the question names no metric I know (the governed metrics are listed by `delivery-lake metrics`)",
            _suggest(rest, layer, vocab),
        )
    # Several values of one dimension ("C001 vs C002", "Leeds and York") are compared side by
    # side: one row each.
    for dim, keys in values.items():
        if (len(keys) > 1 or compare) and dim not in group_by:
            group_by.append(dim)
    if which and not group_by:
        return Refusal("'which' needs something to rank: say which client, depot, driver...")
    ranked = order is not None or which
    if ranked and not [g for g in group_by if g != "date"] and "date" not in group_by:
        return Refusal("'top', 'most', 'best' need something to rank: say which client, depot, driver, day...")
    primary = layer.metrics[metrics[0]]
    descending = True
    if order in ("asc",):
        descending = False
    elif order == "best":
        descending = primary.better == "higher"
    elif order == "worst":
        descending = primary.better != "higher"
    if ranked:
        limit = numbers[0] if numbers else 1 if (which or order in ("best", "worst")) and not plural else 5
    q = MetricQuery(
        metrics=tuple(metrics),
        group_by=tuple(group_by),
        grain=grain,
        filters=tuple((d, tuple(k)) for d, k in values.items()),
        start=time_range.start if time_range else None,
        end=time_range.end if time_range else None,
        order_by=metrics[0] if ranked else None,
        descending=descending,
        limit=limit,
    )
    try:
        compile_query(layer, q)
    except SemanticError as e:
        return Refusal(str(e), _suggest(rest, layer, vocab))
    return Interpretation(q, time_range, describe(q, layer, vocab, time_range), _details(q, layer, vocab, time_range))


def _value_text(vocab: Vocabulary, dim: str, key: str) -> str:
    label = vocab.labels.get((dim, key))
    return f"{key} ({label})" if label and label != key else key


def describe(q: MetricQuery, layer: SemanticLayer, vocab: Vocabulary, time_range: TimeRange | None) -> str:
    parts = [" and ".join(layer.metrics[m].label.lower() for m in q.metrics)]
    dims = [q.grain if g == "date" else g for g in q.group_by]
    if dims:
        parts.append("by " + ", ".join(d.replace("_", " ") for d in dims))
    for dim, keys in q.filters:
        parts.append(f"for {dim.replace('_', ' ')} " + " or ".join(_value_text(vocab, dim, k) for k in keys))
    if time_range:
        parts.append(("on " if time_range.start == time_range.end else "from ") + time_range.describe())
    else:
        parts.append("over all dates in the warehouse")
    if q.order_by and q.limit:
        direction = "highest" if q.descending else "lowest"
        parts.append(f"{direction} {q.limit} by {layer.metrics[q.order_by].label.lower()}")
    return ", ".join(parts)


def _details(q: MetricQuery, layer: SemanticLayer, vocab: Vocabulary, time_range: TimeRange | None) -> dict[str, Any]:
    return {
        "metrics": [
            {"name": m, "label": layer.metrics[m].label, "definition": layer.metrics[m].definition()} for m in q.metrics
        ],
        "dimensions": list(q.group_by),
        "grain": q.grain if "date" in q.group_by else None,
        "filters": {d: [_value_text(vocab, d, k) for k in keys] for d, keys in q.filters},
        "time_range": (
            {"from": time_range.start.isoformat(), "to": time_range.end.isoformat(), "words": time_range.text}
            if time_range
            else None
        ),
        "order": ({"by": q.order_by, "descending": q.descending, "limit": q.limit} if q.order_by else None),
    }
