"""Is the ``cxr`` feature network (``make features``) a sound space for the image metrics? Checked against the space
used so far, the penultimate layer of a real-data ResNet-18 trained on nih-mini's 331 training images:

1. Real against real: per class, nih-mini's training images, and the external test set (nih64-extra's No Finding
   and Infiltration radiographs, other patients), each scored against the internal test images as if they were
   generated; and against the larger external set as the reference: a sound space gives high precision and
   recall, close to each other.
2. Known degradations of the real training images, scored against all real test images (internal + external):
   blur, noise, a collapsed generator that repeats a few images, and phantoms mixed in. Every metric should worsen
   with each step of severity (FID and KID up, precision or recall down).
3. Downstream: a linear probe (L2 logistic regression on standardised features, fitted on the training split)
   separating No Finding from Infiltration, AUROC on the internal and the external test images; and for the cxr
   network its own Infiltration logit, which saw no two-class labels.

Writes the "cxr-features" section of docs/benchmarks.md.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # idle OpenMP threads sleep: the machine is shared

import fire
import numpy as np
import torch
import torchvision.transforms.functional as TF

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench/: the shared helper module, common.py
from common import log, nih_mini_and_external, record_start, show_table, work_dir, write_section  # noqa: E402
from cxrgan.classify import stats
from cxrgan.data.reader import H5ImageDataset
from cxrgan.metrics import scores
from cxrgan.metrics.features import feature_net

DEGRADATIONS = {  # family -> (severity label, function of (uint8 images, rng, phantom images) -> uint8 images)
    "blur (Gaussian sigma, px)": [(f"{s:g}", lambda x, rng, ph, s=s: _blur(x, s)) for s in (0.5, 1, 2)],
    "noise (sd, of 255)": [(f"{s:g}", lambda x, rng, ph, s=s: _noise(x, s, rng)) for s in (8, 16, 32)],
    "collapse (distinct images)": [(f"{n}", lambda x, rng, ph, n=n: _collapse(x, n, rng)) for n in (100, 30, 10)],
    "phantoms mixed in (share)": [(f"{p:g}", lambda x, rng, ph, p=p: _mix(x, ph, p, rng)) for p in (0.25, 0.5, 1)],
}
WORSE = {"fid": 1, "kid": 1, "precision": -1, "recall": -1}  # the direction each metric moves as images worsen
# what each family must worsen at every step: the two distances always; precision (fidelity) where images leave
# the real manifold; recall (coverage) where they stop covering it. A collapsed generator's images are real ones,
# so its precision need not fall; blurred images crowd the manifold's centre, where precision may even rise.
EXPECTED = {"blur (Gaussian sigma, px)": ("fid", "kid", "recall"),
            "noise (sd, of 255)": ("fid", "kid", "precision", "recall"),
            "collapse (distinct images)": ("fid", "kid", "recall"),
            "phantoms mixed in (share)": ("fid", "kid", "precision")}


def _blur(x: np.ndarray, sigma: float) -> np.ndarray:
    t = torch.from_numpy(x).float()[:, None]
    k = 2 * int(3 * sigma) + 1
    return TF.gaussian_blur(t, [k, k], [sigma, sigma])[:, 0].round().clamp(0, 255).to(torch.uint8).numpy()


def _noise(x: np.ndarray, sd: float, rng: np.random.Generator) -> np.ndarray:
    return np.clip(x + rng.normal(0, sd, x.shape), 0, 255).round().astype(np.uint8)


def _collapse(x: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    keep = rng.choice(len(x), n, replace=False)
    return x[keep[np.arange(len(x)) % n]]


def _mix(x: np.ndarray, phantoms: np.ndarray, share: float, rng: np.random.Generator) -> np.ndarray:
    out = x.copy()
    swap = rng.choice(len(x), round(share * len(x)), replace=False)
    out[swap] = phantoms[rng.choice(len(phantoms), len(swap), replace=len(swap) > len(phantoms))]
    return out


def datasets(work: Path) -> dict[str, H5ImageDataset]:
    """nih-mini's splits, the external test set and phantoms, all 64x64 (built once in ``work``)."""
    from cxrgan.data.phantoms import generate

    data, extra = nih_mini_and_external(work)
    phantoms = work / "phantoms-64.h5"
    if not phantoms.exists():
        generate(phantoms, n=400, size=64, seed=0)
    sets = {s: H5ImageDataset(data, s, in_memory=True) for s in ("train", "val", "test")}
    return {**sets, "external": H5ImageDataset(extra, "test", in_memory=True),
            "phantoms": H5ImageDataset(phantoms, "train", in_memory=True)}


def real_classifier(work: Path, data: Path) -> Path:
    """The old space: train_resnet's real-data ResNet-18 on nih-mini at 64x64 (seed 0), trained once."""
    from cxrgan.classify.train import ClassifierConfig, run

    out = work / "real-classifier"
    if not (out / "metrics.json").is_file():
        run(ClassifierConfig(data=str(data), out=str(out), size=64, epochs=15, device="cpu", overwrite=True))
    return out / "model-seed0.pt"


def set_scores(real: np.ndarray, fake: np.ndarray, k: int, seed: int) -> dict:
    precision, recall = scores.precision_recall(real, fake, k)
    kid, _ = scores.kid(real, fake, 100, 1000, seed=seed)
    return {"fid": scores.fid(real, fake), "kid": kid, "precision": precision, "recall": recall}


def probe_auroc(train_f: np.ndarray, train_y: np.ndarray, tests: list[tuple[np.ndarray, np.ndarray]],
                l2: float = 1e-2) -> list[float]:
    """An L2 logistic regression on standardised features (LBFGS), its AUROC on each test set."""
    mu, sd = train_f.mean(0), train_f.std(0) + 1e-6
    x = torch.from_numpy((train_f - mu) / sd).double()
    y = torch.from_numpy(train_y.astype(np.float64))
    w = torch.zeros(x.shape[1], dtype=torch.float64, requires_grad=True)
    b = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], max_iter=500)

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(x @ w + b, y) + l2 * (w * w).sum()
        loss.backward()
        return loss
    opt.step(closure)
    with torch.no_grad():
        return [stats.auroc(ty, (torch.from_numpy((tf - mu) / sd).double() @ w + b).numpy()) for tf, ty in tests]


def main(features: str = "outputs/features/cxr.pt", classifier: str = None, k: int = 3, seed: int = 0,
         workdir: str = None, out: str = None):
    """Score the cxr network at ``features`` (and the real-data ResNet-18 ``classifier``, trained here when not
    given); write the section (``out`` another file; "" none)."""
    record_start()
    torch.manual_seed(seed)
    work = work_dir(workdir, "cxr-features")
    sets = datasets(work)
    spaces = {"cxr network": f"cxr:{features}",
              "real-data ResNet-18": f"classifier:{classifier or real_classifier(work, sets['train'].path)}"}
    rows_real, rows_deg, rows_probe = [], [], []
    for space, spec in spaces.items():
        log(f"{space}: {spec}")
        net = feature_net(spec, device="cpu")
        feats = {name: net(ds.images)[0] for name, ds in sets.items()}
        rows_real += real_rows(space, sets, feats, k, seed)
        rows_deg += degradation_rows(space, net, sets, feats, k, seed)
        rows_probe.append(probe_row(space, net, sets, feats))
    write(rows_real, rows_deg, rows_probe, features, k, out)


# (scored set, reference set): the internal test split as the reference (as the quality tables use it), and the
# external set as a larger one (268 Infiltration images against 27), which tells a space's fault from a reference
# too small to outline a varied class
REAL_PAIRS = (("train", "test"), ("external", "test"), ("train", "external"), ("test", "external"))
SET_NAMES = {"train": "train", "test": "internal test", "external": "external"}


def real_rows(space: str, sets: dict, feats: dict, k: int, seed: int) -> list[list[str]]:
    rows = []
    for c, cls in enumerate(sets["train"].classes):
        for name, ref in REAL_PAIRS:
            scored, reference = feats[name][sets[name].labels == c], feats[ref][sets[ref].labels == c]
            s = set_scores(reference, scored, k, seed)
            rows.append([space, cls, f"{SET_NAMES[name]} ({len(scored)}) vs {SET_NAMES[ref]} ({len(reference)})",
                         f"{s['precision']:.3f}", f"{s['recall']:.3f}", f"{s['kid']:.3g}", f"{s['fid']:.3g}"])
    return rows


def degradation_rows(space: str, net, sets: dict, feats: dict, k: int, seed: int) -> list[list[str]]:
    """Each family's severities in order, starting from the undegraded training images; a last cell per metric
    says whether it moved the worse way at every step."""
    real = np.concatenate([feats["test"], feats["external"]])
    base = set_scores(real, feats["train"], k, seed)
    rows = [[space, "none (the real training images)", "–", *(f"{base[m]:.4g}" for m in WORSE), ""]]
    for family, steps in DEGRADATIONS.items():
        rng = np.random.default_rng(seed)
        chain = [base]
        for label, degrade in steps:
            imgs = degrade(sets["train"].images, rng, sets["phantoms"].images)
            chain.append(set_scores(real, net(imgs)[0], k, seed))
            rows.append([space, family, label, *(f"{chain[-1][m]:.4g}" for m in WORSE), ""])
        bad = [m for m in EXPECTED[family]
               if not all(WORSE[m] * (b[m] - a[m]) >= 0 for a, b in zip(chain, chain[1:]))]
        rows[-1][-1] = f"{'yes' if not bad else 'NO: ' + ', '.join(bad)} ({', '.join(EXPECTED[family])})"
    return rows


def probe_row(space: str, net, sets: dict, feats: dict) -> list[str]:
    tests = [(feats["test"], sets["test"].labels), (feats["external"], sets["external"].labels)]
    internal, external = probe_auroc(feats["train"], sets["train"].labels, tests)
    own = "–"
    if space == "cxr network":
        from cxrgan.metrics import cxr

        column = cxr.FINDINGS.index("Infiltration")
        logits = [net.model.model(net.prepare(torch.from_numpy(ds.images)))[:, column].detach().numpy()
                  for ds in (sets["test"], sets["external"])]
        own = f"{stats.auroc(sets['test'].labels, logits[0]):.3f} / {stats.auroc(sets['external'].labels, logits[1]):.3f}"
    return [space, f"{internal:.3f}", f"{external:.3f}", own]


def write(rows_real, rows_deg, rows_probe, features: str, k: int, out: str | None) -> None:
    from cxrgan.metrics import cxr

    _, meta = cxr.load(features)
    kept = meta.get("kept_epoch")
    hist = meta["history"][kept - 1] if kept else meta["history"][-1]
    t1 = show_table("real against real", ["space", "class", "scored set", "precision", "recall", "KID", "FID"],
                    rows_real)
    t2 = show_table("degradations", ["space", "degradation", "severity", "FID", "KID", "precision", "recall",
                                     "worse at every step (expected of)"], rows_deg)
    t3 = show_table("downstream", ["space", "linear probe AUROC, internal test (90)", "external test (330)",
                                   "own Infiltration logit, internal / external"], rows_probe)
    inputs = " and ".join(f"{r['n']} from {Path(r['path']).name}:{r['split']}" for r in meta["trained_on"])
    body = f"""The cxr feature network of `make features FEATURES_EXTRA=../shared/data/nih64-extra` (`{features}`:
a {meta['width']}-wide CNN at 64x64, multi-label over NIH's 14 findings, trained on real radiographs in no test
set ({inputs}: nih-mini's training split and nih64-extra's radiographs with other findings), {meta['n_val']} of them
held out by patient for monitoring; kept epoch {kept} of {len(meta['history'])}: validation loss
{hist['val_loss']}, macro-AUROC over findings {hist['val_macro_auroc']}), against the space used so far (the
penultimate layer of train_resnet's real-data ResNet-18, seed 0, on nih-mini at 64x64). Precision and recall:
k = {k} nearest neighbours; KID: polynomial kernel, 100 subsets.

**Real against real** (per class; a sound space scores real images high and alike; "A vs B": A scored as if
generated, B the reference whose k-NN balls outline the real manifold):

{t1}

**Degradations** of the 331 real training images, scored against all 420 real test images (internal 90 +
external 330, both classes). The last column: did every metric the family is expected to worsen (in brackets)
move the worse way at every step, from the undegraded row (FID, KID up; precision, recall down)? FID and KID always;
precision where images leave the real manifold (noise, phantoms); recall where they stop covering it (blur,
noise, collapse). A collapsed generator's images are real ones, so its precision need not fall. The scale of FID
and KID depends on the space (the cxr network's features are small in magnitude): compare rows within a space.

{t2}

**Downstream** (No Finding vs Infiltration): a linear probe on each space's features, fitted on nih-mini's
training split; and the cxr network's own Infiltration logit, which never saw the two-class labels:

{t3}

FID_xrv (torchxrayvision's DenseNet-121) could not be reported beside it: its weights cannot be downloaded on
this machine. A user who has them gets it with `make metrics XRV=1 XRV_WEIGHTS=PATH`.
"""
    write_section("cxr-features", "A chest X-ray feature space for the image metrics: validation", body, out)


if __name__ == "__main__":
    fire.Fire(main)
