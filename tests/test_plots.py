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


def test_losses_png_reads_at_its_natural_size(tmp_path, monkeypatch):
    """A grid with words for names, y labels, whole-epoch ticks, and the validation points of a
    --val_every 3 run all drawn."""
    import matplotlib.pyplot as plt
    from PIL import Image

    import training

    figs = []
    real_close = plt.close
    monkeypatch.setattr(plt, "close", lambda fig=None: figs.append(fig) or real_close(fig))
    log = training.MetricsLog(tmp_path / "metrics.csv")
    for e in range(7):
        row = {"epoch": e, "epochs_done": e + 1, "train_mse_loss": 0.05 / (e + 1), "kld_loss": 0.1}
        if e in (2, 5, 6):
            row.update(val_ssim=0.5 + e / 100, val_psnr=13.0 + e / 10, val_min_mse=0.05,
                       val_copy_last_ssim=0.6, val_copy_last_psnr=12.0, val_copy_last_mse=0.08)
        log.rows.append(row)
    log.plot(tmp_path / "losses.png")
    assert Image.open(tmp_path / "losses.png").size == (1296, 612)
    axes = [ax for ax in figs[0].axes if ax.axison]
    names = [t.get_text() for ax in axes if ax.get_legend() for t in ax.get_legend().get_texts()]
    assert "copy last frame" in names and "the model (best of its samples)" in names
    assert not any(n.startswith(("val_", "train_")) for n in names)
    ssim = next(ax for ax in axes if ax.get_title().startswith("Validation SSIM"))
    assert ssim.get_ylabel() == "SSIM" and list(ssim.lines[0].get_xdata()) == [3, 6, 7]
    assert all(float(t).is_integer() for t in ssim.get_xticks())
