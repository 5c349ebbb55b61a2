#!/usr/bin/env python3
"""Write outputs/REPORT.md: did synthetic data help, how close are the images to real ones, was anything copied."""

from cxrgan import cli, options
from cxrgan.report import ReportConfig, build


def report(cfg: ReportConfig, call_args: dict):
    """Collect every result under OUTPUTS into one Markdown report with figures beside it (OUTPUTS/report/).

    Table 1: classifier runs (classify/**/metrics.json) with CIs and the paired test against their baseline;
    a data-efficiency plot when runs at several real fractions exist. Table 2: fid_is results (metrics/*.json) with
    N and the feature network, and the memorisation audit with its closest-pairs figures. Then real and generated
    sample grids per class (synthetic.h5), and for each GAN run (gan/*/summary.json) its progression grids and
    loss curves.

    Args:
        outputs: the pipeline's output folder (default outputs).
        out: report file (default OUTPUTS/REPORT.md).
        n_grid: images per class in the sample grids (default 16).
        seed: which random images the sample grids show.
        overwrite: replace an existing report (default off: an existing file is refused).
    """
    options.seed(cfg)
    path = build(cfg.outputs, cfg.out, cfg.n_grid, cfg.seed, cfg.overwrite)
    cli.console.print(f"wrote {path}")


main = cli.command(ReportConfig, report)

if __name__ == "__main__":
    cli.run(main, name="report.py")
