"""schema.py is where a loaded column is defined: the migrated catalog must hold exactly those columns, with
those types, so the loaders' statements and the migrations cannot drift apart."""

from __future__ import annotations

from pagerduty_pipeline.migrations import migrate
from pagerduty_pipeline.schema import DATA_TABLES, EXTRA_COLUMNS

# what information_schema calls the types schema.py names
CATALOG_TYPE = {"text": "text", "bigint": "bigint", "integer": "integer", "boolean": "boolean", "jsonb": "jsonb",
                "timestamptz": "timestamp with time zone"}


def test_the_migrated_tables_have_exactly_the_columns_schema_py_defines(db):
    migrate(db)
    catalog: dict[str, dict[str, str]] = {}
    for table, column, data_type in db.run(
            "SELECT table_name, column_name, data_type FROM information_schema.columns "
            "WHERE table_schema = 'pagerduty'"):
        catalog.setdefault(table, {})[column] = data_type
    for table in DATA_TABLES:
        columns = [*table.columns, *EXTRA_COLUMNS.get(table.name, ())]
        assert catalog[table.name] == {c.name: CATALOG_TYPE[c.type] for c in columns}, table.name

