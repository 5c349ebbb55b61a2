"""make_hdf5's pipeline: catalogue the inputs, select and split by patient, decode in parallel, stream to HDF5.

Selection happens on metadata first (class rule, view, cap, patient split, balance), so only the chosen images
are decoded. Images are decoded and compressed in worker processes and written as they arrive; memory stays
bounded however large the input. Problems with single files never stop the run: they go to a JSON report.
"""

from __future__ import annotations

import collections
import functools
import hashlib
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from .. import options
from ..cli import ProgressFn, console, counts_table, no_progress, rate_text
from ..errors import UserError
from ..faults import kill_point
from ..fileio import H5_SUFFIXES, check_free_space, check_output_path, sha256_file, write_json_atomic
from . import nih, splits
from .datasetfile import DEFAULT_CLASSES, SPLITS, compress_image, image_digest, write_dataset
from .imaging import FITS, DecodeError, decode
from .parallel import ordered_map, worker_pool
from .sources import class_folders, scan, stream_archive


def default_workers() -> int:
    return max(1, min(len(os.sched_getaffinity(0)), 16))


@dataclass
class IngestConfig:
    src: str
    out: str
    csv: str | None = None
    size: int = 256
    seed: int = 0
    balance: bool = True
    finding: str = "Infiltration"
    finding_only: bool = False
    other_findings: bool = False  # keep only the images neither class takes, as one class (feature networks)
    view: str = "both"
    max_per_class: int | None = None
    fractions: str | tuple = "0.7,0.1,0.2"  # train,val,test; a tuple once validated
    official_split: bool = False
    fit: str = "crop"
    workers: int | None = None  # None: one per CPU (at most 16)
    overwrite: bool = False

    def validate(self) -> "IngestConfig":
        if self.workers is None:
            self.workers = default_workers()
        if not isinstance(self.size, int) or isinstance(self.size, bool) or self.size < 8 or self.size > 4096 \
                or self.size & (self.size - 1):
            raise UserError(f"--size must be a power of two from 8 to 4096 (e.g. 64, 256), got {self.size!r}")
        options.one_of(self, "fit", FITS)
        options.one_of(self, "view", nih.VIEWS)
        options.whole_number(self, "workers", minimum=0, hint=" (0 or 1: decode in this process)")
        options.optional_whole_number(self, "max_per_class")
        options.seed(self)
        self.fractions = splits.parse_fractions(self.fractions, test_only=True)
        if self.fractions[0] == 0 and self.official_split:
            raise UserError("--fractions 0,0,1 (every image in the test split) cannot be combined with "
                            "--official-split, which takes its test split from test_list.txt; give one of them")
        if not Path(self.src).is_dir():
            raise UserError(f"--src {self.src}: not a directory; point it at the folder holding the images, "
                            "the .tar.gz archives, or the class folders")
        check_output_path(self.out, self.overwrite, suffixes=H5_SUFFIXES)
        return self

    def input_paths(self) -> dict:
        return {"--csv": self.csv}

    def output_paths(self) -> dict:
        return {"--out": self.out}


@dataclass
class Catalog:
    """All usable candidate images with their metadata, before selection."""

    table: pd.DataFrame  # name, label, patient, path ("" = look in the archives), findings, view_position
    classes: list[str]
    kind: str  # "nih-csv" or "class-folders"
    archives: list[Path]
    csv_path: Path | None = None
    excluded: dict = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)
    duplicates: list[str] = field(default_factory=list)


def catalog(cfg: IngestConfig) -> Catalog:
    src = Path(cfg.src)
    found = scan(src)
    if not found.images and not found.archives:
        raise UserError(f"no images found under {src} (looked for .png/.jpg/.tif/.bmp files and .tar.gz archives)")
    csv_path = Path(cfg.csv) if cfg.csv else nih.find_csv(src)
    if csv_path is not None:
        return _catalog_from_csv(cfg, csv_path, found)
    if cfg.other_findings:
        raise UserError(f"--other-findings selects by the csv's Finding Labels, and {src} has no Data_Entry csv; "
                        "pass --csv FILE")
    folders = class_folders(src)
    if len(folders) < 2:
        raise UserError(f"no Data_Entry csv in {src} and not two or more class folders "
                        f"(found {len(folders)}): pass --csv FILE, or arrange the images as SRC/<class name>/*.png")
    return _catalog_from_folders(cfg, folders, found.duplicates)


def _catalog_from_csv(cfg: IngestConfig, csv_path: Path, found) -> Catalog:
    df = nih.read_csv(csv_path)
    n_rows = len(df)
    classes = [nih.NO_FINDING, cfg.finding]
    view_ok = nih.view_mask(df, cfg.view)
    labels = nih.class_labels(df["Finding Labels"], cfg.finding, cfg.finding_only)
    if cfg.other_findings:  # the images the class rule leaves out, and only those
        classes, labels = [nih.OTHER_FINDINGS], np.where(labels < 0, 0, -1)
    table = pd.DataFrame({
        "name": df["Image Index"],
        "label": labels,
        "patient": nih.patient_ids(df),
        "path": df["Image Index"].map(lambda n: str(found.images[n]) if n in found.images else ""),
        "findings": df["Finding Labels"],
        "view_position": df["View Position"] if "View Position" in df.columns else "",
    })
    keep = view_ok & (labels >= 0)
    excluded = {"csv_rows": n_rows, "other_view": int((~view_ok).sum()),
                "study_classes" if cfg.other_findings else "other_findings": int((view_ok & (labels < 0)).sum())}
    table = table[keep]
    missing = []
    if not found.archives:  # without archives, availability is known now: drop rows with no file
        absent = table["path"] == ""
        missing = table.loc[absent, "name"].tolist()
        table = table[~absent]
    return Catalog(table.reset_index(drop=True), classes, "nih-csv", found.archives, csv_path, excluded, missing,
                   found.duplicates)


def _normalise(name: str) -> str:
    return " ".join(name.lower().replace("_", " ").replace("-", " ").split())


def _catalog_from_folders(cfg: IngestConfig, folders: dict[str, list[Path]], duplicates) -> Catalog:
    wanted = [nih.NO_FINDING, cfg.finding] if cfg.finding != DEFAULT_CLASSES[1] else list(DEFAULT_CLASSES)
    by_norm = {_normalise(c): i for i, c in enumerate(wanted)}
    if all(_normalise(f) in by_norm for f in folders):
        classes, index = wanted, {f: by_norm[_normalise(f)] for f in folders}
    else:
        classes = sorted(folders)
        index = {f: i for i, f in enumerate(classes)}
        console.print(f"[yellow]note:[/] class folders {classes} do not match {wanted}; labels follow the folder "
                      "names in sorted order")
    # A file name is an image's identity (the leak checks compare names across splits): one that occurs twice
    # (in two class folders, or two subfolders) is ambiguous, so every copy is left out and reported.
    seen = collections.Counter(p.name for files in folders.values() for p in files)
    rows, duplicates = [], set(duplicates)
    for folder, files in folders.items():
        for p in files:
            if seen[p.name] > 1:
                duplicates.add(str(p))
                continue
            rows.append((p.name, index[folder], nih.patient_id_from_name(p.name), str(p), folder, ""))
    table = pd.DataFrame(rows, columns=["name", "label", "patient", "path", "findings", "view_position"])
    if (table["patient"] < 0).any():
        console.print("[yellow]warning:[/] some file names carry no patient id (NIH names are PATIENT_FOLLOWUP.png); "
                      "those images are split one by one. Give a csv with 'Patient ID' for a patient-level split.")
    return Catalog(table, classes, "class-folders", [], None, {"files": len(table)}, [], sorted(duplicates))


def select(cat: Catalog, cfg: IngestConfig) -> pd.DataFrame:
    """Cap, split by patient (or by the official lists), balance. Returns the chosen rows with a ``split`` column."""
    t = cat.table
    rng = np.random.default_rng(cfg.seed)
    t = t[splits.cap_per_class(t["label"].to_numpy(), cfg.max_per_class, rng)]
    if cfg.official_split:
        lists = nih.find_official_lists(Path(cfg.src), cat.csv_path.parent if cat.csv_path else None)
        if lists is None:
            raise UserError(f"--official-split needs train_val_list.txt and test_list.txt in {cfg.src} "
                            "(or beside the csv): they come with the NIH release (make download fetches them from a "
                            "mirror); or split patients at random without it (make: SPLIT=random)")
        split = splits.official_split(t["name"].to_numpy(), nih.read_list(lists[0]), nih.read_list(lists[1]),
                                      t["patient"].to_numpy(), t["label"].to_numpy(),
                                      cfg.fractions[1] / (cfg.fractions[0] + cfg.fractions[1]), cfg.seed)
        t = t[split >= 0].assign(split=split[split >= 0])
    else:
        t = t.assign(split=splits.patient_split(t["patient"].to_numpy(), t["label"].to_numpy(), cfg.fractions,
                                                cfg.seed))
    for k, c in enumerate(cat.classes):
        if not (t["label"] == k).any():
            raise UserError(f"class {c!r} has no images after filtering ({_describe(cat)}); "
                            "check --finding, --finding-only, --view and the csv")
    if cfg.balance:
        t = t[splits.balance_classes(t["split"].to_numpy(), t["label"].to_numpy(), len(cat.classes), rng)]
        if t.empty:
            raise UserError("balancing left no images: no split holds both classes; add data, change --fractions, "
                            "or pass --nobalance")
    return t.sort_values("name", kind="stable").reset_index(drop=True)


def _rebalance(writer, n_classes: int, seed: int) -> int:
    """Down-sample each split's classes to its smallest one among the images actually written; returns how many
    were dropped (0 when nothing failed: selection balanced them already)."""
    rng, dropped = np.random.default_rng([seed, 1]), 0
    for split in SPLITS:
        labels = writer.labels(split)
        mask = splits.balance_classes(np.zeros(len(labels)), labels, n_classes, rng)
        if not mask.all():
            writer.keep(split, mask)
            dropped += int((~mask).sum())
    return dropped


def _describe(cat: Catalog) -> str:
    parts = [f"{k.replace('_', ' ')}: {v}" for k, v in cat.excluded.items()]
    parts.append(f"usable: {len(cat.table)}")
    return ", ".join(parts)


def _decode_task(task, size: int, fit: str):
    """Worker: decode one image and compress it into an HDF5 chunk."""
    row, source = task
    nbytes = len(source) if isinstance(source, bytes) else Path(source).stat().st_size
    try:
        d = decode(source, size, fit)
    except DecodeError as e:
        return row, None, str(e)
    return row, (compress_image(d.image), image_digest(d.image), d.upscaled, nbytes), None


def report_path(out: str | Path, failed: bool = False) -> Path:
    """The JSON report beside ``out``; a failed run's goes to its own file, so the last good run's report stays."""
    out = Path(out)
    return out.with_name(out.stem + (".failed" if failed else "") + ".report.json")


def build_dataset(cfg: IngestConfig, call_args: dict | None = None, progress: ProgressFn = no_progress) -> dict:
    """Build ``cfg.out``. Returns the run summary (also written as the JSON report beside the output)."""
    cfg.validate()
    cat = catalog(cfg)
    chosen = select(cat, cfg)
    capacity = {s: int((chosen["split"] == k).sum()) for k, s in enumerate(SPLITS)}
    # radiographs compress to about half their raw size at gzip level 1 (docs/benchmarks.md, compression)
    check_free_space(Path(cfg.out).parent, len(chosen) * cfg.size ** 2 // 2, f"--out {cfg.out}")
    report = {"output": str(cfg.out), "skipped": [], "missing": list(cat.missing), "refused": [],
              "archive_errors": [], "duplicate_names": cat.duplicates, "upscaled": 0}

    from_files = [(i, p) for i, p in enumerate(chosen["path"]) if p]
    pending = {n: i for i, (n, p) in enumerate(zip(chosen["name"], chosen["path"])) if not p}

    def tasks():
        yield from from_files
        for archive in cat.archives:
            if not pending:
                break
            for ev in stream_archive(archive, set(pending)):
                if ev.refused:
                    report["refused"].append({"archive": str(archive), "member": ev.member, "reason": ev.refused})
                    pending.pop(ev.member, None)  # listed as refused, not also as missing
                elif ev.error:
                    report["archive_errors"].append({"archive": str(archive), "error": ev.error})
                elif ev.member in pending:
                    yield pending.pop(ev.member), ev.data

    manifest = hashlib.sha256()
    extra = ("findings", "view_position") if cat.kind == "nih-csv" else ()
    decode_fn = functools.partial(_decode_task, size=cfg.size, fit=cfg.fit)
    t0 = time.perf_counter()
    rows = chosen.to_dict("records")  # plain dicts: a pandas row object per image costs more than the write
    # the workers fork before the file opens: a forked child must not inherit a writable HDF5 handle
    with worker_pool(cfg.workers) as pool, write_dataset(cfg.out, cfg.size, cat.classes, capacity, with_patients=True,
                                                         extra_text=extra) as writer:
        task = progress("decode + write", len(chosen))
        for row, payload, err in ordered_map(decode_fn, tasks(), pool, window=4 * cfg.workers):
            r = rows[row]
            if err:
                report["skipped"].append({"name": r["name"], "source": r["path"] or "archive", "reason": err})
            else:
                compressed, digest, upscaled, nbytes = payload
                writer.add(SPLITS[r["split"]], int(r["label"]), r["name"], compressed=compressed, digest=digest,
                           patient_id=int(r["patient"]), **{k: r[k] for k in extra})
                manifest.update(f"{r['name']}\t{nbytes}\n".encode())
                report["upscaled"] += int(upscaled)
                kill_point(f"make_hdf5:added-image-{writer.added}")
            task(1)
        report["missing"] += sorted(pending)
        if cfg.balance:  # images that failed to decode or were missing left a class short: balance again
            short = {s: c for s, per in writer.counts().items() if sum(per.values()) for c, k in per.items() if not k}
            if short:  # balancing would empty these splits altogether
                write_json_atomic(report_path(cfg.out, failed=True), report)
                raise UserError(f"split(s) {sorted(short)} kept no {'/'.join(sorted(set(short.values())))} image once "
                                "undecodable or missing files were left out, and balancing would empty them; fix the "
                                f"files listed in {report_path(cfg.out, failed=True)} or pass --nobalance")
            report["rebalanced_away"] = _rebalance(writer, len(cat.classes), cfg.seed)
        counts = writer.counts()
        report["counts"] = counts
        seconds = time.perf_counter() - t0
        report["seconds"] = round(seconds, 3)
        empty = [c for c in cat.classes if sum(counts[s][c] for s in counts) == 0]
        if empty:
            write_json_atomic(report_path(cfg.out, failed=True), report)
            raise UserError(f"class(es) {empty} have no decodable images; nothing written. "
                            f"See {report_path(cfg.out, failed=True)} for the files that failed")
        attrs = {
            "source": f"{cat.kind}:{Path(cfg.src).resolve()}",
            "args": call_args if call_args is not None else _jsonable(asdict(cfg)),
            "split_method": "official" if cfg.official_split else "patient",
            "seed": cfg.seed,
            "sources_sha256": manifest.hexdigest(),
        }
        if cat.csv_path is not None:
            attrs["csv_sha256"] = sha256_file(cat.csv_path)
            attrs["csv"] = str(cat.csv_path.resolve())
        writer.close(**attrs)
        kill_point("make_hdf5:before-rename")
    write_json_atomic(report_path(cfg.out), report)
    report_path(cfg.out, failed=True).unlink(missing_ok=True)  # an earlier failure's report no longer applies
    _print_summary(cfg, cat, report, seconds)
    return report


def _jsonable(d: dict) -> dict:
    return {k: (str(v) if isinstance(v, Path) else v) for k, v in d.items()}


def _print_summary(cfg: IngestConfig, cat: Catalog, report: dict, seconds: float) -> None:
    console.print(counts_table(f"{cfg.out} ({cfg.size}x{cfg.size}, {cat.kind})", report["counts"], cat.classes))
    written = sum(sum(c.values()) for c in report["counts"].values())
    console.print(f"wrote {written} images in {seconds:.1f}s ({rate_text(written, seconds)}), "
                  f"report: {report_path(cfg.out)}")
    for key, what in (("skipped", "undecodable images skipped"), ("missing", "csv rows without an image file"),
                      ("refused", "archive members refused (unsafe path or oversized)"),
                      ("archive_errors", "archives unreadable"),
                      ("duplicate_names", "files ignored because another file has the same name")):
        if report[key]:
            console.print(f"[yellow]warning:[/] {len(report[key])} {what} (listed in the report)")
    if report.get("rebalanced_away"):
        console.print(f"note: {report['rebalanced_away']} images left out to keep the classes balanced after others "
                      "failed to decode")
    if report["upscaled"]:
        console.print(f"[yellow]note:[/] {report['upscaled']} images were smaller than {cfg.size}px and were upscaled")
    for split, per_class in report["counts"].items():
        if sum(per_class.values()) and min(per_class.values()) == 0:
            console.print(f"[yellow]warning:[/] split {split!r} lacks a class: {per_class}")
