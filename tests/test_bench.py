"""bench/ helpers that decide what a benchmark's numbers mean: equal training time, continued runs, table cells."""

import json
import sys

import pytest

from conftest import ROOT

sys.path.insert(0, str(ROOT / "bench"))
import _common  # noqa: E402
import gan_ablation  # noqa: E402


def test_train_for_stops_within_half_an_epoch_of_the_budget(monkeypatch):
    """A fake trainer at 7 s per epoch (after an already-trained stretch): the budget counts only new training
    time and the calls are sized so the total lands within half an epoch of it."""
    done = {"epochs": 30}  # the run resumes at epoch 30, past the first chunk asked for

    def fake_train(cfg):
        if cfg.epochs <= done["epochs"]:
            return {"epochs": done["epochs"], "trained": False}
        new = cfg.epochs - done["epochs"]
        done["epochs"] = cfg.epochs
        return {"epochs": cfg.epochs, "seconds": 7.0 * new, "kimg": cfg.epochs / 10}

    monkeypatch.setattr(gan_ablation, "train", fake_train)
    result = gan_ablation.train_for({"data": "x", "out": "y"}, minutes=10, chunk=5)
    assert abs(result["seconds"] - 600) <= 3.5
    assert done["epochs"] == 30 + round(600 / 7)
    assert result["kimg"] == done["epochs"] / 10


def test_continue_run_copies_the_training_state_but_not_the_scores(tmp_path):
    source, target = tmp_path / "run-35min-s0", tmp_path / "run-60min-s0"
    source.mkdir()
    for name in ("last.pt", "losses.csv", "metrics.csv", "best.pt", "samples.h5", "fid_is.json"):
        (source / name).write_text(name)
    (source / "scores.json").write_text(json.dumps({"seconds": 2100.5}))
    assert gan_ablation.continue_run(source, target) == 2100.5
    assert sorted(p.name for p in target.iterdir()) == ["best.pt", "last.pt", "losses.csv", "metrics.csv"]
    (target / "last.pt").write_text("trained further")  # a second call (a restarted benchmark) keeps the progress
    gan_ablation.continue_run(source, target)
    assert (target / "last.pt").read_text() == "trained further"


def test_continue_run_refuses_an_unfinished_source(tmp_path):
    (tmp_path / "run").mkdir()
    with pytest.raises(SystemExit, match="no scores.json"):
        gan_ablation.continue_run(tmp_path / "run", tmp_path / "longer")


def test_arm_cells_lists_each_compared_arm_in_order():
    summary = {"auroc": 0.7451, "auroc_ci95": [0.641, 0.826], "comparisons": [
        {"baseline": "/w/fraction-1/real+augmentation", "delta_auroc": 0.0, "ci95": [-0.098, 0.098], "p_value": 1.0},
        {"baseline": "/w/fraction-1/real", "delta_auroc": -0.0264, "ci95": [-0.151, 0.099], "p_value": 0.63}]}
    assert _common.arm_cells(summary) == ["0.745 [0.641, 0.826]", "-0.026 [-0.151, +0.099]", "–",
                                          "+0.000 [-0.098, +0.098]"]
    assert _common.arm_cells(summary, p_values=True, missing="")[1:3] == ["-0.026 [-0.151, +0.099] p 0.63", ""]
