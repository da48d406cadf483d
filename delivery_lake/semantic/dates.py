"""Time expressions in questions, resolved against an `as_of` date into an inclusive range.

Relative phrases (yesterday, last week, this month, the last 7 days, since Monday, in March)
are resolved here by calendar rules; a single calendar date in any common spelling ("5 March",
"March 5th 2026", "2026-03-05", "05/03/2026", day first) is read by dateparser. A date that
does not exist ("30 February") is an error, never a guess. Weeks run Monday to Sunday (ISO).
"""

from __future__ import annotations

import calendar
import datetime as dt
import re
from dataclasses import dataclass

import dateparser


class DateError(ValueError):
    """A time expression that names no real date."""


@dataclass(frozen=True)
class TimeRange:
    start: dt.date
    end: dt.date
    text: str  # the words that set it, as asked
    grain_hint: str | None = None  # "week"/"month" when the question asked for one whole period

    def describe(self) -> str:
        if self.start == self.end:
            return f"{self.start:%a %d %b %Y}"
        return f"{self.start:%a %d %b %Y} to {self.end:%a %d %b %Y}"


MONTHS = {name.lower(): i for i, name in enumerate(calendar.month_name) if name}
MONTHS |= {name.lower(): i for i, name in enumerate(calendar.month_abbr) if name}
MONTHS["sept"] = 9
WEEKDAYS = {name.lower(): i for i, name in enumerate(calendar.day_name)}
NUMBERS = {
    "a": 1,
    "one": 1,
    "two": 2,
    "three": 3,
    "four": 4,
    "five": 5,
    "six": 6,
    "seven": 7,
    "eight": 8,
    "nine": 9,
    "ten": 10,
    "eleven": 11,
    "twelve": 12,
    "fourteen": 14,
    "thirty": 30,
}
_MONTH = r"(?:" + "|".join(sorted(MONTHS, key=len, reverse=True)) + r")\.?"
_WEEKDAY = r"(?:" + "|".join(WEEKDAYS) + r")"
_ORD = r"(?:st|nd|rd|th)?"
_YEAR = r"(?:19|20)\d\d"
# One calendar date: ISO, D/M/Y, "5 March [2026]", "March 5th[, 2026]", "the 3rd of March".
DATE = (
    rf"(?:\d{{4}}-\d{{1,2}}-\d{{1,2}}"
    rf"|\d{{1,2}}[/.]\d{{1,2}}[/.](?:{_YEAR}|\d\d)"
    rf"|(?:the\s+)?\d{{1,2}}{_ORD}(?:\s+of)?\s+{_MONTH}(?:,?\s+{_YEAR})?"
    rf"|{_MONTH}\s+\d{{1,2}}{_ORD}(?:,?\s+{_YEAR})?)"
)
_N = r"(\d+|" + "|".join(NUMBERS) + r")"
_SETTINGS = {"PREFER_DATES_FROM": "past", "DATE_ORDER": "DMY", "REQUIRE_PARTS": ["day", "month"]}


def _number(word: str) -> int:
    return int(word) if word.isdigit() else NUMBERS[word]


def _monday(d: dt.date) -> dt.date:
    return d - dt.timedelta(days=d.weekday())


def _month_range(year: int, month: int) -> tuple[dt.date, dt.date]:
    return dt.date(year, month, 1), dt.date(year, month, calendar.monthrange(year, month)[1])


def _add_months(d: dt.date, months: int) -> dt.date:
    total = d.year * 12 + d.month - 1 + months
    return dt.date(total // 12, total % 12 + 1, 1)


def parse_date(text: str, as_of: dt.date) -> dt.date:
    """One calendar date; without a year, the most recent such date not after `as_of`."""
    cleaned = re.sub(r"^the\s+", "", text.strip().lower())
    iso = re.fullmatch(r"(\d{4})-(\d{1,2})-(\d{1,2})", cleaned)
    if iso:
        try:
            return dt.date(*map(int, iso.groups()))
        except ValueError:
            raise DateError(f"{text!r} is not a date that exists") from None
    # Check day and month ourselves first: dateparser answers None for "30 February", and we
    # want to say why.
    m = re.fullmatch(rf"(\d{{1,2}}){_ORD}(?:\s+of)?\s+({_MONTH})(?:,?\s+({_YEAR}))?", cleaned) or re.fullmatch(
        rf"({_MONTH})\s+(\d{{1,2}}){_ORD}(?:,?\s+({_YEAR}))?", cleaned
    )
    if m:
        a, b, year = m.groups()
        day, month = (a, b) if a.isdigit() else (b, a)
        month_no = MONTHS[month.rstrip(".")]
        check_year = int(year) if year else 2024  # a leap year: 29 February exists in some year
        if not 1 <= int(day) <= calendar.monthrange(check_year, month_no)[1]:
            raise DateError(f"{text!r} is not a date that exists")
    settings = dict(_SETTINGS, RELATIVE_BASE=dt.datetime.combine(as_of, dt.time()))
    parsed = dateparser.parse(cleaned, languages=["en"], settings=settings)
    if parsed is None:
        raise DateError(f"{text!r} is not a date I can read")
    day_ = parsed.date()
    if m and not m.groups()[2] and day_ > as_of:
        day_ = day_.replace(year=day_.year - 1)
    return day_


def _month_of(name: str, year: str | None, as_of: dt.date) -> tuple[dt.date, dt.date]:
    month = MONTHS[name.rstrip(".")]
    if year:
        return _month_range(int(year), month)
    y = as_of.year if month <= as_of.month else as_of.year - 1
    return _month_range(y, month)


def _weekday_before(name: str, as_of: dt.date, strictly: bool) -> dt.date:
    back = (as_of.weekday() - WEEKDAYS[name]) % 7
    if back == 0 and strictly:
        back = 7
    return as_of - dt.timedelta(days=back)


# (pattern, resolver(match, as_of) -> (start, end, grain_hint)); the first pattern that matches
# anywhere wins, longest and most specific first.
def _rules() -> list[tuple[re.Pattern[str], object]]:
    def r(p: str) -> re.Pattern[str]:
        return re.compile(rf"\b(?:{p})(?![\w-])", re.IGNORECASE)

    rules: list[tuple[re.Pattern[str], object]] = [
        (
            r(
                rf"(?:between|from)\s+({DATE}|{_MONTH}(?:\s+{_YEAR})?)\s+(?:and|to|until|till|through)\s+({DATE}|{_MONTH}(?:\s+{_YEAR})?)"
            ),
            lambda m, a: (_span(m.group(1), a)[0], _span(m.group(2), a)[1], None),
        ),
        (r(rf"since\s+({DATE})"), lambda m, a: (parse_date(m.group(1), a), a, None)),
        (
            r(rf"since\s+(?:last\s+)?({_WEEKDAY})"),
            lambda m, a: (_weekday_before(m.group(1).lower(), a, False), a, None),
        ),
        (
            r(rf"since\s+({_MONTH})(?:\s+({_YEAR}))?"),
            lambda m, a: (_month_of(m.group(1).lower(), m.group(2), a)[0], a, None),
        ),
        (
            r(rf"(?:in\s+)?(?:the\s+)?(?:last|past|previous)\s+{_N}\s+days?"),
            lambda m, a: (a - dt.timedelta(days=_number(m.group(1).lower()) - 1), a, None),
        ),
        (
            r(rf"(?:in\s+)?(?:the\s+)?(?:last|past|previous)\s+{_N}\s+weeks?"),
            lambda m, a: (a - dt.timedelta(days=7 * _number(m.group(1).lower()) - 1), a, None),
        ),
        (
            r(rf"(?:in\s+)?(?:the\s+)?(?:last|past|previous)\s+{_N}\s+months?"),
            lambda m, a: (_add_months(a.replace(day=1), 1 - _number(m.group(1).lower())), a, None),
        ),
        (r(r"day\s+before\s+yesterday"), lambda m, a: (a - dt.timedelta(days=2),) * 2 + (None,)),
        (r(r"yesterday"), lambda m, a: (a - dt.timedelta(days=1),) * 2 + (None,)),
        (r(r"today|so\s+far\s+today"), lambda m, a: (a, a, None)),
        (r(r"(?:in\s+|during\s+)?(?:the\s+)?(?:last|previous|past)\s+week"), lambda m, a: _week(a, -1)),
        (r(r"(?:in\s+|during\s+)?this\s+week|week\s+to\s+date|wtd"), lambda m, a: (_monday(a), a, "week")),
        (r(r"(?:in\s+|during\s+)?(?:the\s+)?(?:last|previous|past)\s+month"), lambda m, a: _month(a, -1)),
        (r(r"(?:in\s+|during\s+)?this\s+month|month\s+to\s+date|mtd"), lambda m, a: (a.replace(day=1), a, "month")),
        (
            r(r"(?:in\s+|during\s+)?(?:the\s+)?(?:last|previous|past)\s+year"),
            lambda m, a: (dt.date(a.year - 1, 1, 1), dt.date(a.year - 1, 12, 31), None),
        ),
        (r(r"(?:in\s+|during\s+)?this\s+year|year\s+to\s+date|ytd"), lambda m, a: (dt.date(a.year, 1, 1), a, None)),
        (
            r(rf"(?:on\s+)?last\s+({_WEEKDAY})"),
            lambda m, a: (_weekday_before(m.group(1).lower(), a, True),) * 2 + (None,),
        ),
        (
            r(rf"(?:on\s+)?(?:{_WEEKDAY},?\s+)?(?:the\s+)?({DATE})"),
            lambda m, a: (parse_date(m.group(1), a),) * 2 + (None,),
        ),
        (r(rf"(?:on\s+)({_WEEKDAY})"), lambda m, a: (_weekday_before(m.group(1).lower(), a, False),) * 2 + (None,)),
        (
            r(rf"(?:in|during|for|of)\s+({_MONTH})(?:\s+({_YEAR}))?"),
            lambda m, a: (*_month_of(m.group(1).lower(), m.group(2), a), "month"),
        ),
        (
            r(rf"(?:in|during)\s+({_YEAR})"),
            lambda m, a: (dt.date(int(m.group(1)), 1, 1), dt.date(int(m.group(1)), 12, 31), None),
        ),
    ]
    return rules


def _week(as_of: dt.date, offset: int) -> tuple[dt.date, dt.date, str]:
    start = _monday(as_of) + dt.timedelta(days=7 * offset)
    return start, start + dt.timedelta(days=6), "week"


def _month(as_of: dt.date, offset: int) -> tuple[dt.date, dt.date, str]:
    first = _add_months(as_of.replace(day=1), offset)
    return (*_month_range(first.year, first.month), "month")


def _span(text: str, as_of: dt.date) -> tuple[dt.date, dt.date]:
    """A range end written as a month (its first and last day) or as one date (that day twice)."""
    m = re.fullmatch(rf"({_MONTH})(?:\s+({_YEAR}))?", text.strip(), re.IGNORECASE)
    if m:
        return _month_of(m.group(1).lower(), m.group(2), as_of)
    day = parse_date(text.lower(), as_of)
    return day, day


RULES = _rules()


def find_range(question: str, as_of: dt.date) -> tuple[TimeRange | None, str]:
    """The first time expression in `question`, resolved; and the question without it.
    Raises DateError for a date that does not exist or a range that ends before it starts."""
    for pattern, resolve in RULES:
        m = pattern.search(question)
        if not m:
            continue
        start, end, hint = resolve(m, as_of)  # type: ignore[operator]
        if start > end:
            raise DateError(f"{m.group(0)!r} ends before it starts ({start} > {end})")
        rest = (question[: m.start()] + " " + question[m.end() :]).strip()
        # "in March" asked on 11 March means 1 to 11 March: nothing after `as_of` has happened.
        return TimeRange(start, min(end, max(start, as_of)), m.group(0), hint), rest
    return None, question
