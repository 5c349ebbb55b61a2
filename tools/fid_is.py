#!/usr/bin/env python3
"""How close are generated chest X-rays to real ones (FID, IS, KID, precision/recall), and was anything copied?"""

import textwrap
import time

from cxrgan import cli
from cxrgan.metrics import networks
from cxrgan.metrics.evaluate import QualityConfig, evaluate, metric_columns


def fid_is(cfg: QualityConfig, call_args: dict):
    """Score generated images against real ones, per class and overall, and audit them for memorisation.

    Writes OUT (JSON) with flat keys fid, is_mean, is_std, kid_mean, kid_std, precision, recall, pixel_diversity
    (median pairwise pixel distance among generated images over the same among real ones), n_real, n_fake,
    near_copies, near_copy_threshold (pixel space) and near_copies_features, near_copy_threshold_features, plus
    per_class, warnings, the feature network, input hashes and arguments; beside it the closest generated/training
    pairs (OUT-closest-pixels.png, OUT-closest-features.png) and distance histograms (OUT-audit-*.png).
    FID with fewer than 2,048 images per side is flagged in "warnings": it is biased upward at small N.

    Args:
        real: real images, FILE.h5[:split] (default split: test).
        fake: generated images, a samples file FILE.h5[:split] (default outputs/synthetic.h5, split synthetic).
        out: JSON to write (default outputs/metrics/fid_is.json).
        features: the feature network, {feature_usages} (the rows of lib/cxrgan/metrics/networks.py):
            {feature_nets}.
        inception_weights: local copy of pt_inception-2015-12-05-6726825d.pth (pytorch-fid) or torch-fidelity's
            weights-inception-2015-12-05-6726825d.pth; default: download once into the torch hub cache.
        train: real training images for the memorisation audit, FILE.h5[:split] (default: --real's train split).
        audit: run the memorisation audit (default on; --noaudit skips it).
        per_class: also score each class (default on).
        kid_subsets: KID random subsets (default 100).
        kid_subset_size: images per KID subset (default 1000, or all when fewer).
        k: neighbourhood size of precision/recall (default 3).
        is_splits: Inception Score splits (default 10).
        near_copy_quantile: near-copy threshold as a quantile of held-out real-to-train distances (default 0.01).
        cache: feature cache folder (default ~/.cache/cxrgan/features; "" disables).
        batch: images per network call (default 64).
        seed: seed of the KID subsets and the IS shuffle.
        device: auto, cpu, cuda or cuda:N.
        overwrite: replace an existing --out (default off: an existing file is refused).
    """
    t0 = time.perf_counter()
    with cli.progress_bars() as progress:
        s = evaluate(cfg, call_args, progress)
    cli.console.print(summary_table(s))
    for w in s["warnings"]:
        cli.console.print(f"[yellow]warning:[/] {w}")
    if "near_copies" in s:
        cli.console.print(f"memorisation audit: {s['near_copies']} of {s['n_fake']} generated images are near-copies "
                          f"in pixel space, {s['near_copies_features']} in feature space ({s['near_copy_rule']})")
    cli.console.print(f"wrote {cfg.out} in {time.perf_counter() - t0:.0f} s ({s['features']['description']})")


def summary_table(s: dict):
    from rich.table import Table

    table = Table(title=f"generated vs real ({s['features']['network']} features)")
    cols = ["n_real", "n_fake", *(c.key for c in metric_columns())]
    table.add_column("set")
    for c in cols:
        table.add_column(c, justify="right")
    for scope, m in [("overall", s), *s["per_class"].items()]:
        table.add_row(scope, *("-" if m.get(c) is None else f"{m[c]:.4g}" if isinstance(m[c], float) else str(m[c])
                               for c in cols))
    return table


# the networks' help comes from their table (a new row shows up here)
fid_is.__doc__ = fid_is.__doc__.replace("{feature_usages}", networks.usages()).replace("{feature_nets}", textwrap.fill(
    networks.help_text(), 108, subsequent_indent=" " * 12, break_on_hyphens=False).lstrip())
main = cli.command(QualityConfig, fid_is)

if __name__ == "__main__":
    cli.run(main, name="fid_is.py")
