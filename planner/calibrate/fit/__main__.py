"""``python -m planner.calibrate.fit MICROBENCH.json [...] --out FILE.yaml``: fit a GPU's calibration file.

The command every shipped ``vllm-0.33-<gpu>.yaml`` names in its ``# Fitted by:`` header (it was
``planner/calibrate/fit.py`` before issue 14; the command line is the same). The constants, how each is fitted
and from which file: ``planner.calibrate.fit`` (package docstring).
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from planner.calibrate.fit.calibration_file import calibration_yaml
from planner.calibrate.fit.measurements import fit_files
from planner.calibrate.fit.sibling import sibling_calibration
from planner.catalog.calibration_schema import Calibration
from planner.catalog.loader import catalog_root
from planner.core.errors import PlannerError


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m planner.calibrate.fit",
                                 description="fit vlmplan speed-model constants to microbenchmarks")
    ap.add_argument("microbench", type=Path)
    ap.add_argument("--allreduce", type=Path, default=None)
    ap.add_argument("--gpu", default=None, help="catalog GPU name (default: from the file's nvidia-smi name)")
    ap.add_argument("--shape-effects", type=Path, default=None,
                    help="shape_effects.py output (unaligned GEMMs, batched attention); may come from a sibling GPU")
    ap.add_argument("--vit-shapes", type=Path, action="append", default=[],
                    help="vit_shapes.py output of the same GPU (repeatable: the sections of all files are pooled)")
    ap.add_argument("--quant-ops", type=Path, default=None,
                    help="quant_ops.py output of the same GPU (the reference's dynamic fp8 quantisation)")
    ap.add_argument("--sibling", default=None,
                    help="fitted calibration of a GPU with the same die (catalog name, e.g. H100-SXM-80GB): the "
                         "constants this GPU has no run for are transferred from it (SIBLING_TRANSFER)")
    ap.add_argument("--out", type=Path, default=None)
    return ap


def _fitted_by(args: argparse.Namespace) -> str:
    """The header line that records the command, so that the file says how to refit it."""
    return (f"Fitted by: python -m planner.calibrate.fit {args.microbench}"
            + (f" --allreduce {args.allreduce}" if args.allreduce else "")
            + (f" --shape-effects {args.shape_effects}" if args.shape_effects else "")
            + "".join(f" --vit-shapes {p}" for p in args.vit_shapes)
            + (f" --quant-ops {args.quant_ops}" if args.quant_ops else "")
            + (f" --sibling {args.sibling}" if args.sibling else ""))


FITTED_BY = "# Fitted by: python -m planner.calibrate.fit "
"""How the first line of a calibration file written by this command starts."""


def fit_from_args(args: argparse.Namespace) -> Calibration:
    """The calibration this command fits from its parsed arguments (what ``main`` writes)."""
    return fit_files(args.microbench, args.allreduce, args.gpu, shape_effects=args.shape_effects,
                     vit_shapes=args.vit_shapes, quant_ops=args.quant_ops,
                     sibling=sibling_calibration(args.sibling) if args.sibling else None)


def refit(calibration_file: Path) -> Calibration:
    """Re-run the fit that the ``# Fitted by:`` line heading ``calibration_file`` records, in this process, its
    paths read from the repository root as the line gives them."""
    first = calibration_file.read_text().splitlines()[0]
    if not first.startswith(FITTED_BY):
        raise ValueError(f"{calibration_file}: no '{FITTED_BY.strip()}' line at the top")
    args = _parser().parse_args(shlex.split(first[len(FITTED_BY):]))
    root = catalog_root().parent
    for key in ("microbench", "allreduce", "shape_effects", "quant_ops"):
        if getattr(args, key) is not None:
            setattr(args, key, root / getattr(args, key))
    args.vit_shapes = [root / p for p in args.vit_shapes]
    return fit_from_args(args)


def _print_fitted(cal: Calibration) -> None:
    """One line per fitted constant on stderr: value, unit, MAPE and points, to eyeball the fit."""
    for name, c in cal.constants.items():
        if c.fit is not None:
            mape = f"{c.fit.mape_pct:.1f}%" if c.fit.mape_pct is not None else "-"
            edge = f"  AT {c.fit.at_bound.upper()} BOUND {c.fit.bound:g}" if c.fit.at_bound else ""
            if c.fit.unbounded_value is not None:
                edge += f" (unbounded: {c.fit.unbounded_value:g})"
            print(f"{name:40s} {c.value:>12g} {c.unit:40s} MAPE {mape:>6s} n={c.fit.n_points}{edge}",
                  file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    """Fit, write the YAML (to ``--out`` or stdout), summarise on stderr; exit 2 with one line on bad input."""
    args = _parser().parse_args(argv)
    try:
        cal = fit_from_args(args)
    except (PlannerError, OSError, ValueError) as e:
        print(f"error: {e}".replace("\n", " "), file=sys.stderr)
        return 2
    text = calibration_yaml(cal, _fitted_by(args))
    if args.out:
        args.out.write_text(text)
    else:
        print(text)
    _print_fitted(cal)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
