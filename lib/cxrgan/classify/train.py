"""train_resnet's protocol: ResNet-18 on real images (optionally plus synthetic ones), selected and stopped early
on the real validation split only, evaluated on real test images, repeated over seeds, with confidence intervals.

Synthetic images only ever enter training: validation and test sets are real, and this is asserted by name.
"""

from __future__ import annotations

import copy
import datetime as _dt
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from .. import options, runtime
from ..cli import REPEATABLE, ProgressFn, no_progress
from ..data.datasetfile import SAMPLES_SCHEMA, SCHEMA, generated_by, parse_ref, shared_patient
from ..data.reader import H5ImageDataset, to_model_input
from ..data.splits import patient_fraction
from ..errors import UserError
from ..faults import kill_point
from ..fileio import Staging, check_writable, remove_stale_temps_in, write_json
from . import model as classifier, provenance
from . import stats
from .arms import ARMS

SELECT = ("auroc", "loss", "last")
SCHEDULES = ("constant", "cosine")
SYNTHETIC_MODES = ("mix", "pretrain")


@dataclass
class ClassifierConfig:
    data: str
    out: str = "outputs/classify/real"
    synthetic: str | None = None
    synthetic_only: bool = False
    synthetic_ratio: float | None = None  # synthetic images per real training image, per class (default 1)
    synthetic_per_class: int | None = None
    control: str | None = None  # a row of arms.ARMS ("oversample", "augment"): the synthetic arm's control
    # how synthetic images train: "mix" (added to the real ones) or "pretrain" (the network first trains on them
    # alone for --pretrain-epochs, then fine-tunes on the real images with the usual selection)
    synthetic_mode: str = "mix"
    pretrain_epochs: int | None = None  # default: --epochs
    real_fraction: float = 1.0
    subset_seed: int = 0  # which patients --real-fraction keeps (the same for every training seed; nested fractions)
    test: str | None = None
    # more test sets, FILE.h5[:split] each (comma-separated, or the flag repeated): every model is evaluated on each
    test_extra: str | None = field(default=None, metadata={REPEATABLE: True})
    epochs: int = 20
    seeds: int = 1
    seed: int = 0
    size: int = 224
    batch: int = 32
    lr: float = 3e-4
    weight_decay: float = 1e-4
    patience: int = 5
    select: str = "auroc"  # which epoch is kept: best val "auroc", lowest val "loss", or the "last" (no stopping)
    schedule: str = "constant"  # learning rate: "constant", or "cosine" decay to 0 over --epochs
    ema: float = 0.0  # decay per step of an average of the weights (0: none); validated, kept and tested
    augment: bool = True
    arch: str = "resnet18"  # a row of model.BACKBONES
    pretrained: bool = False
    weights: str | None = None
    baseline: str | None = None  # one run folder, or several comma-separated (the first is "paired")
    n_boot: int = 1000
    device: str = "auto"
    overwrite: bool = False  # replace the results of an earlier run in --out

    def validate(self) -> "ClassifierConfig":
        options.whole_number(self, "epochs", "seeds", "batch", "patience", "n_boot")
        options.whole_number(self, "size", minimum=32, hint=" (the network's total stride; 224 is ResNet's own)")
        options.seed(self, "seed", "subset_seed")
        options.positive_number(self, "lr", maximum=1.0)
        if not isinstance(self.weight_decay, (int, float)) or isinstance(self.weight_decay, bool) \
                or not 0 <= self.weight_decay < 1:
            raise UserError(f"--weight-decay must be in [0, 1), got {self.weight_decay!r}")
        if self.n_boot < 10:
            raise UserError(f"--n-boot must be at least 10 (1000 is the default), got {self.n_boot}")
        if not isinstance(self.real_fraction, (int, float)) or not 0 < self.real_fraction <= 1:
            raise UserError(f"--real-fraction must be in (0, 1], got {self.real_fraction!r}")
        if self.synthetic_only and not self.synthetic:
            raise UserError("--synthetic-only needs --synthetic FILE.h5 (train on synthetic, test on real)")
        if self.synthetic_ratio is not None and self.synthetic_per_class is not None:
            raise UserError("give --synthetic-ratio or --synthetic-per-class, not both")
        if self.synthetic_ratio is not None:
            options.positive_number(self, "synthetic_ratio")
        options.one_of(self, "arch", tuple(classifier.BACKBONES))
        options.one_of(self, "select", SELECT)
        options.one_of(self, "schedule", SCHEDULES)
        options.one_of(self, "synthetic_mode", SYNTHETIC_MODES)
        if not isinstance(self.ema, (int, float)) or isinstance(self.ema, bool) or not 0 <= self.ema < 1:
            raise UserError(f"--ema must be in [0, 1) (0: no weight average; 0.99: about 100 steps), got {self.ema!r}")
        if self.synthetic_mode == "pretrain":
            if not self.synthetic or self.synthetic_only:
                raise UserError("--synthetic-mode pretrain needs --synthetic FILE.h5 (and not --synthetic-only): the "
                                "network trains on synthetic images first, then on the real ones")
            if self.pretrain_epochs is not None:
                options.whole_number(self, "pretrain_epochs")
        elif self.pretrain_epochs is not None:
            raise UserError("--pretrain-epochs applies to --synthetic-mode pretrain only")
        if self.control is not None:
            options.one_of(self, "control", tuple(ARMS))
            if self.synthetic:
                raise UserError("--control adds real copies in place of synthetic images; give it without "
                                "--synthetic (it is a separate arm, compared with the synthetic one)")
        out = Path(str(self.out))
        if out.exists() and not out.is_dir():
            raise UserError(f"--out {out} is a file; give a folder for the run")
        if (out / "metrics.json").exists() and not self.overwrite:
            raise UserError(f"--out {out} holds an earlier run's results; pass --overwrite to replace them, or "
                            "choose another --out")
        check_writable(out, "--out")
        return self

    def input_paths(self) -> dict:
        return {"--data": self.data, "--synthetic": _file_of(self.synthetic), "--test": _file_of(self.test),
                "--test-extra": [_file_of(r) for r in extra_test_refs(self)], "--weights": self.weights,
                "--baseline": baselines(self)}

    def output_paths(self) -> dict:
        return {"--out": self.out}


def _file_of(ref: str | None) -> str | None:
    return None if ref is None else parse_ref(str(ref), "")[0]


def extra_counts(real_counts: dict[int, int], cfg: ClassifierConfig) -> dict[int, int]:
    """How many extra images per class an arm adds: --synthetic-per-class, or --synthetic-ratio (default 1) times
    the real images of that class. The synthetic arm and its controls add the same numbers."""
    if cfg.synthetic_per_class is not None:
        return {c: cfg.synthetic_per_class for c in real_counts}
    ratio = cfg.synthetic_ratio if cfg.synthetic_ratio is not None else 1.0
    return {c: round(ratio * n) for c, n in real_counts.items()}


def control_copies(images: np.ndarray, labels: np.ndarray, cfg: ClassifierConfig, seed: int
                   ) -> tuple[np.ndarray, np.ndarray]:
    """The control arms' extra training images: as many as the synthetic arm would add, per class, re-drawn from
    the real training images (with replacement), then made into the arm's images by its row of ``ARMS`` (for
    ``augment``: each copy moved once by the classical augmentation; never a flip)."""
    rng = np.random.default_rng(seed + 104729)
    counts = extra_counts({c: int((labels == c).sum()) for c in np.unique(labels)}, cfg)
    idx = np.concatenate([rng.choice(np.flatnonzero(labels == c), n, replace=True) for c, n in counts.items()])
    copies = images[idx]
    if len(copies):
        copies = ARMS[cfg.control].make(copies, seed)
    return copies, labels[idx]


def _synthetic_subset(syn: H5ImageDataset, real_counts: dict[int, int], cfg: ClassifierConfig, seed: int) -> np.ndarray:
    """Which synthetic images join training: per class, ``--synthetic-per-class`` of them, or ``--synthetic-ratio``
    (default 1) times the real images of that class. Train-on-synthetic (``--synthetic-only``) without either uses
    as many as it can at the real training split's class ratio."""
    rng = np.random.default_rng(seed + 7919)
    avail = {c: np.flatnonzero(syn.labels == c) for c in real_counts}
    empty = [c for c, idx in avail.items() if len(idx) == 0 and real_counts[c] > 0]
    if empty:
        raise UserError(f"{cfg.synthetic} has no images of class {empty[0]}; sample every class (tools/sample.py "
                        "without --cls)")
    counts = extra_counts(real_counts, cfg)
    if cfg.synthetic_only and cfg.synthetic_per_class is None and cfg.synthetic_ratio is None:
        # the real class ratio, as many as the scarcest class allows (integer arithmetic: no rounding loss)
        c_min = min((c for c, n in real_counts.items() if n > 0), key=lambda c: len(avail[c]) / real_counts[c])
        counts = {c: len(avail[c_min]) * n // real_counts[c_min] for c, n in real_counts.items()}
    keep = []
    for c, n_real in real_counts.items():
        want = counts[c]
        avail_c = avail[c]
        if want > len(avail_c):
            raise UserError(f"{cfg.synthetic} has {len(avail_c)} images of class {c}, {want} wanted; sample more "
                            "(tools/sample.py --n) or lower --synthetic-ratio/--synthetic-per-class")
        keep.append(rng.choice(avail_c, want, replace=False))
    return np.sort(np.concatenate(keep))


def _batches(n: int, batch: int, gen: torch.Generator):
    perm = torch.randperm(n, generator=gen)
    return [perm[i:i + batch] for i in range(0, n, batch)]


@torch.no_grad()
def predict(model, images: np.ndarray, size: int, device, batch: int = 128) -> np.ndarray:
    """Probability of class 1 for uint8 images (n, H, W)."""
    model.eval()
    out = []
    for i in range(0, len(images), batch):
        x = to_model_input(torch.from_numpy(images[i:i + batch]).to(device))
        out.append(F.softmax(model(classifier.resize(x, size)).float(), dim=1)[:, 1].cpu())
    return torch.cat(out).numpy() if out else np.zeros(0)


def _training_set(cfg: ClassifierConfig, data: dict, seed: int) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """This seed's training images and labels (real, control copies, synthetic), and what they are made of."""
    train_ds, syn = data["train"], data["synthetic"]
    images, labels, names = [], [], []
    if not cfg.synthetic_only:
        idx = patient_fraction(train_ds.labels, train_ds.patient_ids, cfg.real_fraction, cfg.subset_seed)
        images.append(train_ds.images[idx]), labels.append(train_ds.labels[idx])
        names += [train_ds.names[i] for i in idx]
        real_counts = {c: int((train_ds.labels[idx] == c).sum()) for c in range(len(train_ds.classes))}
    else:
        real_counts = {c: int((train_ds.labels == c).sum()) for c in range(len(train_ds.classes))}
    n_synthetic = n_control = 0
    if cfg.control:
        copies, copy_labels = control_copies(np.concatenate(images), np.concatenate(labels), cfg, seed)
        images.append(copies), labels.append(copy_labels)
        n_control = len(copies)
    if syn is not None:
        sidx = _synthetic_subset(syn, real_counts, cfg, seed)
        images.append(syn.images[sidx]), labels.append(syn.labels[sidx])
        names += [syn.names[i] for i in sidx]
        n_synthetic = len(sidx)
    x_all, y_all = torch.from_numpy(np.concatenate(images)), torch.from_numpy(np.concatenate(labels))
    if len(x_all) < 2:  # batch norm needs two images per step: no step would be taken, the metrics meaningless
        raise UserError(f"{len(x_all)} training image(s) in this arm; a classifier needs at least 2 (raise "
                        "--real-fraction or add data)")
    held_out = set(data["val"].names) | set(data["test"].names) | {n for d in data["extra"] for n in d.names}
    leaked = held_out & set(names)
    if leaked:  # synthetic or training images must never be in validation or test
        raise UserError(f"{len(leaked)} training images also appear in validation/test (e.g. {sorted(leaked)[0]})")
    n_real = int(sum(real_counts.values())) if not cfg.synthetic_only else 0
    return x_all, y_all, {"n_train_real": n_real, "n_train_synthetic": n_synthetic, "n_train_control": n_control}


def _fit(cfg: ClassifierConfig, model, x_all: torch.Tensor, y_all: torch.Tensor, val_ds, device, seed: int,
         epochs: int, select: str, phase: str = "train") -> tuple[dict, float, int, list[dict]]:
    """Train up to ``epochs`` epochs, validating on the real validation split after each, and keep the epoch
    ``select`` picks (best val AUROC, lowest val loss, or the last; the first two stop after --patience epochs
    without a better one). With --ema the averaged weights are the ones validated and kept. Returns (kept state,
    its val AUROC, its epoch, history)."""
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    gen = torch.Generator().manual_seed(seed)
    steps = sum(len(b) >= 2 for b in _batches(len(x_all), cfg.batch, torch.Generator().manual_seed(0)))
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(1, epochs * steps)) if cfg.schedule == "cosine" \
        else None
    avg = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(cfg.ema), use_buffers=True) if cfg.ema else None
    judged = avg.module if avg is not None else model
    best, best_score, best_auc, best_epoch, history = None, -np.inf, float("nan"), 0, []
    for epoch in range(1, epochs + 1):
        where = f"seed{seed}-{'pretrain-' if phase == 'pretrain' else ''}epoch{epoch}"  # faults.py's kill points
        loss = _epoch(cfg, model, opt, sched, avg, x_all, y_all, device, gen, where)
        val_p = predict(judged, val_ds.images, cfg.size, device)
        val_auc, val_loss = stats.auroc(val_ds.labels, val_p), log_loss(val_ds.labels, val_p)
        history.append({"epoch": epoch, "phase": phase, "loss": loss, "val_auroc": val_auc, "val_loss": val_loss})
        score = {"auroc": val_auc, "loss": -val_loss, "last": epoch}[select]
        if score > best_score:
            best, best_score, best_auc, best_epoch = copy.deepcopy(judged.state_dict()), score, val_auc, epoch
        elif epoch - best_epoch >= cfg.patience:
            break
    return best, best_auc, best_epoch, history


def _epoch(cfg: ClassifierConfig, model, opt, sched, avg, x_all, y_all, device, gen, where: str) -> float:
    """One pass over the training images; the mean loss."""
    model.train()
    losses = []
    for b in _batches(len(x_all), cfg.batch, gen):
        if len(b) < 2:
            continue  # batch norm needs two images
        x = to_model_input(x_all[b].to(device))
        if cfg.augment:
            x = classifier.augment(x, gen)
        loss = F.cross_entropy(model(classifier.resize(x, cfg.size)), y_all[b].to(device))
        if not torch.isfinite(loss):
            raise UserError(f"classifier training diverged (loss {loss.item()}) at {where}; lower --lr")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if sched is not None:
            sched.step()
        if avg is not None:
            avg.update_parameters(model)
        losses.append(loss.item())
        kill_point(f"train_resnet:{where}-step{len(losses)}")
    return float(np.mean(losses)) if losses else float("nan")


def log_loss(y_true, p: np.ndarray) -> float:
    """Mean cross-entropy of probabilities ``p`` of class 1 (clipped away from 0 and 1)."""
    y, p = np.asarray(y_true).astype(bool), np.clip(np.asarray(p, np.float64), 1e-7, 1 - 1e-7)
    return float(-np.mean(np.where(y, np.log(p), np.log1p(-p))))


def _evaluate(model, ds: H5ImageDataset, cfg: ClassifierConfig, device, seed: int) -> tuple[np.ndarray, dict]:
    """One trained model on one test set: its scores, and every metric with its test-image interval."""
    scores = predict(model, ds.images, cfg.size, device)
    ci = stats.bootstrap_ci(ds.labels, scores, cfg.n_boot, seed)
    return scores, {**stats.binary_metrics(ds.labels, scores), **{f"{k}_ci95": v["ci95"] for k, v in ci.items()}}


def train_one(cfg: ClassifierConfig, k: int, data: dict, device, init_seed: int | None = None) -> dict:
    """Seed ``cfg.seed + k``'s model: it sets the initial weights (unless ``init_seed``, which a variance study uses
    to hold them fixed), the batches, the augmentation and which extra images join. With --synthetic-mode pretrain
    the network first trains on the synthetic images alone (its last epoch kept), then fine-tunes on the rest."""
    seed = cfg.seed + k
    torch.manual_seed(seed if init_seed is None else init_seed)
    x_all, y_all, counts = _training_set(cfg, data, seed)
    model = classifier.build(len(data["train"].classes), cfg.pretrained, cfg.weights, cfg.arch).to(device)
    history = []
    if cfg.synthetic_mode == "pretrain":  # the synthetic images come last in the training set
        n_syn = counts["n_train_synthetic"]
        if n_syn == 0:
            raise UserError("--synthetic-mode pretrain: no synthetic image was selected; raise --synthetic-ratio")
        pre, _, _, history = _fit(cfg, model, x_all[-n_syn:], y_all[-n_syn:], data["val"], device, seed,
                                  cfg.pretrain_epochs or cfg.epochs, "last", "pretrain")
        model.load_state_dict(pre)
        x_all, y_all = x_all[:-n_syn], y_all[:-n_syn]
    best, best_auc, best_epoch, tuned = _fit(cfg, model, x_all, y_all, data["val"], device, seed, cfg.epochs,
                                             cfg.select)
    model.load_state_dict(best)
    scores, metrics = _evaluate(model, data["test"], cfg, device, seed)
    extra = [_evaluate(model, d, cfg, device, seed) for d in data["extra"]]
    return {"seed": seed, "best_epoch": best_epoch, "val_auroc": best_auc, **counts, "history": history + tuned,
            **metrics, "extra_tests": [{"test": ref_of(d), **m} for d, (_, m) in zip(data["extra"], extra)],
            "scores": scores, "extra_scores": [sc for sc, _ in extra], "state": best}


def ref_of(ds: H5ImageDataset) -> str:
    return f"{ds.path}:{ds.split}"


def check_splits(data: dict, cfg: ClassifierConfig) -> None:
    """What a binary classifier's numbers rest on: two classes, both in every split and every extra test set, and no
    patient of a test set in training or validation (also when the test set comes from another file)."""
    train = data["train"]
    if len(train.classes) != 2:
        raise UserError(f"--data {cfg.data} has {len(train.classes)} classes {train.classes}; train_resnet is a binary "
                        "classifier (AUROC of class 1 against class 0): build a file of two classes")
    for d in (train, data["val"], data["test"], *data["extra"]):
        present = np.unique(d.labels)
        if len(present) == 0:
            raise UserError(f"the {d.split} set of {d.path} holds no images; rebuild the dataset with more data")
        if len(present) < 2:
            raise UserError(f"the {d.split} set of {d.path} holds only {train.classes[int(present[0])]!r} "
                            "images; a classifier needs both classes there (rebuild the dataset with more data)")
    ids = {ref_of(d): d.patient_ids for d in (train, data["val"], data["test"]) if d.patient_ids is not None}
    clash = shared_patient(ids)
    if clash:
        raise UserError(f"{clash}: the test images' patients must be kept out of training and validation; give a "
                        "--test file of other patients")
    check_extra_tests(data)


def check_extra_tests(data: dict) -> None:
    """An extra test set holds no image training uses (by name) and no patient of --data's train or val split."""
    used = set(data["train"].names) | set(data["synthetic"].names if data["synthetic"] is not None else [])
    fitted = {ref_of(d): d.patient_ids for d in (data["train"], data["val"]) if d.patient_ids is not None}
    for d in data["extra"]:
        both = used & set(d.names)
        if both:
            raise UserError(f"--test-extra {ref_of(d)}: {len(both)} of its images are training images (e.g. "
                            f"{sorted(both)[0]}); give a test set of images training never sees")
        clash = shared_patient({**fitted, f"--test-extra {ref_of(d)}": d.patient_ids}) \
            if d.patient_ids is not None else None
        if clash:
            raise UserError(f"{clash}: an extra test set's patients must be kept out of training and validation; "
                            "give a --test-extra file of other patients")


def _load(cfg: ClassifierConfig) -> dict:
    """The run's datasets, each checked against --data's image size and classes."""
    test_path, test_split = parse_ref(cfg.test or cfg.data, "test")
    data = {"train": H5ImageDataset(cfg.data, "train", in_memory=True, schemas=(SCHEMA,)),
            "val": H5ImageDataset(cfg.data, "val", in_memory=True, schemas=(SCHEMA,)),
            "test": H5ImageDataset(test_path, test_split, in_memory=True, schemas=(SCHEMA,)),
            "synthetic": None,
            "extra": [H5ImageDataset(*parse_ref(r, "test"), in_memory=True, schemas=(SCHEMA,))
                      for r in extra_test_refs(cfg)]}
    if cfg.synthetic:
        path, split = parse_ref(cfg.synthetic, "synthetic")
        data["synthetic"] = H5ImageDataset(path, split, in_memory=True, schemas=(SAMPLES_SCHEMA,))
    train = data["train"]
    for flag, d in (("--test", data["test"]), ("--synthetic", data["synthetic"]),
                    *(("--test-extra", d) for d in data["extra"])):
        if d is not None and (d.size != train.size or d.classes != train.classes):
            raise UserError(f"{flag} {d.path} holds {d.size}x{d.size} images of classes {d.classes}, but --data "
                            f"{cfg.data} holds {train.size}x{train.size} of {train.classes}; give files of one size "
                            "and class list")
    return data


def run(cfg: ClassifierConfig, call_args: dict | None = None, progress: ProgressFn = no_progress) -> dict:
    """Train ``cfg.seeds`` models and write the run folder. The progress task starts once the inputs have loaded
    and been checked (so a bad input gives just its error line) and advances after each seed."""
    cfg.validate()
    rt = runtime.setup(cfg.device)
    out = Path(cfg.out)
    data = _load(cfg)
    gan_data = None
    if data["synthetic"] is not None:
        gan_data = provenance.check_synthetic(data["synthetic"], data["train"],
                                              [data["val"], data["test"], *data["extra"]])
    check_splits(data, cfg)
    for b in baselines(cfg):  # before hours of training, not after
        if not (Path(b) / "predictions.npz").is_file():
            raise UserError(f"--baseline {b}: no predictions.npz (run train_resnet there first)")
        _same_arch(Path(b), cfg)
    if cfg.pretrained or cfg.weights:  # a bad weights file fails here, before the first seed's training
        classifier.BACKBONES[cfg.arch].build(len(data["train"].classes), cfg.pretrained, cfg.weights)
    remove_stale_temps_in(out)  # left by a run killed before it finished
    with Staging() as staged:  # nothing in --out changes until every file of this run is written
        runs = _train_seeds(cfg, data, rt.device, out, staged, progress)
        summary = _summary(cfg, data, runs, gan_data, call_args)
        with open(staged.path(out / "predictions.npz"), "wb") as f:
            np.savez(f, **_predictions(data, runs))
        staged.path(out / "metrics.md").write_text(markdown(summary))
        write_json(staged.path(out / "metrics.json"), summary)  # staged last, so renamed last
        kill_point("train_resnet:before-publish")
        _publish(out, staged, [r["seed"] for r in runs])
    return summary


def _predictions(data: dict, runs: list[dict]) -> dict[str, np.ndarray]:
    """predictions.npz: the test images' names, labels and every seed's scores; each extra test set's the same under
    ``extraJ_names``, ``extraJ_y``, ``extraJ_scores`` (J from 0, in the order of ``extra_tests``, their refs)."""
    arrays = {"names": np.array(data["test"].names), "y": data["test"].labels,
              "scores": np.stack([r["scores"] for r in runs]),
              "extra_tests": np.array([ref_of(d) for d in data["extra"]], dtype=str)}
    for j, d in enumerate(data["extra"]):
        arrays.update({f"extra{j}_names": np.array(d.names), f"extra{j}_y": d.labels,
                       f"extra{j}_scores": np.stack([r["extra_scores"][j] for r in runs])})
    return arrays


def _train_seeds(cfg: ClassifierConfig, data: dict, device, out: Path, staged: Staging, progress: ProgressFn
                 ) -> list[dict]:
    """Train every seed; each model is written (under a temp name in ``staged``) as soon as it is trained."""
    task = progress("seeds", cfg.seeds)
    runs = []
    for k in range(cfg.seeds):
        r = train_one(cfg, k, data, device)
        name = f"model-seed{r['seed']}.pt"
        classifier.save(staged.path(out / name), r.pop("state"), data["train"].classes, cfg.size, r["seed"], cfg.arch)
        kill_point(f"train_resnet:wrote-{name}")
        runs.append(r)
        task(1, info=f"seed {r['seed']}: test AUROC {r['auroc']:.3f}, best epoch {r['best_epoch']} (val AUROC "
                     f"{r['val_auroc']:.3f})")
    return runs


def _summary(cfg: ClassifierConfig, data: dict, runs: list[dict], gan_data, call_args: dict | None) -> dict:
    """metrics.json: the means over seeds with their intervals, each seed's results, comparisons, the config."""
    test_path, test_split = parse_ref(cfg.test or cfg.data, "test")
    y = data["test"].labels
    scores = np.stack([r["scores"] for r in runs])
    summary = {"n_test": int(len(y)), "n_seeds": cfg.seeds, "test": f"{test_path}:{test_split}"}
    if gan_data is not None:  # a GAN that saw patients this arm holds back would smuggle them in (data efficiency)
        leaks = [provenance.sees_more_real_data(g, cfg.real_fraction, cfg.subset_seed) for g in gan_data]
        widest = max(gan_data, key=lambda g: g["real_fraction"])
        summary["synthetic_trained_on"] = {**widest, "generators": gan_data, "sees_more_real_data": any(leaks),
                                           "recipe": generated_by(data["synthetic"].info.attrs)}
    summary.update(_over_seeds(y, scores, runs, cfg))  # ci_method first, then the metrics
    extra = [(ref_of(d), d.names, d.labels, np.stack([r["extra_scores"][j] for r in runs]))
             for j, d in enumerate(data["extra"])]
    summary["extra_tests"] = [{"test": ref, "n_test": int(len(y_x)),
                               **_over_seeds(y_x, s_x, [r["extra_tests"][j] for r in runs], cfg)}
                              for j, (ref, _, y_x, s_x) in enumerate(extra)]
    summary["per_seed"] = [{k: v for k, v in r.items() if k not in ("scores", "extra_scores", "state")} for r in runs]
    if cfg.baseline:
        summary["comparisons"] = [paired_with(Path(b), data["test"].names, y, scores, cfg, extra)
                                  for b in baselines(cfg)]
        summary["paired"] = summary["comparisons"][0]
    summary["config"] = {k: v for k, v in asdict(cfg).items()}
    # the content hash of every image set the runs read, so a result names the exact samples it was trained on
    sets = {"train": data["train"], "val": data["val"], "test": data["test"], "synthetic": data["synthetic"]}
    summary["inputs"] = {role: {"file": ref_of(d), "content_sha256": d.info.attrs.get("content_sha256")}
                         for role, d in sets.items() if d is not None}
    summary["inputs"]["test_extra"] = [{"file": ref_of(d), "content_sha256": d.info.attrs.get("content_sha256")}
                                       for d in data["extra"]]
    summary["args"] = call_args or {}
    summary["created"] = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    return summary


def _over_seeds(y: np.ndarray, scores: np.ndarray, runs: list[dict], cfg: ClassifierConfig) -> dict:
    """Every metric on one test set: the mean over seeds, its seed-aware and test-images-only intervals, the sd;
    ``ci_method`` says which interval ``<key>_ci95`` is."""
    ci = stats.bootstrap_ci(y, scores, cfg.n_boot, cfg.seed)
    out = {"ci_method": "seed-aware: training runs and test images" if ci["auroc"].get("seed_aware") else
           "test images only (one training run: no run-to-run variation to measure)" if cfg.seeds < 2 else
           "test images only (the runs agreed exactly: no spread to measure)"}
    for key in stats.METRICS:
        values = [r[key] for r in runs]
        out[key] = float(np.mean(values))
        out[f"{key}_ci95"] = list(ci[key]["ci95"])
        out[f"{key}_ci95_test_images_only"] = list(ci[key]["ci95_test_images_only"])
        out[f"{key}_sd"] = stats.over_seeds(values)["sd"] if cfg.seeds > 1 else None
    return out


def _publish(out: Path, staged: Staging, seeds: list[int]) -> None:
    """Replace an earlier run's files in ``out`` by this run's: its metrics.json goes first and this run's comes
    last, so a folder with a metrics.json always holds the complete run it describes (a kill in between leaves one
    without, which the next run redoes); model files of seeds this run does not have go too."""
    for name in ("metrics.json", "metrics.md"):
        (out / name).unlink(missing_ok=True)
    for old in out.glob("model-seed*.pt"):
        if old.name not in {f"model-seed{s}.pt" for s in seeds}:
            old.unlink()
    staged.publish()


def baselines(cfg: ClassifierConfig) -> list[str]:
    """--baseline as a list of run folders."""
    return _as_list(cfg.baseline)


def extra_test_refs(cfg: ClassifierConfig) -> list[str]:
    """--test-extra as a list of FILE.h5[:split] refs."""
    return _as_list(cfg.test_extra)


def _as_list(value) -> list[str]:
    """A comma-separated option as a list (python-fire may hand over "a,b" as a string or a tuple)."""
    if value is None:
        return []
    items = value if isinstance(value, (list, tuple)) else str(value).split(",")
    return [str(x).strip() for x in items if str(x).strip()]


def paired_with(baseline: Path, names: list[str], y: np.ndarray, scores: np.ndarray, cfg: ClassifierConfig,
                extra: list[tuple] = ()) -> dict:
    """This run (b) against a baseline run (a) on the same test images: paired bootstrap of the difference in mean
    AUROC over seeds, and exact McNemar on the accuracy of each run's seed-averaged probabilities; ``extra``: this
    run's extra test sets as (ref, names, labels, scores), each compared where the baseline has it too."""
    f = baseline / "predictions.npz"
    if not f.is_file():
        raise UserError(f"--baseline {baseline}: no predictions.npz (run train_resnet there first)")
    base = np.load(f)
    if list(base["names"]) != list(names):
        raise UserError(f"--baseline {baseline} was evaluated on different test images; use the same --test")
    was = _same_arch(baseline, cfg)
    arm = {"control": was.get("control"), "synthetic": bool(was.get("synthetic")),
           "real_fraction": was.get("real_fraction", 1.0)}
    theirs = _extra_sets(base)
    matched = [(ref, y_x, s_x, _scores_on(theirs, n_x, y_x)) for ref, n_x, y_x, s_x in extra]
    return {"baseline": str(baseline), "baseline_arm": arm, **_paired(y, base["scores"], scores, cfg),
            "extra": [{"test": ref, "n_test": int(len(y_x)), **_paired(y_x, s_a, s_x, cfg)}
                      for ref, y_x, s_x, s_a in matched if s_a is not None]}


def _paired(y: np.ndarray, a: np.ndarray, b: np.ndarray, cfg: ClassifierConfig) -> dict:
    return {**stats.paired_bootstrap_auroc(y, a, b, cfg.n_boot, cfg.seed),
            "mcnemar": stats.mcnemar(y, a.mean(axis=0) >= 0.5, b.mean(axis=0) >= 0.5)}


def _extra_sets(predictions) -> list[tuple[list[str], np.ndarray, np.ndarray]]:
    """A predictions.npz's extra test sets as (names, labels, scores); none in files from before --test-extra."""
    n = len(predictions["extra_tests"]) if "extra_tests" in predictions.files else 0
    return [(list(predictions[f"extra{j}_names"]), predictions[f"extra{j}_y"], predictions[f"extra{j}_scores"])
            for j in range(n)]


def _scores_on(sets: list[tuple], names: list[str], y: np.ndarray) -> np.ndarray | None:
    """The scores of the set among ``sets`` holding the same images (by name) with the same labels, in the order of
    ``names``; None when there is none (the set is matched by content, not by path)."""
    for their_names, their_y, their_scores in sets:
        index = {n: i for i, n in enumerate(their_names)}
        if len(index) == len(names) and all(n in index for n in names):
            order = np.array([index[n] for n in names])
            if np.array_equal(their_y[order], y):
                return their_scores[:, order]
    return None


def _same_arch(baseline: Path, cfg: ClassifierConfig) -> dict:
    """The baseline run's config ({} when unreadable), after checking it trained the same network: a paired test
    between two architectures would measure the networks, not the training data."""
    try:  # what the baseline arm was, so a verdict against it is worded right wherever the report runs
        was = json.loads((baseline / "metrics.json").read_text())["config"]
    except (OSError, ValueError, KeyError, TypeError):
        return {}
    if not isinstance(was, dict):
        return {}
    arch = was.get("arch", "resnet18")  # runs from before --arch trained ResNet-18s
    if arch != cfg.arch:
        raise UserError(f"--baseline {baseline} trained --arch {arch}, this run --arch {cfg.arch}; compare arms of "
                        "one architecture")
    return was


def markdown(s: dict) -> str:
    """metrics.md: the metrics on the test set and on each extra test set, then the paired comparisons."""
    text = (f"# Classifier results ({s['n_seeds']} seed(s), {s['n_test']} real test images)\n\n"
            + _metrics_table(s, s.get("ci_method", "test images only")))
    for x in s.get("extra_tests", []):
        text += (f"\n\n## Extra test set {x['test']} ({x['n_test']} real test images)\n\n"
                 + _metrics_table(x, x.get("ci_method", "test images only")))
    for p in s.get("comparisons", [s["paired"]] if "paired" in s else []):
        text += f"\n\nAgainst {p['baseline']}: " + _comparison_text(p)
        text += "".join(f"\n\nAgainst {p['baseline']} on {x['test']}: " + _comparison_text(x)
                        for x in p.get("extra", []))
    return text + "\n"


def _metrics_table(m: dict, ci_method: str) -> str:
    def sd(k):
        return "" if m[f"{k}_sd"] is None else f"{m[f'{k}_sd']:.4f}"

    rows = [f"| {k} | {m[k]:.4f} | {m[f'{k}_ci95'][0]:.4f} – {m[f'{k}_ci95'][1]:.4f} | {sd(k)} |"
            for k in stats.METRICS]
    return (f"| metric | mean over seeds | 95% CI ({ci_method}) | sd over seeds |\n"
            "|---|---:|---:|---:|\n" + "\n".join(rows))


def _comparison_text(p: dict) -> str:
    return (f"ΔAUROC {p['delta_auroc']:+.4f} (95% CI {p['ci95'][0]:+.4f} to {p['ci95'][1]:+.4f}, p = "
            f"{p['p_value']:.3g}; {p.get('method', 'paired bootstrap')}); McNemar on the accuracy of the seed-averaged "
            f"predictions: {p['mcnemar']['only_a_correct']} vs {p['mcnemar']['only_b_correct']} discordant, "
            f"p = {p['mcnemar']['p_value']:.3g}.")
