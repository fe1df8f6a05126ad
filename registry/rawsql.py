"""Read queries on the DB-API cursor under a SQLAlchemy connection.

The search path runs several small queries per request; SQLAlchemy's statement
and result machinery costs about as much as SQLite itself there, so reads that
must be fast go straight to the driver. SQL is written once with ``:name``
parameters (``IN :name`` for a list) and adapted to the driver's style.
"""

from __future__ import annotations

import re
from collections import namedtuple
from datetime import datetime
from functools import lru_cache
from typing import Any

from sqlalchemy.engine import Connection

_PARAM = re.compile(r"(?<![:\w]):(\w+)")
_IN_LIST = re.compile(r"\bIN :(\w+)")


@lru_cache(maxsize=512)
def _pg_sql(sql: str) -> str:
    sql = _IN_LIST.sub(r"= ANY(:\1)", sql)
    return _PARAM.sub(r"%(\1)s", sql.replace("%", "%%"))


@lru_cache(maxsize=256)
def _row_type(names: tuple[str, ...]) -> Any:
    return namedtuple("Row", names, rename=True)


class Raw:
    """Run read queries on ``conn``'s driver connection; rows are namedtuples."""

    def __init__(self, conn: Connection) -> None:
        self.dbapi = conn.connection.dbapi_connection
        self.pg = conn.dialect.name == "postgresql"

    def all(self, sql: str, params: dict[str, Any] | None = None, *, prepare: bool = False) -> list[Any]:
        """Rows of ``sql``. ``prepare``: PostgreSQL keeps the statement prepared on this connection
        and, after a few runs, reuses a generic plan; only for statements whose best plan does not
        depend on the values (see :mod:`lorahub.registry.search`)."""
        params = dict(params or {})
        if self.pg:
            sql = _pg_sql(sql)
        else:
            for name in _IN_LIST.findall(sql):
                values = list(params.pop(name))
                keys = [f"{name}_{i}" for i in range(len(values))] or ["__none__"]
                params.update(zip(keys, values, strict=False))
                if not values:
                    params["__none__"] = None
                sql = sql.replace(f"IN :{name}", "IN (" + ", ".join(f":{k}" for k in keys) + ")")
        cur = self.dbapi.cursor()
        try:
            if self.pg:
                cur.execute(sql, params, prepare=prepare)
            else:
                cur.execute(sql, params)
            rows = cur.fetchall()
            if cur.description is None:
                return []
            kind = _row_type(tuple(d[0] for d in cur.description))
        finally:
            cur.close()
        return [kind._make(r) for r in rows]


def as_datetime(value: Any) -> datetime | None:
    """SQLite hands DateTime columns back as text on the raw cursor."""
    if value is None or isinstance(value, datetime):
        return value
    try:
        return datetime.fromisoformat(str(value))
    except ValueError:
        return None


__all__ = ["Raw", "as_datetime"]
