"""What the Makefile checks before it starts any stage: its variables' values, one ``make`` at a time per outputs
folder, and (once the dataset is built, before any training) that N_SYNTH covers what the synthetic arm adds.

Run with the system python when make reads the Makefile (no numpy, torch or h5py until the dataset check):

    python makeguard.py vars NAME=VALUE ...           prints ``error: ...`` for the first bad value, else nothing
    python makeguard.py lock OUTPUTS MAKE_PID         holds OUTPUTS/.make.lock while MAKE_PID lives (a child
                                                      process); prints ``error: ...`` if another make holds it
    python makeguard.py synthetic DATASET N_SYNTH [--synthetic-ratio R | --synthetic-per-class N]
                                                      exit status 2 and one line when N_SYNTH is too small
"""

from __future__ import annotations

import fcntl
import math
import os
import select
import sys
import time
from pathlib import Path

from .errors import UserError
from .fileio import pid_alive

LOCK_NAME = ".make.lock"
# variable: (its least value, an example); EPOCHS may be left empty (the recipe's or KIMG's length)
WHOLE = {"SEEDS": (1, 3), "N_SYNTH": (1, 500), "CLF_EPOCHS": (1, 6), "N_PHANTOMS": (1, 400), "NPROC": (1, 1),
         "SIZE": (1, 64), "CLF_SIZE": (1, 64), "EPOCHS": (1, 20), "SEED": (0, 0),
         "FEATURES_EPOCHS": (1, 30)}
POSITIVE = ("KIMG", "SYNTH_RATIO")
SWITCHES = ("REUSE_GAN",)  # and every feature network's variable (INCEPTION, XRV, ...), passed as SWITCH:NAME=VALUE


def _number(text: str) -> float | None:
    try:
        v = float(text)
    except ValueError:
        return None
    return v if math.isfinite(v) else None


def check_value(name: str, value: str) -> None:
    """One make variable's value, as given; a UserError naming it and what to give instead."""
    if name in WHOLE and (value or name != "EPOCHS"):
        least, example = WHOLE[name]
        if not value.isdigit() or int(value) < least:
            raise UserError(f"{name}={value!r} is not a whole number >= {least}; give e.g. {name}={example}")
    elif name in POSITIVE and value:
        if (_number(value) or 0) <= 0:
            raise UserError(f"{name}={value!r} is not a positive number; give e.g. {name}=1 (or leave it unset)")
    elif name in SWITCHES and value not in ("0", "1"):
        raise UserError(f"{name}={value!r} must be 0 or 1")
    elif name == "NIH_DIR" and not (Path(value).is_dir() and any(Path(value).iterdir())):
        raise UserError(f"NIH_DIR={value} holds nothing to build DATA=nih from; run `make download NIH_DIR={value}` "
                        "first, or point NIH_DIR at the unpacked NIH ChestX-ray14 release")
    elif name == "FRACTIONS":
        bad = [f for f in value.split() if not 0 < (_number(f) or 0) <= 1]
        if bad or not value.split():
            raise UserError(f"FRACTIONS={value!r}: each must be a number in (0, 1]; give e.g. FRACTIONS=\"0.25 0.5 1\"")


def check_vars(pairs: list[str]) -> None:
    """NAME=VALUE pairs as make passes them (SWITCH:NAME=VALUE for a 0|1 variable; NIH_DIR only when the DATA=nih
    dataset is to be built from it)."""
    for pair in pairs:
        name, _, value = pair.partition("=")
        if name.startswith("SWITCH:"):
            name = name[len("SWITCH:"):]
            if value not in ("0", "1"):
                raise UserError(f"{name}={value!r} must be 0 or 1")
        check_value(name, value.strip())


def _wait_for_exit(pid: int) -> None:
    """Return when process ``pid`` has ended (a pidfd where Linux has one, else polling)."""
    try:
        fd = os.pidfd_open(pid)
    except (AttributeError, OSError):
        while pid_alive(pid):
            time.sleep(0.05)
        return
    select.select([fd], [], [])
    os.close(fd)


def _holder(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def take_lock(outputs: Path, make_pid: int, wait: float = 2.0) -> None:
    """Lock OUTPUTS/.make.lock for process ``make_pid``: a child process keeps it until that process ends (the
    kernel drops it then, even after kill -9). A holder whose make has just ended is waited for (``wait`` s)."""
    outputs.mkdir(parents=True, exist_ok=True)
    path = outputs / LOCK_NAME
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    deadline = time.monotonic() + wait
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            holder = _holder(path)
            if (holder is not None and pid_alive(holder)) or time.monotonic() > deadline:
                os.close(fd)
                who = f" (pid {holder})" if holder else ""
                raise UserError(f"another make{who} is running in {outputs}; wait for it to end, or give this one "
                                "another OUTPUTS") from None
            time.sleep(0.02)
    os.ftruncate(fd, 0)
    os.write(fd, str(make_pid).encode())
    if os.fork() == 0:  # the holder: no output, no inherited descriptor but the lock's, until make ends
        devnull = os.open(os.devnull, os.O_RDWR)
        for std in (0, 1, 2):
            os.dup2(devnull, std)
        os.closerange(3, fd)
        os.closerange(fd + 1, 1 << 16)
        _wait_for_exit(make_pid)
        os._exit(0)
    os.close(fd)


def check_synthetic(dataset: str, n_synth: int, flags: list[str]) -> None:
    """N_SYNTH images per class must cover what the synthetic arm adds: --synthetic-per-class N, or
    --synthetic-ratio R times each class's real training images."""
    if "--synthetic-per-class" in flags:
        return  # the arm adds N_SYNTH per class: always there
    ratio = float(flags[flags.index("--synthetic-ratio") + 1]) if "--synthetic-ratio" in flags else 1.0
    from .data.datasetfile import read_info  # h5py: only here

    counts = read_info(dataset).counts.get("train", {})
    wanted = max((round(ratio * n) for n in counts.values()), default=0)
    if n_synth < wanted:
        raise UserError(f"N_SYNTH={n_synth} images per class is fewer than the synthetic arm adds ({wanted}: "
                        f"SYNTH_RATIO={ratio:g} x the {max(counts.values())} real training images of the largest "
                        f"class in {dataset}); give N_SYNTH={wanted} or more, or a smaller SYNTH_RATIO")


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    try:
        if args[0] == "vars":
            check_vars(args[1:])
        elif args[0] == "lock":
            take_lock(Path(args[1]), int(args[2]))
        elif args[0] == "synthetic":
            check_synthetic(args[1], int(args[2]), args[3:])
    except UserError as e:
        if args[0] == "synthetic":
            print(f"error: {e}", file=sys.stderr)
            sys.exit(2)
        print(f"error: {e}")  # to make, which stops with it


if __name__ == "__main__":
    main()
