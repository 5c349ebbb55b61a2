"""REPORT.md from whatever the pipeline has produced under ``outputs/``: did synthetic data help, how close are the
images to real ones, and was anything copied.

Inputs are found by their contracts, never by a fixed list: every ``classify/**/metrics.json`` (train_resnet),
every ``metrics/*.json`` holding a ``fid`` key (fid_is), every ``gan/*/summary.json`` (train_dcgan) and the samples
file. Missing pieces are reported as missing; the report never invents a number.
"""

from __future__ import annotations

import contextlib
import csv
import datetime as _dt
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .classify import verdict
from .classify.arms import ARMS
from .classify.model import BACKBONES
from .data.datasetfile import generated_by, parse_ref, read_info
from .data.reader import H5ImageDataset
from .errors import UserError
from .fileio import atomic_output, check_output_path
from .metrics.evaluate import metric_columns
from .figures import plot_losses, plt, save_figure, save_grid


@dataclass
class ReportConfig:
    """report's options."""

    outputs: str = "outputs"
    out: str | None = None
    n_grid: int = 16
    seed: int = 0
    overwrite: bool = False  # replace an existing report

    def output_paths(self) -> dict:
        return {"--out": self.out or (str(Path(self.outputs) / "REPORT.md") if Path(self.outputs).is_dir() else None)}


def arm_kind(cfg: dict) -> str:
    """How the report names an arm's training data, from its config (or a comparison's ``baseline_arm``): a control
    arm by its row of ``classify.arms.ARMS``."""
    control = cfg.get("control")
    if cfg.get("synthetic"):
        return PRETRAIN_KIND if cfg.get("synthetic_mode") == "pretrain" else "real + synthetic"
    return ARMS[control].display if control in ARMS else "real"


PRETRAIN_KIND = "synthetic pretraining, then real"
SYNTHETIC_KINDS = ("real + synthetic", PRETRAIN_KIND)


def backbone_title(cfg: dict) -> str:
    """The classifier's name in the report: its ``--arch`` row's title (runs before --arch: ResNet-18)."""
    arch = cfg.get("arch", "resnet18")
    return BACKBONES[arch].title if arch in BACKBONES else str(arch)


@dataclass
class ClassifierRun:
    name: str
    path: Path
    m: dict

    @property
    def kind(self) -> str:
        cfg = self.m["config"]
        return "synthetic only (TSTR)" if cfg.get("synthetic_only") else arm_kind(cfg)

    @property
    def recipe(self) -> str | None:
        """The recipe that generated this run's synthetic images (None without any)."""
        return (self.m.get("synthetic_trained_on") or {}).get("recipe")

    @property
    def training_data(self) -> str:
        return self.kind + (f" ({self.recipe})" if self.recipe else "")

    @property
    def fraction(self) -> float:
        return float(self.m["config"].get("real_fraction", 1.0))


def _load_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _load_result(path: Path, keys: tuple[str, ...], tool: str) -> dict:
    """A result file the report must use: a damaged one is an error naming it, never silently left out (a table
    without it, or a comparison against a run that is missing, would mislead)."""
    m = _load_json(path)
    if not isinstance(m, dict):
        raise UserError(f"{path} is truncated or not JSON; re-run the stage that writes it ({tool}) or delete it")
    missing = [k for k in keys if k not in m]
    if missing:
        raise UserError(f"{path} is not a complete {tool} result (no {missing[0]!r}); re-run {tool} or delete it")
    return m


@contextlib.contextmanager
def _reading(path: Path, tool: str):
    """Rendering a result whose values have the wrong types ends in one line naming the file."""
    try:
        yield
    except (TypeError, KeyError, ValueError, IndexError, AttributeError) as e:
        raise UserError(f"{path} has malformed content ({type(e).__name__}: {e}); re-run {tool} or delete it") \
            from None


def find_classifier_runs(root: Path) -> list[ClassifierRun]:
    runs = []
    for p in sorted((root / "classify").glob("**/metrics.json")):
        run = ClassifierRun(str(p.parent.relative_to(root / "classify")), p.parent,
                            _load_result(p, ("auroc", "config"), "train_resnet"))
        with _reading(p, "train_resnet"):  # every value the report shows, in the types it needs
            classifier_section([run])
            efficiency_note([run])
        runs.append(run)
    return runs


def find_quality_runs(root: Path) -> list[tuple[Path, dict]]:
    runs = []
    for p in sorted((root / "metrics").glob("*.json")):
        m = _load_result(p, ("fid", "n_real", "n_fake"), "fid_is")
        with _reading(p, "fid_is"):
            quality_section([(p, m)], p.parent)
        runs.append((p, m))
    return runs


def _ci(m: dict, key: str, digits: int = 3) -> str:
    v, ci = m.get(key), m.get(f"{key}_ci95")
    if v is None:
        return "–"
    sd = m.get(f"{key}_sd")
    text = f"{v:.{digits}f}"
    if ci:
        text += f" [{ci[0]:.{digits}f}, {ci[1]:.{digits}f}]"
    if sd is not None:
        text += f" ±{sd:.{digits}f}"
    return text


def _count_ci(m: dict, key: str) -> str:
    return f"[{m[key][0]}–{m[key][1]}] " if key in m else ""


def _held_out_median(a: dict) -> float:
    return a.get("held_out_to_train_median", a.get("test_to_train_median"))


def _num(v, fmt: str = ".4g") -> str:
    return "–" if v is None else format(v, fmt) if isinstance(v, float) else str(v)


def _n_train(run: ClassifierRun) -> str:
    seeds = run.m.get("per_seed", [])
    real = np.mean([s.get("n_train_real", 0) for s in seeds]) if seeds else 0
    extra = np.mean([s.get("n_train_synthetic", 0) + s.get("n_train_control", 0) for s in seeds]) if seeds else 0
    return f"{real:.0f} + {extra:.0f}"


SPLIT_METHODS = {
    "official": "NIH's official lists: `test_list.txt` is the test split and `train_val_list.txt` is split by "
                "patient into train and validation. With the lists NIH ships, the test images are those of the "
                "ChestX-ray14 literature's test set, so the numbers are comparable with its results (restricted "
                "here to the two classes, and balanced when the dataset was built so)",
    "patient": "by patient at random (seeded; no patient in two splits); the test split is not the literature's "
               "official one",
}


def data_section(runs: list[ClassifierRun]) -> str:
    """Which dataset the classifiers used, how it was split, and how many images the synthetic and control arms
    add per class."""
    path = next((r.m["config"].get("data") for r in runs if r.m.get("config", {}).get("data")), None)
    if path is None:
        return ""
    lines = ["## Data", ""]
    try:
        info = read_info(parse_ref(path, "train")[0])
    except (UserError, OSError) as e:
        lines.append(f"Dataset `{path}`: not readable now ({e}).")
    else:
        method = info.attrs.get("split_method", "not recorded in the dataset")
        counts = "; ".join(f"{split} {sum(per.values())} ({', '.join(f'{c} {n}' for c, n in per.items())})"
                           for split, per in info.counts.items())
        lines.append(f"Dataset `{path}`: {info.size}×{info.size}, {counts}. Split: "
                     f"{SPLIT_METHODS.get(method, method)}.")
    added = sorted({_added(r) for r in runs if r.kind != "real" and "TSTR" not in r.kind} - {""})
    if added:
        lines.append(f"\nImages added to the real training set by the synthetic and the count-matched control arms: "
                     f"{'; '.join(added)}.")
    return "\n".join(lines) + "\n"


def _added(run: ClassifierRun) -> str:
    cfg = run.m.get("config", {})
    if cfg.get("synthetic_per_class") is not None:
        return f"{cfg['synthetic_per_class']} per class"
    ratio = cfg.get("synthetic_ratio")
    return f"{1.0 if ratio is None else ratio:g} per real training image of each class"


METRIC_COLUMNS = ("auroc", "accuracy", "balanced_accuracy", "sensitivity", "specificity")


def set_label(ref: str) -> str:
    """How the report names an extra test set: its file name (and split, when not test)."""
    path, split = parse_ref(ref, "test")
    return Path(path).name + ("" if split == "test" else f":{split}")


def classifier_section(runs: list[ClassifierRun]) -> tuple[str, list[str]]:
    if not runs:
        return ("## Table 1 — classifier: real vs real + synthetic\n\nNo classifier runs found (`make classify`).\n",
                [])
    extra = any(r.m.get("extra_tests") for r in runs)  # a test set column only then: older reports read as before
    titles = " / ".join(dict.fromkeys(backbone_title(r.m["config"]) for r in runs))  # one per architecture
    lines = ["## Table 1 — classifier: real vs real + synthetic vs the control arms", "",
             f"{titles}, mean over seeds with the 95% CI (in brackets; with two or more seeds it is seed-aware: it "
             "counts the spread between training runs as well as the choice of test images) and the sd over "
             "seeds (±). Model selection on the real validation split only; test images are real and never seen in "
             "training." + (EXTRA_NOTE if extra else ""), "",
             "| run |" + (" test set |" if extra else "") + " training data | real fraction | train images (real + "
             "extra) | seeds | test images | AUROC | accuracy | balanced accuracy | sensitivity | specificity |",
             "|---|" + ("---|" if extra else "") + "---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in runs:
        for name, m in [("internal", r.m)] + [(set_label(x["test"]), x) for x in r.m.get("extra_tests", [])]:
            lines.append(f"| {r.name} |" + (f" {name} |" if extra else "") + f" {r.training_data} | {r.fraction:g} | "
                         f"{_n_train(r)} | {r.m.get('n_seeds', '?')} | {m.get('n_test', '?')} | "
                         + " | ".join(_ci(m, k) for k in METRIC_COLUMNS) + " |")
    kinds = {r.path.resolve(): r.kind for r in runs}
    paired = [(r, p) for r in runs for p in r.m.get("comparisons", [r.m["paired"]] if "paired" in r.m else [])]
    if not paired:
        return "\n".join(lines) + "\n", []
    lines += paired_table(paired)
    return "\n".join(lines) + "\n", [_verdict(r, p, _baseline_kind(p, kinds)) for r, p in paired]


EXTRA_NOTE = (" One row per test set: internal is the run's own test set (the dataset's test split, or --test), the "
              "others are its extra test sets (--test-extra), the same trained models evaluated on other images.")


def paired_table(paired: list[tuple[ClassifierRun, dict]]) -> list[str]:
    """The paired comparisons' rows (with a test set column when a comparison has extra test sets)."""
    extra = any(p.get("extra") for _, p in paired)
    lines = ["", "Paired comparisons on the same test images. The main 95% CI and p are seed-aware (Welch t over "
             "the training runs of both arms plus the paired test-image bootstrap), so a verdict is about the "
             "training method; the test-images-only CI holds the trained models fixed. A synthetic arm is "
             "compared with real data alone and with the control arms, which add as many real copies "
             "(re-drawn, or classically augmented) as it adds synthetic images. McNemar: exact test on the "
             "accuracy of the seed-averaged predictions (an ensemble of each arm's runs).", "",
             "| run | against |" + (" test set |" if extra else "") + " runs | ΔAUROC | 95% CI | p | 95% CI, test "
             "images only | McNemar: only baseline right / only run right | McNemar p |",
             "|---|---|" + ("---|" if extra else "") + "---:|---:|---:|---:|---:|---:|---:|"]
    for r, p in paired:
        for name, c in [("internal", p)] + [(set_label(x["test"]), x) for x in p.get("extra", [])]:
            mc = c["mcnemar"]
            fixed = c.get("ci95_test_images_only", c["ci95"])
            runs_ab = "/".join(str(n) for n in c.get("runs", ["?", "?"]))
            lines.append(f"| {r.name} | {Path(p['baseline']).name} |" + (f" {name} |" if extra else "")
                         + f" {runs_ab} | {c['delta_auroc']:+.3f} | [{c['ci95'][0]:+.3f}, {c['ci95'][1]:+.3f}] | "
                         f"{c['p_value']:.3g} | [{fixed[0]:+.3f}, {fixed[1]:+.3f}] | {mc['only_a_correct']} / "
                         f"{mc['only_b_correct']} | {mc['p_value']:.3g} |")
    return lines


def _baseline_kind(p: dict, kinds: dict) -> str:
    """What the compared-with arm was: recorded in the comparison (train_resnet stores it), else looked up."""
    arm = p.get("baseline_arm")
    if arm is not None:
        return arm_kind(arm)
    return kinds.get(Path(p["baseline"]).resolve(), "real")


def _outcome(c: dict, baseline_kind: str) -> str:
    """A comparison's outcome in words, and its numbers."""
    lo, hi = c["ci95"]
    numbers = f"ΔAUROC {c['delta_auroc']:+.3f}, 95% CI {lo:+.3f} to {hi:+.3f}, p = {c['p_value']:.3g}"
    verdicts = {arm.display: arm.verdict for arm in ARMS.values()}
    if baseline_kind in verdicts:
        control = verdicts[baseline_kind]
        outcome = f"beat {control}" if lo > 0 else f"did worse than {control}" if hi < 0 else \
            f"did not beat {control}"
    else:
        outcome = "helped" if lo > 0 else "hurt" if hi < 0 else "made no significant difference"
    return f"{outcome} ({numbers})"


def _verdict(run: ClassifierRun, p: dict, baseline_kind: str) -> str:
    """One line per comparison: the internal test set, then each extra test set the two runs share."""
    base = Path(p["baseline"]).name
    what = ((f"synthetic data ({run.recipe})" if run.recipe else "synthetic data")
            + (", as pretraining," if run.kind == PRETRAIN_KIND else "")) if run.kind in SYNTHETIC_KINDS else run.kind
    extra = "".join(f" On {set_label(x['test'])} ({x['n_test']} test images): {_outcome(x, baseline_kind)}."
                    for x in p.get("extra", []))
    internal = "on the internal test set, " if extra else ""
    one_run = min(p.get("runs") or [1]) < 2
    caveat = "" if p.get("seed_aware") else (" With one training run in an arm this is about these trained models "
                                              "only; use SEEDS ≥ 2 for a verdict about the method." if one_run else
                                              " The runs agreed exactly, so no spread between them could be measured: "
                                              "this is about these trained models only.")
    if run.m.get("synthetic_trained_on", {}).get("sees_more_real_data"):
        caveat += (" Caution: its GAN saw real patients this arm held back, so a gain may come from them, not from "
                   "synthesis.")
    return f"**{run.name}** vs {base}: {internal}{what} {_outcome(p, baseline_kind)}.{extra}{caveat}"


def primary_section(runs: list[ClassifierRun], seed: int = 0) -> tuple[str, list[str]]:
    """The study's verdict shape (classify/verdict.py, docs/study-protocol.md): every synthetic arm against every
    control arm of its real fraction, on the pooled test images; one glance line per synthetic arm."""
    rows, glance = [], []
    for syn in (r for r in runs if r.kind in SYNTHETIC_KINDS):
        controls = {}
        for r in runs:
            if r.fraction == syn.fraction and r.kind not in SYNTHETIC_KINDS and "TSTR" not in r.kind \
                    and r.m["config"].get("arch", "resnet18") == syn.m["config"].get("arch", "resnet18"):
                controls.setdefault(r.kind, r.path)
        if not controls:
            continue
        with _reading(syn.path / "metrics.json", "train_resnet"):
            res = verdict.primary(syn.path, controls, seed=seed)
        best = res["comparisons"][res["best_control"]]
        sets = 1 + len(syn.m.get("extra_tests", []))
        glance.append(f"**Primary endpoint, {syn.name}** (real fraction {syn.fraction:g}, {best['n_test']} pooled "
                      f"test images from {sets} test set(s)): {syn.training_data} — **{res['decision']}** against "
                      f"{len(controls)} control(s); against the best control ({res['best_control']}) ΔAUROC "
                      f"{best['delta_auroc']:+.3f} (95% CI {best['ci95'][0]:+.3f} to {best['ci95'][1]:+.3f}, "
                      f"half-width {res['half_width']:.3f}).")
        rows += [f"| {syn.name} | {syn.fraction:g} | {name} | {c['n_test']} | {c['auroc_control']:.3f} | "
                 f"{c['auroc_synthetic']:.3f} | {c['delta_auroc']:+.3f} [{c['ci95'][0]:+.3f}, {c['ci95'][1]:+.3f}] | "
                 f"{c['p_value']:.3g} |" + (" **best control** |" if name == res["best_control"] else " |")
                 for name, c in res["comparisons"].items()]
    if not rows:
        return "", []
    text = "\n".join(["## Primary endpoint — does synthetic data help beyond showing the real images again?", "",
                      "Each synthetic arm against every control arm of its real fraction, on the pooled test images "
                      "(the internal test set and every extra test set both arms were evaluated on, matched by "
                      "image), seed-aware 95% intervals. *Helps* only if it beats every control (an "
                      "intersection-union test: beating real data alone may come from showing the real images "
                      "again); *hurts* if it loses to any. With one generator per arm the interval holds for that "
                      "generator only: the study (docs/study-protocol.md) retrains the generator too.", "",
                      "| synthetic arm | real fraction | control | test images | control AUROC | synthetic AUROC | "
                      "ΔAUROC [95% CI] | p | |", "|---|---:|---|---:|---:|---:|---:|---:|---|", *rows])
    return text + "\n", glance


def efficiency_note(runs: list[ClassifierRun]) -> str:
    """What the curve shows, and a warning for every synthetic arm whose GAN saw real patients the arm held back."""
    text = ("AUROC against the fraction of real training patients kept (nested: each fraction's patients include "
            "the smaller ones'), every arm at each fraction, 95% seed-aware intervals. ")
    leaky = [r for r in runs if r.m.get("synthetic_trained_on", {}).get("sees_more_real_data")]
    if not leaky:
        return text + "Each synthetic arm's GAN was trained on that fraction's real images only.\n"
    names = ", ".join(f"{r.name} (GAN on {r.m['synthetic_trained_on']['real_fraction']:g} of the real patients, "
                      f"classifier on {r.fraction:g})" for r in leaky)
    return text + (f"\n\n> **Caution:** in {names} the GAN saw real patients the classifier arm held back "
                   "(REUSE_GAN=1, or synthetic images from another run): its gain over real data may come from "
                   "those patients, not from synthesis. Retrain the GAN per fraction (`make efficiency`) for a "
                   "clean curve.\n")


def efficiency_figure(runs: list[ClassifierRun], path: Path) -> bool:
    """AUROC against the real fraction, real-only vs real + synthetic, when runs at two or more fractions exist."""
    groups = {}
    for r in runs:
        if r.kind != "synthetic only (TSTR)":
            groups.setdefault(r.training_data, []).append(r)
    if len({r.fraction for r in runs if r.kind == "real"}) < 2:
        return False
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for i, (kind, rs) in enumerate(sorted(groups.items())):
        rs = sorted(rs, key=lambda r: r.fraction)
        x = np.array([r.fraction for r in rs]) * (1 + 0.015 * (i - 0.5))  # small offset: error bars don't overlap
        y = np.array([r.m["auroc"] for r in rs])
        lo, hi = np.array([r.m["auroc_ci95"][0] for r in rs]), np.array([r.m["auroc_ci95"][1] for r in rs])
        ax.errorbar(x, y, yerr=[y - lo, hi - y], marker="o", capsize=3, label=kind)
    ax.set_xscale("log")
    ax.set_xlabel("fraction of the real training patients kept")
    ax.set_ylabel("test AUROC (95% seed-aware CI)")
    ax.set_title("Data efficiency: does synthetic data help more when real data is scarce?")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    save_figure(fig, path)
    return True


def quality_section(runs: list[tuple[Path, dict]], base: Path) -> tuple[str, list[str]]:
    if not runs:
        return ("## Table 2 — image metrics\n\nNo fid_is results found (`make metrics`).\n", [])
    columns = metric_columns()
    lines = ["## Table 2 — image metrics: generated vs real", "",
             "Lower FID and KID are better; precision = share of generated images inside the real manifold (fidelity), "
             "recall = share of real images inside the generated manifold (diversity); pixel diversity = median "
             "pairwise pixel distance among generated images over the same among real ones (about 1 when they vary "
             "as much, far below 1 for a collapsed generator; no network involved); IS in brackets is the real "
             "images' own score. N is given beside every number: FID is biased upward below 2,048 images per side, so "
             "values compare only at equal N. The rows *real training images (reference)* score the real training "
             "split in the generated images' place: what real radiographs of other patients score in this feature "
             "space (at their own N), the yardstick for the generated images' numbers.", "",
             "| results | generated by | features | set | N real | N generated | "
             + " | ".join(c.title for c in columns) + " |", "|---|---|---|---|---:|---:|" + "---:|" * len(columns)]
    verdicts, audit_lines = [], []
    for path, m in runs:
        feats = m.get("features", {}).get("network", "?")
        for scope, s in [("overall", m), *m.get("per_class", {}).items()]:
            lines.append(f"| {path.name} | {(m.get('fake') or {}).get('recipe') or '?'} | {feats} | {scope} | "
                         f"{s['n_real']} | {s['n_fake']} | " + " | ".join(c.cell(s) for c in columns) + " |")
        ref = m.get("real_reference")
        for scope, s in ([("overall", ref), *ref.get("per_class", {}).items()] if ref else []):
            lines.append(f"| {path.name} | *real training images (reference)* | {feats} | {scope} | {s['n_real']} | "
                         f"{s['n_fake']} | " + " | ".join(c.cell(s) for c in columns) + " |")
        warnings = m.get("warnings", [])
        if warnings:
            lines.append("")
            lines += [f"> {path.name}: {w}  " for w in warnings]
            lines.append("")
        if "near_copies" in m:
            audit_lines += [f"### {path.name} ({feats} features)", "",
                            f"- pixel space: **{m['near_copies']} of {m['n_fake']}** generated images are near-copies "
                            f"{_count_ci(m, 'near_copies_ci95')}(threshold {m['near_copy_threshold']:.4g}); feature "
                            f"space: **{m['near_copies_features']}** {_count_ci(m, 'near_copies_features_ci95')}"
                            f"(threshold {m['near_copy_threshold_features']:.4g}). In brackets: the count's 95% "
                            "interval as the threshold varies over bootstrap resamples of the held-out images.",
                            f"- rule: {m.get('near_copy_rule', '')}; by construction about "
                            f"{100 * m['config']['near_copy_quantile']:g}% of held-out real images fall under it.",
                            f"- median distance to the nearest training image: generated "
                            f"{m['audit_pixels']['synthetic_to_train_median']:.4g}, held-out real "
                            f"{_held_out_median(m['audit_pixels']):.4g} (pixels).", ""]
            for key in ("closest_pixels", "audit_pixels", "closest_features", "audit_features"):
                if key in m.get("figures", {}):
                    audit_lines.append(f"![{key}]({_rel(path.parent / m['figures'][key], base)})")
            audit_lines.append("")
            expected = m["config"]["near_copy_quantile"] * m["n_fake"]
            flagged = max(m["near_copies"], m["near_copies_features"])
            verdicts.append(f"**{path.name}**: {m['near_copies']} (pixels) and {m['near_copies_features']} (features) "
                            f"of {m['n_fake']} generated images are closer to a training image than "
                            f"{100 * (1 - m['config']['near_copy_quantile']):g}% of held-out real images "
                            f"(about {expected:.0f} expected by chance)"
                            + (": inspect the closest pairs." if flagged > 3 * max(expected, 1) else "."))
    text = "\n".join(lines) + "\n"
    if audit_lines:
        text += "\n## Memorisation audit\n\nFor every generated image, its nearest real training image; compared " \
                "with the same distance for held-out real images (other patients).\n\n" + "\n".join(audit_lines)
    return text, verdicts


def _rel(path: Path, start: Path) -> str:
    return Path(os.path.relpath(path, start)).as_posix()


def sample_files(root: Path) -> list[Path]:
    """The samples files the pipeline wrote: one per recipe (synthetic-RECIPE.h5; synthetic.h5 from sample.py's
    default)."""
    return sorted(p for p in root.glob("synthetic*.h5") if p.is_file())


def samples_section(samples: Path, real_ref: str | None, report_dir: Path, base: Path, n: int, seed: int) -> str:
    syn = H5ImageDataset(samples, "synthetic", in_memory=True)
    recipe = generated_by(syn.info.attrs)
    real = None
    if real_ref:
        path, split = parse_ref(real_ref, "test")
        if Path(path).is_file():
            real = H5ImageDataset(path, split, in_memory=True)
    rng = np.random.default_rng(seed)
    lines = [f"## Samples{f' — {recipe}' if recipe else ''}", "", f"Random generated images ({samples}) beside random "
             f"real {real.split if real else ''} images of the same class.", ""]
    for c, name in enumerate(syn.classes):
        panels = {}
        if real is not None and name in real.classes:
            idx = np.flatnonzero(real.labels == real.classes.index(name))
            panels[f"real: {name}"] = real.images[rng.choice(idx, min(n, len(idx)), replace=False)]
        idx = np.flatnonzero(syn.labels == c)
        if len(idx) == 0:
            continue
        panels[f"generated: {name}"] = syn.images[rng.choice(idx, min(n, len(idx)), replace=False)]
        png = report_dir / f"samples-{samples.stem}-{c}.png"
        save_grid(png, panels, cols=4)
        lines.append(f"![{name}]({_rel(png, base)})")
    return "\n".join(lines) + "\n"


def gan_section(root: Path, report_dir: Path, base: Path) -> str:
    runs = [(p.parent, m) for p in sorted((root / "gan").glob("*/summary.json")) if (m := _load_json(p))]
    if not runs:
        return "## GAN training\n\nNo GAN runs found (`make gan`).\n"
    lines = ["## GAN training", "", "| run | recipe | class | epochs | images shown | seconds | img/s |",
             "|---|---|---|---:|---:|---:|---:|"]
    figures = []
    for d, m in runs:
        lines.append(f"| {d.name} | {m.get('recipe')} | {'all' if m.get('cls') is None else m['cls']} | "
                     f"{m.get('epochs')} | {1000 * m.get('kimg', 0):.0f} | {_num(m.get('seconds'), '.0f')} | "
                     f"{_num(m.get('img_per_s'), '.1f')} |")
        grids = sorted(d.glob("grid-*.png"))
        if grids:
            picks = sorted({grids[round(i * (len(grids) - 1) / 3)] for i in range(4)})
            figures.append(f"### {d.name}: training progression (fixed latents), epochs "
                           + ", ".join(str(int(p.stem.split("-")[1])) for p in picks))
            figures.append(" ".join(f"![{p.stem}]({_rel(p, base)})" for p in picks))
        if (d / "losses.csv").is_file():
            png = report_dir / f"losses-{d.name}.png"
            plot_losses(d / "losses.csv", png)
            figures += [f"Loss curves ({d.name}):", f"![losses {d.name}]({_rel(png, base)})"]
        if (d / "metrics.csv").is_file():
            figures.append("\n".join(snapshot_lines(d, report_dir, base)))
        figures.append("")
    return "\n".join(lines) + "\n\n" + "\n\n".join(figures) + "\n"


def snapshot_lines(run: Path, report_dir: Path, base: Path) -> list[str]:
    """The metric snapshots train_dcgan took (metrics.csv): their curves and the first, best and last rows."""
    with open(run / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        return []
    png = report_dir / f"snapshots-{run.name}.png"
    plot_losses(run / "metrics.csv", png, columns=("kid", "recall", "pixel_diversity", "rt_train", "rt_val"),
                ylabel="value")
    cols = [c for c in rows[0] if c not in ("epoch", "step", "n_fake", "n_val")]  # the metrics and the objective's
    kids = [float(r["kid"]) if r["kid"] else np.inf for r in rows]
    picks = {"first": rows[0], "best KID": rows[int(np.argmin(kids))] if np.isfinite(min(kids)) else None,
             "last": rows[-1]}
    lines = [f"Metric snapshots during training ({run.name}, {len(rows)} snapshots, against the validation split; "
             "a GAN's d_* are its discriminator's mean logits on training, validation and generated images, rt_* their "
             "share above 0):", "",
             "| snapshot | " + " | ".join(cols) + " |", "|---|" + "---:|" * len(cols)]
    for name, r in picks.items():
        if r is not None:
            lines.append(f"| {name} | " + " | ".join(_cell(r[c]) for c in cols) + " |")
    return lines + ["", f"![snapshots {run.name}]({_rel(png, base)})"]


def _cell(value: str) -> str:
    try:
        return f"{float(value):.4g}"
    except ValueError:
        return "–"


def _recipe_of_samples(path: Path) -> str | None:
    """The recipe a samples file holds: recorded by sample.py, else from its name (synthetic-RECIPE.h5)."""
    try:
        recipe = generated_by(read_info(path).attrs)
    except (UserError, OSError):
        recipe = None
    return recipe or (path.stem.split("-", 1)[1] if "-" in path.stem else None)


def _finished_gans(root: Path) -> tuple[set[str], list[str]]:
    """The recipes of finished GAN runs, and the names of runs started but not finished (no summary.json)."""
    recipes, unfinished = set(), []
    for d in sorted(p for p in (root / "gan").glob("*") if p.is_dir() and not p.name.startswith("fraction-")):
        m = _load_json(d / "summary.json")
        if m is None:
            unfinished.append(d.name)
        elif m.get("recipe"):
            recipes.add(str(m["recipe"]))
    return recipes, unfinished


def _missing_classifiers(root: Path, clf_runs: list[ClassifierRun], recipes: set[str]) -> list[str]:
    full = [r for r in clf_runs if r.fraction == 1.0 and "TSTR" not in r.kind]
    started = sorted({p.parent for p in (root / "classify").glob("**/*") if p.is_file()})
    lines = [f"classifier `classify/{d.relative_to(root / 'classify').as_posix()}`: started, no metrics.json "
             "(interrupted; `make classify` runs it again)" for d in started if not (d / "metrics.json").exists()]
    if not any(r.kind == "real" for r in full):
        lines.append("the real-data classifier (`make classify`)")
    done = {r.recipe for r in full if r.kind == "real + synthetic"}
    lines += [f"the synthetic arm of {r} (`make classify RECIPE={r}`)" for r in sorted(recipes - done)]
    return lines


def missing_stages(root: Path, clf_runs: list[ClassifierRun], quality_runs: list[tuple[Path, dict]]) -> list[str]:
    """The stages of `make all` whose results are not under ``root`` yet, each with the command that runs it;
    judged from what is there (a recipe with a GAN or samples but no synthetic arm or metrics, a run started but
    not finished), so a report of a half-finished folder says what it lacks instead of reading as complete."""
    gans, unfinished = _finished_gans(root)
    samples = {_recipe_of_samples(p) for p in sample_files(root)} - {None}
    lines = [f"GAN run `gan/{name}`: not finished (`make gan` resumes it)" for name in unfinished]
    if not gans and not unfinished:
        lines.append("GAN training (`make gan`)")
    lines += [f"samples of {r} (`make samples RECIPE={r}`)" for r in sorted(gans - samples)]
    if not samples and not gans:
        lines.append("samples (`make samples`)")
    lines += _missing_classifiers(root, clf_runs, samples | gans)
    measured = {(m.get("fake") or {}).get("recipe") for _, m in quality_runs}
    lines += [f"image metrics of {r} (`make metrics RECIPE={r}`)" for r in sorted((samples | gans) - measured)]
    if not samples and not gans and not quality_runs:
        lines.append("image metrics (`make metrics`)")
    return lines


def missing_section(missing: list[str]) -> str:
    if not missing:
        return ""
    return ("## Not run yet\n\nThis report is **partial**: these stages have no results under the outputs folder, "
            "so the tables below lack them and no verdict is drawn from them. `make all` runs whatever is missing "
            "(each stage's own command is given).\n\n" + "\n".join(f"- {m}" for m in missing) + "\n")


def build(outputs: str | Path = "outputs", out: str | Path | None = None, n_grid: int = 16, seed: int = 0,
          overwrite: bool = False) -> Path:
    root = Path(outputs)
    if not root.is_dir():
        raise UserError(f"--outputs {root}: no such folder; run the pipeline first (make all)")
    out = check_output_path(Path(out) if out else root / "REPORT.md", overwrite, suffixes=(".md",))
    report_dir = out.parent / "report"
    report_dir.mkdir(parents=True, exist_ok=True)
    base = out.parent
    clf_runs, quality_runs = find_classifier_runs(root), find_quality_runs(root)
    clf_text, clf_verdicts = classifier_section(clf_runs)
    primary_text, primary_verdicts = primary_section(clf_runs, seed)
    q_text, q_verdicts = quality_section(quality_runs, base)
    real_ref = next((f"{m['real']['file']}:{m['real']['split']}" for _, m in quality_runs if "real" in m), None)
    if real_ref is None and clf_runs:
        real_ref = clf_runs[0].m["config"].get("data")
    missing = missing_stages(root, clf_runs, quality_runs)
    partial = [f"Partial report: {len(missing)} stage(s) not run yet (see Not run yet; `make all` completes them)."]
    glance = primary_verdicts + clf_verdicts + q_verdicts + (partial if missing else [])
    parts = [f"# cxrgan report\n\nBuilt {_dt.datetime.now(_dt.timezone.utc).isoformat(timespec='seconds')} from "
             f"`{root}`.\n", "## At a glance\n",
             "\n".join(f"- {v}" for v in glance) if glance else "- Nothing to summarise yet.", "",
             missing_section(missing), data_section(clf_runs), primary_text, clf_text]
    efficiency = report_dir / "data-efficiency.png"
    if efficiency_figure(clf_runs, efficiency):
        parts.append(f"## Data efficiency\n\n![data efficiency]({_rel(efficiency, base)})\n\n"
                     + efficiency_note(clf_runs))
    samples = [samples_section(p, real_ref, report_dir, base, n_grid, seed) for p in sample_files(root)] or \
        ["## Samples\n\nNo samples file found (`make samples`).\n"]
    parts += [q_text, *samples,
              gan_section(root, report_dir, base)]
    with atomic_output(out) as tmp:
        tmp.write_text("\n".join(parts))
    return out
