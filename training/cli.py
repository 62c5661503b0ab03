"""``python -m training``: build the blend dataset, train, resume, evaluate.

Examples (the paper's protocol; docs/training.md has every model)::

    python -m training build-dataset scratch/mock2000.fits -o runs/blends --seed 2020
    python -m training train blend2flux_f64 --blends runs/blends --run-dir runs/b2f64
    python -m training resume runs/b2f64
    python -m training evaluate runs/b2f64 --blends runs/blends --split test
    python -m training sep --blends runs/blends -o runs/sep_test
    python -m training merge runs/sep_test.csv runs/b2f64/evaluation/results.csv -o runs/all
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from napari_blendphot.errors import InputError

BACKENDS = ("tensorflow", "jax", "torch")


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def _precision(text: str) -> str:
    from napari_blendphot.models.precision import KERAS_POLICIES

    return {policy: name for name, policy in KERAS_POLICIES.items()}.get(text, text)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m training",
                                     description="Train and evaluate the networks of Boucaud et al. 2020.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("build-dataset", help="clean, split by galaxy and blend a sample into a dataset folder "
                                             "(paper: 30,000 blends, 25,000 train/val + 5,000 test)")
    p.add_argument("sample", help="isolated-galaxy sample (native FITS, CANDELS folder, 'embedded')")
    p.add_argument("-o", "--output", required=True, help="dataset folder to create")
    p.add_argument("-n", "--n-blends", type=_positive_int, default=30000)
    p.add_argument("--test-fraction", type=float, default=0.2,
                   help="share of galaxies in the test split (default 0.2, the paper's)")
    p.add_argument("--n-test", type=int, default=5000,
                   help="number of test blends (default 5000: the paper's 25,000 train/val + 5,000 test)")
    p.add_argument("--seed", type=int, default=2020)
    p.add_argument("--no-clean", action="store_true", help="the sample's neighbours are cleaned already")
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=_build_dataset)

    p = sub.add_parser("bank", help="the train split of a sample as noiseless models (.npz) for synth-mode "
                                     "training (training/synth.py), compact enough to carry to a GPU")
    p.add_argument("sample", help="the noisy sample (native FITS) whose catalogue and segmentation are used")
    p.add_argument("--models", required=True, help="its noiseless models (blendphot make-sample --models-out)")
    p.add_argument("-o", "--output", required=True, help="bank file to write (.npz)")
    p.add_argument("--seed", type=int, default=2020, help="split seed: the --seed of the matching `blendphot blend`")
    p.add_argument("--test-fraction", type=float, default=0.2)
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=_bank)

    p = sub.add_parser("train", help="start a training run")
    p.add_argument("config", help="configuration file or name of one in training/configs")
    p.add_argument("--run-dir", required=True, help="run folder to create")
    p.add_argument("--blends", help="blend dataset folder (fixed-data mode)")
    p.add_argument("--sample", help="isolated sample (stream mode)")
    p.add_argument("--bank", help="galaxy bank .npz (synth mode; sets data.bank)")
    p.add_argument("--epochs", type=_positive_int, help="override training.max_epochs")
    p.add_argument("--batch-size", type=_positive_int, help="override training.batch_size (named deviation)")
    p.add_argument("--precision", type=_precision, choices=("float32", "bfloat16", "float16"),
                   help="override training.precision (Keras' names mixed_bfloat16/mixed_float16 are accepted too)")
    p.add_argument("--max-train-blends", type=_positive_int, help="use at most this many training blends")
    p.add_argument("--max-wall-time", type=float, help="pause (resumable) after this many seconds")
    p.add_argument("--seed", type=int, help="override training.seed")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=JSON",
                   help="override any configuration key, e.g. --set training.flips=false")
    p.add_argument("--backend", choices=BACKENDS, help="Keras backend (default: $KERAS_BACKEND or tensorflow)")
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=_train)

    p = sub.add_parser("resume", help="continue a run from its last checkpoint")
    p.add_argument("run_dir")
    p.add_argument("--epochs", type=_positive_int, help="new max_epochs (also restarts an early-stopped run)")
    p.add_argument("--max-wall-time", type=float)
    p.add_argument("--bank", help="a synth run's galaxy bank at a new path (must be the same file)")
    p.add_argument("--backend", choices=BACKENDS)
    p.set_defaults(func=_resume)

    p = sub.add_parser("evaluate", help="predict a dataset split with a run's model; write results and report")
    p.add_argument("run_dir")
    p.add_argument("--blends", required=True, help="blend dataset folder")
    p.add_argument("--split", default="test", choices=("test", "train", "all"))
    p.add_argument("--method", help="method name in the results table (default: the run's name)")
    p.add_argument("--batch-size", type=_positive_int, default=256)
    p.add_argument("--no-report", action="store_true", help="results table only")
    p.add_argument("--backend", choices=BACKENDS)
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=_evaluate)

    p = sub.add_parser("sep", help="run the SEP two-pass baseline on a dataset split; write its results table")
    p.add_argument("--blends", required=True)
    p.add_argument("--split", default="test", choices=("test", "train", "all"))
    p.add_argument("-o", "--output", required=True, help="results table stem (.csv and .fits)")
    p.add_argument("--jobs", type=int, help="worker processes (default: all cores)")
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=_sep)

    p = sub.add_parser("ship", help="copy a run's model into the package's shipped weights with its manifest")
    p.add_argument("run_dir")
    p.add_argument("--name", required=True, help="shipped model name (file stem)")
    p.add_argument("--default", action="store_true", help="make it the default model of its method")
    p.add_argument("--description", default="", help="what the model was trained on, in words")
    p.add_argument("--notes", default="")
    p.add_argument("--weights-dir", help="target folder (default: napari_blendphot/models/weights); an ensemble "
                                         "built with --share is shipped without its shared members, whose "
                                         "shipped files must be in this folder")
    p.add_argument("--test-results", help="results table of test blends predicted with this run's model "
                                          "('blendphot predict'); default: the run's evaluation/summary.json")
    p.add_argument("--calibration", action="append", default=[],
                   help="flux-error calibration ('blendphot calibrate-errors fit') to store in the manifest; "
                        "repeatable: one fitted on single-pass predictions, others on predictions made with "
                        "--tta N (used at that tta)")
    p.add_argument("--stage", action="append", default=[], metavar="RUN_DIR",
                   help="an earlier run this model started from (repeatable; recorded in the manifest)")
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=_ship)

    p = sub.add_parser("recalibrate", help="replace a shipped model's flux-error calibration (the model file "
                                           "is untouched)")
    p.add_argument("manifest", help="the model's manifest (<name>.json beside its .keras file)")
    p.add_argument("--calibration", action="append", required=True,
                   help="'blendphot calibrate-errors fit' file of the model's method (repeatable: one fitted on "
                        "single-pass predictions, others on predictions made with --tta N)")
    p.add_argument("--overwrite", action="store_true", help="replace the calibration the manifest has")
    p.add_argument("--keep-other-tta", action="store_true",
                   help="keep the manifest's calibrations for the --tta values not given (e.g. refit tta 1 only)")
    p.add_argument("--test-results", metavar="TABLE",
                   help="also refresh the manifest's test metrics from this 'blendphot predict' table made with "
                        "the model (after a change in how its method measures, e.g. the U-Net's mask photometry)")
    p.set_defaults(func=_recalibrate)

    p = sub.add_parser("flux-correction", help="fit a shipped model's flux correction (segmentation photometry "
                                               "misses light: metrics.flux_correction) and write it into its manifest")
    p.add_argument("manifest", help="the model's manifest (<name>.json beside its .keras file)")
    p.add_argument("--results", required=True, metavar="TABLE",
                   help="'blendphot predict' table of held-out blends made with the model's .keras file alone "
                        "(single pass, uncorrected fluxes)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace the manifest's correction; its flux-error calibration is dropped either way")
    p.set_defaults(func=_flux_correction)

    p = sub.add_parser("swap-unet", help="a new blend2mask2flux run folder with another trained U-Net inside "
                                          "(nothing retrained: check it on held-out blends before shipping)")
    p.add_argument("run_dir", help="the blend2mask2flux run")
    p.add_argument("--unet", required=True, help="the U-Net: a .keras file or a unet run folder")
    p.add_argument("-o", "--output", required=True, help="new run folder to create")
    p.set_defaults(func=_swap_unet)

    p = sub.add_parser("store", help="a new run folder whose model's large weights are rounded to 16 bits and "
                                     "deflated (about half the bytes; check it on held-out blends before shipping)")
    p.add_argument("run_dir", help="the run folder (model.keras, config.json, run.json)")
    p.add_argument("-o", "--output", required=True, help="new run folder to create")
    p.add_argument("--precision", choices=("bfloat16", "float16"), default="bfloat16")
    p.set_defaults(func=_store)

    p = sub.add_parser("ensemble", help="a deep ensemble of trained blend2flux networks as one new run folder "
                                        "(nothing trained; ship it with 'ship')")
    p.add_argument("members", nargs="+", help="two or more blend2flux networks with the flux-uncertainty output: "
                                              "run folders, .keras files or shipped model names")
    p.add_argument("-o", "--output", required=True, help="new run folder to create")
    p.add_argument("--name", default="blend2flux_ensemble", help="the ensemble model's name")
    p.add_argument("--store", choices=("float32", "bfloat16", "float16"), default="bfloat16",
                   help="round the weights to 16 bits and deflate the file (default bfloat16: ~2.9 MB per member)")
    p.add_argument("--spread-weight", type=float, default=1.0,
                   help="weight of the members' spread in the error variance (default 1: the plain mixture); "
                        "--spread-weight-from CALIBRATION.json sets it to 1/a^2 of an ensemble's calibration")
    p.add_argument("--spread-weight-from", metavar="CALIBRATION.json",
                   help="'blendphot calibrate-errors fit' file of this ensemble built with weight 1: keep the "
                        "spread at face value through that calibration")
    p.add_argument("--share", action="append", default=[], metavar="NAME",
                   help="a member that is a shipped model (by its name): 'ship' then stores only the other "
                        "members and the manifest refers to this one's file, so its weights are not in the "
                        "package twice (40 MB limit); the run's model.keras still holds the whole ensemble "
                        "(repeatable)")
    p.set_defaults(func=_ensemble)

    p = sub.add_parser("results", help="the results tables of the shipped models on several test sets, with "
                                       "bootstrap intervals over galaxies, bins and error coverage")
    p.add_argument("--set", action="append", default=[], metavar="NAME=RESULTS", required=True,
                   help="a test set's results table from 'blendphot predict' (repeatable, in table order)")
    p.add_argument("-o", "--output", required=True, help="output folder (summary.ecsv, bins.ecsv, coverage.ecsv, "
                                                         "results.md)")
    p.add_argument("--bootstrap", type=_positive_int, default=1000, help="bootstrap resamples (default 1000)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--update-docs", metavar="DOC.md", help="replace the generated block of this document")
    p.add_argument("--match-radius", metavar="NAME",
                   help="also reweight every other set to the galaxy radii of the set NAME (matched.ecsv): "
                        "does a method do worse on NAME's galaxies, or does NAME hold bigger ones?")
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=_results)

    p = sub.add_parser("compare", help="candidate networks against a baseline on the same blends: flux MAPE "
                                       "differences with paired bootstrap intervals over galaxies")
    p.add_argument("--model", action="append", default=[], required=True, metavar="NAME=METHOD:RESULTS[,RESULTS]",
                   help="a model's results tables (one per blend folder, the same folders in the same order "
                        "for every model; repeatable; the first is the baseline)")
    p.add_argument("--sample", action="append", default=[], metavar="SAMPLE.fits",
                   help="each results table's galaxy sample, in table order (for --min-stamp-share)")
    p.add_argument("--min-stamp-share", type=float, metavar="S",
                   help="keep only galaxies whose sample stamp holds at least this share of their flux")
    p.add_argument("--bootstrap", type=_positive_int, default=1000, help="bootstrap resamples (default 1000)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("-o", "--output", help="also write the rows as this table (.csv or .fits)")
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=_compare)

    p = sub.add_parser("digest", help="SHA-256 digests of a blend dataset (files and the test blends array), "
                                      "to check that two machines made the same bytes")
    p.add_argument("blends", help="blend dataset folder")
    p.add_argument("--split", choices=("test", "train", "all"), default=None,
                   help="the split whose blends array is digested (default: test, or all for a dataset "
                        "made with --test-fraction 0, such as the real-galaxy validation blends)")
    p.set_defaults(func=_digest)

    p = sub.add_parser("merge", help="join results tables of the same blends (one per method) into one")
    p.add_argument("tables", nargs="+")
    p.add_argument("-o", "--output", required=True, help="results table stem")
    p.add_argument("--report", help="also write the evaluation report into this folder")
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=_merge)
    return parser


def _build_dataset(args) -> int:
    import os
    import time

    from napari_blendphot.blend.dataset import write_blend_dataset
    from napari_blendphot.cli._common import progress_printer
    from napari_blendphot.provenance import sha256_file
    from napari_blendphot.sample.io import load_sample

    tic = time.perf_counter()
    sample = load_sample(args.sample)
    if not args.no_clean:
        from napari_blendphot.clean.neighbours import clean_sample

        sample = clean_sample(sample, args.seed)
    n_test = min(args.n_test, args.n_blends - 1) if args.test_fraction > 0 else 0
    path = write_blend_dataset(sample, args.output, n=args.n_blends, test_fraction=args.test_fraction,
                               n_test=n_test, seed=args.seed, overwrite=args.overwrite, progress=progress_printer("blend"),
                               sample_path=args.sample if os.path.isfile(args.sample) else None)
    print(f"wrote {path} in {time.perf_counter() - tic:.1f} s; blends.npy sha256 "
          f"{sha256_file(Path(path) / 'blends.npy')}")
    return 0


def _bank(args) -> int:
    from .bank import make_bank

    summary = make_bank(args.sample, args.models, args.output, args.seed, args.test_fraction,
                        overwrite=args.overwrite)
    print(f"wrote {summary['path']}: {summary['n_galaxies']} training galaxies, {summary['bytes'] / 1e6:.1f} MB")
    return 0


def _recalibrate(args) -> int:
    from .ship import recalibrate_model

    manifest = recalibrate_model(args.manifest, args.calibration, overwrite=args.overwrite,
                                 test_results=args.test_results, keep_other_tta=args.keep_other_tta)
    by_tta = sorted((manifest.flux_error_calibration.get("by_tta") or {}), key=int)
    print(f"{args.manifest}: calibration of {manifest.method} for tta 1"
          + "".join(f", {t}" for t in by_tta))
    return 0


def _flux_correction(args) -> int:
    from .ship import correct_model_fluxes

    manifest = correct_model_fluxes(args.manifest, args.results, overwrite=args.overwrite)
    p = manifest.flux_correction["parameters"]
    print(f"{args.manifest}: flux correction of {manifest.method} from {p['n']} galaxies, factors "
          + ", ".join(f"{f:.3f}" for f in p["factors"]) + "; fit its flux-error calibration again ('recalibrate')")
    return 0


def _ship(args) -> int:
    from .ship import ship_run

    manifest = ship_run(args.run_dir, args.name, default=args.default, description=args.description,
                        notes=args.notes, weights_dir=args.weights_dir, overwrite=args.overwrite,
                        test_results=args.test_results, calibration=args.calibration, stages=args.stage)
    print(manifest.to_json())
    return 0


def _swap_unet(args) -> int:
    from .swap import swap_unet

    record = swap_unet(args.run_dir, args.unet, args.output)
    print(json.dumps(record["unet_replaced"], indent=2))
    return 0


def _store(args) -> int:
    from .store import store_run

    record = store_run(args.run_dir, args.output, precision=args.precision)
    print(f"wrote {args.output}: {record['rounded_arrays']} weight arrays rounded to {record['store']}, "
          f"model.keras sha256 {record['model_sha256'][:12]}")
    return 0


def _ensemble(args) -> int:
    from .ensemble import make_ensemble, spread_weight_for

    weight = spread_weight_for(args.spread_weight_from) if args.spread_weight_from else args.spread_weight
    record = make_ensemble(args.members, args.output, store=args.store, name=args.name, spread_weight=weight,
                           share=args.share)
    shared = record.get("shared_members") or []
    print(f"{args.output}: {len(record['members'])} members ({', '.join(m['name'] for m in record['members'])}), "
          f"{record['parameters']:,} parameters, weights stored as {record['store']}, "
          f"spread weight {record['spread_weight']:.3f}"
          + (f"; shared when shipped: {', '.join(m['name'] for m in shared)}" if shared else ""))
    return 0


def _results(args) -> int:
    from .results import parse_sets, write_results

    written = write_results(parse_sets(args.set), args.output, n_resamples=args.bootstrap, seed=args.seed,
                            update_docs=args.update_docs, overwrite=args.overwrite, match_radius=args.match_radius)
    print((Path(args.output) / "results.md").read_text())
    print("wrote " + ", ".join(str(p) for p in written.values()))
    return 0


def _compare(args) -> int:
    from astropy.table import Table

    from napari_blendphot.provenance import make_provenance
    from napari_blendphot.tables import write_table

    from .compare import compare, markdown, parse_model

    models = [parse_model(text) for text in args.model]
    rows = compare(models, samples=args.sample or None, min_stamp_share=args.min_stamp_share,
                   n_resamples=args.bootstrap, seed=args.seed)
    print(markdown(rows, models[0][0]))
    if args.output:
        table = Table(rows=rows)
        inputs = {f"{name}[{i}]": path for name, _, tables in models for i, path in enumerate(tables)}
        inputs.update({f"sample[{i}]": path for i, path in enumerate(args.sample)})
        table.meta["provenance"] = make_provenance("training-compare", args.seed, inputs=inputs,
                                                   min_stamp_share=args.min_stamp_share, bootstrap=args.bootstrap)
        write_table(table, args.output, overwrite=args.overwrite)
        print(f"wrote {args.output}")
    return 0


def _digest(args) -> int:
    from napari_blendphot.provenance import sha256_array, sha256_file
    from napari_blendphot.tables import read_table

    from .data import read_split

    folder = Path(args.blends)
    record = {name: sha256_file(folder / name) for name in ("blends.npy", "masks.npy", "catalog.csv")
              if (folder / name).is_file()}
    split = args.split
    if split is None:  # a --test-fraction 0 dataset (blendphot blend ... --test-fraction 0) has no test split
        catalog = read_table(folder / "catalog.csv") if (folder / "catalog.csv").is_file() else None
        has_test = catalog is None or "split" not in catalog.colnames or np.any(
            np.char.strip(np.asarray(catalog["split"]).astype(str)) == "test")
        split = "test" if has_test else "all"
    blends = read_split(folder, split, with_masks=False)
    record[f"{split}_blends_array"] = sha256_array(np.asarray(blends.blends))
    record[f"n_{split}"] = len(blends)
    print(json.dumps(record, indent=2, sort_keys=True))
    return 0


def _overrides(args) -> dict:
    overrides = {}
    for dotted, value in (("training.max_epochs", args.epochs), ("training.batch_size", args.batch_size),
                          ("training.precision", args.precision), ("training.max_wall_time_s", args.max_wall_time),
                          ("training.seed", args.seed), ("data.max_train_blends", args.max_train_blends)):
        if value is not None:
            overrides[dotted] = value
    if args.sample and not args.blends:
        overrides["data.mode"] = "stream"
    if args.bank:
        overrides["data.mode"] = "synth"
        overrides["data.bank"] = str(Path(args.bank).resolve())
    for item in args.set:
        key, sep, text = item.partition("=")
        if not sep or ("." not in key and key not in ("name", "description")):
            raise InputError(f"--set {item}", "expected SECTION.KEY=JSON_VALUE (or name=... / description=...)")
        try:
            overrides[key] = json.loads(text)
        except json.JSONDecodeError:
            overrides[key] = text
    return overrides


def _train(args) -> int:
    from .config import load_config
    from .train import _Paused, train

    config = load_config(args.config, _overrides(args))
    try:
        record = train(config, args.run_dir, blends_dir=args.blends, sample_path=args.sample,
                       backend=args.backend, overwrite=args.overwrite)
    except _Paused as exc:
        print(f"{args.run_dir}: paused: {exc}")
        return 0
    return 0 if record["status"] in ("finished", "paused") else 1


def _resume(args) -> int:
    from .train import _Paused, resume

    try:
        resume(args.run_dir, backend=args.backend, max_epochs=args.epochs, max_wall_time_s=args.max_wall_time,
               bank=args.bank)
    except _Paused as exc:
        print(f"{args.run_dir}: paused: {exc}")
    return 0


def _evaluate(args) -> int:
    from .scoring import evaluate_run

    summary = evaluate_run(args.run_dir, args.blends, split=args.split, method=args.method,
                           batch_size=args.batch_size, backend=args.backend, overwrite=args.overwrite,
                           report=not args.no_report)
    print(json.dumps(summary, indent=2, sort_keys=True))
    return 0


def _sep(args) -> int:
    from napari_blendphot.cli._common import progress_printer
    from .scoring import evaluate_sep, summarise

    table = evaluate_sep(args.blends, args.output, split=args.split, n_jobs=args.jobs, overwrite=args.overwrite,
                         progress=progress_printer("sep"))
    print(json.dumps(summarise(table, "sep"), indent=2, sort_keys=True))
    return 0


def _merge(args) -> int:
    from napari_blendphot.provenance import make_provenance
    from napari_blendphot.report.results import read_results, write_results
    from .scoring import merge_results, summarise, write_report

    tables = [read_results(path) for path in args.tables]
    merged = merge_results(tables, make_provenance("training-merge", None,
                                                   inputs={f"table{i}": p for i, p in enumerate(args.tables)}))
    write_results(merged, args.output, overwrite=args.overwrite)
    for method in merged.meta["methods"]:
        print(method, json.dumps(summarise(merged, method), sort_keys=True))
    if args.report:
        write_report(merged, args.report, overwrite=args.overwrite)
    return 0


def main(argv=None) -> int:
    from napari_blendphot.cli import run_parser

    return run_parser(build_parser(), argv, prog="python -m training")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
