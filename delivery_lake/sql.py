"""Quoting for the SQL this project generates (DuckDB dialect): the one place it is written."""

from __future__ import annotations


def ident(name: str) -> str:
    """A quoted identifier: any column or table name, quotes doubled."""
    return '"' + name.replace('"', '""') + '"'


def literal(value: str) -> str:
    """A string literal, quotes doubled."""
    return "'" + value.replace("'", "''") + "'"
