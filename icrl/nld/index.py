"""``icrl nld index``: build the ``nle.dataset`` SQLite index of NLD-AA / NLD-NAO directories.

The index itself is made by nle's own functions (``nle.dataset.db.create``,
``populate_db.add_nledata_directory`` for NLE-recorded data such as NLD-AA,
``populate_db.add_altorg_directory`` for NLD-NAO), so a database built here is the one
``nle.dataset.TtyrecDataset`` reads. What icrl adds is checking first and reporting after:

- a missing directory, a directory with nothing of the expected layout, a dataset name the
  database already has, or files nle would choke on (mixed ttyrec versions, an xlogfile with no
  ttyrecs) are refused with an IcrlError naming the path, before anything is written;
- ttyrecs that nle skips silently are counted and listed: an NLE ttyrec with no line in its
  xlogfile (a game that never ended, so it has no outcome), a ttyrec in a directory without an
  xlogfile, and, for NLD-NAO, ttyrecs nle could not match to any game.
"""

from __future__ import annotations

import dataclasses
import glob
import os
import re
import sqlite3
from pathlib import Path

from icrl.errors import IcrlError

# xlogfile role abbreviations -> full role names (NetHack 3.6's roles).
ROLES: dict[str, str] = {
    "Arc": "Archeologist", "Bar": "Barbarian", "Cav": "Caveman", "Hea": "Healer", "Kni": "Knight",
    "Mon": "Monk", "Pri": "Priest", "Ran": "Ranger", "Rog": "Rogue", "Sam": "Samurai",
    "Tou": "Tourist", "Val": "Valkyrie", "Wiz": "Wizard",
}
_TTYREC_NLE = re.compile(r"\.ttyrec(\d*)\.bz2$")


@dataclasses.dataclass
class Skip:
    """A file nle leaves out of the index, and why."""

    path: str
    reason: str


@dataclasses.dataclass
class NledataScan:
    """What an NLE-format directory holds, checked before nle indexes it."""

    xlogfiles: int = 0
    ttyrecs: int = 0
    listed_games: int = 0  # xlogfile lines whose ttyrec exists
    unrecorded_games: int = 0  # xlogfile lines without a ttyrec (normal with save_ttyrec_every > 1)
    skips: list[Skip] = dataclasses.field(default_factory=list)


def role_name(abbrev: str) -> str:
    """Full role name of an xlogfile role (``Val`` -> ``Valkyrie``); unknown ones are kept."""
    return ROLES.get(abbrev, abbrev)


def role_abbrev(name: str) -> str:
    """xlogfile abbreviation of a role given in either form (case-insensitive)."""
    low = name.strip().lower()
    for abbrev, full in ROLES.items():
        if low in (abbrev.lower(), full.lower()):
            return abbrev
    raise IcrlError(f"unknown role {name!r}; roles: {', '.join(ROLES.values())} (or their 3-letter forms)")


def _check_dir(path: str | os.PathLike, flag: str) -> Path:
    root = Path(path)
    if not root.exists():
        raise IcrlError(f"{flag} {root}: no such directory")
    if not root.is_dir():
        raise IcrlError(f"{flag} {root}: not a directory")
    return root


def _xlog_ttyrecnames(xlogfile: Path) -> list[str]:
    """The ``ttyrecname=`` of each line of an NLE xlogfile (as nle's filter reads it)."""
    names = []
    with open(xlogfile, "rb") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                text = line.decode("ascii")
            except UnicodeDecodeError:
                raise IcrlError(f"{xlogfile}:{lineno}: not ASCII (nle reads NLE xlogfiles as ASCII)") from None
            if "ttyrecname=" not in text:
                raise IcrlError(f"{xlogfile}:{lineno}: no ttyrecname= field (not an NLE xlogfile line)")
            names.append(text.split("ttyrecname=")[-1].strip())
    return names


def scan_nledata(path: str | os.PathLike) -> NledataScan:
    """Check an NLE-format directory (``<path>/<run>/nle.<pid>.xlogfile`` beside its ttyrecs).

    Raises IcrlError for what ``add_nledata_directory`` would fail on; returns counts and the
    ttyrecs it would skip without a word.
    """
    root = _check_dir(path, "--aa")
    scan = NledataScan()
    xlogfiles = sorted(Path(p) for p in glob.iglob(str(root) + "/*/*.xlogfile"))
    claimed: set[Path] = set()
    for xlog in xlogfiles:
        stem = str(xlog)[: -len(".xlogfile")]
        files = sorted(Path(p) for p in glob.iglob(glob.escape(stem) + ".*.ttyrec*.bz2"))
        versions = {m.group(1) for f in files if (m := _TTYREC_NLE.search(f.name))}
        if not files:
            raise IcrlError(f"{xlog}: no ttyrecs beside it ({Path(stem).name}.*.ttyrec*.bz2); nle cannot index "
                            f"an xlogfile without recordings: remove it or restore its ttyrecs")
        if len(versions) != 1:
            raise IcrlError(f"{xlog.parent}: ttyrecs of different versions {sorted(versions)} under one xlogfile")
        if versions == {""}:
            raise IcrlError(f"{xlog.parent}: ttyrecs without a version (*.ttyrec.bz2) are alt.org (NLD-NAO) "
                            f"recordings: index them with --nao")
        names = _xlog_ttyrecnames(xlog)
        by_name = {f.name: f for f in files}
        listed = [n for n in names if n in by_name]
        scan.xlogfiles += 1
        scan.ttyrecs += len(files)
        scan.listed_games += len(listed)
        scan.unrecorded_games += len(names) - len(listed)
        listed_set = set(listed)
        for f in files:
            claimed.add(f)
            if f.name not in listed_set:
                scan.skips.append(Skip(str(f), f"no line in {xlog.name} (the game never ended)"))
    for f in sorted(Path(p) for p in glob.iglob(str(root) + "/**/*.bz2", recursive=True)):
        if f not in claimed and _TTYREC_NLE.search(f.name):
            scan.skips.append(Skip(str(f), "no xlogfile beside it (nle indexes <dir>/<run>/*.xlogfile only)"))
            scan.ttyrecs += 1
    if not xlogfiles:
        raise IcrlError(f"--aa {root}: no <run>/*.xlogfile found; expected the NLE / NLD-AA layout "
                        f"{root}/<run>/nle.<pid>.xlogfile with nle.<pid>.<n>.ttyrec3.bz2 beside it")
    return scan


def check_altorg(path: str | os.PathLike) -> tuple[int, int]:
    """Check an alt.org (NLD-NAO) directory; returns (xlogfiles, ttyrecs)."""
    root = _check_dir(path, "--nao")
    xlogs = glob.glob(str(root) + "/xlogfile.*")
    ttyrecs = glob.glob(str(root) + "/*/*.ttyrec.bz2")
    if not xlogs:
        raise IcrlError(f"--nao {root}: no xlogfile.* found; expected the alt.org layout "
                        f"{root}/xlogfile.<n>, {root}/<player>/<date>.<time>.ttyrec.bz2, {root}/blacklist.txt")
    if not (root / "blacklist.txt").is_file():
        raise IcrlError(f"--nao {root}: no blacklist.txt (part of the NLD-NAO release; an empty file "
                        f"means no ttyrec is blacklisted)")
    return len(xlogs), len(ttyrecs)


def _dataset_names(db: Path) -> list[str]:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        return [r[0] for r in conn.execute("SELECT dataset_name FROM roots")]


def check_db(db: str | os.PathLike) -> Path:
    """An existing nle.dataset database; IcrlError if missing or not one."""
    path = Path(db)
    if not path.is_file():
        raise IcrlError(f"--db {path}: no such database (build it with `icrl nld index`)")
    try:
        _dataset_names(path)
    except sqlite3.DatabaseError as err:
        raise IcrlError(f"--db {path}: not an nle.dataset database ({err})") from None
    return path


@dataclasses.dataclass
class IndexReport:
    """What ``build_index`` did: per dataset the scan's skips, and the summary rows."""

    db: Path
    skips: dict[str, list[Skip]]
    rows: list[tuple[str, str, int, int, int]]  # (dataset, role, games, in-game turns, ttyrec bytes)
    notes: list[str]


def build_index(db: str | os.PathLike, *, aa: str | os.PathLike | None = None,
                nao: str | os.PathLike | None = None, aa_name: str = "nld-aa",
                nao_name: str = "nld-nao") -> IndexReport:
    """Add the given directories to the database ``db`` (created if missing) with nle's functions."""
    import nle.dataset as nld

    if aa is None and nao is None:
        raise IcrlError("give --aa DIR and/or --nao DIR")
    db = Path(db)
    skips: dict[str, list[Skip]] = {}
    notes: list[str] = []
    # Check everything before writing anything.
    aa_scan = scan_nledata(aa) if aa is not None else None
    if nao is not None:
        check_altorg(nao)
    if db.exists():
        check_db(db)
        taken = set(_dataset_names(db)) & {n for n, d in ((aa_name, aa), (nao_name, nao)) if d is not None}
        if taken:
            raise IcrlError(f"--db {db}: already has dataset(s) {sorted(taken)}; choose another name or database")
    elif not db.parent.is_dir():
        raise IcrlError(f"--db {db}: directory {db.parent} does not exist")
    if aa is not None and nao is not None and aa_name == nao_name:
        raise IcrlError(f"the NLD-AA and NLD-NAO datasets need different names, both are {aa_name!r}")

    if not db.exists():
        nld.db.create(str(db))
    if aa_scan is not None:
        nld.add_nledata_directory(str(Path(aa)), aa_name, str(db))
        skips[aa_name] = aa_scan.skips
        if aa_scan.unrecorded_games:
            notes.append(f"{aa_name}: {aa_scan.unrecorded_games} xlogfile games have no ttyrec "
                         f"(normal when recorded with save_ttyrec_every > 1); not indexed")
    if nao is not None:
        nld.add_altorg_directory(str(Path(nao)), nao_name, str(db))
        skips[nao_name] = _altorg_skips(db, nao_name, Path(nao))
    return IndexReport(db=db, skips=skips, rows=summarize_db(db), notes=notes)


def _altorg_skips(db: Path, name: str, root: Path) -> list[Skip]:
    """alt.org ttyrecs that nle did not assign to an indexed game (blacklisted, unmatched, or
    belonging to a game it purged: no xlogfile line, or quit within 10 turns)."""
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        kept = {r[0] for r in conn.execute(
            "SELECT ttyrecs.path FROM ttyrecs JOIN datasets ON ttyrecs.gameid = datasets.gameid "
            "WHERE datasets.dataset_name = ?", (name,))}
    blacklist = {line.strip() for line in (root / "blacklist.txt").read_text().splitlines() if line.strip()}
    out = []
    for path in sorted(glob.glob(str(root) + "/*/*.ttyrec.bz2")):
        rel = os.path.relpath(path, os.path.abspath(root))
        if rel not in kept:
            why = "blacklisted" if rel in blacklist else "not matched to an indexed game (no xlogfile line in " \
                  "its time window, or the game was purged as start-scummed)"
            out.append(Skip(path, why))
    return out


def summarize_db(db: str | os.PathLike) -> list[tuple[str, str, int, int, int]]:
    """Per dataset and role: games, sum of in-game turns, ttyrec bytes. Sorted."""
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        games = conn.execute(
            "SELECT datasets.dataset_name, games.role, COUNT(*), SUM(games.turns) FROM games "
            "JOIN datasets ON games.gameid = datasets.gameid GROUP BY datasets.dataset_name, games.role"
        ).fetchall()
        sizes = dict(((d, r), s) for d, r, s in conn.execute(
            "SELECT datasets.dataset_name, games.role, SUM(ttyrecs.size) FROM ttyrecs "
            "JOIN games ON ttyrecs.gameid = games.gameid JOIN datasets ON games.gameid = datasets.gameid "
            "GROUP BY datasets.dataset_name, games.role"))
    return sorted((d, role_name(r), int(n), int(t or 0), int(sizes.get((d, r)) or 0)) for d, r, n, t in games)


def count_frames(db: str | os.PathLike, dataset: str, *, threads: int = 2, batch_size: int = 8) -> dict[str, int]:
    """Transitions (ttyrec frames) per role, by decoding every game with ``TtyrecDataset``."""
    from concurrent.futures import ThreadPoolExecutor

    import nle.dataset as nld
    import numpy as np

    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        role_of = dict(conn.execute(
            "SELECT games.gameid, games.role FROM games JOIN datasets ON games.gameid = datasets.gameid "
            "WHERE datasets.dataset_name = ?", (dataset,)))
    if not role_of:
        return {}
    counts: dict[str, int] = {}
    with ThreadPoolExecutor(threads) as pool:
        ds = nld.TtyrecDataset(dataset, batch_size=min(batch_size, len(role_of)), seq_length=256,
                               dbfilename=str(db), threadpool=pool, shuffle=False)
        for mb in ds:
            ids, n = np.unique(mb["gameids"], return_counts=True)
            for gid, k in zip(ids.tolist(), n.tolist()):
                if gid:
                    role = role_name(role_of[gid])
                    counts[role] = counts.get(role, 0) + k
    return counts
