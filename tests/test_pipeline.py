"""End-to-end smoke test: every tool in order on tiny phantoms, as `make all` chains them, ending in REPORT.md."""

import json

from conftest import run_tool


def _ok(*args):
    r = run_tool(*args, timeout=300)
    assert r.returncode == 0, f"{args[0]} failed:\n{r.stderr[-2000:]}"
    return r


def test_tools_chain_into_a_report(tmp_path):
    data, out = tmp_path / "ph.h5", tmp_path / "outputs"
    _ok("make_phantoms.py", "--n", "160", "--size", "32", "--out", data, "--seed", "0")
    _ok("train_dcgan.py", "--data", data, "--out", out / "gan" / "improved", "--recipe", "improved", "--epochs", "2",
        "--batch", "16", "--base", "8", "--grid", "4", "--device", "cpu", "--snapshot-kimg", "0.05", "--snapshot-n", "32")
    _ok("sample.py", "--n", "64", "--root", out / "gan", "--out", out / "synthetic.h5", "--device", "cpu")
    clf = ["--data", data, "--size", "32", "--epochs", "1", "--seeds", "2", "--n-boot", "50", "--device", "cpu"]
    base = out / "classify" / "fraction-1.0"
    _ok("train_resnet.py", *clf, "--out", base / "real")
    _ok("train_resnet.py", *clf, "--out", base / "real+oversample", "--control", "oversample",
        "--baseline", base / "real")
    _ok("train_resnet.py", *clf, "--out", base / "real+synthetic", "--synthetic", out / "synthetic.h5",
        "--baseline", f"{base / 'real'},{base / 'real+oversample'}")
    _ok("train_resnet.py", *clf, "--real-fraction", "0.5", "--out", out / "classify" / "fraction-0.5" / "real")
    _ok("train_resnet.py", *clf, "--out", out / "classify" / "tstr", "--synthetic", out / "synthetic.h5",
        "--synthetic-only")
    ckpt = out / "classify" / "fraction-1.0" / "real" / "model-seed0.pt"
    _ok("fid_is.py", "--real", data, "--fake", out / "synthetic.h5", "--features", f"classifier:{ckpt}",
        "--out", out / "metrics" / "domain.json", "--cache", "", "--kid-subset-size", "20", "--device", "cpu")
    _ok("report.py", "--outputs", out)

    report = (out / "REPORT.md").read_text()
    metrics = json.loads((out / "metrics" / "domain.json").read_text())
    mixed = json.loads((out / "classify" / "fraction-1.0" / "real+synthetic" / "metrics.json").read_text())
    paired, control = mixed["comparisons"]
    assert paired == mixed["paired"] and control["baseline"].endswith("real+oversample")
    for p in (paired, control):
        assert f"{p['delta_auroc']:+.3f}" in report  # the paired tests' numbers, as computed
    assert "real + oversampled real copies" in report
    assert "beat oversampling" in report or "did worse than oversampling" in report
    assert f"{metrics['fid']:.2f}" in report and "synthetic only (TSTR)" in report
    assert f"{metrics['near_copies']} (pixels)" in report
    assert len(metrics["warnings"]) >= 3 and all(w in report for w in metrics["warnings"])  # overall and per class
    assert f"{metrics['pixel_diversity']:.3f}" in report and "Metric snapshots during training (improved, 2" in report
    assert "Split: by patient at random" in report and "arms: 1 per real training image of each class" in report
    for section in ("## At a glance", "## Data", "## Table 1", "## Table 2", "## Memorisation audit", "## Data efficiency",
                    "## Samples", "## GAN training"):
        assert section in report, section
    # every figure the report links to exists
    links = [line.split("](", 1)[1].split(")", 1)[0] for line in report.splitlines() if line.startswith("![")]
    links += [part.split(")", 1)[0] for line in report.splitlines() for part in line.split("](")[1:]]
    assert len(set(links)) >= 8
    for link in set(links):
        assert (out / link).is_file(), link


def test_report_of_an_empty_outputs_folder_says_what_is_missing(tmp_path):
    (tmp_path / "outputs").mkdir()
    _ok("report.py", "--outputs", tmp_path / "outputs")
    report = (tmp_path / "outputs" / "REPORT.md").read_text()
    for hint in ("make classify", "make metrics", "make samples", "make gan"):
        assert hint in report
    r = run_tool("report.py", "--outputs", tmp_path / "nothing")
    assert r.returncode == 2 and "no such folder" in r.stderr
