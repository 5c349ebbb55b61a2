"""train_features: the ``cxr`` feature network (``cxr.py``) trained multi-label over NIH's 14 findings on real
radiographs that are in no test set (the recipe: the main dataset's training split and the extra radiographs with
other findings, ``make features``).

Targets come from each file's optional ``findings`` dataset (make_hdf5 stores the csv's "Finding Labels"); a file
without it trains on its class labels, a class named "No Finding" or one of the 14 findings. Splits named test or
val are refused unless ``--allow-held-out``: the network must never have seen the images it will help judge. A
patient-level share of the training images (``--val-fraction``) is held out to report the loss and macro-AUROC over
findings each epoch; the network of the epoch with the lowest validation loss is saved (without a held-out share,
the last epoch's): on ~1,300 radiographs at 64x64 the network overfits after 10-15 epochs.
"""

from __future__ import annotations

import datetime as _dt
from dataclasses import asdict, dataclass, field
from pathlib import Path

import h5py
import numpy as np
import torch
import torch.nn.functional as F

from .. import options, runtime
from ..classify import stats
from ..classify.model import augment as light_augment, resize
from ..cli import REPEATABLE, ProgressFn, console, no_progress
from ..data.datasetfile import SCHEMA, parse_ref
from ..data.reader import H5ImageDataset, to_tensor
from ..data.splits import patient_split
from ..errors import UserError
from ..fileio import check_output_path, write_json_atomic
from . import cxr

HELD_OUT = ("test", "val")  # split names (and their prefixes: test-extra, validation) never trained on by default


@dataclass
class FeaturesConfig:
    data: str = field(metadata={REPEATABLE: True})  # FILE.h5[:split], comma-separated or repeated; default train
    out: str = "outputs/features/cxr.pt"
    epochs: int = 20
    seed: int = 0
    batch: int = 64
    lr: float = 1e-3
    weight_decay: float = 1e-4
    width: int = 32
    val_fraction: float = 0.1
    augment: bool = True
    allow_held_out: bool = False
    device: str = "auto"
    overwrite: bool = False

    def refs(self) -> list[tuple[str, str]]:
        items = self.data.split(",") if isinstance(self.data, str) else [str(d) for d in self.data or ()]
        return [parse_ref(d.strip(), "train") for d in items if d.strip()]

    def validate(self) -> "FeaturesConfig":
        if not self.refs():
            raise UserError("--data is required: FILE.h5[:split], comma-separated or repeated (default split train)")
        options.whole_number(self, "epochs", "batch", "width")
        options.whole_number(self, "batch", minimum=2, hint=" (batch norm needs two images)")
        options.seed(self)
        options.positive_number(self, "lr", maximum=1.0)
        if not isinstance(self.weight_decay, (int, float)) or isinstance(self.weight_decay, bool) \
                or not 0 <= self.weight_decay < 1:
            raise UserError(f"--weight-decay must be in [0, 1), got {self.weight_decay!r}")
        if not isinstance(self.val_fraction, (int, float)) or not 0 <= self.val_fraction < 1:
            raise UserError(f"--val-fraction must be in [0, 1) (0: no monitoring), got {self.val_fraction!r}")
        for path, split in self.refs():
            if split.lower().startswith(HELD_OUT) and not self.allow_held_out:
                raise UserError(f"--data {path}:{split} is a held-out split; the feature network must not see the "
                                "images it will judge: train on training splits, or pass --allow-held-out")
        check_output_path(self.out, self.overwrite, inputs=self.input_paths(), suffixes=(".pt",))
        return self

    def input_paths(self) -> dict:
        return {"--data": [path for path, _ in self.refs()]}

    def output_paths(self) -> dict:
        return {"--out": self.out}


@dataclass
class TrainingImages:
    x: torch.Tensor  # float (n, 1, size, size) in [-1, 1]
    y: torch.Tensor  # float (n, 14) multi-hot
    patients: np.ndarray  # int64 (n,), -1 unknown
    trained_on: list[dict]  # one record per input


def read_findings(path: str, split: str) -> list[str] | None:
    """The split's optional ``findings`` strings (docs/dataset-format.md), or None when the file has none."""
    with h5py.File(path, "r") as f:
        if "findings" not in f[split]:
            return None
        return [v.decode() if isinstance(v, bytes) else str(v) for v in f[split]["findings"][:]]


def _targets_of(ds: H5ImageDataset, where: str) -> tuple[torch.Tensor, str]:
    findings = read_findings(ds.path, ds.split)
    if findings is not None:
        return cxr.targets(findings, where), "findings"
    known = {cxr.NO_FINDING, *cxr.FINDINGS}
    unknown = [c for c in ds.classes if c not in known]
    if unknown:
        raise UserError(f"{where} has no findings field and its class {unknown[0]!r} is not No Finding or one of "
                        "NIH's 14 findings; rebuild it with make_hdf5 from a Data_Entry csv")
    return cxr.targets([ds.classes[k] for k in ds.labels], where), "class labels"


def load_images(refs: list[tuple[str, str]], size: int = cxr.INPUT_SIZE) -> TrainingImages:
    """Every image of every ``(file, split)``, resized to ``size``, with its targets and patient."""
    xs, ys, patients, record = [], [], [], []
    for path, split in refs:
        ds = H5ImageDataset(path, split, in_memory=True, schemas=(SCHEMA,))
        y, source = _targets_of(ds, f"{path}:{split}")
        xs.append(torch.cat([resize(to_tensor(ds.images[i:i + 256]), size) for i in range(0, len(ds), 256)])
                  if len(ds) else torch.zeros(0, 1, size, size))
        ys.append(y)
        patients.append(ds.patient_ids if ds.patient_ids is not None else np.full(len(ds), -1, np.int64))
        record.append({"path": str(Path(path).resolve()), "split": split, "n": len(ds), "targets": source,
                       "content_sha256": ds.info.attrs.get("content_sha256", "")})
    if sum(r["n"] for r in record) < 2:
        raise UserError("--data holds fewer than 2 images; give the training splits of real datasets")
    return TrainingImages(torch.cat(xs), torch.cat(ys), np.concatenate(patients).astype(np.int64), record)


def holdout_mask(data: TrainingImages, fraction: float, seed: int) -> np.ndarray:
    """A patient-level share of the images for monitoring (True = held out); patient ids repeat across files only
    for the same patient (NIH ids), so no patient is on both sides."""
    if fraction <= 0:
        return np.zeros(len(data.y), bool)
    any_finding = (data.y.sum(1) > 0).numpy().astype(np.int64)
    return patient_split(data.patients, any_finding, (1 - fraction, fraction, 0.0), seed) == 1


def macro_auroc(y: np.ndarray, scores: np.ndarray) -> tuple[float | None, dict]:
    """Mean AUROC over the findings with both positive and negative images, and each finding's AUROC."""
    per = {f: stats.auroc(y[:, k], scores[:, k]) for k, f in enumerate(cxr.FINDINGS) if 0 < y[:, k].sum() < len(y)}
    return (float(np.mean(list(per.values()))) if per else None), per


@torch.no_grad()
def predict(model: cxr.CXRNet, x: torch.Tensor, device, batch: int = 256) -> torch.Tensor:
    model.eval()
    return torch.cat([model(x[i:i + batch].to(device)).float().cpu() for i in range(0, len(x), batch)])


def train_epoch(model, opt, x, y, cfg: FeaturesConfig, device, gen: torch.Generator) -> float:
    """One pass over the images in a seeded order; the mean loss over steps. A last batch of one is skipped (batch
    norm needs two)."""
    model.train()
    order, losses = torch.randperm(len(x), generator=gen), []
    for i in range(0, len(order), cfg.batch):
        idx = order[i:i + cfg.batch]
        if len(idx) < 2:
            continue
        xb = light_augment(x[idx], gen) if cfg.augment else x[idx]
        loss = F.binary_cross_entropy_with_logits(model(xb.to(device)), y[idx].to(device))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    return float(np.mean(losses)) if losses else float("nan")


def _epoch_row(epoch: int, loss: float, model, data: TrainingImages, val: np.ndarray, device) -> dict:
    row = {"epoch": epoch, "loss": round(loss, 5), "val_loss": None, "val_macro_auroc": None}
    if val.any():
        logits = predict(model, data.x[val], device)
        row["val_loss"] = round(float(F.binary_cross_entropy_with_logits(logits, data.y[val])), 5)
        auc, _ = macro_auroc(data.y[val].numpy(), logits.numpy())
        row["val_macro_auroc"] = None if auc is None else round(auc, 4)
    return row


def run(cfg: FeaturesConfig, call_args: dict | None = None, progress: ProgressFn = no_progress) -> dict:
    """Train, save ``cfg.out`` (and its summary ``OUT`` with ``.json``); returns the summary."""
    cfg.validate()
    device = runtime.resolve_device(cfg.device)
    data = load_images(cfg.refs())
    val = holdout_mask(data, cfg.val_fraction, cfg.seed)
    train = torch.from_numpy(~val)
    torch.manual_seed(cfg.seed)
    model = cxr.CXRNet(len(cxr.FINDINGS), cfg.width).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=cfg.epochs)
    gen, history = torch.Generator().manual_seed(cfg.seed), []
    kept, kept_loss = None, np.inf
    task = progress("train cxr features", cfg.epochs)
    for epoch in range(1, cfg.epochs + 1):
        loss = train_epoch(model, opt, data.x[train], data.y[train], cfg, device, gen)
        sched.step()
        history.append(_epoch_row(epoch, loss, model, data, val, device))
        row = history[-1]
        if row["val_loss"] is None or row["val_loss"] < kept_loss:
            kept = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
            kept_loss, row["kept"] = (row["val_loss"] if row["val_loss"] is not None else np.inf), True
        task(1, info=f"loss {loss:.4f} val macro-AUROC {row['val_macro_auroc']}")
        console.print(f"epoch {epoch}: loss {row['loss']}, val loss {row['val_loss']}, val macro-AUROC "
                      f"{row['val_macro_auroc']}", highlight=False)
    model.load_state_dict(kept)
    kept_epoch = max(r["epoch"] for r in history if r.get("kept"))
    summary = {"trained_on": data.trained_on, "n_train": int(train.sum()), "n_val": int(val.sum()),
               "kept_epoch": kept_epoch, "history": history, "config": _plain(asdict(cfg)),
               "args": _plain(call_args or asdict(cfg)),
               "seed": cfg.seed, "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}
    cxr.save(cfg.out, model.cpu(), cxr.INPUT_SIZE, **summary)
    write_json_atomic(Path(cfg.out).with_suffix(".json"), {"format": cxr.FORMAT, "out": str(cfg.out), **summary})
    best = history[kept_epoch - 1]
    console.print(f"wrote {cfg.out}: {summary['n_train']} training images, {summary['n_val']} held out; kept epoch "
                  f"{kept_epoch} (val loss {best['val_loss']}, val macro-AUROC {best['val_macro_auroc']})")
    return summary


def _plain(d: dict) -> dict:
    """Arguments as plain values for the checkpoint (tuples from python-fire become lists)."""
    return {k: (list(v) if isinstance(v, tuple) else str(v) if isinstance(v, Path) else v) for k, v in d.items()}
