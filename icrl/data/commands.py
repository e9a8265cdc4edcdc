"""``icrl data ...``: look at and check trajectory stores.

``icrl data inspect STORE``: episodes, steps, return and success per task, bytes per step on disk
and the compression ratio; a warning (and exit 1) wherever the index and the files disagree.
``icrl data verify STORE``: read and check every record; exit 1 naming the file and record of any
damage. ``icrl data repair STORE``: rebuild what can be rebuilt, set the rest aside in
``STORE/damaged/`` (``icrl.store.repair``); exit 1 if something could not be repaired. Bad input
(missing path, not a store, corrupt index for inspect, a store being written) exits 2.
"""

from __future__ import annotations

import argparse
import sys


def register(subparsers: argparse._SubParsersAction) -> None:
    data = subparsers.add_parser("data", help="trajectory stores: inspect, verify; training sequences")
    sub = data.add_subparsers(dest="data_command", metavar="ACTION", required=True)

    p = sub.add_parser("inspect", help="episodes, steps, return, success per task; bytes per step; compression")
    p.add_argument("store", help="path of the trajectory store")
    p.set_defaults(func=cmd_inspect)

    p = sub.add_parser("sequences", help="sample bursty sequences of an experiment config: layout and stats")
    p.add_argument("config", help="experiment YAML; its `data:` section configures the sequences")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a field, e.g. --set data.p_burst=0.6 (repeatable)")
    p.add_argument("--show", type=int, default=5, metavar="K", help="render K sequences (default 5)")
    p.add_argument("--stats", type=int, default=1000, metavar="N",
                   help="measure burstiness, padding and episodes over N sequences (default 1000)")
    p.set_defaults(func=cmd_sequences)

    p = sub.add_parser("verify", help="read every record and check it; non-zero exit naming any damage")
    p.add_argument("store", help="path of the trajectory store")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_verify)

    p = sub.add_parser("repair", help="rebuild lost or damaged index fragments, salvage damaged journals, "
                                      "set damage and duplicates aside in STORE/damaged/ (nothing is deleted)")
    p.add_argument("store", help="path of the trajectory store")
    p.add_argument("--wait", action="store_true",
                   help="if another command is writing the store, wait for it to finish (default: stop, naming it)")
    p.set_defaults(func=cmd_repair)


def cmd_sequences(args: argparse.Namespace) -> int:
    from icrl.config import apply_overrides, read_yaml, validate
    from icrl.data.pipeline import SequenceSource
    from icrl.data.sequence_stats import packing_stats, recall_stats, render_sequence, sequence_stats
    from icrl.data.sequences import SequenceConfig
    from icrl.errors import IcrlError

    if args.show < 0 or args.stats < 1:
        raise IcrlError(f"--show must be >= 0 and --stats >= 1, got {args.show} and {args.stats}")
    raw = apply_overrides(read_yaml(args.config), args.overrides)
    if not isinstance(raw.get("data"), dict):
        raise IcrlError(f"{args.config}: no `data:` section with the sequence settings")
    cfg = validate(SequenceConfig, raw["data"], f"{args.config} (data)")
    source = SequenceSource(cfg)
    print(f"{source.domain}: {len(source.tasks)} tasks from {len(source.stores)} store(s); "
          f"E={cfg.episodes} episodes in {cfg.context_steps} steps, mode {cfg.mode}, seed {cfg.seed}")
    for i in range(args.show):
        print(render_sequence(source, i))
    s = sequence_stats(source, args.stats)
    print(f"over {s.sequences} sequences: {s.episodes_per_sequence:.2f} episodes/sequence, "
          f"padding {100 * s.padding:.1f}% of steps, {100 * s.cut_episodes:.1f}% of episodes cut to "
          f"{cfg.window} steps, {s.fallbacks} bursty draws fell back (level had one episode)")
    print(f"burstiness: measured {s.burstiness:.4f} configured {cfg.p_burst}")
    if cfg.pack > 1:
        rows = max(1, args.stats // cfg.pack)
        p = packing_stats(source, rows)
        by_task = ", ".join(f"{t} {100 * f:.0f}%" for t, f in p.left_out_by_task.items())
        print(f"packing {cfg.pack} sequences a row, over {p.rows} rows: {p.segments_per_row:.2f} kept a row, "
              f"padding {100 * p.padding:.1f}% of steps, {100 * p.left_out:.1f}% of sequences left out "
              f"(did not fit); left out by task: {by_task}")
    if cfg.recall != "none":
        r = recall_stats(source, min(args.stats, 200))
        print(f"recall ({cfg.recall}), over {r.rows} rows: {100 * r.hit:.1f}% of {r.targets} target steps "
              f"recall an action, {100 * r.agrees:.1f}% of those recall the target itself")
    return 0


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def cmd_inspect(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from icrl.store.reader import TrajectoryStore
    from icrl.store.summary import index_warnings, summarize

    with TrajectoryStore(args.store, strict=False) as store:
        s = summarize(store)
        warnings = index_warnings(store)
    console = Console()
    if not console.is_terminal:  # piped: don't squeeze the table into 80 columns
        console = Console(width=160)
    table = Table(title=f"store {s.path}", caption="B/step and ratio: encoded records vs raw arrays")
    for col in ("task", "domain", "source"):
        table.add_column(col, overflow="fold")
    for col in ("episodes", "levels", "steps", "return", "success", "B/step", "ratio"):
        table.add_column(col, justify="right", no_wrap=True)
    for t in s.tasks:
        table.add_row(t.task, t.domain, t.sources, f"{t.episodes:,}", f"{t.levels:,}", f"{t.steps:,}",
                      f"{t.mean_return:.3f}", f"{100 * t.success_rate:.1f}%", f"{t.record_bytes_per_step:.1f}",
                      f"{t.compression_ratio:.0f}x")
    console.print(table)
    console.print(
        f"total: {s.episodes:,} episodes, {s.steps:,} steps, {len(s.tasks)} tasks; "
        f"{s.shards} sealed shards, {s.journals} unsealed journals\n"
        f"on disk: {_size(s.disk_bytes)} = {s.disk_bytes_per_step:.1f} B/step "
        f"(raw arrays {_size(s.raw_bytes)}: {s.disk_ratio:.0f}x); "
        f"records {_size(s.record_bytes)}: compression ratio {s.compression_ratio:.0f}x",
        highlight=False, soft_wrap=True,
    )
    aside = s.path / "damaged"
    if aside.is_dir():
        n = sum(1 for p in aside.rglob("*") if p.is_file() and p.name != "repair-log.jsonl")
        console.print(f"note: {aside} holds {n} files set aside by `icrl data repair` (not part of the store; "
                      f"see {aside / 'repair-log.jsonl'})", markup=False, highlight=False, soft_wrap=True)
    for w in warnings:
        console.print(f"WARNING: {w}", markup=False, highlight=False, soft_wrap=True)
    if warnings:
        console.print(f"the index and the files of {s.path} disagree: the figures above leave out what the "
                      f"warnings name; `icrl data repair {s.path}` rebuilds what can be rebuilt",
                      markup=False, highlight=False, soft_wrap=True)
        return 1
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.progress import Progress

    from icrl.store.verify import count_records, verify_store

    console = Console(stderr=True)
    total = count_records(args.store)  # raises IcrlError (exit 2) if it is not a store
    with Progress(console=console, transient=True, disable=args.quiet or not console.is_terminal) as bar:
        task = bar.add_task("verifying records", total=total)
        report = verify_store(args.store, progress=lambda n: bar.advance(task, n))
    out = Console(highlight=False, soft_wrap=True)  # one line per problem, greppable
    for note in report.notes:
        out.print(f"note: {note}", markup=False)
    for problem in report.problems:
        out.print(f"DAMAGED: {problem}", markup=False)
    summary = (f"{report.records:,} records checked in {report.shards} shards and "
               f"{report.journals} journals")
    if report.ok:
        out.print(f"OK: {summary}", markup=False)
        return 0
    out.print(f"FAILED: {len(report.problems)} problems; {summary}; `icrl data repair {args.store}` sets "
              f"the damage aside", markup=False)
    return 1


def cmd_repair(args: argparse.Namespace) -> int:
    from icrl.store.repair import DAMAGED, repair_store

    def on_wait(holder: str) -> None:
        print(f"repair: {args.store} is being written by {holder}; waiting for it to finish", file=sys.stderr)

    report = repair_store(args.store, wait=args.wait, on_wait=on_wait)
    for line in report.actions:
        print(f"  {line}")
    for line in report.left:
        print(f"NOT REPAIRED: {line}")
    if not report.changed and not report.left:
        print(f"nothing to repair: {report.episodes:,} episodes; the index and the files of {report.root} agree")
        return 0
    print(f"repaired {report.root}: {report.episodes:,} episodes in the store; {report.records_set_aside:,} records "
          f"and {len(report.set_aside)} files set aside in {report.root / DAMAGED} (nothing deleted); "
          f"{report.lost:,} episodes lost (listed by the index, readable nowhere)")
    return 1 if report.left else 0
