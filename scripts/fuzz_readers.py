"""Fuzz the file readers with mutated copies of valid inputs.

Each round takes one valid input (a native sample FITS file, a Zenodo-layout
CANDELS folder, a folder of FITS cutouts, a blend dataset folder or a results
table), mutates one of its files (random byte flips, truncation, inserted or
deleted bytes, CSV cell and line edits, FITS header-card edits), and feeds it
to the reader that owns it:

============  =====================================================
target        reader (and what is touched after reading)
============  =====================================================
native        ``read_native`` (then ``summary()``)
candels       ``read_candels``
cutouts       ``read_cutouts``
dataset       ``BlendDataset`` (then ``len``, ``ds[0]``, ``fluxes``, ``context()``, ``summarize_blends``)
results       ``read_results`` (then ``report.evaluate.summary_table``)
============  =====================================================

A reader may accept the input (the mutation was harmless) or raise
:class:`~napari_blendphot.errors.InputError`; any other exception is a
crash.  Crashing inputs are saved under ``--out`` (one folder per distinct
crash: target, exception type and the innermost napari_blendphot frame)
with a ``crash.txt`` holding the traceback, so each can become a regression
test.  A round that runs past ``--round-timeout`` seconds counts as a hang.

Usage::

    python scripts/fuzz_readers.py --seconds 120 --seed 1 --out fuzz-crashes
    python scripts/fuzz_readers.py --seconds 30 --targets native,results

The mutations come from a ``random.Random(seed)``, so a run is reproducible
up to the time budget (how many rounds fit in it).
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import signal
import sys
import tempfile
import time
import traceback
import warnings
from pathlib import Path


TARGETS = ("native", "candels", "cutouts", "dataset", "results")

# Tokens a CSV cell is replaced with: empties, non-numbers, extremes, quoting.
CSV_TOKENS = ("", "nan", "NaN", "inf", "-inf", "-1", "0", "1e400", "-1e400", "abc", "b'X'", '"', '""', "1,2",
              "99999999999999999999999", "1.5", " ", "sph", "disk", "irr", "SPH", "\x00", "é", "#", "--", "True")
# FITS header keywords whose values are worth breaking.
FITS_KEYWORDS = (b"NAXIS   ", b"NAXIS1  ", b"NAXIS2  ", b"NAXIS3  ", b"BITPIX  ", b"NGAL    ", b"BPVERS  ",
                 b"TFIELDS ", b"TFORM1  ", b"TFORM6  ", b"TTYPE1  ", b"TTYPE6  ", b"PCOUNT  ", b"GCOUNT  ",
                 b"BPDTYPES", b"BPFORMAT", b"EXTNAME ", b"GALTYPE ", b"RADIUS  ", b"MAG     ", b"ID      ",
                 b"BZERO   ", b"BSCALE  ", b"ZCMPTYPE", b"THEAP   ")
FITS_VALUES = (b"0", b"-1", b"1", b"2", b"3", b"4", b"7", b"128", b"99999999", b"'abc'", b"T", b"1.5", b"-32",
               b"16", b"64", b"'irr'", b"'nope'", b"''", b"'{'", b"NAN", b"'1J'", b"'100A'")


class RoundTimeout(BaseException):
    """A reader ran past the per-round time limit.

    A BaseException, so that library code catching ``Exception`` (astropy
    does, while it reads HDUs) cannot swallow it.
    """


def _alarm(signum, frame):
    raise RoundTimeout()


# -- valid inputs -----------------------------------------------------------------------------

def build_valid_inputs(root: Path) -> dict[str, Path]:
    """Write one small valid input per target under *root*; return {target: path}.

    The same inputs as the bad-input corpus starts from
    (:func:`napari_blendphot.testing.corpus.write_valid_inputs`), so the fuzzer
    and the corpus break the same files.
    """
    from napari_blendphot.testing.corpus import write_valid_inputs

    return write_valid_inputs(root)


# -- mutations --------------------------------------------------------------------------------

def mutate_bytes(data: bytes, rnd: random.Random) -> tuple[bytes, str]:
    """One random byte-level mutation of *data*; returns (new bytes, description)."""
    if not data:
        return bytes([rnd.randrange(256)]), "fill empty file"
    kind = rnd.choice(("flip", "flip", "truncate", "insert", "delete", "zero-block", "dup-block"))
    n = len(data)
    if kind == "flip":
        out = bytearray(data)
        count = rnd.choice((1, 1, 2, 4, 16))
        for _ in range(count):
            i = rnd.randrange(n)
            out[i] ^= 1 << rnd.randrange(8)
        return bytes(out), f"flip {count} bit(s)"
    if kind == "truncate":
        cut = rnd.choice((0, rnd.randrange(n), rnd.randrange(min(n, 3000)), n - rnd.randrange(1, min(n, 4000) + 1)))
        return data[:max(cut, 0)], f"truncate to {max(cut, 0)} of {n}"
    if kind == "insert":
        i = rnd.randrange(n)
        blob = bytes(rnd.randrange(256) for _ in range(rnd.choice((1, 8, 80))))
        return data[:i] + blob + data[i:], f"insert {len(blob)} bytes at {i}"
    if kind == "delete":
        i = rnd.randrange(n)
        length = rnd.choice((1, 8, 80, 2880))
        return data[:i] + data[i + length:], f"delete {length} bytes at {i}"
    if kind == "zero-block":
        i = rnd.randrange(n)
        length = rnd.choice((8, 80, 2880))
        return data[:i] + bytes(min(length, n - i)) + data[i + length:], f"zero {length} bytes at {i}"
    i = rnd.randrange(n)
    length = rnd.choice((80, 2880))
    return data[:i] + data[i:i + length] + data[i:], f"duplicate {length} bytes at {i}"


def mutate_csv(data: bytes, rnd: random.Random) -> tuple[bytes, str]:
    """A line- or cell-level edit of a CSV file (keeps it mostly CSV-shaped)."""
    lines = data.decode("utf-8", errors="replace").split("\n")
    body = [i for i, line in enumerate(lines) if line and not line.startswith("#")]
    if not body:
        return mutate_bytes(data, rnd)
    kind = rnd.choice(("cell", "cell", "cell", "drop-line", "dup-line", "swap-header", "drop-column",
                       "extra-column", "rename-column", "meta"))
    i = rnd.choice(body)
    if kind == "cell":
        cells = lines[i].split(",")
        j = rnd.randrange(len(cells))
        cells[j] = rnd.choice(CSV_TOKENS)
        lines[i] = ",".join(cells)
        what = f"cell line {i} col {j} -> {cells[j]!r}"
    elif kind == "drop-line":
        del lines[i]
        what = f"drop line {i}"
    elif kind == "dup-line":
        lines.insert(i, lines[i])
        what = f"duplicate line {i}"
    elif kind in ("swap-header", "drop-column", "extra-column", "rename-column"):
        header = body[0]
        rows = [line.split(",") for line in (lines[k] for k in body)]
        width = len(rows[0])
        j = rnd.randrange(width)
        if kind == "swap-header":
            k = rnd.randrange(width)
            rows[0][j], rows[0][k] = rows[0][k], rows[0][j]
            what = f"swap header names {j} and {k}"
        elif kind == "drop-column":
            for row in rows:
                if j < len(row):
                    del row[j]
            what = f"drop column {j}"
        elif kind == "extra-column":
            for row in rows:
                row.append(rnd.choice(("x", "1", "")))
            what = "extra column"
        else:
            rows[0][j] = rows[0][j].upper() + "_"
            what = f"rename column {j}"
        for k, row in zip(body, rows):
            lines[k] = ",".join(row)
        del header
    else:
        metas = [k for k, line in enumerate(lines) if line.startswith("#")]
        if not metas:
            return mutate_bytes(data, rnd)
        k = rnd.choice(metas)
        line = lines[k]
        cut = rnd.randrange(len(line) + 1)
        lines[k] = line[:cut] + rnd.choice(('{"', "}", "null", '"x"', "[1", "]", "1e999", '"methods":7'))
        what = f"edit metadata line {k}"
    return "\n".join(lines).encode("utf-8", errors="replace"), kind + ": " + what


def mutate_fits(data: bytes, rnd: random.Random) -> tuple[bytes, str]:
    """Change the value of one header card (found by keyword) of a FITS file."""
    keyword = rnd.choice(FITS_KEYWORDS)
    positions = [p for p in range(0, len(data) - 80, 80) if data[p:p + 8] == keyword]
    if not positions:
        return mutate_bytes(data, rnd)
    p = rnd.choice(positions)
    value = rnd.choice(FITS_VALUES)
    card = (keyword + b"= " + value.rjust(20)).ljust(80)[:80]
    return data[:p] + card + data[p + 80:], f"card {keyword.decode().strip()} = {value.decode()}"


def mutate_npy(data: bytes, rnd: random.Random) -> tuple[bytes, str]:
    """Edit the .npy header dict (dtype, shape, order) or fall back to byte edits."""
    start = data.find(b"{")
    end = data.find(b"}", start)
    if start < 0 or end < 0 or rnd.random() < 0.4:
        return mutate_bytes(data, rnd)
    header = data[start:end + 1].decode("latin1")
    choice = rnd.choice((("'descr': '<f4'", "'descr': '>f4'"), ("'descr': '<f4'", "'descr': '<f8'"),
                         ("'descr': '<f4'", "'descr': '|O'"), ("'descr': '<i4'", "'descr': '<f4'"),
                         ("'descr': '|u1'", "'descr': '<u2'"), ("'fortran_order': False", "'fortran_order': True"),
                         ("128, 128)", "64, 256)"), ("128, 128)", "128)"), ("(", "(1000000000, ")))
    new = header.replace(*choice, 1)
    if new == header:
        return mutate_bytes(data, rnd)
    # Keep the header length so the data offset stays valid (pad or cut spaces).
    new = new.ljust(len(header))[:len(header)] if len(new) <= len(header) else new
    return data[:start] + new.encode("latin1") + data[end + 1:], f"npy header {choice[0]!r} -> {choice[1]!r}"


def mutate_file(path: Path, rnd: random.Random) -> str:
    data = path.read_bytes()
    name = path.name.lower()
    if name.endswith(".csv") and rnd.random() < 0.7:
        new, what = mutate_csv(data, rnd)
    elif name.endswith((".fits", ".fit")) and rnd.random() < 0.5:
        new, what = mutate_fits(data, rnd)
    elif name.endswith(".npy"):
        new, what = mutate_npy(data, rnd)
    else:
        new, what = mutate_bytes(data, rnd)
    # Replace the file, never write through a hard link into the pristine copy.
    path.unlink()
    path.write_bytes(new)
    return f"{path.name}: {what}"


# -- one round --------------------------------------------------------------------------------

def _copy_input(source: Path, work: Path) -> Path:
    target = work / source.name
    if source.is_dir():
        target.mkdir()
        for item in source.iterdir():
            os.link(item, target / item.name)  # cheap; mutated files are replaced, not edited in place
    else:
        shutil.copyfile(source, target)
    return target


def run_reader(target: str, path: Path) -> None:
    """Read *path* with the reader of *target* and touch what a caller would use next."""
    if target == "native":
        from napari_blendphot.sample.io_native import read_native

        read_native(path).summary()
    elif target == "candels":
        from napari_blendphot.sample.io_candels import read_candels

        read_candels(path).summary()
    elif target == "cutouts":
        from napari_blendphot.sample.io_cutouts import read_cutouts

        read_cutouts(path).summary()
    elif target == "dataset":
        from napari_blendphot.blend.dataset import BlendDataset, summarize_blends

        dataset = BlendDataset(path)
        if len(dataset):
            dataset[0]
        dataset.fluxes
        dataset.context()
        summarize_blends(dataset.catalog)
    elif target == "results":
        from napari_blendphot.report.evaluate import summary_table
        from napari_blendphot.report.results import read_results

        summary_table(read_results(path))
    else:
        raise ValueError(target)


def pick_file(target: str, copy: Path, rnd: random.Random) -> Path:
    if copy.is_file():
        return copy
    files = sorted(p for p in copy.iterdir() if p.is_file())
    if target == "dataset" and (copy / "catalog.fits").exists() and rnd.random() < 0.5:
        # The FITS catalogue is read first: drop it so the CSV path is exercised too.
        (copy / "catalog.fits").unlink()
        files = [p for p in files if p.name != "catalog.fits"]
    return rnd.choice(files)


def crash_key(target: str, exc: BaseException) -> str:
    frames = traceback.extract_tb(exc.__traceback__)
    ours = [f for f in frames if "napari_blendphot" in f.filename]
    where = f"{Path(ours[-1].filename).name}:{ours[-1].lineno}" if ours else "outside"
    return f"{target}-{type(exc).__name__}-{where}"


def fuzz(seconds: float, seed: int, out: Path, targets=TARGETS, round_timeout: int = 20, verbose: bool = False):
    from napari_blendphot.errors import InputError

    rnd = random.Random(seed)
    stats = {t: {"tried": 0, "accepted": 0, "input_error": 0} for t in targets}
    crashes: dict[str, dict] = {}
    signal.signal(signal.SIGALRM, _alarm)
    with tempfile.TemporaryDirectory(prefix="blendphot-fuzz-") as tmp:
        tmp = Path(tmp)
        valid = build_valid_inputs(tmp / "valid")
        sources = {t: [valid[t]] for t in targets}
        if "results" in sources:
            sources["results"].append(valid["results_fits"])
        for target in targets:  # the pristine inputs must read cleanly
            for source in sources[target]:
                run_reader(target, source)
        deadline = time.monotonic() + seconds
        round_number = 0
        while time.monotonic() < deadline:
            round_number += 1
            target = targets[round_number % len(targets)]
            source = rnd.choice(sources[target])
            work = tmp / f"round-{round_number}"
            work.mkdir()
            copy = _copy_input(source, work)
            described = []
            for _ in range(rnd.choice((1, 1, 1, 2, 3))):
                described.append(mutate_file(pick_file(target, copy, rnd), rnd))
            stats[target]["tried"] += 1
            signal.alarm(round_timeout)
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    run_reader(target, copy)
                stats[target]["accepted"] += 1
            except InputError:
                stats[target]["input_error"] += 1
            except (Exception, RoundTimeout) as exc:  # noqa: BLE001 - every other exception is what we look for
                key = "hang-" + target if isinstance(exc, RoundTimeout) else crash_key(target, exc)
                entry = crashes.setdefault(key, {"count": 0, "saved": None})
                entry["count"] += 1
                if entry["saved"] is None:
                    saved = out / key.replace(":", "_")
                    if saved.exists():
                        shutil.rmtree(saved)
                    saved.mkdir(parents=True)
                    if copy.is_dir():
                        shutil.copytree(copy, saved / copy.name)
                    else:
                        shutil.copyfile(copy, saved / copy.name)
                    (saved / "crash.txt").write_text(
                        f"target: {target}\nround: {round_number} (seed {seed})\nmutations:\n  "
                        + "\n  ".join(described) + "\n\n" + "".join(traceback.format_exception(exc)),
                        encoding="utf-8")
                    entry["saved"] = str(saved)
                    print(f"CRASH {key}: {type(exc).__name__}: {str(exc)[:200]} ({'; '.join(described)})",
                          file=sys.stderr)
            finally:
                signal.alarm(0)
            if verbose:
                print(round_number, target, "; ".join(described), file=sys.stderr)
            shutil.rmtree(work, ignore_errors=True)
    return stats, crashes


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="time budget (default 60)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the mutations (default 0)")
    parser.add_argument("--out", default="fuzz-crashes", help="folder for crashing inputs (default fuzz-crashes)")
    parser.add_argument("--targets", default=",".join(TARGETS), help=f"comma-separated subset of {TARGETS}")
    parser.add_argument("--round-timeout", type=int, default=20, help="seconds before a round counts as a hang")
    parser.add_argument("-v", "--verbose", action="store_true", help="print every mutation")
    args = parser.parse_args(argv)
    targets = tuple(t.strip() for t in args.targets.split(",") if t.strip())
    unknown = sorted(set(targets) - set(TARGETS))
    if unknown:
        parser.error(f"unknown target(s) {unknown}; choose from {TARGETS}")
    out = Path(args.out)
    start = time.monotonic()
    stats, crashes = fuzz(args.seconds, args.seed, out, targets, args.round_timeout, args.verbose)
    elapsed = time.monotonic() - start
    total = sum(s["tried"] for s in stats.values())
    print(f"fuzzed {total} inputs in {elapsed:.0f} s (seed {args.seed})")
    for target, s in stats.items():
        print(f"  {target:8s} tried {s['tried']:5d}  accepted {s['accepted']:5d}  InputError {s['input_error']:5d}")
    print(f"distinct crashes: {len(crashes)}")
    for key, entry in sorted(crashes.items()):
        print(f"  {key}: {entry['count']} input(s), first saved in {entry['saved']}")
    return 1 if crashes else 0


if __name__ == "__main__":
    sys.exit(main())
