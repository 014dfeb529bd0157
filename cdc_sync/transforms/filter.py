"""Row filters: a small SQL-like expression language (lark, LALR), SQL three-valued logic."""

from __future__ import annotations

import operator
from collections.abc import Callable
from decimal import Decimal
from functools import cache
from typing import Any

from lark import Lark, Token, Tree
from lark.exceptions import UnexpectedInput

from cdc_sync.records import UNCHANGED, Kind, TableSchema
from cdc_sync.transforms.errors import Problem, RuleError
from cdc_sync.transforms.values import (
    NUMBER_KINDS,
    TEXT_KINDS,
    coerce_constant,
    parse_decimal,
    type_text,
)

Row = tuple[object, ...]
Pred = Callable[[Row], "bool | None"]
"""True / False / None (SQL's unknown); a row is kept only when its filter is True."""

_GRAMMAR = r"""
?start: disj
?disj: conj (_OR conj)*
?conj: neg (_AND neg)*
?neg: _NOT neg                          -> not_
    | atom
?atom: "(" disj ")"
     | column COMP literal              -> compare
     | column _IS _NULL                 -> is_null
     | column _IS _NOT _NULL            -> is_not_null
     | column _IN "(" literals ")"      -> in_
     | column _NOT _IN "(" literals ")" -> not_in
literals: literal ("," literal)*
column: NAME | QUOTED
literal: STRING | NUMBER | _TRUE -> true | _FALSE -> false | _NULL -> null
COMP: "=" | "!=" | "<>" | "<=" | ">=" | "<" | ">"
_OR: "or"i
_AND: "and"i
_NOT: "not"i
_IS: "is"i
_IN: "in"i
_NULL: "null"i
_TRUE: "true"i
_FALSE: "false"i
NAME: /[A-Za-z_][A-Za-z0-9_$]*/i
QUOTED: /"(?:[^"]|"")+"/
STRING: /'(?:[^']|'')*'/
NUMBER: /[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)/
%import common.WS
%ignore WS
"""
# NAME carries the `i` flag so that lark recognises the case-insensitive keywords as
# collisions with it and lexes "android" as one name rather than "and" + "roid".

_OPS: dict[str, Callable[[Any, Any], Any]] = {
    "=": operator.eq,
    "!=": operator.ne,
    "<>": operator.ne,
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}
_STR_KINDS = TEXT_KINDS | {Kind.JSON, Kind.JSONB, Kind.BIT}
_NULL = object()  # the `null` literal
_BAD = object()  # a literal that does not fit its column (already reported)


@cache
def _parser() -> Lark:
    return Lark(_GRAMMAR, parser="lalr", maybe_placeholders=False)


def compile_filter(text: str, schema: TableSchema) -> tuple[Pred, list[str]]:
    """The predicate over source rows and the source columns it reads; Problem listing every
    problem (one line each) when the text does not parse or does not fit the schema."""
    try:
        tree = _parser().parse(text)
    except UnexpectedInput as e:
        raise Problem(f"syntax error at character {e.column}") from None
    c = _Compiler(schema)
    pred = c.node(tree)
    if c.problems:
        raise Problem("\n".join(c.problems))
    return pred, c.used


def _kleene(parts: tuple[Pred, ...], decisive: bool) -> Pred:
    """AND (``decisive`` False) or OR (``decisive`` True) in SQL's three-valued logic: one
    decisive part decides; otherwise any unknown (None) part makes the whole unknown."""

    def pred(row: Row) -> bool | None:
        unknown = False
        for p in parts:
            r = p(row)
            if r is decisive:
                return decisive
            if r is None:
                unknown = True
        return None if unknown else not decisive

    return pred


def _and(parts: tuple[Pred, ...]) -> Pred:
    return _kleene(parts, False)


def _or(parts: tuple[Pred, ...]) -> Pred:
    return _kleene(parts, True)


def _not(inner: Pred) -> Pred:
    def pred(row: Row) -> bool | None:
        r = inner(row)
        return None if r is None else not r

    return pred


def _unsent(col: str) -> RuleError:
    return RuleError(
        "filter",
        col,
        "value not sent by the source (unchanged TOASTed value); "
        "set REPLICA IDENTITY FULL on the source table",
    )


class _Compiler:
    def __init__(self, schema: TableSchema) -> None:
        self.schema = schema
        self.problems: list[str] = []
        self.used: list[str] = []

    def node(self, t: Tree[Token]) -> Pred:
        kind = t.data
        if kind in ("disj", "conj"):
            parts = tuple(self.node(c) for c in t.children if isinstance(c, Tree))
            return _or(parts) if kind == "disj" else _and(parts)
        if kind == "not_":
            (inner,) = t.children
            assert isinstance(inner, Tree)
            return _not(self.node(inner))
        col_tree = t.children[0]
        assert isinstance(col_tree, Tree)
        found = self.column(col_tree)
        if found is None:
            return lambda row: None
        i, name = found
        if kind in ("is_null", "is_not_null"):
            return self.null_test(i, name, kind == "is_null")
        if kind == "compare":
            op, lit = t.children[1], t.children[2]
            assert isinstance(op, Token) and isinstance(lit, Tree)
            value = self.literal(i, name, lit)
            if value is _NULL:
                self.problems.append(f"comparing with null is never true: write {name} is null")
            return self.compare(i, name, _OPS[str(op)], value)
        lits = t.children[1]
        assert isinstance(lits, Tree)
        values = [self.literal(i, name, c) for c in lits.children if isinstance(c, Tree)]
        pred = self.member(i, name, values)
        return _not(pred) if kind == "not_in" else pred

    def column(self, t: Tree[Token]) -> tuple[int, str] | None:
        tok = t.children[0]
        assert isinstance(tok, Token)
        names = self.schema.names
        if tok.type == "QUOTED":
            name = str(tok)[1:-1].replace('""', '"')
        else:
            # Unquoted names match exactly, else folded to lowercase as PostgreSQL does.
            name = str(tok) if str(tok) in names else str(tok).lower()
        if name not in names:
            self.problems.append(f"unknown column {name!r}")
            return None
        if name not in self.used:
            self.used.append(name)
        return names.index(name), name

    def literal(self, i: int, name: str, t: Tree[Token]) -> object:
        """The literal converted to the column's canonical value type."""
        if t.data == "null":
            return _NULL
        if t.data in ("true", "false"):
            raw: object = t.data == "true"
            shown = str(t.data)
        else:
            tok = t.children[0]
            assert isinstance(tok, Token)
            shown = str(tok)  # as written: a config value, not a row value
            if tok.type == "STRING":
                raw = shown[1:-1].replace("''", "'")
            else:
                raw = Decimal(shown) if "." in shown else int(shown)
        ct = self.schema.columns[i].type
        bad = f"cannot compare {type_text(ct)} column {name!r} with {shown}"
        # PG_TEXT: a comparison of the text form would not be the type's own (citext)
        if ct.array_dims or ct.kind in (Kind.BYTES, Kind.INTERVAL, Kind.DURATION, Kind.PG_TEXT):
            self.problems.append(f"{type_text(ct)} column {name!r} takes only is [not] null")
            return _BAD
        if isinstance(raw, bool) and ct.kind is not Kind.BOOLEAN:
            self.problems.append(bad)
            return _BAD
        if ct.kind in NUMBER_KINDS:
            if isinstance(raw, str):
                try:
                    return parse_decimal(raw)  # numbers compare exactly across int/Decimal/float
                except ValueError:
                    self.problems.append(bad)
                    return _BAD
            return raw
        if ct.kind in _STR_KINDS:
            return raw if isinstance(raw, str) else str(raw)
        try:
            return coerce_constant(raw, ct)
        except ValueError:
            self.problems.append(bad)
            return _BAD

    @staticmethod
    def null_test(i: int, name: str, is_null: bool) -> Pred:
        def pred(row: Row) -> bool | None:
            v = row[i]
            if v is UNCHANGED:
                raise _unsent(name)
            return (v is None) is is_null

        return pred

    @staticmethod
    def compare(i: int, name: str, op: Callable[[Any, Any], Any], lit: object) -> Pred:
        def pred(row: Row) -> bool | None:
            v = row[i]
            if v is None:
                return None
            if v is UNCHANGED:
                raise _unsent(name)
            try:
                return bool(op(v, lit))
            except TypeError:  # a custom function put a value of another type there
                raise RuleError(
                    "filter", name, "value cannot be compared with the literal"
                ) from None

        return pred

    @staticmethod
    def member(i: int, name: str, values: list[object]) -> Pred:
        has_null = any(v is _NULL for v in values)
        given = [v for v in values if v is not _NULL and v is not _BAD]
        try:
            pool: frozenset[object] | list[object] = frozenset(given)
        except TypeError:
            pool = given

        def pred(row: Row) -> bool | None:
            v = row[i]
            if v is None:
                return None
            if v is UNCHANGED:
                raise _unsent(name)
            try:
                if v in pool:
                    return True
            except TypeError:
                raise RuleError(
                    "filter", name, "value cannot be compared with the literal"
                ) from None
            # SQL: x IN (1, NULL) is unknown, not false, when x is not 1.
            return None if has_null else False

        return pred
