"""The ``adaptive-cache`` command: train, predict, bench, make-data, show-config.

Every subcommand but ``make-data`` takes OmegaConf dot-list overrides
(``trainer.max_epochs=3 cache.policy=lru``) and ``-c FILE`` presets; the
configuration is validated before any work starts.
"""

from __future__ import annotations

import os

# Before torch is imported: with other processes on the cores, OpenMP threads that
# spin while waiting made training steps several times slower here.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import json
import logging
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path

from adaptive_cache.redact import mask_text
from training.config import Config, load_config

log = logging.getLogger("adaptive_cache.cli")


def _add_config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "-c",
        "--config",
        action="append",
        default=[],
        metavar="FILE",
        help="a YAML preset merged over configs/default.yaml (repeatable)",
    )
    p.add_argument("overrides", nargs="*", metavar="key=value", help="OmegaConf dot-list overrides")


def _config(args: argparse.Namespace) -> Config:
    return load_config(args.overrides, config_files=args.config)


def _cmd_show_config(args: argparse.Namespace) -> int:
    from omegaconf import OmegaConf

    cfg = _config(args)
    print(OmegaConf.to_yaml(OmegaConf.create(cfg.resolved())), end="")
    return 0


def _cmd_make_data(args: argparse.Namespace) -> int:
    from training.data.synthetic import existing_dataset, generate

    found = existing_dataset(Path(args.out))
    if found and not args.force:
        raise ValueError(
            f"--out {args.out} already holds a data set ({', '.join(found)}); "
            "pass --force to replace it, or --out DIR for a new one"
        )
    report = generate(Path(args.out), n_train=args.n_train, n_val=args.n_val, seed=args.seed)
    print(json.dumps(report, indent=2))
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    config = _config(args)  # before importing Lightning: a bad key fails at once
    from training.run import train

    summary_path = train(config)
    print(f"summary: {summary_path}")
    return 0


def _cmd_predict(args: argparse.Namespace) -> int:
    ckpt = None
    rest = []
    for item in args.overrides:
        if item.startswith("ckpt="):
            ckpt = item.split("=", 1)[1]
        else:
            rest.append(item)
    if not ckpt:
        raise ValueError("predict needs ckpt=PATH (a checkpoint written by `adaptive-cache train`)")
    args.overrides = rest
    config = _config(args)
    from training.predict import predict

    out = predict(config, Path(ckpt), split=args.split, out_dir=args.out)
    print(f"predictions: {out}")
    return 0


def _cmd_bench(args: argparse.Namespace) -> int:
    from training.bench import run_bench

    out = run_bench(_config(args), out_dir=Path(args.out), quick=args.quick, only=args.only)
    print(f"bench: {out}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="adaptive-cache", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument(
        "--debug", action="store_true", help="show the full traceback of an error (with workers')"
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train and validate (the main job behind `make run`)")
    _add_config_args(p)
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("predict", help="write predicted polygons of a split: ckpt=PATH")
    p.add_argument("--split", default="val", choices=["train", "val"])
    p.add_argument("--out", default=None, help="output directory (default: beside the checkpoint)")
    _add_config_args(p)
    p.set_defaults(func=_cmd_predict)

    p = sub.add_parser("bench", help="measure loaders and training, every contender in one run")
    p.add_argument("--quick", action="store_true", help="small sizes; under 3 minutes on 2 cores")
    p.add_argument("--out", default="bench-out", help="output directory")
    p.add_argument("--only", action="append", default=[], help="run only these workloads")
    _add_config_args(p)
    p.set_defaults(func=_cmd_bench)

    p = sub.add_parser("make-data", help="write a synthetic receipt dataset")
    p.add_argument("--out", default="data/synthetic")
    p.add_argument("--n-train", type=int, default=96)
    p.add_argument("--n-val", type=int, default=24)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--force", action="store_true", help="replace a data set already in --out (refused without)"
    )
    p.set_defaults(func=_cmd_make_data)

    p = sub.add_parser("show-config", help="print the resolved, validated configuration")
    _add_config_args(p)
    p.set_defaults(func=_cmd_show_config)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        return args.func(args)
    except Exception as exc:  # re-raised below unless it is a user's error
        from training.errors import describe

        known = describe(exc)
        if known is None:
            raise  # a bug: keep its traceback
        message, code = known
        # The whole story (with a DataLoader worker's traceback) for --debug and -v.
        if args.debug:
            traceback.print_exc()
        else:
            log.debug("%s", message, exc_info=exc)
        print(f"adaptive-cache {args.command}: error: {mask_text(message)}", file=sys.stderr)
        return code


if __name__ == "__main__":
    sys.exit(main())
