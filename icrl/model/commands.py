"""``icrl model ...``: inspect model presets."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("model", help="model presets: parameters and FLOPs")
    sub = parser.add_subparsers(dest="model_command", metavar="SUBCOMMAND", required=True)
    info = sub.add_parser(
        "info",
        help="parameters per part and FLOPs per token of a preset",
        description="Print a preset's parameters per part (encoder, token embeddings, transformer, "
        "head) and forward FLOPs per token; the last line reads 'total parameters: N'.",
    )
    info.add_argument("preset", metavar="PRESET", help="1M, 10M, 30M, 100M, 200M or 310M")
    info.add_argument("--domain", choices=("nethack", "procgen"), default="nethack", help="observation encoder")
    info.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a ModelConfig field, e.g. --set reward_tokens=true (repeatable)",
    )
    info.set_defaults(func=_info)


def _info(args: argparse.Namespace) -> int:
    from icrl.config import apply_overrides, validate
    from icrl.model.config import ModelConfig, _check_preset_name
    from icrl.model.info import model_info

    _check_preset_name(args.preset)
    data = apply_overrides({"preset": args.preset, "domain": args.domain}, args.overrides)
    config = validate(ModelConfig, data, source=f"model preset {args.preset}")
    print("\n".join(model_info(config).lines()))
    return 0
