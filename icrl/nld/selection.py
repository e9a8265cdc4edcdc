"""Choose the NLD games to convert, from the ``nle.dataset`` index, and check their files first.

Selection reads the SQLite index that ``icrl nld index`` (nle's ``populate_db``) built: the games
of one dataset, narrowed by game ids, roles, an SQL condition over the ``games`` table (its
xlogfile columns: ``role``, ``race``, ``points``, ``turns``, ``death``, ``maxlvl``, ...) and a
count. The preflight then checks every ttyrec of every chosen game without decoding it (exists,
same size as when indexed, intact bz2 header and end-of-stream marker; optionally a full bz2 CRC
pass), because nle's converter drops a bad file without a word (see icrl.nld.integrity).
"""

from __future__ import annotations

import dataclasses
import os
import sqlite3
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from icrl.nld.integrity import full_problem, quick_problem
from icrl.nld.index import check_db, role_abbrev, role_name
from icrl.errors import IcrlError


@dataclasses.dataclass(frozen=True)
class GameFiles:
    """One indexed game: its id, xlogfile role (3 letters) and ttyrecs (absolute path, indexed size)."""

    gameid: int
    role: str
    files: tuple[tuple[str, int], ...]

    @property
    def role_name(self) -> str:
        return role_name(self.role)

    @property
    def nbytes(self) -> int:
        return sum(size for _, size in self.files)


@dataclasses.dataclass(frozen=True)
class Selection:
    """The chosen games of one dataset, in game-id order."""

    db: Path
    dataset: str
    root: Path
    ttyrec_version: int  # 1: NLD-NAO (screens only), 2: + keypresses, 3: + scores (NLD-AA, NLE)
    games: tuple[GameFiles, ...]

    @property
    def has_actions(self) -> bool:
        return self.ttyrec_version >= 2

    @property
    def has_scores(self) -> bool:
        return self.ttyrec_version >= 3

    @property
    def source(self) -> str:
        """Episode source: ``nld-aa`` for recordings with keypresses, ``nld-nao`` for screens only."""
        return "nld-aa" if self.has_actions else "nld-nao"


@dataclasses.dataclass(frozen=True)
class GameSkip:
    """A game left out, and why (a file named in ``path`` when one is at fault)."""

    gameid: int
    path: str
    reason: str

    def __str__(self) -> str:
        return f"game {self.gameid}: {self.path}: {self.reason}" if self.path else f"game {self.gameid}: {self.reason}"


def _connect(db: Path) -> sqlite3.Connection:
    return sqlite3.connect(f"file:{db}?mode=ro", uri=True)


def select_games(db: str | os.PathLike, dataset: str, *, gameids: Sequence[int] | None = None,
                 roles: Sequence[str] | None = None, where: str | None = None,
                 limit: int | None = None) -> Selection:
    """The games of ``dataset`` in ``db`` that pass every given filter, lowest game id first.

    ``where`` is an SQL condition over the ``games`` table (e.g. ``points > 1000 AND death LIKE
    '%quit%'``); ``limit`` keeps the first N. IcrlError for a missing database or dataset, an
    unknown role, a bad condition, or requested game ids the dataset does not have.
    """
    db = check_db(db)
    if limit is not None and limit < 1:
        raise IcrlError(f"--games must be >= 1, got {limit}")
    with _connect(db) as conn:
        roots = {name: (root, version) for name, root, version in conn.execute("SELECT * FROM roots")}
        if dataset not in roots:
            raise IcrlError(f"--dataset {dataset!r} is not in {db}; it has: {', '.join(sorted(roots)) or 'none'}")
        root, version = roots[dataset]
        # A subquery, not a join, so that --where sees the games table's columns unqualified.
        sql = "SELECT gameid, role FROM games WHERE gameid IN (SELECT gameid FROM datasets WHERE dataset_name = ?)"
        args: list = [dataset]
        if roles:
            abbrevs = sorted({role_abbrev(r) for r in roles})
            sql += f" AND role IN ({','.join('?' for _ in abbrevs)})"
            args += abbrevs
        if where:
            sql += f" AND ({where})"
        sql += " ORDER BY gameid"
        try:
            rows = conn.execute(sql, args).fetchall()
        except sqlite3.Error as err:
            raise IcrlError(f"--where {where!r}: {err} (columns of games: "
                            f"{', '.join(_game_columns(conn))})") from None
        files: dict[int, list[tuple[int, str, int]]] = {}
        for gameid, part, path, size in conn.execute(
                "SELECT ttyrecs.gameid, ttyrecs.part, ttyrecs.path, ttyrecs.size FROM ttyrecs "
                "JOIN datasets ON ttyrecs.gameid = datasets.gameid WHERE datasets.dataset_name = ?", (dataset,)):
            files.setdefault(gameid, []).append((part, path, size))
    if gameids is not None:
        wanted = set(int(g) for g in gameids)
        have = {g for g, _ in rows}
        missing = sorted(wanted - have)
        if missing:
            raise IcrlError(f"--game-ids {missing[:10]}{' ...' if len(missing) > 10 else ''}: not games of "
                            f"{dataset!r} (or excluded by the other filters)")
        rows = [r for r in rows if r[0] in wanted]
    if limit is not None:
        rows = rows[:limit]
    games = tuple(
        GameFiles(gameid, role, tuple((os.path.join(root, p), size) for _, p, size in sorted(files.get(gameid, []))))
        for gameid, role in rows
    )
    return Selection(db=db, dataset=dataset, root=Path(root), ttyrec_version=int(version), games=games)


def _game_columns(conn: sqlite3.Connection) -> list[str]:
    return [row[1] for row in conn.execute("PRAGMA table_info(games)")]


def _file_problem(path: str, size: int, full: bool) -> str | None:
    try:
        actual = os.path.getsize(path)
    except FileNotFoundError:
        return "file is missing"
    except OSError as err:
        return f"unreadable: {err.strerror or err}"
    if actual != size:
        return f"size {actual} differs from the indexed size {size} (changed since `icrl nld index`)"
    return full_problem(path) if full else quick_problem(path)


def preflight(selection: Selection, *, full_bz2: bool = False,
              threads: int = 2) -> tuple[list[GameFiles], list[GameSkip]]:
    """Split the selection into games whose files all look intact and skips (with reasons).

    ``full_bz2`` decompresses every file to check bzip2's block CRCs (catches damage inside a file,
    not only truncation); it costs about one more decompression of the data.
    """
    if not selection.root.is_dir():
        raise IcrlError(f"{selection.root}: the root of dataset {selection.dataset!r} (recorded in "
                        f"{selection.db}) does not exist; was the data moved? Re-run `icrl nld index`")
    checks = [(g, path, size) for g in selection.games for path, size in g.files]
    with ThreadPoolExecutor(max(1, threads)) as pool:
        problems = list(pool.map(lambda c: _file_problem(c[1], c[2], full_bz2), checks))
    bad: dict[int, GameSkip] = {}
    for (g, path, _), problem in zip(checks, problems):
        if problem is not None and g.gameid not in bad:
            bad[g.gameid] = GameSkip(g.gameid, path, problem)
    for g in selection.games:
        if not g.files:
            bad[g.gameid] = GameSkip(g.gameid, "", "no ttyrec listed in the index")
    ok = [g for g in selection.games if g.gameid not in bad]
    return ok, sorted(bad.values(), key=lambda s: s.gameid)
