"""Command line: ``tailcon train | eval | bench | compare | report | predict | configs | config``
(``tailcon -h`` lists them all)."""

from __future__ import annotations

import argparse
import re
import sys
from importlib import resources
from pathlib import Path
from typing import Optional, Sequence

from . import config
from .defaults import (BENCH_STEPS, BENCH_WARMUP, CORRUPTION_MAX_IMAGES, CORRUPTION_SEVERITIES, EXPORT_FORMATS,
                       REPORT_TSNE_POINTS)
from .errors import TailconError

# torch and everything that needs it are imported by the commands that use them, so that --help,
# --version, configs and config-file errors answer at once

EMBEDDED_DEFAULT = "digits_lt.yaml"


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}")
    return value


def non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}")
    return value


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
            raise config.ConfigError(f"unexpected argument {item!r}: give one CONFIG and key=value overrides")
    return path, overrides


def cmd_train(args: argparse.Namespace) -> int:
    from . import resolution
    from .engine import train
    from .rundir import RunDirError, run_to_resume

    path, overrides = _split_args(args.args)
    if args.no_progress:
        overrides.append("train.progress=false")
    resume = config.parse_overrides([o for o in overrides if o.startswith("resume=")]).get("resume")
    if path is None and resume and resume != "auto":  # continue a run with the config it was started with
        saved = run_to_resume(str(resume)).config
        if not saved.is_file():
            raise RunDirError(f"resume={resume}: {saved} not found, so the run's config is unknown; give the "
                              "CONFIG it was started with: tailcon train CONFIG resume=...")
        cfg = resolution.resolve(None, overrides, extra=config.load_yaml(saved))
    else:
        cfg = resolution.resolve(path or embedded_config_path(), overrides)
        if path is None:
            print(f"tailcon: no CONFIG given: training from the embedded default config, {embedded_config_path()}")
            if cfg["data"]["name"] == "digits_lt":  # describe the data only when it is the demo's
                print(f"         (long-tailed handwritten digits from scikit-learn, imbalance factor "
                      f"{cfg['data']['imbalance_factor']:g}, {cfg['model']['backbone']}; no download needed)")
    train(cfg)
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from .tools.evaluate import evaluate_checkpoint
    from .tools.robustness import evaluate_corruptions
    from .tools.tau_norm import parse_tau

    if args.corruptions:
        if args.overrides:
            raise config.ConfigError("--corruptions takes no key=value overrides")
        evaluate_corruptions(args.path, baseline=args.baseline, names=args.corruption_names,
                             severities=args.severities, max_images=args.max_images or None,
                             imagenet_c=args.imagenet_c, device=args.device, cifar_c=args.cifar_c)
        return 0

    evaluate_checkpoint(args.path, split=args.split, overrides=tuple(args.overrides), which=args.checkpoint,
                        tau_norm=parse_tau(args.tau_norm))
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    import json

    from . import resolution
    from .tools.bench import format_bench, run_bench

    path, overrides = _split_args(args.args)
    cfg = resolution.resolve(path or str(embedded_config_path()), overrides)
    result = run_bench(cfg, steps=args.steps, warmup=args.warmup, reference=not args.no_reference)
    print(format_bench(result))
    if args.json:
        print(json.dumps(result))
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    import datetime

    from .tools.compare import compare, compare_runs, is_run_dir

    configs = [a for a in args.args if "=" not in a]
    overrides = [a for a in args.args if "=" in a]
    if not configs:
        raise config.ConfigError("tailcon compare needs at least one CONFIG or RUN_DIR")
    for c in configs:
        if Path(c).is_dir() and not is_run_dir(c):
            raise config.ConfigError(f"{c} is a directory that holds no run (no config.yaml in it): give run "
                                     "directories, or config files to train")
    runs = [c for c in configs if is_run_dir(c) or (any(ch in c for ch in "*?[") and not Path(c).is_file())]
    if runs:  # run directories: read back, never trained
        if len(runs) != len(configs) or overrides:
            raise config.ConfigError("tailcon compare takes either run directories (read back as they are) or "
                                     f"configs with key=value overrides (trained), not both: {', '.join(runs)} "
                                     "are run directories")
        compare_runs(runs, args.out or f"runs/compare-{datetime.datetime.now():%Y%m%d-%H%M%S}")
        return 0
    if args.no_progress:
        overrides.append("train.progress=false")
    out = args.out or f"runs/compare-{datetime.datetime.now():%Y%m%d-%H%M%S}"
    compare(configs, args.seeds, overrides, out, train_runs=not args.table_only)
    return 0


def _readable_batches(predictor, images: Sequence[str], size: int = 64):
    """(names, preprocessed batch) of up to ``size`` images at a time, and how many could not be
    read: each bad image gets its own error line on stderr, the others go on."""
    import torch

    from .data import DataError

    failed = []
    for start in range(0, len(images), size):
        names, batch = [], []
        for name in images[start:start + size]:
            try:
                batch.append(predictor.preprocess(name))
                names.append(name)
            except (DataError, ValueError) as e:
                failed.append((name, str(e)))
                print(f"tailcon: error: {e}", file=sys.stderr, flush=True)
        yield names, torch.cat(batch) if batch else None, failed
        failed = []


def cmd_predict(args: argparse.Namespace) -> int:
    import json

    from .data import list_images
    from .engine.metrics import counted
    from .inference import format_topk, load

    predictor = load(args.path, device=args.device, which=args.checkpoint, trust=args.trust)
    images = list_images(args.images)
    # with --json, stdout holds only JSON lines: one object per image
    print(f"tailcon predict: {predictor}, {counted(len(images), 'image')}", file=sys.stderr if args.json else sys.stdout)
    failed = 0
    for names, batch, bad in _readable_batches(predictor, images):
        failed += len(bad)
        top = predictor.batch_topk(batch, k=args.topk) if names else []
        if args.json:
            for name, error in bad:
                print(json.dumps({"image": name, "error": error}))
            for name, classes in zip(names, top):
                print(json.dumps({"image": name, "top": [{"class": c, "probability": p} for c, p in classes]}))
            sys.stdout.flush()
        elif names:
            print(format_topk(names, top), flush=True)
    if failed:
        print(f"tailcon predict: {failed} of {len(images)} images could not be read", file=sys.stderr)
        return 2
    return 0


def cmd_embed(args: argparse.Namespace) -> int:
    import numpy as np

    from .data import list_images
    from .engine.metrics import counted
    from .rundir import atomic_replace
    from .inference import load

    predictor = load(args.path, device=args.device, which=args.checkpoint)
    images = list_images(args.images)
    print(f"tailcon embed: {predictor}, {counted(len(images), 'image')}", flush=True)
    feats, names, failed = [], [], 0
    for batch_names, batch, bad in _readable_batches(predictor, images, size=args.batch_size):
        failed += len(bad)
        if batch_names:
            feats.append(predictor.batch_features(batch).numpy())
            names += batch_names
    if not names:
        print("tailcon embed: no image could be read; nothing written", file=sys.stderr)
        return 2
    out = Path(args.out)
    atomic_replace(out, lambda tmp: np.save(open(tmp, "wb"), np.concatenate(feats).astype(np.float32)))
    listing = out.with_suffix(".txt")
    atomic_replace(listing, lambda tmp: tmp.write_text("".join(n + "\n" for n in names), errors="surrogateescape"))
    print(f"tailcon embed: wrote {out} ({len(names)} x {feats[0].shape[1]} backbone features, float32) and {listing} "
          "(the images, one per line, in the same order)")
    if failed:
        print(f"tailcon embed: {failed} of {len(images)} images could not be read", file=sys.stderr)
        return 2
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from .tools.export import export

    out = export(args.path, args.format, out=args.out, which=args.checkpoint, force=args.force)
    print(f"tailcon export: wrote {out} ({args.format}; input float [B, 3, S, S] in [0, 1] after the test "
          "resize/crop, output logits; classes and preprocessing in its metadata)")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from .tools.report import write_report

    out = args.out or (str(Path(args.runs[0]) / "report") if len(args.runs) == 1 else "report")
    page = write_report(args.runs, out, tsne_points=args.tsne_points, model_figures=not args.no_model,
                        device=args.device)
    print(f"tailcon report: wrote {page} and its figures")
    return 0


def cmd_analyze(args: argparse.Namespace) -> int:
    from .tools.analyze import write_analysis

    out = args.out or (str(Path(args.runs[0]) / "analysis") if len(args.runs) == 1 else "analysis")
    path = write_analysis(args.runs, out, device=args.device)
    print(f"tailcon analyze: wrote {path}, class_mean_cosines.png and norms_vs_counts.png")
    return 0


def _first_comment(p: Path) -> str:
    """The first sentence of the config's header comment, whole (it may span lines)."""
    header = []
    for line in p.read_text(encoding="utf-8").splitlines():
        if not line.startswith("#") or line.lstrip("# ").lower().startswith("source:"):
            break
        header.append(line.lstrip("# ").strip())
    text = " ".join(header)
    for end in re.finditer(r"\.(?=\s|$)", text):
        if not re.search(r"(\bal|\be\.g|\bi\.e|\bcf|\bvs|\bEq|\bTab|\bFig|\bSec)$", text[:end.start()]):
            return text[:end.end()]
    return text


def cmd_configs(args: argparse.Namespace) -> int:
    if args.root is None:  # the configs installed with tailcon, by the names `tailcon train` takes
        root = config.shipped_config_dir()
        for name in config.shipped_config_names():
            print(f"{name:<32} {_first_comment(root / (name + '.yaml'))}")
        return 0
    root = Path(args.root)
    if not root.is_dir():
        raise config.ConfigError(f"no such config folder: {root}")
    for p in sorted(root.rglob("*.yaml")):
        print(f"{p}  {_first_comment(p)}")
    return 0


def cmd_config(args: argparse.Namespace) -> int:
    from . import resolution
    from .engine.device import resolve_amp, resolve_device

    path, overrides = _split_args(args.args)
    path = path or str(embedded_config_path())  # as tailcon train: the embedded default
    cfg = resolution.resolve(path, overrides)
    resolve_amp(resolve_device(cfg["device"]), cfg["train"]["amp"])  # as tailcon train checks before it starts
    if args.sources:
        from .tools.sources import TAG_LEGEND, sources_table

        print(sources_table(path, overrides))
        print("\n" + TAG_LEGEND.replace("**", ""))
    else:
        print(f"# tailcon config {' '.join(args.args)}: what RUN_DIR/config.yaml will hold"
              + ("; run_dir null = runs/<date>-<name>" if cfg["run_dir"] is None else ""))
        print(config.dump(cfg), end="")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    p = argparse.ArgumentParser(prog="tailcon", description="Long-tailed recognition with supervised contrastive learning")
    p.add_argument("--version", action="version", version=f"tailcon {__version__}")
    sub = p.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train", help="train from a YAML config (default: the embedded digits demo)",
                       description="tailcon train [CONFIG] [key=value ...]; e.g. tailcon train "
                                   "configs/cifar10_lt/ce.yaml data.root=data/cifar optim.lr=0.05; "
                                   "resume=RUN_DIR continues a killed run")
    t.add_argument("args", nargs="*", metavar="CONFIG|key=value")
    t.add_argument("--no-progress", action="store_true", help="no progress bars")
    t.set_defaults(func=cmd_train)
    e = sub.add_parser("eval", help="evaluate a run directory or checkpoint: top-1 and Many/Medium/Few",
                       description="Prints the figures, then writes eval-<checkpoint>-<split>.json beside the "
                                   "checkpoint; the run's results.json (written by training) is never changed.")
    e.add_argument("path", metavar="RUN_DIR_OR_CHECKPOINT")
    e.add_argument("overrides", nargs="*", metavar="key=value", help="e.g. data.root=/elsewhere")
    e.add_argument("--split", choices=("test", "val"), default="test")
    e.add_argument("--checkpoint", choices=("last", "best"), default="last",
                   help="which checkpoint of a run directory (default: last, the final epoch)")
    e.add_argument("--corruptions", action="store_true",
                   help="error under the common corruptions (noise, blur, weather, digital; 5 severities) and, with "
                        "--baseline, CE per corruption and mCE; writes corruptions-<checkpoint>.json")
    e.add_argument("--baseline", default=None, metavar="RUN_DIR", help="the run mCE is relative to (e.g. a CE run)")
    e.add_argument("--corruption-names", nargs="+", default=None, metavar="NAME", help="default: all")
    e.add_argument("--severities", type=int, nargs="+", default=list(CORRUPTION_SEVERITIES),
                   choices=range(1, 6), metavar="{1..5}")
    e.add_argument("--max-images", type=non_negative_int, default=CORRUPTION_MAX_IMAGES,
                   help="CIFAR-scale: corrupt this many test images (seeded subset; 0: all; default %(default)s)")
    e.add_argument("--imagenet-c", default=None, metavar="ROOT", help="ImageNet-C folder for file datasets")
    e.add_argument("--cifar-c", default=None, metavar="ROOT",
                   help="the released CIFAR-10-C / CIFAR-100-C arrays (ROOT/<corruption>.npy, ROOT/labels.npy; 15 "
                        "corruptions x 5 severities); without it CIFAR corruptions are generated on the fly, an "
                        "approximation labelled so")
    e.add_argument("--device", default=None)
    e.add_argument("--tau-norm", default=None, metavar="TAU|auto",
                   help="also evaluate the linear classifier tau-normalised (weights / ||w||^tau, no bias); auto: the "
                        "tau in 0..2 (step 0.1) with the best val top-1 (test, labelled optimistic, without a val "
                        "split); writes eval-<checkpoint>-<split>-taunorm.json")
    e.set_defaults(func=cmd_eval)
    b = sub.add_parser("bench", help="training images/s and peak memory of a config, and the same step through "
                                     "the reference per-image PIL pipeline",
                       description="tailcon bench CONFIG [key=value ...] [--json]: times --steps optimisation steps "
                                   "after --warmup, first as configured (on-device augmentation, channels_last, ...), "
                                   "then through per-image PIL transforms in DataLoader workers (fp32, NCHW), and "
                                   "prints the ratio; --json adds one JSON line with images_per_s, "
                                   "reference_images_per_s, ratio, peak_memory_mb")
    b.add_argument("args", nargs="*", metavar="CONFIG|key=value")
    b.add_argument("--steps", type=positive_int, default=BENCH_STEPS,
                   help="timed steps (default %(default)s)")
    b.add_argument("--warmup", type=non_negative_int, default=BENCH_WARMUP,
                   help="untimed steps first (default %(default)s)")
    b.add_argument("--json", action="store_true", help="last line: the result as one JSON object")
    b.add_argument("--no-reference", action="store_true", help="skip the reference pipeline")
    b.set_defaults(func=cmd_bench)
    m = sub.add_parser("compare", help="one table of runs: configs trained at the same budget and seeds, or runs "
                                       "you have",
                       description="tailcon compare CONFIG... [--seeds 0 1 2] [--out DIR] [key=value ...]: the "
                                   "overrides apply to every config (the common budget); finished runs are read "
                                   "back, interrupted ones resume. tailcon compare RUN_DIR... ('runs/*' works too): "
                                   "the runs as they are, seeds of one recipe in one row, nothing trained. Writes "
                                   "OUT/compare.md and OUT/compare.csv: final-epoch top-1 and Many/Medium/Few as "
                                   "mean ± std, best epoch labelled.")
    m.add_argument("args", nargs="*", metavar="CONFIG|RUN_DIR|key=value")
    m.add_argument("--seeds", type=int, nargs="+", default=[0])
    m.add_argument("--out", default=None, help="runs and tables go here (default runs/compare-<time>)")
    m.add_argument("--table-only", action="store_true", help="only rebuild the table from finished runs")
    m.add_argument("--no-progress", action="store_true")
    m.set_defaults(func=cmd_compare)
    r = sub.add_parser("predict", help="top-k classes with probabilities for image files",
                       description="tailcon predict RUN_DIR_OR_CHECKPOINT IMAGE... [--topk 5]")
    r.add_argument("path", metavar="RUN_DIR_OR_CHECKPOINT")
    r.add_argument("images", nargs="+", metavar="IMAGE|FOLDER", help="image files or folders (their images, recursively)")
    r.add_argument("--json", action="store_true", help="one JSON object per image on stdout: image, top (class, "
                                                       "probability) or error")
    r.add_argument("--topk", type=positive_int, default=5, help="classes shown per image (at most the model's)")
    r.add_argument("--checkpoint", choices=("last", "best"), default="last")
    r.add_argument("--device", default=None, help="default: cuda if available, else cpu")
    r.add_argument("--trust", action="store_true",
                   help="allow a TorchScript or .pt2 export, whose loading can run code stored in it")
    r.set_defaults(func=cmd_predict)
    em = sub.add_parser("embed", help="backbone features of images, saved as a .npy array",
                        description="tailcon embed RUN_DIR_OR_CHECKPOINT IMAGE|FOLDER... --out feats.npy: the "
                                    "backbone features [N, D] (float32) through the run's test-time preprocessing, "
                                    "and feats.txt listing the images in the same order")
    em.add_argument("path", metavar="RUN_DIR_OR_CHECKPOINT")
    em.add_argument("images", nargs="+", metavar="IMAGE|FOLDER")
    em.add_argument("--out", required=True, metavar="FILE.npy")
    em.add_argument("--checkpoint", choices=("last", "best"), default="last")
    em.add_argument("--batch-size", type=positive_int, default=64)
    em.add_argument("--device", default=None)
    em.set_defaults(func=cmd_embed)
    x = sub.add_parser("export", help="a standalone inference artifact: safetensors, TorchScript, pt2 (torch.export) or ONNX",
                       description=f"tailcon export RUN_DIR_OR_CHECKPOINT --format {'|'.join(EXPORT_FORMATS)} "
                                   "[--out FILE]: backbone + classifier + normalisation (no optimizer state), with "
                                   "the classes and preprocessing in the file's metadata. Default FILE: "
                                   "RUN_DIR/export/<checkpoint>.<format suffix>; an existing file is refused "
                                   "unless --force. Needs pip install \"tailcon[export]\" for safetensors/onnx.")
    x.add_argument("path", metavar="RUN_DIR_OR_CHECKPOINT")
    x.add_argument("--format", required=True, choices=EXPORT_FORMATS,
                   help="pt2: torch.export, the successor of the deprecated TorchScript")
    x.add_argument("--out", default=None, metavar="FILE")
    x.add_argument("--checkpoint", choices=("last", "best"), default="last")
    x.add_argument("--force", action="store_true", help="replace an existing FILE")
    x.set_defaults(func=cmd_export)
    rp = sub.add_parser("report", help="PNG figures and a Markdown page for one or more runs",
                        description="tailcon report RUN_DIR... [--out DIR]: per-class accuracy vs training count, "
                                    "Many/Medium/Few bars, training curves, confusion matrix (<= 20 classes) and a "
                                    "t-SNE of test features (these two re-run the test set: the data must be there)")
    rp.add_argument("runs", nargs="+", metavar="RUN_DIR")
    rp.add_argument("--out", default=None, help="default: RUN_DIR/report for one run, ./report for several")
    rp.add_argument("--tsne-points", type=non_negative_int, default=REPORT_TSNE_POINTS,
                    help="default %(default)s")
    rp.add_argument("--no-model", action="store_true", help="only the figures from logs (no test-set pass)")
    rp.add_argument("--device", default=None)
    rp.set_defaults(func=cmd_report)
    an = sub.add_parser("analyze", help="feature geometry of runs: class-mean simplex, NC1, norms, alignment/"
                                        "uniformity, kNN, per Many/Medium/Few",
                        description="tailcon analyze RUN_DIR... [--out DIR]: one pass over each run's training and "
                                    "test splits; OUT/analysis.json and figures (several runs side by side)")
    an.add_argument("runs", nargs="+", metavar="RUN_DIR")
    an.add_argument("--out", default=None, help="default: RUN_DIR/analysis for one run, ./analysis for several")
    an.add_argument("--device", default=None)
    an.set_defaults(func=cmd_analyze)
    c = sub.add_parser("configs", help="list the configs shipped with tailcon (or the YAML files under ROOT)",
                       description="tailcon configs [ROOT]: without ROOT, the configs installed with tailcon by "
                                   "name (tailcon train cifar10_lt/bcl takes the name), with each one's first line")
    c.add_argument("root", nargs="?", default=None)
    c.set_defaults(func=cmd_configs)
    cf = sub.add_parser("config", help="print the fully resolved config (what the run's config.yaml will hold)",
                        description="tailcon config CONFIG [key=value ...] [--sources]: the config file or shipped "
                                    "name with its _base_ chain, tailcon's defaults and the overrides, validated as "
                                    "tailcon train validates it; --sources: each hyperparameter with its source")
    cf.add_argument("args", nargs="*", metavar="CONFIG|key=value")
    cf.add_argument("--sources", action="store_true", help="a table of every hyperparameter and its source")
    cf.set_defaults(func=cmd_config)
    return p


def _run_dir_error() -> tuple[type, ...]:
    """The run directory's error type, which imports nothing of tailcon's and so is no
    :class:`TailconError`; () while its module is not loaded (then none was raised)."""
    rundir = sys.modules.get(f"{__package__}.rundir")
    return (rundir.RunDirError,) if rundir is not None else ()


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args, rest = parser.parse_known_args(argv)
    # options may sit between key=value pairs: argparse leaves the pairs after an option unparsed
    if rest and all("=" in r and not r.startswith("-") for r in rest) and hasattr(args, "args"):
        args.args = list(args.args) + rest
    elif rest and all("=" in r and not r.startswith("-") for r in rest) and hasattr(args, "overrides"):
        args.overrides = list(args.overrides) + rest
    elif rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    try:
        return args.func(args)
    except (TailconError, *_run_dir_error()) as e:  # the project's own errors say what is wrong; anything else is a bug
        print(f"tailcon: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("tailcon: interrupted; resume with resume=RUN_DIR", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `tailcon configs | head`: the reader left; not an error
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except OSError as e:  # the file system said no (read-only, full, permissions): name the file
        where = f"{e.filename}: " if e.filename else ""
        print(f"tailcon: error: {where}{e.strerror or e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
