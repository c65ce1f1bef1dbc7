"""tests/device_check.py (the checks run where a GPU is lent) stays runnable: here against the CPU itself."""
from __future__ import annotations

import importlib.util
from pathlib import Path

spec = importlib.util.spec_from_file_location("device_check", Path(__file__).with_name("device_check.py"))
device_check = importlib.util.module_from_spec(spec)
spec.loader.exec_module(device_check)


def test_device_check_passes_on_the_cpu_and_can_fail(monkeypatch, capsys):
    out = device_check.main(["--device", "cpu"])
    assert out["ok"] and out["device"] == "cpu"
    for check in ("shortcut_convs", "validation", "metrics", "amp_step"):
        assert out[check]["ok"], check
    # the same device on both sides: validation and the metrics agree exactly
    assert out["validation"]["max_ssim_diff"] == 0 and out["metrics"]["sparse_psnr_diff_db"] == 0
    # bf16 autocast on the CPU changes the loss a little, and training moves every weight either way
    assert 0 < out["amp_step"]["first_loss_rel"] < device_check.TOL["amp_loss"]
    assert out["amp_step"]["amp"]["params_moved"] == out["amp_step"]["fp32"]["params_moved"] > 100
    monkeypatch.setitem(device_check.TOL, "amp_loss", 0.0)  # a pass mark nothing meets: the check fails
    failed = device_check.main(["--device", "cpu"])
    assert not failed["amp_step"]["ok"] and not failed["ok"]
