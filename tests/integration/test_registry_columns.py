"""Columns added to a registry made by an older ugro (ugro/registry/columns.py), on
the test's database (PostgreSQL when it runs here)."""

from __future__ import annotations

from sqlalchemy import Column, MetaData, String, Table, create_engine, insert, select

from ugro.registry.columns import add_missing_columns


def test_a_column_named_by_a_reserved_word_is_added_to_an_older_registry(
    database_url: str,
) -> None:
    engine = create_engine(database_url)
    try:
        # Given a table made before its column "user" (a reserved word in PostgreSQL)
        older = MetaData()
        Table("ugro_older", older, Column("id", String(8), primary_key=True))
        older.create_all(engine)
        newer = MetaData()
        table = Table(
            "ugro_older",
            newer,
            Column("id", String(8), primary_key=True),
            Column("user", String(64), nullable=True),
        )
        # When the newer code opens it
        added = add_missing_columns(engine, newer)
        # Then the column is there, and usable
        assert added == ["ugro_older.user"]
        with engine.begin() as conn:
            conn.execute(insert(table).values(id="a", user="ada"))
            assert conn.execute(select(table.c.user)).scalar_one() == "ada"
    finally:
        engine.dispose()
