"""``blendphot predict`` end to end on a small blend dataset made from the toy sample."""

from __future__ import annotations

import sys

import numpy as np
import pytest
from napari_blendphot.testing.stand_ins import tiny_models

from napari_blendphot.cli import main


@pytest.fixture(scope="module")
def dataset_dir(tmp_path_factory, toy_sample):
    from napari_blendphot.blend.dataset import write_blend_dataset

    folder = tmp_path_factory.mktemp("predict") / "blends"
    return write_blend_dataset(toy_sample, folder, n=14, test_fraction=0.5, seed=5, chunk_size=4)


def test_predict_sep_writes_a_readable_results_table(dataset_dir, tmp_path, capsys):
    from napari_blendphot.blend.dataset import BlendDataset
    from napari_blendphot.deblend.sep_baseline import SepTwoPass
    from napari_blendphot.metrics.masks import iou
    from napari_blendphot.report.results import read_results

    out = tmp_path / "results.csv"
    code = main(["predict", str(dataset_dir), "--methods", "sep", "-o", str(out), "--chunk-size", "3"])
    assert code == 0
    printed = capsys.readouterr()
    assert "sep: central found" in printed.out
    assert "predict [" in printed.err  # the progress bar
    table = read_results(out)
    fits_table = read_results(tmp_path / "results.fits")
    dataset = BlendDataset(dataset_dir)
    test_rows = dataset.indices("test")
    assert len(table) == len(fits_table) == len(test_rows) == 7
    np.testing.assert_array_equal(table["id"], dataset.catalog["id"][test_rows])
    assert table.meta["methods"] == ["sep"]
    assert table.meta["provenance"]["step"] == "predict"
    assert table.meta["provenance"]["parameters"]["split"] == "test"
    assert "sha256" not in table.meta["provenance"]["parameters"]["method_metadata"]["sep"]
    assert "detection_sep" in table.colnames
    # Same numbers as SEP run directly, with the same truth (context) and IoU.
    view = dataset.select(split="test")
    direct = SepTwoPass(n_jobs=1).deblend(view.blends, view.context())
    np.testing.assert_allclose(np.column_stack([table["g1_flux_sep"], table["g2_flux_sep"]]), direct.fluxes,
                               rtol=1e-12, equal_nan=True)
    expected_iou = iou(direct.masks, view.masks)
    np.testing.assert_allclose(np.column_stack([fits_table["g1_iou_sep"], fits_table["g2_iou_sep"]]), expected_iou,
                               equal_nan=True)


def test_predict_summary_gives_flux_mape_and_error_coverage_and_the_csv_reads_with_defaults(
        dataset_dir, tmp_path, capsys):
    import re

    import pandas
    from astropy.table import Table

    from napari_blendphot.metrics.binned import galaxy_measurements, zero_point_of
    from napari_blendphot.metrics.calibration import coverage
    from napari_blendphot.metrics.photometry import photometry_stats
    from napari_blendphot.report.results import read_results

    out = tmp_path / "results.csv"
    assert main(["predict", str(dataset_dir), "--methods", "sep", "-o", str(out)]) == 0
    line = next(line for line in capsys.readouterr().out.splitlines() if line.strip().startswith("sep:"))
    table = read_results(out)
    data = galaxy_measurements(table, "sep", "both", "all")
    mape = photometry_stats(data["true_flux"], data["pred_flux"], zp_pred=zero_point_of(table, "sep")).flux_mape
    both = coverage(table, "sep")
    both = both[both["galaxy"] == "both"]
    match = re.search(r"flux MAPE ([\d.]+)%, errors cover (\d+)% at 68% and (\d+)% at 95%", line)
    assert match, line
    assert float(match.group(1)) == pytest.approx(mape, abs=0.05)
    assert int(match.group(2)) == round(100 * float(both["coverage_68"][0]))
    assert int(match.group(3)) == round(100 * float(both["coverage_95"][0]))
    # The CSV opens with both readers' defaults (its metadata lives in the .csv.meta.json beside it).
    frame = pandas.read_csv(out)
    plain = Table.read(out, format="ascii.csv")
    assert len(frame) == len(plain) == len(table)
    np.testing.assert_allclose(frame["g1_flux_err_sep"], table["g1_flux_err_sep"], rtol=1e-9, equal_nan=True)
    assert (tmp_path / "results.csv.meta.json").exists()


def test_predict_refuses_bad_inputs(dataset_dir, tmp_path, capsys):
    out = tmp_path / "r.csv"
    cases = [
        (["predict", str(dataset_dir), "--methods", "sep,nosuch", "-o", str(out)], "not a known deblending method"),
        (["predict", str(tmp_path / "nowhere"), "--methods", "sep", "-o", str(out)], "folder not found"),
        (["predict", str(dataset_dir), "--methods", "sep", "--weights", "unet=x.keras", "-o", str(out)],
         "not among --methods"),
        (["predict", str(dataset_dir), "--methods", "blend2flux", "--weights", f"blend2flux={tmp_path / 'no.keras'}",
          "-o", str(out)], "model file not found"),
        (["predict", str(dataset_dir), "--methods", "sep", "--chunk-size", "0", "-o", str(out)], "--chunk-size"),
    ]
    for argv, problem in cases:
        assert main(argv) == 2
        assert problem in capsys.readouterr().err
    existing = tmp_path / "taken.csv"
    existing.write_text("mine\n")
    assert main(["predict", str(dataset_dir), "--methods", "sep", "-o", str(existing)]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert existing.read_text() == "mine\n"


@pytest.mark.slow
def test_predict_with_networks(dataset_dir, tmp_path, tmp_path_factory):
    """Tiny networks (checked against Keras in test_engine_keras.py) through the CLI."""
    from napari_blendphot.report.results import read_results

    built = tiny_models(tmp_path_factory)
    out = tmp_path / "nets"
    argv = ["predict", str(dataset_dir), "--methods", "blend2flux,unet,blend2mask2flux", "-o", str(out),
            "--backend", "tensorflow", "--chunk-size", "4"]
    for name in ("blend2flux", "unet", "blend2mask2flux"):
        argv += ["--weights", f"{name}={built['paths'][name]}"]
    assert main(argv) == 0
    table = read_results(tmp_path / "nets.csv")
    assert len(table) == 7 and table.meta["methods"] == ["blend2flux", "unet", "blend2mask2flux"]
    for name in ("blend2flux", "blend2mask2flux"):  # FluxOutput makes positive fluxes
        assert np.all(np.asarray(table[f"g1_flux_{name}"]) > 0) and np.all(np.asarray(table[f"g2_flux_{name}"]) > 0)
    for name in ("unet", "blend2mask2flux"):
        values = np.concatenate([np.asarray(table[f"g1_iou_{name}"]), np.asarray(table[f"g2_iou_{name}"])])
        assert np.all(np.isnan(values) | ((values >= 0) & (values <= 1)))
    assert "g1_iou_blend2flux" not in table.colnames
    meta = table.meta["provenance"]["parameters"]
    assert meta["keras_backend"] == "tensorflow"
    from napari_blendphot.provenance import sha256_file

    assert meta["method_metadata"]["unet"]["sha256"] == sha256_file(built["paths"]["unet"])
    assert "tensorflow" not in sys.modules and "jax" not in sys.modules


def test_predict_without_weights_fails_before_starting_a_worker(dataset_dir, tmp_path, capsys, monkeypatch):
    import napari_blendphot.models.manifests as model_registry
    from napari_blendphot.deblend import engine

    monkeypatch.setattr(model_registry, "default_model", lambda method, weights_dir=None: None)
    started = []
    monkeypatch.setattr(engine.InferenceEngine, "_ensure_worker", lambda self: started.append(1))
    assert main(["predict", str(dataset_dir), "--methods", "sep,unet", "-o", str(tmp_path / "r.csv")]) == 2
    assert "method 'unet': no shipped model is installed for it (give weights with --weights unet=PATH)" in \
        capsys.readouterr().err
    assert not started


def test_predict_precision_option_is_used_and_recorded(dataset_dir, tmp_path, tmp_path_factory):
    """--precision bfloat16 runs the networks in bfloat16: fluxes close to float32's, and recorded."""
    from napari_blendphot.report.results import read_results

    built = tiny_models(tmp_path_factory)
    tables = {}
    for precision in ("float32", "bfloat16"):
        out = tmp_path / precision
        assert main(["predict", str(dataset_dir), "--methods", "sep,blend2flux", "-o", str(out), "--backend",
                     "tensorflow", "--precision", precision,
                     "--weights", f"blend2flux={built['paths']['blend2flux']}"]) == 0
        tables[precision] = read_results(tmp_path / f"{precision}.csv")
    for precision, table in tables.items():
        method_metadata = table.meta["provenance"]["parameters"]["method_metadata"]
        assert method_metadata["blend2flux"]["precision"] == precision
        assert "precision" not in method_metadata["sep"]
    for column in ("g1_flux_blend2flux", "g2_flux_blend2flux"):
        fast, exact = np.asarray(tables["bfloat16"][column]), np.asarray(tables["float32"][column])
        assert not np.array_equal(fast, exact)
        np.testing.assert_allclose(fast, exact, rtol=0.05)
    np.testing.assert_array_equal(np.asarray(tables["bfloat16"]["g1_flux_sep"]),
                                  np.asarray(tables["float32"]["g1_flux_sep"]))


def test_predict_refuses_an_unknown_precision(dataset_dir, tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["predict", str(dataset_dir), "--methods", "blend2flux", "-o", str(tmp_path / "x"),
              "--precision", "float16"])
    assert "invalid choice: 'float16'" in capsys.readouterr().err


def test_predict_tta_goes_to_the_networks_and_is_recorded(dataset_dir, tmp_path, tmp_path_factory, capsys):
    from napari_blendphot.report.results import read_results

    built = tiny_models(tmp_path_factory)
    out = tmp_path / "tta"
    assert main(["predict", str(dataset_dir), "--methods", "sep,blend2flux", "-o", str(out), "--backend",
                 "tensorflow", "--tta", "4", "--weights", f"blend2flux={built['paths']['blend2flux']}"]) == 0
    method_metadata = read_results(tmp_path / "tta.csv").meta["provenance"]["parameters"]["method_metadata"]
    assert method_metadata["blend2flux"]["tta"] == 4 and "tta" not in method_metadata["sep"]
    # A --tta that no chosen method takes: one line, nothing started.
    assert main(["predict", str(dataset_dir), "--methods", "sep", "-o", str(tmp_path / "x"), "--tta", "8"]) == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert "argument --tta 8: none of the methods sep takes it" in error and not (tmp_path / "x.csv").exists()
