"""The ``icrl`` command line. Subcommands only parse and dispatch.

Each subsystem owns a ``commands`` module with ``register(subparsers)``, which adds its parsers and
sets ``func`` on them; heavy imports (jax, nle) happen inside the handlers so ``icrl --help`` is fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from icrl.errors import IcrlError

# The subsystems whose subcommands `icrl` offers, in the order `icrl --help` lists them.
COMMAND_MODULES: tuple[str, ...] = (
    "icrl.envs.commands",
    "icrl.data.commands",
    "icrl.nld.commands",
    "icrl.collect.commands",
    "icrl.model.commands",
    "icrl.train.commands",
    "icrl.eval.commands",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="icrl",
        description="In-context imitation learning for NetHack, MiniHack and Procgen.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code = args.func(args)
    except IcrlError as err:
        print(f"icrl {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        # Commands that write keep what they finished (durable appends, atomic files): say so in
        # one line instead of a traceback through whatever was running.
        print(f"icrl {args.command}: interrupted", file=sys.stderr)
        return 130
    return int(code or 0)


if __name__ == "__main__":
    sys.exit(main())
