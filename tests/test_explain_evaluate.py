"""The evaluation table and the explain benchmark run end to end on tiny models."""

from __future__ import annotations

import json
import math

import pytest
import torch

import hvit
from hvit.data import make_shapes
from hvit.explain.evaluate import RANDOM_REFERENCE, evaluate_explanations, explanation_methods, main

METHODS = ["saliency", "grad_cam stage 2", "attention rollout", RANDOM_REFERENCE]


def test_every_method_has_a_row_and_scores_are_in_range():
    torch.manual_seed(0)
    model = hvit.create_model("hvit_nano", num_classes=6)
    names = explanation_methods(model)
    assert (
        "integrated_gradients" in names
        and "grad_cam stage 4" in names
        and "attention received stage 1" in names
    )
    images, labels, masks = make_shapes(4, 32, split="test")
    report = evaluate_explanations(model, images, labels, masks, methods=METHODS, batch_size=3, steps=4)
    assert [r.name for r in report.rows] == METHODS and report.num_images == 4
    assert 0 < report.mask_fraction < 1 and 0 <= report.accuracy <= 1
    for r in report.rows:
        for v in (r.pointing_game, r.mask_mass, r.deletion_auc, r.insertion_auc):
            assert 0 <= v <= 1
        assert r.seconds_per_image >= 0
        if r.name == RANDOM_REFERENCE:
            assert math.isnan(r.randomization_rho)
        else:
            assert -1 <= r.randomization_rho <= 1 or r.rho_undefined == 4
        curves = report.curves[r.name]
        assert len(curves["fractions"]) == len(curves["deletion"]) == 5
    assert report.best().name != RANDOM_REFERENCE
    table = report.to_markdown()
    assert all(f"| {m} |" in table for m in METHODS) and "pointing game" in table
    with pytest.raises(ValueError, match="unknown methods"):
        evaluate_explanations(model, images, labels, masks, methods=["lime"])


def test_command_line_prints_the_table_and_writes_json(tmp_path, capsys):
    out = tmp_path / "report.json"
    report = main(
        [
            "--model",
            "hvit_nano",
            "--num-images",
            "2",
            "--batch-size",
            "2",
            "--steps",
            "2",
            "--methods",
            "input_x_gradient",
            "attention received stage 2",
            "--json",
            str(out),
        ]
    )
    printed = capsys.readouterr().out
    assert "| input_x_gradient |" in printed and "hvit_nano (random weights)" in printed
    saved = json.loads(out.read_text())
    assert [r["name"] for r in saved["rows"]] == ["input_x_gradient", "attention received stage 2"]
    assert saved["num_images"] == report.num_images == 2


def test_explain_benchmark_smoke(capsys):
    from hvit.bench.explain import main as bench_main
    from hvit.bench.explain import run

    results = run(["--models", "hvit_nano", "--size", "32", "--repeats", "1"])
    ops = results["hvit_nano"]
    assert set(ops) == {"forward", "attention extraction", "Grad-CAM", "Saliency", "IG (32 steps)"}
    assert all(t > 0 for t in ops.values())
    assert bench_main(["--models", "hvit_nano", "--size", "32", "--repeats", "1"]) == 0
    assert "IG (32 steps)" in capsys.readouterr().out
