"""Columns the registry gained after databases were made with it: added, empty, to
an existing database when it is opened.

``create_all`` makes missing tables but leaves existing ones as they are. A column
added to a model since is added here with ``ALTER TABLE ... ADD COLUMN``; every such
column is nullable, so the rows already there stay valid. A rename or a new
constraint would need a real migration.
"""

from __future__ import annotations

from sqlalchemy import MetaData, inspect, text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import OperationalError, ProgrammingError


def add_missing_columns(engine: Engine, metadata: MetaData) -> list[str]:
    """Add the nullable columns of ``metadata``'s tables that the database lacks;
    returns them as ``table.column``."""
    found = inspect(engine)
    added = []
    for table in metadata.sorted_tables:
        have = {column["name"] for column in found.get_columns(table.name)}
        for column in table.columns:
            if column.name in have:
                continue
            if not column.nullable:
                raise RuntimeError(
                    f"registry: {table.name}.{column.name} is missing and cannot be added"
                    " empty: this database needs a migration"
                )
            kind = column.type.compile(dialect=engine.dialect)
            # Quoted as the dialect needs: a column may be named by a reserved word
            # (``user`` is one in PostgreSQL), as create_all would quote it.
            quote = engine.dialect.identifier_preparer.quote
            statement = f"ALTER TABLE {quote(table.name)} ADD COLUMN {quote(column.name)} {kind}"
            try:
                with engine.begin() as conn:
                    conn.execute(text(statement))
            except (OperationalError, ProgrammingError):
                # Another process added it between our look and our ALTER.
                if column.name not in {c["name"] for c in inspect(engine).get_columns(table.name)}:
                    raise
            added.append(f"{table.name}.{column.name}")
        if added:
            # A table that gained columns may have gained indexes on them too.
            for index in table.indexes:
                index.create(engine, checkfirst=True)
    return added
