"""The NIH ChestX-ray14 metadata: the Data_Entry csv, the class rule, view filter and the official split lists."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import UserError

REQUIRED_COLUMNS = ("Image Index", "Finding Labels")
NO_FINDING = "No Finding"
OTHER_FINDINGS = "Other findings"  # make_hdf5 --other-findings: the one class of a file of them
CSV_GLOBS = ("Data_Entry*.csv", "Data_Entry*.csv.gz")
OFFICIAL_LISTS = ("train_val_list.txt", "test_list.txt")
VIEWS = ("PA", "AP", "both")
_NIH_NAME = re.compile(r"^(\d+)_\d+\.\w+$")


def find_csv(src: Path) -> Path | None:
    """A Data_Entry*.csv(.gz) in ``src`` or one level below; the v2020 revision wins over the 2017 one."""
    found = sorted({p for d in (src, *[c for c in src.iterdir() if c.is_dir()]) for g in CSV_GLOBS for p in d.glob(g)})
    return max(found, key=lambda p: ("v2020" in p.name, p.name)) if found else None


def read_csv(path: str | Path) -> pd.DataFrame:
    """Read a Data_Entry csv (plain or .gz). Needs ``Image Index`` and ``Finding Labels``; uses ``Patient ID`` and
    ``View Position`` when present (patient ids otherwise come from NIH-style file names)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"--csv {path}: no such file")
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, UnicodeDecodeError, EOFError, OSError) as e:
        raise UserError(f"--csv {path}: cannot be read as a csv ({e})") from None
    df.columns = [c.strip() for c in df.columns]
    missing = [c for c in REQUIRED_COLUMNS if c not in df.columns]
    if missing:
        raise UserError(f"--csv {path}: missing required column(s) {', '.join(map(repr, missing))}; "
                        f"expected the NIH Data_Entry_2017 header ({', '.join(REQUIRED_COLUMNS)}, Patient ID, ...)")
    df["Image Index"] = df["Image Index"].str.strip()
    df["Finding Labels"] = df["Finding Labels"].str.strip()
    df = df[df["Image Index"] != ""].drop_duplicates("Image Index", keep="first")
    return df.reset_index(drop=True)


def patient_id_from_name(name: str) -> int:
    """NIH names are ``PPPPPPPP_FFF.png`` (patient, follow-up); -1 when the name does not follow that pattern."""
    m = _NIH_NAME.match(Path(name).name)
    return int(m.group(1)) if m else -1


def patient_ids(df: pd.DataFrame) -> np.ndarray:
    if "Patient ID" in df.columns:
        ids = pd.to_numeric(df["Patient ID"], errors="coerce")
        from_names = df["Image Index"].map(patient_id_from_name)
        return ids.fillna(from_names).astype(np.int64).to_numpy()
    return df["Image Index"].map(patient_id_from_name).astype(np.int64).to_numpy()


def class_labels(findings: pd.Series, finding: str = "Infiltration", finding_only: bool = False) -> np.ndarray:
    """The reference study's rule: 1 when ``finding`` is among the labels (others may co-occur; only alone with
    ``finding_only``), 0 when the labels are exactly "No Finding", -1 (excluded) otherwise."""
    parts = findings.str.split("|").map(lambda xs: {x.strip() for x in xs})
    positive = parts.map(lambda s: s == {finding} if finding_only else finding in s)
    negative = findings == NO_FINDING
    return np.where(positive, 1, np.where(negative, 0, -1)).astype(np.int64)


def view_mask(df: pd.DataFrame, view: str) -> np.ndarray:
    if view not in VIEWS:
        raise UserError(f"--view must be one of {', '.join(VIEWS)}, got {view!r}")
    if view == "both":
        return np.ones(len(df), dtype=bool)
    if "View Position" not in df.columns:
        raise UserError(f"--view {view} needs a 'View Position' column in the csv; use --view both")
    return (df["View Position"].str.strip().str.upper() == view).to_numpy()


def find_official_lists(*dirs: Path) -> tuple[Path, Path] | None:
    for d in dirs:
        if d and all((d / n).is_file() for n in OFFICIAL_LISTS):
            return d / OFFICIAL_LISTS[0], d / OFFICIAL_LISTS[1]
    return None


def read_list(path: Path) -> set[str]:
    return {line.strip() for line in path.read_text().splitlines() if line.strip()}
