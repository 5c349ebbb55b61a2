"""sample: trained checkpoints (GANs, diffusion models) -> a samples file (docs/dataset-format.md, schema
cxrgan-samples/1)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .. import options
from ..cli import ProgressFn, no_progress
from ..data.datasetfile import SAMPLES_SCHEMA, write_dataset
from ..errors import UserError
from ..faults import kill_point
from ..fileio import H5_SUFFIXES, check_free_space, check_output_path, sha256_file
from . import checkpoint
from .checkpoint import LoadedGenerator, load_generator
from .diffusion import SOLVERS
from .networks import generate
from .objectives import OBJECTIVES


STEPS = 18  # a diffusion sampler's default steps in sample.py (EDM's Heun: 35 network calls per image)
SAMPLER_OPTIONS = ("truncation", "steps", "guidance", "solver")  # each acts on some objectives only


@dataclass
class SampleConfig:
    n: int = 500  # images per class
    ckpt: str | None = None  # comma-separated checkpoint files; None: the newest under ``root``
    out: str = "outputs/synthetic.h5"
    cls: int | str = "both"
    seed: int = 0
    batch: int = 256
    png: str | None = None
    truncation: float | None = None  # GANs: redraw latent entries beyond +-truncation
    root: str = "outputs/gan"
    device: str = "auto"
    overwrite: bool = False
    steps: int | None = None  # diffusion: sampler steps (None: STEPS; EDM's Heun: 2 * steps - 1 calls; DDIM: steps)
    guidance: float | None = None  # diffusion: classifier-free guidance scale (None: 1, the plain conditional model)
    solver: str | None = None  # diffusion checkpoints: heun, euler or dpm++2m (diffusion.SOLVERS); None: its own

    def validate(self) -> "SampleConfig":
        options.whole_number(self, "n", hint=" (images per class)")
        options.whole_number(self, "batch")
        options.optional_whole_number(self, "steps")
        if self.guidance is not None and (not isinstance(self.guidance, (int, float))
                                          or isinstance(self.guidance, bool) or not 0 <= self.guidance < 100):
            raise UserError(f"--guidance must be a number in [0, 100) (1: plain conditional), got {self.guidance!r}")
        if self.solver is not None and self.solver not in SOLVERS:
            raise UserError(f"--solver must be one of {', '.join(SOLVERS)} (or left out: the recipe's own), "
                            f"got {self.solver!r}")
        if self.truncation is not None:
            options.positive_number(self, "truncation")
        if self.cls != "both" and not options.is_whole(self.cls):
            raise UserError(f"--cls must be 0, 1 or both, got {self.cls!r}")
        options.seed(self)
        check_output_path(self.out, self.overwrite, inputs=self.input_paths(), suffixes=H5_SUFFIXES)
        return self

    def input_paths(self) -> dict:
        return {"--ckpt": str(self.ckpt).split(",") if self.ckpt else None}

    def output_paths(self) -> dict:
        return {"--out": self.out}

    def check_applies_to(self, gens: dict[int, LoadedGenerator]) -> None:
        """Refuse a sampler option given for a checkpoint it would not act on (--steps for a GAN, --truncation for
        a diffusion model): silently ignoring it would give images the user did not ask for."""
        for name in SAMPLER_OPTIONS:
            if getattr(self, name) is None:
                continue
            for g in gens.values():
                if name not in OBJECTIVES[g.objective].sample_options:
                    raise UserError(f"{options.flag(name)} does not apply to {g.path} ({g.recipe} recipe, "
                                    f"{g.objective} objective); leave it out, or sample a checkpoint it applies to")

    @property
    def wanted(self) -> list[int]:
        return [0, 1] if self.cls == "both" else [self.cls]


def resolve_generators(ckpt_arg: str | None, root: str | Path, wanted: list[int], device) -> dict[int, LoadedGenerator]:
    """Class index -> the generator that samples it: from --ckpt (comma-separated files or run folders), or the
    newest checkpoints under ``root`` (a conditional checkpoint covers every class; a per-class recipe has one per
    class). In a run folder, ``best.pt`` (the snapshot train_dcgan --select-snapshot kept) wins over ``last.pt``."""
    if ckpt_arg:
        candidates = [_preferred(Path(p)) if Path(p).is_dir() else Path(p) for p in str(ckpt_arg).split(",") if p]
        for p in candidates:
            if not p.is_file():
                raise UserError(f"--ckpt {p}: no such file")
    else:
        candidates = checkpoint.find_newest(root)
        if not candidates:
            raise UserError(f"no checkpoint found under {root}/ (searched for last.pt and ckpt-*.pt); train one with "
                            "`make gan` or tools/train_dcgan.py --data FILE.h5, or pass --ckpt PATH")
    chosen: dict[int, LoadedGenerator] = {}
    seen_dirs = set()
    for path in candidates:
        if all(c in chosen for c in wanted):
            break
        if not ckpt_arg:  # the newest checkpoint of each run folder only, or its best.pt
            if path.parent in seen_dirs:
                continue
            seen_dirs.add(path.parent)
            if (path.parent / "best.pt").is_file():
                path = path.parent / "best.pt"
        g = load_generator(path, device)
        for c in g.classes_covered:
            if c in wanted and c not in chosen:
                chosen[c] = g
    missing = [c for c in wanted if c not in chosen]
    if missing:
        where = f"--ckpt {ckpt_arg}" if ckpt_arg else f"{root}/"
        raise UserError(f"no checkpoint in {where} generates class {missing[0]} (none was trained on images of "
                        f"it); train one that is (--recipe study-dcgan --cls {missing[0]}, or a conditional recipe "
                        "on data with every class) or choose another --cls")
    sizes = {(g.model["size"], tuple(g.model["classes"])) for g in chosen.values()}
    if len(sizes) > 1:
        raise UserError(f"the chosen checkpoints disagree on image size or classes ({sorted(sizes)}); pass --ckpt")
    classes = next(iter(chosen.values())).model["classes"]
    bad = [c for c in wanted if not 0 <= c < len(classes)]
    if bad:
        raise UserError(f"--cls {bad[0]}: the checkpoint has classes 0..{len(classes) - 1} ({classes})")
    return chosen


def _preferred(folder: Path) -> Path:
    best = folder / "best.pt"
    return best if best.is_file() else folder / "last.pt"


def latents(n: int, dim: int, seed: int, cls: int, truncation: float | None) -> torch.Tensor:
    """Standard normal latents, deterministic per (seed, class); with ``truncation`` t, every entry beyond +-t is
    redrawn (the truncation trick: fewer, more typical images)."""
    gen = torch.Generator().manual_seed(seed * 1009 + cls)
    z = torch.randn(n, dim, generator=gen)
    if truncation is not None:
        while (bad := z.abs() > truncation).any():
            z[bad] = torch.randn(int(bad.sum()), generator=gen)
    return z


def sample_to_file(out: Path, gens: dict[int, LoadedGenerator], n: int, seed: int, device, batch: int = 256,
                   truncation: float | None = None, png_dir: str | None = None, call_args: dict | None = None,
                   progress: ProgressFn = no_progress, steps: int = STEPS, guidance: float = 1.0,
                   solver: str | None = None) -> dict:
    """Write ``n`` images of each class in ``gens`` to ``out``; returns the file's root attributes. Models with a
    sampler (diffusion) sample with ``steps`` steps of its ODE ``solver`` (None: the formulation's own) and
    classifier-free ``guidance`` (GANs ignore all three)."""
    cpu = torch.device(device).type == "cpu"
    samplers = {id(g): g.sampler(steps, guidance, solver, channels_last=cpu) for g in gens.values()}
    records = [r for r in (g.sampler_record(steps, guidance, solver) for g in gens.values()) if r is not None]
    any_g = next(iter(gens.values()))
    classes, size = any_g.model["classes"], any_g.model["size"]
    wanted = sorted(gens)
    check_free_space(out.parent, n * len(wanted) * size ** 2 // 2, f"--out {out} ({n} images per class)")
    task, batches = progress("sample", n * len(wanted)), 0
    with write_dataset(out, size, classes, {"synthetic": n * len(wanted)}, with_patients=False,
                       schema=SAMPLES_SCHEMA) as writer:
        for c in wanted:
            g = gens[c]
            z = latents(n, g.model["latent"], seed, c, truncation)
            y = torch.full((n,), c, dtype=torch.long)
            for i in range(0, n, batch):
                images = generate(g.network, samplers[id(g)], z[i:i + batch], y[i:i + batch], device, batch)
                names = [f"synthetic_{_slug(classes[c])}_{i + k:06d}.png" for k in range(len(images))]
                writer.add_batch("synthetic", [c] * len(images), names, images)
                batches += 1
                kill_point(f"sample:wrote-batch-{batches}")
                if png_dir:
                    for name, image in zip(names, images):
                        _write_png(Path(png_dir) / _slug(classes[c]) / name, image)
                task(len(images))
        checkpoints = sorted({str(g.path.resolve()) for g in gens.values()})
        return writer.close(
            source="gan", seed=seed, n_per_class=n, truncation=truncation if truncation is not None else "none",
            checkpoints=checkpoints, checkpoint_sha256=[sha256_file(p) for p in checkpoints],
            recipe=sorted({g.recipe for g in gens.values()}), weights=sorted({g.weights for g in gens.values()}),
            epochs=[gens[c].epoch for c in wanted], training_data=training_data(gens.values()), args=call_args or {},
            sampler=_sampler_attr(records))


def _sampler_attr(records: list[dict]):
    """The samples file's record of the sampler settings: "none" for GANs."""
    if not records:
        return "none"
    return {"steps": records[0]["steps"], "guidance": records[0]["guidance"],
            "solver": ",".join(sorted({r["solver"] for r in records}))}


def training_data(gens) -> list[dict]:
    """What the generators were trained on, once per distinct dataset and split: the provenance train_resnet checks
    (a synthetic arm must come from --data's own training split)."""
    seen = {}
    for g in gens:
        d = g.dataset
        key = (d.get("content_sha256", ""), d.get("split", "train"), float(d.get("real_fraction", 1.0)),
               int(d.get("subset_seed", 0)))
        seen[key] = {"content_sha256": key[0], "split": key[1], "real_fraction": key[2], "subset_seed": key[3],
                     "path": d.get("path", "")}
    return list(seen.values())


def _slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def _write_png(path: Path, image: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image, mode="L").save(path)
