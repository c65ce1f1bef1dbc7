"""The evaluation's figures say what each line is."""
from __future__ import annotations

import evaluation


def test_curves_legend_names_the_model_its_shuffled_audio_and_each_baseline(tmp_path, monkeypatch):
    figs = []
    monkeypatch.setattr(evaluation, "_png", lambda fig: figs.append(fig) or b"png")
    per_frame = {"ssim_per_frame": [0.5, 0.4, 0.3]}
    summary = {"protocols": ["paper"], "metrics": ["ssim"], "n_past": 2, "paper": per_frame,
               "baselines": {"copy_last_frame": "copy last frame", "constant_velocity": "constant velocity"},
               "copy_last_frame": {"paper": per_frame}, "constant_velocity": {"paper": per_frame},
               "audio_shuffled": {"paper": per_frame}}
    evaluation.plot_curves(tmp_path / "curves.png", summary, "title", label="Sound2Sight")
    labels = [t.get_text() for t in figs[0].axes[0].get_legend().get_texts()]
    assert labels == ["Sound2Sight (samples)", "copy last frame", "constant velocity", "Sound2Sight, shuffled audio"]
