"""The reflection store refuses files that are not reflection stores, and leaves them byte-for-byte untouched."""

from __future__ import annotations

import hashlib
import sqlite3
from pathlib import Path

import pytest

from cmat_gym.cmat.memory import ReflectionStore


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def sqlite_file(path: Path, *statements: str) -> Path:
    conn = sqlite3.connect(path)
    for statement in statements:
        conn.execute(statement)
    conn.commit()
    conn.close()
    return path


def foreign_reflections_table(tmp_path: Path) -> Path:
    """A file whose 'reflections' table has another schema (the case that used to crash on reset)."""
    return sqlite_file(tmp_path / "other.sqlite", "CREATE TABLE reflections (id INTEGER PRIMARY KEY, note TEXT)",
                       "INSERT INTO reflections (note) VALUES ('mine')")


def unrelated_database(tmp_path: Path) -> Path:
    return sqlite_file(tmp_path / "app.db", "CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT)",
                       "INSERT INTO users (name) VALUES ('ada')")


def store_plus_another_table(tmp_path: Path) -> Path:
    path = tmp_path / "mixed.sqlite"
    with ReflectionStore(path) as store:
        store.add(split="train", domain="db", task_id="t", task_text="count rows", text="check names")
    return sqlite_file(path, "CREATE TABLE users (id INTEGER PRIMARY KEY)")


def not_sqlite(tmp_path: Path) -> Path:
    path = tmp_path / "notes.txt"
    path.write_text("These are my notes, not a database.\n" * 50)
    return path


def another_schema_version(tmp_path: Path) -> Path:
    path = tmp_path / "future.sqlite"
    with ReflectionStore(path) as store:
        store.add(split="train", domain="db", task_id="t", task_text="count rows", text="check names")
    return sqlite_file(path, "PRAGMA user_version = 7")


FOREIGN = [foreign_reflections_table, unrelated_database, store_plus_another_table, not_sqlite, another_schema_version]


@pytest.mark.parametrize("make", FOREIGN)
@pytest.mark.parametrize("mode", ["rw", "ro"])
def test_foreign_files_are_refused_and_left_untouched(tmp_path: Path, make, mode: str) -> None:
    path = make(tmp_path)
    before, siblings = digest(path), sorted(p.name for p in tmp_path.iterdir())
    with pytest.raises(ValueError, match="reflection store") as excinfo:
        ReflectionStore(path, mode=mode)
    assert str(path) in str(excinfo.value) and "\n" not in str(excinfo.value)
    assert digest(path) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == siblings  # no -wal / -shm / -journal left behind


def test_a_directory_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="reflection store"):
        ReflectionStore(tmp_path)


def test_own_files_empty_files_and_new_files_are_accepted(tmp_path: Path) -> None:
    path = tmp_path / "r.sqlite"
    with ReflectionStore(path) as store:  # new
        store.add(split="train", domain="db", task_id="t", task_text="count rows", text="check names")
    with ReflectionStore(path) as store:  # reopened
        assert len(store) == 1
    with ReflectionStore(path, mode="ro") as store:
        assert len(store) == 1
    empty = tmp_path / "empty.sqlite"
    empty.touch()  # e.g. made by mktemp: nothing to lose
    with ReflectionStore(empty) as store:
        store.add(split="train", domain="db", task_id="t", task_text="count rows", text="check names")
        assert len(store) == 1
    blank = sqlite_file(tmp_path / "blank.sqlite", "PRAGMA user_version = 0")  # a database with no tables
    with ReflectionStore(blank) as store:
        assert len(store) == 0


def test_cli_refuses_a_foreign_file_with_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from cmat_gym import cli

    path = unrelated_database(tmp_path)
    before = digest(path)
    status = cli.main(["eval", "--policy", "random", "--episodes", "1", "--cmat", "--memory", "on",
                       "--memory-path", str(path)])
    err = capsys.readouterr().err
    assert status == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert "not a reflection store" in err or "reflection store" in err
    assert digest(path) == before
