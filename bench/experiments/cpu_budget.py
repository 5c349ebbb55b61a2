#!/usr/bin/env python3
"""Quality per CPU-minute: what `make all`'s generator stage gives for a fixed training budget on a 2-core CPU.

Each candidate (CANDIDATES: a recipe, its overrides, its sampler) trains on nih-mini at 64x64 with 2 intra-op threads
for nested wall-clock budgets (--minutes, e.g. 4, 8, 12: one run per seed, continued from one budget to the next, its
training time kept in a ledger so a killed run resumes). At each budget it samples --n images per class (timed: a
diffusion model's sampling is part of what a laptop run pays) and scores them against nih-mini's real test images,
as `make all`'s report does, in both feature spaces of the study (common.SPACES: the real-data ResNet-18 and the cxr
network): per class precision, recall (k = 3), KID and pixel diversity. Beside them, per space, the same metrics of
the real training images scored in the generated images' place (the reference a generator reads against).

    python bench/experiments/cpu_budget.py run [--minutes 4,8,12] [--seeds 0,1] [--only NAME]
    python bench/experiments/cpu_budget.py report      # the "Quality per CPU-minute" section and its figure

Wall-clock budgets need a quiet machine: run it with nothing else at normal priority (a niced study beside it gets
almost no CPU). Every finished point is kept in the repository as docs/cpu-budget/CPU/CANDIDATE-seedS-Mmin.json
(small; one folder per CPU model; the runs' checkpoints stay in the work folder, build/bench/cpu-budget), so the
table grows over sessions and machines; `report` reads only those. The datasets and the two feature networks are
the study's (build/bench/study, built there when missing), so both experiments score in the same spaces.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import fire
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench/: the shared helper module, common.py
from common import (DOC, ROOT, SPACES, as_list, build_feature_network, cpu_model, log,  # noqa: E402
                    nih_mini_and_external, real_reference, record_start, show_table, train_for, work_dir,
                    write_section)

THREADS = 2
# name: the recipe, train_dcgan overrides, and the sampler's arguments (diffusion: steps and solver)
CANDIDATES = {
    "limited": {"recipe": "limited", "overrides": {}, "sampler": {}},
    # fewer filters: 3.5x the training img/s on 2 CPU threads (docs/benchmarks.md, "Generator training throughput")
    "limited, base 32": {"recipe": "limited", "overrides": {"base": 32}, "sampler": {}},
    "limited, base 48": {"recipe": "limited", "overrides": {"base": 48}, "sampler": {}},
    "diffusion": {"recipe": "diffusion", "overrides": {}, "sampler": {"steps": 18}},
    # the same training as `diffusion`, sampled with DPM-Solver++(2M) at 10 calls per image instead of Heun's 35
    "diffusion, dpm++2m 10": {"recipe": "diffusion", "overrides": {}, "sampler": {"steps": 10, "solver": "dpm++2m"},
                              "shares": "diffusion"},
}
KEYS = ("precision", "recall", "kid_mean", "pixel_diversity")
POINTS = ROOT / "docs" / "cpu-budget"  # the finished points, kept with the docs


def slug(name: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in name).strip("-")


def point_path(name: str, seed: int, minutes: float) -> Path:
    """Where the point is kept: one folder per CPU model (wall-clock budgets are only comparable on one)."""
    return POINTS / slug(cpu_model()) / f"{slug(name)}-seed{seed}-{minutes:g}min.json"


def write_json(path: Path, record: dict) -> None:
    from cxrgan.fileio import write_json_atomic

    path.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(path, record)


def reference(space: str) -> dict:
    """Per class, the metrics of nih-mini's real training images scored as if generated against its test images in
    ``space`` (computed once per CPU model, kept as docs/cpu-budget/CPU/reference-SPACE.json: the feature networks
    are retrained in each work folder, and not bit-identically on another CPU)."""
    path = POINTS / slug(cpu_model()) / f"reference-{space}.json"
    if not path.is_file():
        shared = work_dir(None, "study")
        data, _ = nih_mini_and_external(shared)
        work = work_dir(None, "cpu-budget")
        work.mkdir(parents=True, exist_ok=True)
        m = real_reference(data, f"{space}:{build_feature_network(shared, space)}", work)
        write_json(path, {"set": f"{data.name}:train", "against": f"{data.name}:test", "quality": {
            c: {k: v.get(k) for k in (*KEYS, "n_real", "n_fake")} for c, v in m["per_class"].items()}})
    return json.loads(path.read_text())


def score_point(run_dir: Path, ckpt: Path, name: str, seed: int, minutes: float, n: int,
                trained: dict) -> None:
    from cxrgan.generative.sample import resolve_generators, sample_to_file
    from cxrgan.metrics.evaluate import QualityConfig, evaluate

    shared = work_dir(None, "study")
    data, _ = nih_mini_and_external(shared)
    cand = CANDIDATES[name]
    samples = run_dir / f"samples-{slug(name)}-{minutes:g}min.h5"
    gens = resolve_generators(str(ckpt), run_dir, [0, 1], torch.device("cpu"))
    t0 = time.perf_counter()
    sample_to_file(samples, gens, n, seed, torch.device("cpu"), **cand["sampler"])
    sample_seconds = time.perf_counter() - t0
    record = {"candidate": name, "seed": seed, "minutes": minutes, "n": n, "threads": THREADS, "cpu": cpu_model(),
              "trained": trained, "sample_seconds": round(sample_seconds, 1), "quality": {}}
    for space in SPACES:
        net = build_feature_network(shared, space)
        m = evaluate(QualityConfig(real=f"{data}:test", fake=str(samples), train=f"{data}:train", audit=False,
                                   out=str(run_dir / f"quality-{space}.json"), features=f"{space}:{net}", cache="",
                                   device="cpu", seed=0, overwrite=True))
        record["quality"][space] = {c: {k: v.get(k) for k in KEYS} for c, v in m["per_class"].items()}
    samples.unlink()
    write_json(point_path(name, seed, minutes), record)
    log(f"{name} seed {seed} at {minutes:g} min: " + "; ".join(
        f"{c} P/R {q['precision']:.2f}/{q['recall']:.2f}" for c, q in record["quality"]["classifier"].items()))


def run(minutes: str = "4,8,12", seeds: str = "0,1", n: int = 500, only: str = "", workdir: str = "") -> None:
    """Train and score every candidate at each budget and seed (--only: comma-separated; a whole candidate name
    picks that candidate, any other word every candidate whose name contains it, e.g. "limited,base 32"); points
    already kept are skipped, so a second call resumes."""
    record_start()
    torch.set_num_threads(THREADS)
    work = work_dir(workdir or None, "cpu-budget")
    data, _ = nih_mini_and_external(work_dir(None, "study"))
    budgets = sorted(as_list(minutes, float))
    for space in SPACES:
        reference(space)
    wanted = [w.strip() for w in as_list(only, str) if w.strip()] if only else []
    # a whole name means that candidate; any other word, every candidate whose name contains it
    chosen = [n for n in CANDIDATES if n in wanted or any(w not in CANDIDATES and w in n for w in wanted)]
    for name, cand in CANDIDATES.items():
        if wanted and name not in chosen:
            continue
        for seed in as_list(seeds, int):
            run_dir = work / "runs" / f"{slug(cand.get('shares', name))}-seed{seed}"
            ledger = run_dir / "ledger.json"
            for m in budgets:
                if point_path(name, seed, m).is_file():
                    continue
                keep = run_dir / f"at-{m:g}min.pt"
                if not keep.is_file():
                    trained = train_for(dict(data=str(data), out=str(run_dir), recipe=cand["recipe"], seed=seed,
                                             device="cpu", ckpt_every=1000, grid=4, **cand["overrides"]),
                                        minutes=m, ledger=ledger)
                    shutil.copyfile(run_dir / "last.pt", keep)
                    summary = json.loads((run_dir / "summary.json").read_text())  # also when nothing was left to do
                    (run_dir / f"at-{m:g}min.json").write_text(json.dumps(
                        {"kimg": summary["kimg"], "epochs": summary["epochs"], "seconds": trained["seconds"]}))
                trained = json.loads((run_dir / f"at-{m:g}min.json").read_text())
                score_point(run_dir, keep, name, seed, m, n, trained)


def _cell(values: list[float], digits: int = 2) -> str:
    v = np.array([x for x in values if x is not None], float)
    return "–" if not len(v) else f"{v.mean():.{digits}f}" if len(v) == 1 else \
        f"{v.mean():.{digits}f} ± {v.std(ddof=1):.{digits}f}"


def report(workdir: str = "", out: str | None = None) -> None:
    """Tabulate the kept points (mean ± sd over seeds) and plot recall against minutes, one line per candidate."""
    import matplotlib.pyplot as plt

    work = work_dir(workdir or None, "cpu-budget")
    points = [json.loads(p.read_text()) for p in sorted(POINTS.glob("*/*-seed*-*min.json"))]
    if not points:
        sys.exit(f"error: no points in {POINTS}; run `python bench/experiments/cpu_budget.py run` first")
    # minutes buy different amounts of training on different CPUs: seeds are pooled per CPU model only
    groups: dict[tuple, list[dict]] = {}
    for p in points:
        groups.setdefault((p["candidate"], p["minutes"], p["cpu"]), []).append(p)
    cpus = sorted({p["cpu"] for p in points})
    sections = []
    fig, axes = plt.subplots(1, 2, figsize=(10, 5.5), sharey=True)
    for space in SPACES:
        rows = []
        for (name, minutes, cpu), runs in sorted(groups.items(), key=lambda kv: (
                kv[0][2], list(CANDIDATES).index(kv[0][0]), kv[0][1])):
            for cls in runs[0]["quality"][space]:
                rows.append([cpu, name, f"{minutes:g}", len(runs), _cell([r["trained"]["kimg"] for r in runs]),
                             _cell([r["sample_seconds"] / 60 for r in runs]), cls,
                             *(_cell([r["quality"][space][cls][k] for r in runs], 3 if k == "kid_mean" else 2)
                               for k in KEYS)])
        for reference in sorted(POINTS.glob(f"*/reference-{space}.json")):
            cpu = next((p["cpu"] for p in points if slug(p["cpu"]) == reference.parent.name), reference.parent.name)
            for cls, q in json.loads(reference.read_text())["quality"].items():
                rows.append([cpu, "*real training images (reference)*", "–", "–", "–", "–", cls,
                             *(_cell([q[k]], 3 if k == "kid_mean" else 2) for k in KEYS)])
        sections.append(f"Feature space: {space}.\n\n" + show_table(
            f"quality per CPU-minute ({space} space)",
            ["CPU", "candidate", "train min", "seeds", "kimg", "sampling min", "class", *KEYS], rows))
    for ax, cls in zip(axes, points[0]["quality"]["classifier"]):
        for cpu, style in zip(cpus, ("-", "--", ":")):
            for name, color in zip(CANDIDATES, plt.rcParams["axes.prop_cycle"].by_key()["color"]):
                xs = sorted(m for (c, m, u) in groups if c == name and u == cpu)
                if not xs:
                    continue
                ys = [np.mean([r["quality"]["classifier"][cls]["recall"] for r in groups[(name, m, cpu)]])
                      for m in xs]
                ax.plot(xs, ys, style, marker="o", color=color, label=f"{name} ({cpu})")
        ax.set_title(f"{cls}: recall (ResNet-18 space)")
        ax.set_xlabel("training minutes on 2 threads")
    axes[0].set_ylabel("recall against the real test images")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=2, fontsize=8)
    # the figure goes beside docs/benchmarks.md's figures, or into the work folder when --out names another file
    figure = (ROOT / "docs" / "figures" if out is None else work) / "quality-per-cpu-minute.png"
    fig.tight_layout(rect=(0, 0.2, 1, 1))
    fig.savefig(figure, dpi=110)
    body = ("Each candidate trained on nih-mini (64x64, 331 training images) with 2 threads for the budget in wall "
            "minutes (one run per seed, continued from one budget to the next), then sampled 500 images per class "
            "(\"sampling min\": that sampling's time) and was scored against the 90 real test images: mean ± sd "
            "over seeds of one CPU model (\"CPU\": minutes buy different amounts of training on different machines, "
            "so points of different CPUs are shown apart; \"kimg\" says how much each got; the feature networks "
            "were retrained on each machine, not bit-identically, so the spaces differ slightly too). The last "
            "rows score nih-mini's 331 real training images in the generated images' place: what real radiographs "
            "of other patients reach in each space.\n\n" + "\n\n".join(sections) +
            f"\n\n![recall against training minutes]({os.path.relpath(figure, Path(out or DOC).parent)})")
    write_section("quality-per-cpu-minute", "Quality per CPU-minute", body, out)


if __name__ == "__main__":
    fire.Fire({"run": run, "report": report})
