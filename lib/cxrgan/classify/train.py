"""train_resnet's protocol: ResNet-18 on real images (optionally plus synthetic ones), selected and stopped early
on the real validation split only, evaluated on real test images, repeated over seeds, with confidence intervals.

Synthetic images only ever enter training: validation and test sets are real, and this is asserted by name.
"""

from __future__ import annotations

import copy
import datetime as _dt
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .. import options, runtime
from ..cli import ProgressFn, no_progress
from ..data.datasetfile import SAMPLES_SCHEMA, SCHEMA, generated_by, parse_ref, shared_patient
from ..data.reader import H5ImageDataset, to_model_input
from ..data.splits import patient_fraction
from ..errors import UserError
from ..faults import kill_point
from ..fileio import Staging, check_writable, remove_stale_temps_in, write_json
from . import model as classifier, provenance
from . import stats
from .arms import ARMS


@dataclass
class ClassifierConfig:
    data: str
    out: str = "outputs/classify/real"
    synthetic: str | None = None
    synthetic_only: bool = False
    synthetic_ratio: float | None = None  # synthetic images per real training image, per class (default 1)
    synthetic_per_class: int | None = None
    control: str | None = None  # a row of arms.ARMS ("oversample", "augment"): the synthetic arm's control
    real_fraction: float = 1.0
    subset_seed: int = 0  # which patients --real-fraction keeps (the same for every training seed; nested fractions)
    test: str | None = None
    epochs: int = 20
    seeds: int = 1
    seed: int = 0
    size: int = 224
    batch: int = 32
    lr: float = 3e-4
    weight_decay: float = 1e-4
    patience: int = 5
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
                "--weights": self.weights, "--baseline": str(self.baseline).split(",") if self.baseline else None}

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


def train_one(cfg: ClassifierConfig, k: int, data: dict, device) -> dict:
    seed = cfg.seed + k
    torch.manual_seed(seed)
    train_ds, val_ds, syn = data["train"], data["val"], data["synthetic"]
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
    held_out = set(val_ds.names) | set(data["test"].names)
    leaked = held_out & set(names)
    if leaked:  # synthetic or training images must never be in validation or test
        raise UserError(f"{len(leaked)} training images also appear in validation/test (e.g. {sorted(leaked)[0]})")
    model = classifier.build(len(train_ds.classes), cfg.pretrained, cfg.weights, cfg.arch).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    gen = torch.Generator().manual_seed(seed)
    best, best_auc, best_epoch, history = None, -1.0, 0, []
    for epoch in range(1, cfg.epochs + 1):
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
                raise UserError(f"classifier training diverged (loss {loss.item()}) at epoch {epoch}, seed {seed}; "
                                "lower --lr")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(loss.item())
            kill_point(f"train_resnet:seed{seed}-epoch{epoch}-step{len(losses)}")
        val_auc = stats.auroc(val_ds.labels, predict(model, val_ds.images, cfg.size, device))
        history.append({"epoch": epoch, "loss": float(np.mean(losses)), "val_auroc": val_auc})
        if val_auc > best_auc:
            best, best_auc, best_epoch = copy.deepcopy(model.state_dict()), val_auc, epoch
        elif epoch - best_epoch >= cfg.patience:
            break
    model.load_state_dict(best)
    test = data["test"]
    scores = predict(model, test.images, cfg.size, device)
    metrics = stats.binary_metrics(test.labels, scores)
    ci = stats.bootstrap_ci(test.labels, scores, cfg.n_boot, seed)
    n_real = int(sum(real_counts.values())) if not cfg.synthetic_only else 0
    return {"seed": seed, "best_epoch": best_epoch, "val_auroc": best_auc, "n_train_real": n_real,
            "n_train_synthetic": n_synthetic, "n_train_control": n_control, "history": history,
            **metrics, **{f"{k}_ci95": v["ci95"] for k, v in ci.items()}, "scores": scores, "state": best}


def check_splits(data: dict, cfg: ClassifierConfig) -> None:
    """What a binary classifier's numbers rest on: two classes, both in every split, and no patient of the test set
    in training or validation (also when the test set comes from another file)."""
    train = data["train"]
    if len(train.classes) != 2:
        raise UserError(f"--data {cfg.data} has {len(train.classes)} classes {train.classes}; train_resnet is a binary "
                        "classifier (AUROC of class 1 against class 0): build a file of two classes")
    for name in ("train", "val", "test"):
        present = np.unique(data[name].labels)
        if len(present) == 0:
            raise UserError(f"the {name} set of {data[name].path} holds no images; rebuild the dataset with more data")
        if len(present) < 2:
            raise UserError(f"the {name} set of {data[name].path} holds only {train.classes[int(present[0])]!r} "
                            "images; a classifier needs both classes there (rebuild the dataset with more data)")
    ids = {f"{d.path}:{d.split}": d.patient_ids for d in (train, data["val"], data["test"]) if d.patient_ids is not None}
    clash = shared_patient(ids)
    if clash:
        raise UserError(f"{clash}: the test images' patients must be kept out of training and validation; give a "
                        "--test file of other patients")


def run(cfg: ClassifierConfig, call_args: dict | None = None, progress: ProgressFn = no_progress) -> dict:
    """Train ``cfg.seeds`` models and write the run folder. The progress task starts once the inputs have loaded
    and been checked (so a bad input gives just its error line) and advances after each seed."""
    cfg.validate()
    rt = runtime.setup(cfg.device)
    out = Path(cfg.out)
    test_path, test_split = parse_ref(cfg.test or cfg.data, "test")
    data = {"train": H5ImageDataset(cfg.data, "train", in_memory=True, schemas=(SCHEMA,)),
            "val": H5ImageDataset(cfg.data, "val", in_memory=True, schemas=(SCHEMA,)),
            "test": H5ImageDataset(test_path, test_split, in_memory=True, schemas=(SCHEMA,)),
            "synthetic": None}
    if cfg.synthetic:
        path, split = parse_ref(cfg.synthetic, "synthetic")
        data["synthetic"] = H5ImageDataset(path, split, in_memory=True, schemas=(SAMPLES_SCHEMA,))
    for name, flag in (("test", "--test"), ("synthetic", "--synthetic")):
        d = data[name]
        if d is not None and (d.size != data["train"].size or d.classes != data["train"].classes):
            raise UserError(f"{flag} {d.path} holds {d.size}x{d.size} images of classes {d.classes}, but --data "
                            f"{cfg.data} holds {data['train'].size}x{data['train'].size} of {data['train'].classes}; "
                            "give files of one size and class list")
    gan_data = None
    if data["synthetic"] is not None:
        gan_data = provenance.check_synthetic(data["synthetic"], data["train"], [data["val"], data["test"]])
    check_splits(data, cfg)
    for b in baselines(cfg) if cfg.baseline else []:  # before hours of training, not after
        if not (Path(b) / "predictions.npz").is_file():
            raise UserError(f"--baseline {b}: no predictions.npz (run train_resnet there first)")
        _same_arch(Path(b), cfg)
    if cfg.pretrained or cfg.weights:  # a bad weights file fails here, before the first seed's training
        classifier.BACKBONES[cfg.arch].build(len(data["train"].classes), cfg.pretrained, cfg.weights)
    remove_stale_temps_in(out)  # left by a run killed before it finished
    with Staging() as staged:  # nothing in --out changes until every file of this run is written
        runs = _train_seeds(cfg, data, rt.device, out, staged, progress)
        summary = _summary(cfg, data, runs, gan_data, call_args)
        scores = np.stack([r["scores"] for r in runs])
        with open(staged.path(out / "predictions.npz"), "wb") as f:
            np.savez(f, names=np.array(data["test"].names), y=data["test"].labels, scores=scores)
        staged.path(out / "metrics.md").write_text(markdown(summary))
        write_json(staged.path(out / "metrics.json"), summary)  # staged last, so renamed last
        kill_point("train_resnet:before-publish")
        _publish(out, staged, [r["seed"] for r in runs])
    return summary


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
    ci = stats.bootstrap_ci(y, scores, cfg.n_boot, cfg.seed)
    summary["ci_method"] = ("seed-aware: training runs and test images" if ci["auroc"].get("seed_aware") else
                            "test images only (one training run: no run-to-run variation to measure)" if cfg.seeds < 2
                            else "test images only (the runs agreed exactly: no spread to measure)")
    for key in stats.METRICS:
        values = [r[key] for r in runs]
        summary[key] = float(np.mean(values))
        summary[f"{key}_ci95"] = list(ci[key]["ci95"])
        summary[f"{key}_ci95_test_images_only"] = list(ci[key]["ci95_test_images_only"])
        summary[f"{key}_sd"] = stats.over_seeds(values)["sd"] if cfg.seeds > 1 else None
    summary["per_seed"] = [{k: v for k, v in r.items() if k not in ("scores", "state")} for r in runs]
    if cfg.baseline:
        summary["comparisons"] = [paired_with(Path(b), data["test"].names, y, scores, cfg) for b in baselines(cfg)]
        summary["paired"] = summary["comparisons"][0]
    summary["config"] = {k: v for k, v in asdict(cfg).items()}
    summary["args"] = call_args or {}
    summary["created"] = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    return summary


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
    """--baseline as a list of run folders (python-fire may hand over "a,b" as a string or a tuple)."""
    b = cfg.baseline
    items = b if isinstance(b, (list, tuple)) else str(b).split(",")
    return [str(x).strip() for x in items if str(x).strip()]


def paired_with(baseline: Path, names: list[str], y: np.ndarray, scores: np.ndarray, cfg: ClassifierConfig) -> dict:
    """This run (b) against a baseline run (a) on the same test images: paired bootstrap of the difference in mean
    AUROC over seeds, and exact McNemar on the accuracy of each run's seed-averaged probabilities."""
    f = baseline / "predictions.npz"
    if not f.is_file():
        raise UserError(f"--baseline {baseline}: no predictions.npz (run train_resnet there first)")
    base = np.load(f)
    if list(base["names"]) != list(names):
        raise UserError(f"--baseline {baseline} was evaluated on different test images; use the same --test")
    was = _same_arch(baseline, cfg)
    arm = {"control": was.get("control"), "synthetic": bool(was.get("synthetic")),
           "real_fraction": was.get("real_fraction", 1.0)}
    return {"baseline": str(baseline), "baseline_arm": arm,
            **stats.paired_bootstrap_auroc(y, base["scores"], scores, cfg.n_boot, cfg.seed),
            "mcnemar": stats.mcnemar(y, base["scores"].mean(axis=0) >= 0.5, scores.mean(axis=0) >= 0.5)}


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
    def sd(k):
        return "" if s[f"{k}_sd"] is None else f"{s[f'{k}_sd']:.4f}"

    rows = [f"| {k} | {s[k]:.4f} | {s[f'{k}_ci95'][0]:.4f} – {s[f'{k}_ci95'][1]:.4f} | {sd(k)} |"
            for k in stats.METRICS]
    text = (f"# Classifier results ({s['n_seeds']} seed(s), {s['n_test']} real test images)\n\n"
            f"| metric | mean over seeds | 95% CI ({s.get('ci_method', 'test images only')}) | sd over seeds |\n"
            "|---|---:|---:|---:|\n" + "\n".join(rows))
    for p in s.get("comparisons", [s["paired"]] if "paired" in s else []):
        text += (f"\n\nAgainst {p['baseline']}: ΔAUROC {p['delta_auroc']:+.4f} (95% CI {p['ci95'][0]:+.4f} to "
                 f"{p['ci95'][1]:+.4f}, p = {p['p_value']:.3g}; {p.get('method', 'paired bootstrap')}); "
                 "McNemar on the accuracy of the seed-averaged predictions: "
                 f"{p['mcnemar']['only_a_correct']} vs {p['mcnemar']['only_b_correct']} discordant, "
                 f"p = {p['mcnemar']['p_value']:.3g}.")
    return text + "\n"
