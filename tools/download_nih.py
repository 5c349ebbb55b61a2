#!/usr/bin/env python3
"""Download the NIH ChestX-ray14 release (the 12 image archives, the Data_Entry csv, the official split lists)."""

import sys
import time

from rich.table import Table

from cxrgan import cli, options
from cxrgan.data.download import BOX_FOLDER, PART_SUFFIX, DownloadConfig, download_release, write_record
from cxrgan.errors import UserError


def download_nih(cfg: DownloadConfig, call_args: dict):
    """Fetch the release files into --out, resuming partial downloads, and record them in OUT/download.json.

    The 12 archives come from NIH's official direct links (over 40 GB in all). NIH publishes no direct link for
    Data_Entry_2017_v2020.csv, train_val_list.txt and test_list.txt: download them from the Box folder
    https://nihcc.app.box.com/v/ChestXray-NIHCC into --out yourself (the tool then skips them), or use --mirror.
    NIH publishes no checksums either: files are checked by the size the server announces, and by MD5 only where
    one is known (the built-in table, empty until filled in, or the mirror's MD5SUMS, which takes precedence).
    Each file is written as NAME.part and renamed when it verified; re-running resumes a NAME.part and skips
    files already in place. Run it again after any failure.

    Args:
        out: folder to download into (default data/nih).
        mirror: fetch every file as MIRROR/NAME from this http(s) folder instead (the csv and lists too); its
            MD5SUMS file (md5sum format), when served, is checked against.
        only: just these files, comma-separated, e.g. images_001.tar.gz,Data_Entry_2017_v2020.csv.
        retries: retries per file in all, after a connection error, dropped connection or 5xx answer, with
            backoff 1, 2, 4 ... 30 s (default 20); a resumed download keeps the bytes it has.
        timeout: seconds without an answer before a connection counts as failed (default 60).
        deadline: seconds per file before giving up, retries included (default 21600, 6 h; 0: no limit).
        seed: accepted for uniformity with the other tools; unused (downloading involves no randomness).
    """
    options.seed(cfg)
    t0 = time.perf_counter()
    try:
        with cli.progress_bars(transfer=True) as progress:
            outcome = download_release(cfg.out, mirror=cfg.mirror, only=cfg.only, retries=cfg.retries,
                                       timeout=cfg.timeout, deadline=cfg.deadline, progress=progress)
    except KeyboardInterrupt:
        cli.console.print(f"[bold red]interrupted[/]: files already complete are kept; a partial NAME{PART_SUFFIX} is "
                          "kept too, and re-running resumes it")
        sys.exit(130)
    cli.console.print(summary_table(outcome))
    record = write_record(outcome, call_args)
    ok = [r for r in outcome.files if r.ok]
    got = sum(r.size or 0 for r in ok if r.status in ("downloaded", "resumed"))
    cli.console.print(f"{len(ok)} of {len(outcome.files)} files in place in {outcome.out}/ ({human_size(got)} "
                      f"downloaded in {time.perf_counter() - t0:.0f} s); wrote {record}", highlight=False)
    if ok and not any("MD5" in r.checked for r in ok):
        cli.console.print("note: no checksum was known for these files (NIH publishes none), so they were checked by "
                          "size only; download.json holds the MD5 of what was received", highlight=False)
    error = outcome.error_message()
    if error:
        raise UserError(error)
    if not outcome.mirror and any(r.status == "skipped" and r.url is None for r in outcome.files):
        cli.console.print(f"the csv and lists were taken as present (from {BOX_FOLDER}); they were not checked",
                          highlight=False)


def summary_table(outcome) -> Table:
    table = Table(title=f"NIH ChestX-ray14 in {outcome.out}/")
    for col, justify in (("file", "left"), ("size", "right"), ("status", "left"), ("checked", "left"),
                         ("note", "left")):
        table.add_column(col, justify=justify)
    colour = {"downloaded": "green", "resumed": "green", "verified": "green", "skipped": "cyan"}
    for r in outcome.files:
        size = human_size(r.size) if r.size is not None else "-"
        status = f"[{colour.get(r.status, 'red')}]{r.status}[/]"
        table.add_row(r.name, size, status, r.checked or "-", r.error or r.note)
    return table


def human_size(n: int) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:,} {unit}" if unit == "B" else f"{n:,.1f} {unit}"
        n /= 1000


main = cli.command(DownloadConfig, download_nih)

if __name__ == "__main__":
    cli.run(main, name="download_nih.py")
