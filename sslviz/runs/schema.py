"""The store file's schema: the ``runs`` and ``sweeps`` tables, the metric tables from ``records.py``, and the
frozen upgrade steps from older files (``PRAGMA user_version``).

To change the schema: edit the declaration, append a v(n)->v(n+1) step to ``UPGRADES``, bump ``SCHEMA_VERSION``;
``tests/test_store_upgrade.py`` checks an upgraded v0 file equals a fresh one.
"""
from __future__ import annotations

import sqlite3

from . import records

SCHEMA_VERSION = 3  # PRAGMA user_version of the files this code writes; bump it with a new step in UPGRADES

RUNS_SQL = """
CREATE TABLE runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL DEFAULT '',
    preset TEXT NOT NULL DEFAULT '',
    config TEXT NOT NULL,
    status TEXT NOT NULL DEFAULT 'queued',
    created REAL NOT NULL,
    started REAL,
    finished REAL,
    device TEXT,
    error TEXT,
    pid INTEGER,
    heartbeat REAL,
    stop_requested INTEGER NOT NULL DEFAULT 0,
    step INTEGER NOT NULL DEFAULT 0,
    total_steps INTEGER NOT NULL,
    info TEXT NOT NULL DEFAULT '{}',
    code_version TEXT,
    executor TEXT NOT NULL DEFAULT 'local',
    archived INTEGER NOT NULL DEFAULT 0,
    sweep INTEGER
)"""
# A sweep: a grid of runs defined together (runs/sweep_spec.py); its runs carry its id in ``runs.sweep``.
SWEEPS_SQL = """
CREATE TABLE sweeps (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL DEFAULT '',
    created REAL NOT NULL,
    spec TEXT NOT NULL,
    executor TEXT NOT NULL DEFAULT 'local',
    options TEXT NOT NULL DEFAULT '{}'
)"""
METRIC_TABLES = tuple(r.TABLE for r in records.METRIC_ROWS)


# -- schema upgrades: one frozen step per version, never edited once released ---------------------
def _rebuild(conn: sqlite3.Connection, table: str, create: str, select: str) -> None:
    """Replace ``table`` by the one ``create`` declares, copying ``select`` from the old rows.

    SQLite cannot alter a primary key, so: create a new table, copy, drop the old one, rename.
    """
    conn.execute(create.format(name=f"{table}_new"))
    conn.execute(f"INSERT INTO {table}_new SELECT {select} FROM {table}")
    conn.execute(f"DROP TABLE {table}")
    conn.execute(f"ALTER TABLE {table}_new RENAME TO {table}")


def _v0_to_v1(conn: sqlite3.Connection) -> None:
    """The validation split: evals and class_eval keyed by split (every older evaluation was the test set),
    a technique table for techniques' live state, and the code version of each run."""
    _rebuild(conn, "evals", "CREATE TABLE {name} (run_id INTEGER NOT NULL, step INTEGER NOT NULL, "
             "split TEXT NOT NULL, wall REAL NOT NULL, accuracy REAL, balanced_accuracy REAL, "
             "PRIMARY KEY (run_id, step, split))",
             "run_id, step, 'test', wall, accuracy, balanced_accuracy")
    _rebuild(conn, "class_eval", "CREATE TABLE {name} (run_id INTEGER NOT NULL, step INTEGER NOT NULL, "
             "split TEXT NOT NULL, cls INTEGER NOT NULL, recall REAL, PRIMARY KEY (run_id, step, split, cls))",
             "run_id, step, 'test', cls, recall")
    conn.execute("CREATE TABLE technique (run_id INTEGER NOT NULL, step INTEGER NOT NULL, name TEXT NOT NULL, "
                 "cls INTEGER NOT NULL, value REAL, PRIMARY KEY (run_id, step, name, cls))")
    conn.execute("ALTER TABLE runs ADD COLUMN code_version TEXT")


def _v1_to_v2(conn: sqlite3.Connection) -> None:
    """The explicit lifecycle: how each run executes (its liveness check; every older run was a local process)
    and the archive bit (nothing was archived before)."""
    conn.execute("ALTER TABLE runs ADD COLUMN executor TEXT NOT NULL DEFAULT 'local'")
    conn.execute("ALTER TABLE runs ADD COLUMN archived INTEGER NOT NULL DEFAULT 0")


def _v2_to_v3(conn: sqlite3.Connection) -> None:
    """Sweeps: a ``sweeps`` table and the sweep each run belongs to (none before)."""
    conn.execute("ALTER TABLE runs ADD COLUMN sweep INTEGER")
    conn.execute("CREATE TABLE sweeps (id INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT NOT NULL DEFAULT '', "
                 "created REAL NOT NULL, spec TEXT NOT NULL, executor TEXT NOT NULL DEFAULT 'local', "
                 "options TEXT NOT NULL DEFAULT '{}')")


UPGRADES = (_v0_to_v1, _v1_to_v2, _v2_to_v3)  # UPGRADES[v] turns a version-v file into version v + 1


def create_current(conn: sqlite3.Connection) -> None:
    """A fresh file goes straight to the current version, from the record declarations."""
    for sql in (RUNS_SQL, SWEEPS_SQL, *(stmt for row in records.ROWS for stmt in records.create_sql(row))):
        conn.execute(sql)
