"""``icrl nld ...``: the NetHack Learning Dataset (datasets/nld-aa.md is the guide).

``icrl nld sample --out DIR --games N``: record N bot games in the NLD-AA format (NLE writes it).
``icrl nld index --aa DIR [--nao DIR] --db PATH``: build nle.dataset's SQLite index, print a summary.
``icrl nld convert --db PATH --dataset NAME --out STORE``: games -> segment episodes in a store.
``icrl nld keys``: the keypress -> unified action mapping table.
"""

from __future__ import annotations

import argparse
import sys


def register(subparsers: argparse._SubParsersAction) -> None:
    nld = subparsers.add_parser("nld", help="NetHack Learning Dataset: sample, index, convert")
    sub = nld.add_subparsers(dest="nld_command", metavar="ACTION", required=True)

    p = sub.add_parser("sample", help="record bot games in the NLD-AA format (ttyrec3.bz2 + xlogfile)")
    p.add_argument("--out", required=True, help="new (or empty) directory to write")
    p.add_argument("--games", type=int, required=True, help="number of games")
    p.add_argument("--seed", type=int, default=0, help="seed of NetHack's seeds and the bot (default 0)")
    p.add_argument("--min-steps", type=int, default=150, help="fewest bot steps before it quits (default 150)")
    p.add_argument("--max-steps", type=int, default=400, help="most bot steps before it quits (default 400)")
    p.add_argument("--nao-out", metavar="DIR",
                   help="also write the games in the NLD-NAO (alt.org, ttyrec v1: screens only) layout to DIR")
    p.set_defaults(func=cmd_sample)

    p = sub.add_parser("index", help="build the nle.dataset SQLite index of NLD directories")
    p.add_argument("--aa", metavar="DIR", help="NLD-AA (or any NLE-recorded) directory: DIR/<run>/*.xlogfile")
    p.add_argument("--nao", metavar="DIR", help="NLD-NAO (alt.org) directory: DIR/xlogfile.*, DIR/<player>/")
    p.add_argument("--db", required=True, help="database file (created if missing)")
    p.add_argument("--aa-name", default="nld-aa", help="dataset name for --aa (default nld-aa)")
    p.add_argument("--nao-name", default="nld-nao", help="dataset name for --nao (default nld-nao)")
    p.add_argument("--count-frames", action="store_true",
                   help="also count transitions by decoding every game (as slow as a conversion)")
    p.set_defaults(func=cmd_index)

    p = sub.add_parser("convert", help="cut indexed games into segment episodes in a trajectory store")
    p.add_argument("--db", required=True, help="nle.dataset database (from `icrl nld index`)")
    p.add_argument("--dataset", required=True, help="dataset name in the database, e.g. nld-aa")
    p.add_argument("--out", required=True, help="trajectory store (created if missing; re-run to resume)")
    p.add_argument("--game-ids", type=_int_list, help="comma-separated game ids")
    p.add_argument("--roles", type=_str_list, help="comma-separated roles, full or 3-letter (Valkyrie,Sam)")
    p.add_argument("--where", help="SQL condition over the games table, e.g. \"points > 1000\"")
    p.add_argument("--games", type=int, help="convert at most this many games (lowest game ids first)")
    p.add_argument("--segment-length", type=int, default=256, help="frames per episode (default 256)")
    p.add_argument("--batch-size", type=int, default=8, help="games decoded at once (default 8)")
    p.add_argument("--seq-length", type=int, default=1024, help="frames per game per batch (default 1024)")
    p.add_argument("--threads", type=int, default=2, help="TtyrecDataset decoding threads (default 2)")
    p.add_argument("--streams", type=int, default=2,
                   help="TtyrecDatasets that share the rows and decode in turn, so one decodes while another's "
                        "batch is cut (default 2)")
    p.add_argument("--writers", type=int, default=1, help="compressing writer threads (default 1)")
    p.add_argument("--compression", default="zstd", choices=("zstd", "zlib1", "zlib", "lzma"),
                   help="episode compression: zstd (fastest, default for bulk ingest), zlib1 / zlib (zlib "
                        "level 1 / 6) or lzma (smallest, slowest)")
    p.add_argument("--fsync", action="store_true", help="fdatasync every append (survive power cuts)")
    p.add_argument("--verify-bz2", action="store_true",
                   help="decompress every file first to check bzip2 CRCs (catches damage inside files)")
    p.add_argument("--strict", action="store_true", help="exit 1 if any game was skipped")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_convert)

    p = sub.add_parser("keys", help="print the keypress -> unified action mapping")
    p.set_defaults(func=cmd_keys)


def _int_list(text: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def _str_list(text: str) -> list[str]:
    return [x.strip() for x in text.split(",") if x.strip()]


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def cmd_sample(args: argparse.Namespace) -> int:
    from icrl.nld.sample import write_sample

    games = write_sample(args.out, args.games, seed=args.seed, min_steps=args.min_steps, max_steps=args.max_steps)
    quits = sum(g.ended_by == "quit" for g in games)
    print(f"wrote {len(games)} games to {args.out} ({quits} quit, {len(games) - quits} died; "
          f"{sum(g.steps for g in games):,} bot steps); seeds in {args.out}/seeds.json")
    nao = ""
    if args.nao_out:
        from icrl.nld.altorg import write_altorg_copy

        n = write_altorg_copy(args.out, args.nao_out)
        print(f"wrote the same {n} games in the NLD-NAO layout to {args.nao_out}")
        nao = f" --nao {args.nao_out}"
    print(f"next: icrl nld index --aa {args.out}{nao} --db ttyrecs.db")
    return 0


def cmd_index(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from icrl.nld.index import build_index, count_frames

    report = build_index(args.db, aa=args.aa, nao=args.nao, aa_name=args.aa_name, nao_name=args.nao_name)
    frames: dict[tuple[str, str], int] = {}
    if args.count_frames:
        for dataset in {row[0] for row in report.rows}:
            for role, n in count_frames(report.db, dataset).items():
                frames[(dataset, role)] = n
    console = Console(highlight=False, soft_wrap=True)
    table = Table(title=f"nle.dataset index {report.db}")
    for col, justify in (("dataset", "left"), ("role", "left"), ("games", "right"), ("in-game turns", "right"),
                         ("transitions", "right"), ("ttyrec.bz2", "right")):
        table.add_column(col, justify=justify)
    for dataset, role, games, turns, nbytes in report.rows:
        known = frames.get((dataset, role))
        table.add_row(dataset, role, f"{games:,}", f"{turns:,}", "?" if known is None else f"{known:,}", _size(nbytes))
    console.print(table)
    if not args.count_frames:
        console.print("transitions: ? = not counted (the index has no frame counts; --count-frames decodes "
                      "every game, or `icrl nld convert` reports them)")
    for note in report.notes:
        console.print(f"note: {note}", markup=False)
    for dataset, skips in report.skips.items():
        for skip in skips:
            console.print(f"skipped: {dataset}: {skip.path}: {skip.reason}", markup=False)
        if skips:
            console.print(f"{dataset}: {len(skips)} ttyrecs skipped (not in the index)", markup=False)
    return 0


def _progress_bar(quiet: bool):
    """A rich progress bar over games with frames and frames/s; a no-op when quiet or not a terminal."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    console = Console(stderr=True)
    bar = Progress(TextColumn("converting"), BarColumn(), MofNCompleteColumn(), TextColumn("games"),
                   TextColumn("{task.fields[frames]:,} frames, {task.fields[fps]:,.0f} frames/s"),
                   TimeElapsedColumn(), console=console, disable=quiet or not console.is_terminal)
    state: dict = {}

    def update(report, total: int) -> None:
        if "task" not in state:
            state["task"] = bar.add_task("convert", total=total, frames=0, fps=0.0)
        bar.update(state["task"], completed=report.already_done + report.converted + len(report.skips),
                   frames=report.frames, fps=report.frames_per_second)

    return bar, update


def cmd_convert(args: argparse.Namespace) -> int:
    from icrl.nld.actions import describe_key
    from icrl.nld.convert import convert
    from icrl.nld.selection import select_games

    selection = select_games(args.db, args.dataset, gameids=args.game_ids, roles=args.roles, where=args.where,
                             limit=args.games)
    if not selection.has_actions:
        print(f"note: {args.dataset!r} has ttyrec version {selection.ttyrec_version} (NLD-NAO: screens only, no "
              f"keypresses): episodes are observation-only (has_actions=False, actions = PAD_ACTION, rewards 0)")
    elif not selection.has_scores:
        print(f"note: {args.dataset!r} has ttyrec version {selection.ttyrec_version} (no scores): rewards are 0")
    bar, update = _progress_bar(args.quiet)
    with bar:
        report = convert(selection, args.out, segment_length=args.segment_length, batch_size=args.batch_size,
                         seq_length=args.seq_length, threads=args.threads, streams=args.streams,
                         writers=args.writers,
                         compression=args.compression, fsync=args.fsync, full_bz2=args.verify_bz2, progress=update)
    for skip in report.skips:
        print(f"skipped: {skip}")
    print(f"{report.dataset} -> {report.store}: {report.selected} games selected, {report.already_done} already "
          f"converted, {report.converted} converted, {len(report.skips)} skipped; {report.segments:,} segments "
          f"({report.segments_resumed} already stored) from {report.frames:,} frames in {report.seconds:.1f}s "
          f"({report.frames_per_second:,.0f} frames/s)")
    if report.frames:
        print(f"ttyrec.bz2 read: {report.ttyrec_bytes / report.frames:.1f} B/frame; store: see `icrl data inspect "
              f"{report.store}`")
    if report.has_actions and report.frames:
        share = 100 * report.unmapped_frames / report.frames
        print(f"keypresses without an NLE action: {report.unmapped_frames:,} frames ({share:.3f}%) -> PAD_ACTION")
        for key in report.unmapped.nonzero()[0].tolist():
            print(f"  {describe_key(key)}: {int(report.unmapped[key]):,}")
    if report.interrupted:
        print("interrupted: the store keeps every finished segment; run the same command again to resume",
              file=sys.stderr)
        return 130
    return 1 if args.strict and report.skips else 0


def cmd_keys(args: argparse.Namespace) -> int:
    from icrl.nld.actions import KEYPRESS_TO_ACTION, mapping_table
    from icrl.envs.actions import PAD_ACTION

    for key, name, index, action in mapping_table():
        print(f"{key:4d}  {name:12s} -> {index:4d}  {action}")
    print(f"{int((KEYPRESS_TO_ACTION == PAD_ACTION).sum())} other bytes -> PAD_ACTION ({PAD_ACTION}), counted")
    return 0
