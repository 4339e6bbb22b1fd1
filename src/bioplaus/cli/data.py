"""``bioplaus datasets | models | download | prepare``: the data and model registries from the shell."""

from __future__ import annotations

import sys

from bioplaus.errors import BioplausError


def cmd_datasets(args) -> None:
    from bioplaus.data import DATASETS, locate_files

    for name, info in DATASETS.items():
        where = "embedded" if info.embedded else ("found" if locate_files(name, args.data_dir) else "not found locally")
        print(f"{name:10s} {info.label:16s} shape {tuple(info.shape)}  {where}")


def cmd_models(args) -> None:
    from bioplaus.models import available_models, get_model

    for name in available_models():
        try:
            spec = get_model(name)
            print(f"{name:8s} {spec.label:26s} {len(spec.search_space({}))} searched hyperparameters")
        except BioplausError as exc:
            print(f"{name:8s} unavailable: {exc}")


def cmd_download(args) -> None:
    from bioplaus.data import download

    for path in download(args.name, args.data_dir):
        print(path)


def cmd_prepare(args) -> None:
    from bioplaus.data import prepare

    out = prepare(args.name, args.out, data_dir=args.data_dir, max_samples=args.max_samples, seed=args.seed)
    print(f"prepared {args.name} in {out}", file=sys.stderr)
