"""``blendphot calibrate-errors``: fit and apply the recalibration of methods' flux errors.

``fit`` reads a results table of *held-out* blends (not the ones the errors
will be judged on) and writes the per-method, per-role error model of
:mod:`napari_blendphot.metrics.calibration` as JSON; ``apply`` writes a copy
of another results table with the calibrated ``g?_flux_err_<m>`` (the raw
errors kept as ``g?_flux_err_raw_<m>``) and the 95% multiples ``k95`` in its
metadata.  The networks carry their own calibration in their manifests; this
is for SEP and the other classical methods (docs/uncertainty.md).
"""

from __future__ import annotations

from napari_blendphot.cli._common import add_overwrite


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "calibrate-errors",
        help="fit on held-out results, or apply, the recalibration of methods' flux errors",
        description="Recalibrate per-galaxy flux errors: 'fit' writes the error model "
                    "sqrt((a err)^2 + (b flux)^2 + (c flux_neighbour)^2) per method and galaxy role, scaled "
                    "per bin of predicted pair magnitude difference so that 68.3%% of held-out galaxies lie "
                    "within +-1 error in each bin of true pair magnitude difference, with the 95%% multiple "
                    "k95; 'apply' writes a results table with the calibrated errors.",
    )
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    fit = actions.add_parser("fit", help="fit a calibration on a results table of held-out blends")
    fit.add_argument("results", nargs="+", help="results table(s) (.csv or .fits) of calibration blends; "
                     "several are fitted as one (same methods and tta)")
    fit.add_argument("-o", "--output", required=True, metavar="CALIBRATION.json")
    fit.add_argument("--methods", help="comma-separated methods (default: all of the table's)")
    add_overwrite(fit)
    fit.set_defaults(func=_fit)
    apply = actions.add_parser("apply", help="write a results table with calibrated errors")
    apply.add_argument("results", help="results table to calibrate")
    apply.add_argument("calibration", help="CALIBRATION.json written by 'fit'")
    apply.add_argument("-o", "--output", required=True, metavar="RESULTS", help="new results table (CSV + FITS)")
    add_overwrite(apply)
    apply.set_defaults(func=_apply)


def _fit(args) -> int:
    from napari_blendphot.errors import check_output_path
    from napari_blendphot.metrics.calibration import fit_calibration, stack_results
    from napari_blendphot.provenance import make_provenance
    from napari_blendphot.report.results import read_results

    check_output_path(args.output, args.overwrite)
    table = stack_results([read_results(path) for path in args.results], args.results)
    methods = None if not args.methods else [m.strip() for m in args.methods.split(",") if m.strip()]
    sources = args.results[0] if len(args.results) == 1 else list(args.results)
    provenance = make_provenance("calibrate-errors", inputs={"results": sources})
    calibration = fit_calibration(table, methods, provenance=provenance)
    calibration.save(args.output, overwrite=args.overwrite)
    for method, roles in calibration.parameters.items():
        for role, p in roles.items():
            scales = p.get("dmag_scales")
            bins = f"  dmag scales {min(scales):.2f}-{max(scales):.2f}" if scales else ""
            print(f"{method:<18}{role:<10} a {p['a']:.3g}  b {p['b']:.3g}  c {p.get('c', 0.0):.3g}  "
                  f"d {p.get('d', 0.0):.3g}{bins}  k95 {p['k95']:.2f}  (n {p['n']})")
    print(f"wrote {args.output}")
    return 0


def _apply(args) -> int:
    from napari_blendphot.metrics.calibration import FluxErrorCalibration
    from napari_blendphot.report.results import check_results_output, read_results, write_results

    check_results_output(args.output, args.overwrite, inputs=[args.results, args.calibration])
    calibration = FluxErrorCalibration.load(args.calibration)
    table = calibration.apply(read_results(args.results))
    paths = write_results(table, args.output, overwrite=args.overwrite)
    print(f"wrote {', '.join(str(p) for p in paths)} (calibrated: "
          f"{', '.join(table.meta['flux_error_calibration']['methods']) or 'no method of the table'})")
    return 0
