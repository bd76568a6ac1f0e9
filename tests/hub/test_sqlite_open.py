"""Opening a new SQLite store while another connection holds a lock on it waits, not fails."""

import sqlite3
import threading
import time

from loramgr.hub.db.engine import Database


def test_a_new_store_opened_while_another_connection_writes_waits_for_it(tmp_path):
    # SQLite fails the switch to WAL at once, busy handler or not, while another connection
    # holds a write lock: the race of several processes opening a new store together.
    path = tmp_path / "registry.db"
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    opened, errors = [], []

    def open_store():
        try:
            database = Database(f"sqlite:///{path}")
            database.ensure_current()
            opened.append(database)
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    opener = threading.Thread(target=open_store)
    opener.start()
    time.sleep(0.3)
    holder.execute("ROLLBACK")
    opener.join(timeout=30)
    holder.close()
    assert errors == []
    database = opened[0]
    try:
        with database.write_engine.connect() as connection:
            assert connection.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert database.current_revision() is not None
    finally:
        database.dispose()
