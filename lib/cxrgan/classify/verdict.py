"""The study's verdict shape (docs/study-protocol.md) for any set of train_resnet runs, so a user's own `make all`
reads like the study: each synthetic arm against every control arm of the same real fraction (real alone, and
each count-matched control of ``arms.ARMS``), on the pooled test images (the internal test set and every extra
test set, by image name), with an intersection-union decision: synthetic data *helps* only if it beats every
control, since beating real alone could come from showing the real images again.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import UserError
from . import stats

HELPS, HURTS, UNDECIDED = "helps", "hurts", "no detectable difference"


def pooled_predictions(run: Path, sets: tuple[int, ...] | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A run's test images over its internal and extra test sets: (names, labels, scores (runs, n)). ``sets``:
    only these test sets (0 the internal one, j + 1 extra set j); None: all."""
    f = Path(run) / "predictions.npz"
    try:
        with np.load(f) as z:
            parts = [(z["names"], z["y"], z["scores"])]
            for j in range(len(z["extra_tests"]) if "extra_tests" in z.files else 0):
                parts.append((z[f"extra{j}_names"], z[f"extra{j}_y"], z[f"extra{j}_scores"]))
    except (OSError, ValueError, KeyError) as e:
        raise UserError(f"{f}: unreadable predictions ({e}); re-run train_resnet there") from None
    if sets is not None:
        if any(not 0 <= i < len(parts) for i in sets):
            raise UserError(f"{f} holds {len(parts)} test set(s); asked for set(s) {list(sets)}")
        parts = [parts[i] for i in sets]
    names, y, scores = zip(*parts)
    return np.concatenate(names).astype(str), np.concatenate(y), np.concatenate(scores, axis=1)


def combined_predictions(runs: Path | list[Path], sets: tuple[int, ...] | None = None
                         ) -> tuple[np.ndarray, np.ndarray, np.ndarray, list | None]:
    """One arm's pooled predictions over one run folder, or over several (e.g. one per generator, each trained on
    its own samples): (names, labels, scores of every run of every folder, the folder index of each run, None for
    one folder). Every folder must hold the same test images."""
    folders = [Path(runs)] if isinstance(runs, (str, Path)) else [Path(r) for r in runs]
    names, y, scores = pooled_predictions(folders[0], sets)
    parts, groups = [scores], [0] * len(scores)
    index = {n: i for i, n in enumerate(names)}
    for g, folder in enumerate(folders[1:], 1):
        n_g, y_g, s_g = pooled_predictions(folder, sets)
        if sorted(n_g) != sorted(names):
            raise UserError(f"{folder} and {folders[0]} were evaluated on different test images; use the same sets")
        order = np.array([index[n] for n in n_g])
        aligned = np.empty_like(s_g)
        aligned[:, order] = s_g
        parts.append(aligned)
        groups += [g] * len(s_g)
    return names, y, np.concatenate(parts), (groups if len(folders) > 1 else None)


def paired_on_shared_images(control: Path | list[Path], synthetic: Path | list[Path], n_boot: int, seed: int,
                            level: float, sets: tuple[int, ...] | None = None) -> dict:
    """``synthetic`` against ``control`` on the test images both were evaluated on (matched by name, with equal
    labels): the seed-aware paired interval of ``stats.paired_bootstrap_auroc``. An arm given as several folders
    (one per generator) has its runs grouped by folder, so its interval holds over generator retraining."""
    names_a, y_a, a, groups_a = combined_predictions(control, sets)
    names_b, y_b, b, groups_b = combined_predictions(synthetic, sets)
    index = {n: i for i, n in enumerate(names_b)}
    shared = [i for i, n in enumerate(names_a) if n in index]
    ia, ib = np.array(shared, int), np.array([index[names_a[i]] for i in shared], int)
    if len(shared) == 0 or not np.array_equal(y_a[ia], y_b[ib]):
        raise UserError(f"{control} and {synthetic} share no test images with the same labels; evaluate both arms "
                        "on the same test sets")
    res = stats.paired_bootstrap_auroc(y_a[ia], a[:, ia], b[:, ib], n_boot, seed, level, groups_a=groups_a,
                                       groups_b=groups_b)
    return {**res, "n_test": len(shared), "auroc_control": float(np.mean([stats.auroc(y_a[ia], s) for s in a[:, ia]])),
            "auroc_synthetic": float(np.mean([stats.auroc(y_b[ib], s) for s in b[:, ib]]))}


def decide(comparisons: dict[str, dict]) -> str:
    """The intersection-union decision over one synthetic arm's comparisons with every control."""
    if comparisons and all(c["ci95"][0] > 0 for c in comparisons.values()):
        return HELPS
    if any(c["ci95"][1] < 0 for c in comparisons.values()):
        return HURTS
    return UNDECIDED


def overall(decisions: list[str]) -> str:
    """The study's rule over several synthetic arms (each decided by ``decide`` at a Bonferroni level): synthetic
    data helps if one arm beats every control, hurts if every arm loses to some control, else no detectable
    difference (docs/study-protocol.md, "Decision rule")."""
    if HELPS in decisions:
        return HELPS
    if decisions and all(d == HURTS for d in decisions):
        return HURTS
    return UNDECIDED


def primary(synthetic: Path | list[Path], controls: dict[str, Path | list[Path]], n_boot: int = 2000, seed: int = 0,
            level: float = 0.95, sets: tuple[int, ...] | None = None) -> dict:
    """One synthetic arm (a run folder, or one per generator) against every control (``controls``: name -> run
    folder(s)): each comparison, the decision,
    and the comparison with the best control (the highest pooled mean AUROC), whose interval's half-width says how
    large a difference the run could have missed."""
    comparisons = {name: paired_on_shared_images(run, synthetic, n_boot, seed, level, sets)
                   for name, run in controls.items()}
    if not comparisons:
        raise UserError(f"{synthetic}: no control arm to compare with; train the real arm (make classify)")
    best = max(comparisons, key=lambda k: comparisons[k]["auroc_control"])
    lo, hi = comparisons[best]["ci95"]
    return {"comparisons": comparisons, "decision": decide(comparisons), "best_control": best,
            "half_width": (hi - lo) / 2, "level": level}
