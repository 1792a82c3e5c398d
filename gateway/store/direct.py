"""Executemany straight on the database driver, for the writer's hottest statements.

SQLAlchemy's executemany processes every parameter of every row in Python (construct_params, then
each type's bind processor): several microseconds per parameter, which in a registration storm was
most of the main process's CPU (issue 15). Here a statement is compiled once per dialect and
shape, the rows are handed to the driver as tuples in the compiled order, and each value is
converted with its column type's own bind processor — what SQLAlchemy itself would bind, on SQLite
and PostgreSQL alike — except that on SQLite a time is written by `sqlite_utc_text`, which
`time_converter` proves equal to the processor first. Anything this cannot run exactly as
SQLAlchemy would (other defaults, RETURNING, a named paramstyle) is left to SQLAlchemy.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from operator import itemgetter
from typing import Any

from sqlalchemy import DateTime, bindparam, insert, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

Shape = tuple[str, tuple[str, ...]]  # ("insert" | "insert_new" | "update", the columns given)


def same(value: Any) -> Any:
    return value


def sqlite_utc_text(value: datetime | None) -> str | None:
    """An aware datetime as UTC text 'YYYY-MM-DD HH:MM:SS.ffffff' (C-speed isoformat)."""
    if value is None:
        return None
    if value.tzinfo is not UTC:
        if value.utcoffset() is None:
            raise ValueError("Datetime values must have timezone information")
        value = value.astimezone(UTC)
    return value.isoformat(" ", "microseconds")[:26]


_TIME_SAMPLES = (
    datetime(2026, 5, 28, 20, 26, 40, 123456, UTC),
    datetime(2026, 1, 1, tzinfo=UTC),  # no microseconds: still six digits
    datetime(1999, 12, 31, 23, 59, 59, 999999, timezone(timedelta(hours=8))),  # another zone
    datetime(999, 2, 3, 4, 5, 6, 7, UTC),  # a three-digit year, zero-padded
)


def time_converter(processor: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """The column type's own bind processor — or, where it gives exactly the same text on every
    sample (UTCDateTime on SQLite's DATETIME storage format), `sqlite_utc_text`, about half the
    CPU per value: in a storm these conversions were the largest share of the writer's work."""
    try:
        if all(sqlite_utc_text(v) == processor(v) for v in (*_TIME_SAMPLES, None)):
            return sqlite_utc_text
    except Exception:
        pass
    return processor


def statement(table: Any, shape: Shape, dialect_name: str | None = None) -> Any:
    """INSERT of `columns` (bound by column name), or UPDATE SET v_<column> WHERE <pk> = b_id.

    Kind "insert_new": an INSERT that skips rows whose unique key (the table's one column declared
    unique) is already there, ON CONFLICT (key) DO NOTHING — SQLite and PostgreSQL only, so
    `dialect_name` must be one of them."""
    kind, columns = shape
    if kind in ("insert", "insert_new"):
        values: dict[str, Any] = {k: bindparam(k) for k in columns}
        if kind == "insert":
            return insert(table).values(values)
        (key,) = [c.name for c in table.c if c.unique]
        if dialect_name == "sqlite":
            return sqlite_insert(table).values(values).on_conflict_do_nothing(index_elements=[key])
        if dialect_name == "postgresql":
            return pg_insert(table).values(values).on_conflict_do_nothing(index_elements=[key])
        raise ValueError(f"no INSERT ... ON CONFLICT DO NOTHING on {dialect_name!r}")
    (pk,) = table.primary_key.columns
    return update(table).where(pk == bindparam("b_id")).values({k: bindparam(f"v_{k}") for k in columns})


def supports_insert_new(dialect: Any) -> bool:
    """The dialect has INSERT ... ON CONFLICT DO NOTHING (shape kind "insert_new")."""
    return bool(dialect.name in ("sqlite", "postgresql"))


_UNSEEN = object()


@dataclass(frozen=True, slots=True)
class Direct:
    """A Core executemany compiled once per dialect and shape, run straight on the driver:
    parameters as tuples in the compiled order, each value converted by its column type's own
    bind processor (`time_converter` for times), Python-side column defaults filled as
    SQLAlchemy would fill them (per row, so a callable default such as utcnow is called per row)."""

    sql: str
    names: tuple[str, ...]
    converters: tuple[Callable[[Any], Any] | None, ...]
    defaults: tuple[tuple[str, Any, bool], ...]  # (column, default arg, callable) for columns not given

    @staticmethod
    def compile(table: Any, shape: Shape, dialect: Any) -> Direct | None:
        kind, given = shape
        if kind == "insert_new" and not supports_insert_new(dialect):
            return None
        defaults: list[tuple[str, Any, bool]] = []
        columns = list(given)
        if kind != "update":
            for c in table.c:
                if c.name in given or c.default is None:
                    continue
                if not (c.default.is_scalar or c.default.is_callable):
                    return None
                if c.default.is_callable:
                    try:  # called as SQLAlchemy calls a zero-argument default; one that reads
                        c.default.arg(None)  # the execution context is left to SQLAlchemy
                    except Exception:
                        return None
                defaults.append((c.name, c.default.arg, bool(c.default.is_callable)))
                columns.append(c.name)
        stmt = statement(table, (kind, tuple(columns)), dialect.name)
        compiled = stmt.compile(dialect=dialect, for_executemany=True)
        if not compiled.positional or not compiled.positiontup or compiled.effective_returning:
            return None
        names = tuple(compiled.positiontup)
        (pk,) = table.primary_key.columns
        converters = []
        for n in names:
            col = table.c[n if kind != "update" else (pk.name if n == "b_id" else n[2:])]
            proc = col.type.dialect_impl(dialect).bind_processor(dialect)
            is_time = isinstance(getattr(col.type, "impl_instance", col.type), DateTime)
            converters.append(time_converter(proc) if proc is not None and is_time else proc)
        return Direct(compiled.string, names, tuple(converters), tuple(defaults))

    def params(self, rows: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
        """The rows as parameter tuples. The columns are picked in C (itemgetter) and only those
        with a bind processor are converted in Python: a login's device row has twenty columns,
        a handful of them converted; the same object twice in a column (the batch's `now`, a
        scalar default) is converted once."""
        names = self.names
        pick = itemgetter(*names) if len(names) > 1 else (lambda row: (row[names[0]],))
        scalars = {name: arg for name, arg, is_callable in self.defaults if not is_callable}
        calls = [(name, arg) for name, arg, is_callable in self.defaults if is_callable]
        convert = [(i, c) for i, c in enumerate(self.converters) if c is not None]
        seen: list[Any] = [_UNSEEN] * len(names)
        done: list[Any] = [None] * len(names)
        out = []
        for row in rows:
            if self.defaults:
                row = {**scalars, **row}  # given columns are never defaulted (they are the shape)
                for name, arg in calls:
                    row[name] = arg(None)
            values = pick(row)
            if convert:
                values = list(values)
                for i, c in convert:
                    v = values[i]
                    if v is seen[i]:
                        values[i] = done[i]
                    else:
                        seen[i] = v
                        values[i] = done[i] = c(v)
                values = tuple(values)
            out.append(values)
        return out


compiled_shapes: dict[tuple[str, Shape, str, str], Direct | None] = {}


async def executemany(conn: Any, table: Any, shape: Shape, rows: list[dict[str, Any]]) -> int:
    """Run `statement(table, shape)` for `rows` straight on the driver where `Direct` applies,
    else with SQLAlchemy's executemany. Returns the driver's rowcount (meaningful only where
    `conn.dialect.supports_sane_multi_rowcount`). Shape kind "insert_new" needs a dialect that
    `supports_insert_new`."""
    dialect = conn.dialect
    key = (table.name, shape, dialect.name, dialect.driver)
    if key not in compiled_shapes:
        compiled_shapes[key] = Direct.compile(table, shape, dialect)
    direct = compiled_shapes[key]
    if direct is None:
        result = await conn.execute(statement(table, shape, dialect.name), rows)
    else:
        result = await conn.exec_driver_sql(direct.sql, direct.params(rows))
    return int(result.rowcount)


def _padded(n: int) -> int:
    """The IN-list length a chunk of `n` keys is padded to (a power of two, at most `CHUNK`): a
    handful of compiled statements per key column instead of one per batch size."""
    size = 8
    while size < n:
        size *= 2
    return min(size, CHUNK)


CHUNK = 512  # keys per SELECT ... IN (...)
_lookups: dict[tuple[str, str, int, str, str], str | None] = {}


def _lookup_sql(column: Any, size: int, dialect: Any) -> str | None:
    """`SELECT column FROM table WHERE column IN (size positional params)` for the dialect, or
    None where the column's type converts its values on binding (then SQLAlchemy runs it)."""
    key = (column.table.name, column.name, size, dialect.name, dialect.driver)
    if key not in _lookups:
        sql = None
        if column.type.dialect_impl(dialect).bind_processor(dialect) is None:
            stmt = select(column).where(column.in_([bindparam(f"k{i}") for i in range(size)]))
            compiled = stmt.compile(dialect=dialect)
            if compiled.positional and compiled.positiontup == [f"k{i}" for i in range(size)]:
                sql = compiled.string
        _lookups[key] = sql
    return _lookups[key]


async def existing(conn: Any, column: Any, keys: list[Any]) -> set[Any]:
    """Which of `keys` are in `column` (a key column): one SELECT ... IN per `CHUNK` keys, straight
    on the driver — SQLAlchemy's expanding IN processed every key in Python (several µs each,
    twice per new login in a registration storm). A short chunk is padded with its last key
    (repeats in an IN list change nothing)."""
    found: set[Any] = set()
    dialect = conn.dialect
    for i in range(0, len(keys), CHUNK):
        chunk = keys[i : i + CHUNK]
        size = _padded(len(chunk))
        sql = _lookup_sql(column, size, dialect)
        if sql is None:
            rows = await conn.execute(select(column).where(column.in_(chunk)))
        else:
            rows = await conn.exec_driver_sql(sql, (*chunk, *[chunk[-1]] * (size - len(chunk))))
        found.update(row[0] for row in rows.all())
    return found
