"""Command line: ``tailcon train``, ``tailcon eval``, ``tailcon configs``."""

from __future__ import annotations

import argparse
import sys
from importlib import resources
from pathlib import Path
from typing import Optional, Sequence

from . import config as C

EMBEDDED_DEFAULT = "digits_lt.yaml"


def embedded_config_path() -> Path:
    return Path(str(resources.files("tailcon") / "configs" / EMBEDDED_DEFAULT))


def _split_args(items: Sequence[str]) -> tuple[Optional[str], list[str]]:
    """First argument without '=' is the config file; the rest are key=value overrides."""
    path, overrides = None, []
    for item in items:
        if "=" in item:
            overrides.append(item)
        elif path is None:
            path = item
        else:
            raise C.ConfigError(f"unexpected argument {item!r}: give one CONFIG and key=value overrides")
    return path, overrides


def cmd_train(args: argparse.Namespace) -> int:
    from .engine import train
    from .engine.checkpoint import run_dir_of

    path, overrides = _split_args(args.args)
    if args.no_progress:
        overrides.append("train.progress=false")
    resume = C.parse_overrides([o for o in overrides if o.startswith("resume=")]).get("resume")
    if path is None and resume:  # continue a run with the config it was started with
        saved = run_dir_of(resume) / "config.yaml"
        path = str(saved)
        cfg = C.resolve(None, overrides, extra=C.load_yaml(saved))
    else:
        if path is None:
            path = str(embedded_config_path())
            print(f"tailcon: no CONFIG given: training the embedded default, {path}\n"
                  "         (long-tailed handwritten digits from scikit-learn, 10 classes, imbalance factor 10, "
                  "ResNet-8; no download needed)")
        cfg = C.resolve(path, overrides)
    train(cfg)
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from .engine import evaluate_checkpoint

    evaluate_checkpoint(args.path, split=args.split, overrides=tuple(args.overrides), which=args.checkpoint)
    return 0


def cmd_configs(args: argparse.Namespace) -> int:
    root = Path(args.root)
    for p in sorted(root.rglob("*.yaml")):
        first = p.read_text().splitlines()[:1]
        print(f"{p}  {first[0].lstrip('# ') if first and first[0].startswith('#') else ''}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="tailcon", description="Long-tailed recognition with supervised contrastive learning")
    sub = p.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train", help="train from a YAML config (default: the embedded digits demo)",
                       description="tailcon train [CONFIG] [key=value ...]; e.g. tailcon train "
                                   "configs/cifar10_lt/ce.yaml data.root=data/cifar optim.lr=0.05; "
                                   "resume=RUN_DIR continues a killed run")
    t.add_argument("args", nargs="*", metavar="CONFIG|key=value")
    t.add_argument("--no-progress", action="store_true", help="no progress bars")
    t.set_defaults(func=cmd_train)
    e = sub.add_parser("eval", help="evaluate a run directory or checkpoint: top-1 and Many/Medium/Few")
    e.add_argument("path", metavar="RUN_DIR_OR_CHECKPOINT")
    e.add_argument("overrides", nargs="*", metavar="key=value", help="e.g. data.root=/elsewhere")
    e.add_argument("--split", choices=("test", "val"), default="test")
    e.add_argument("--checkpoint", choices=("last", "best"), default="last",
                   help="which checkpoint of a run directory (default: last, the final epoch)")
    e.set_defaults(func=cmd_eval)
    c = sub.add_parser("configs", help="list config files")
    c.add_argument("root", nargs="?", default="configs")
    c.set_defaults(func=cmd_configs)
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    from .data import DataError
    from .engine import NonFiniteLossError

    parser = build_parser()
    args, rest = parser.parse_known_args(argv)
    # options may sit between key=value pairs: argparse leaves the pairs after an option unparsed
    if rest and all("=" in r and not r.startswith("-") for r in rest) and args.command in ("train", "eval"):
        if args.command == "train":
            args.args = list(args.args) + rest
        else:
            args.overrides = list(args.overrides) + rest
    elif rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    try:
        return args.func(args)
    except (C.ConfigError, DataError, FileNotFoundError, NonFiniteLossError, ValueError) as e:
        print(f"tailcon: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("tailcon: interrupted; resume with resume=RUN_DIR", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
