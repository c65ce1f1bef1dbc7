"""experiments/study.py and experiments/report.py on the toy scale: every step, the report, resuming."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from experiments import report, study
from errors import InputError

ROOT = Path(__file__).resolve().parents[1]


def test_aggregate_and_dig():
    assert report.aggregate([1.0, 3.0, None]) == {"mean": 2.0, "sd": pytest.approx(2 ** 0.5), "n": 2}
    assert report.aggregate([0.5]) == {"mean": 0.5, "sd": None, "n": 1}
    assert report.aggregate([None]) == {"mean": None, "sd": None, "n": 0}
    assert report.dig({"a": {"b": 2}}, ("a", "b")) == 2.0
    assert report.dig({"a": {"b": None}}, ("a", "b")) is None and report.dig({}, ("a",)) is None


def test_a_baseline_comes_from_any_run_that_has_it_or_the_kept_evaluation():
    """Runs evaluated before a baseline was registered lack its block: the report takes it from
    another run of the dataset, else from ``results/baselines/<ds>_metrics.json``."""
    old = {"paper": {"ssim": 0.5}, "copy_last_frame": {"paper": {"ssim": 0.4}}}
    new = {**old, "constant_velocity": {"paper": {"ssim": 0.7}}}
    runs = {"a/s2s_seed1": old, "a/s2s_seed2": new, "b/s2s_seed1": old}
    cfgs = {"s2s": ["a/s2s_seed1", "a/s2s_seed2"]}
    assert report.baseline_run("constant_velocity", "a", cfgs, runs) is new
    assert report.baseline_run("copy_last_frame", "a", cfgs, runs) is old
    b = {"s2s": ["b/s2s_seed1"]}
    assert report.baseline_run("constant_velocity", "b", b, runs) is None
    kept = {"constant_velocity": {"paper": {"ssim": 0.6}}}
    assert report.baseline_run("constant_velocity", "b", b, runs, {"b": kept}) is kept
    text, agg = report.tables(runs, {"b": kept})
    assert agg["b"]["constant_velocity"]["paper SSIM"]["mean"] == 0.6
    assert agg["a"]["constant_velocity"]["paper SSIM"]["mean"] == 0.7


def test_runs_cover_the_required_configurations():
    names = {study.run_name(*r) for r in study.runs(study.SCALES["cpu"])}
    for ds in ("m3so", "m3so_nb"):
        for cfg in ("sound2sight", "no_audio", "no_disc"):
            assert f"{ds}/{cfg}_seed1" in names
    assert {"m3so/sound2sight_seed2", "m3so/no_audio_seed2"} <= names  # spreads where the claim needs them


def test_long_scale_and_config_subsets(tmp_path):
    """cpu_long covers M3SO only; --configs narrows what one process runs (two processes can split the
    work), while timings.json merges what each wrote."""
    long = study.SCALES["cpu_long"]
    assert long.datasets == ("m3so",) and "60" in long.train_flags
    assert {study.run_name(*r) for r in study.runs(long, long.datasets, ("no_audio",))} == {
        "m3so/no_audio_seed1", "m3so/no_audio_seed2"}
    a = study.Study(tmp_path / "out", tmp_path / "res", "cpu_long", configs=("no_audio",))
    b = study.Study(tmp_path / "out", tmp_path / "res", "cpu_long", configs=("sound2sight", "no_disc"))
    assert [n for n, _ in a.steps()] == ["data m3so", "train m3so/no_audio_seed1", "evaluate m3so/no_audio_seed1",
                                         "train m3so/no_audio_seed2", "evaluate m3so/no_audio_seed2"]
    a._record("train x", 2.0)
    b._record("train y", 3.0)
    a._record("train x", 1.5)
    assert json.loads((tmp_path / "res" / "timings.json").read_text()) == {"train x": 3.5, "train y": 3.0}
    with pytest.raises(InputError, match="--configs"):
        study.Study(tmp_path / "out", tmp_path / "res", "cpu_long", configs=("svg",))


def test_recipe_scale_and_seed_subsets(tmp_path):
    """The recipe scale: the recipe's flags on top of the cpu scale's, 3 seeds of Sound2Sight and
    no-audio on both datasets (M3SO first), no no-disc runs; --seeds narrows one process's share."""
    rec = study.SCALES["recipe"]
    assert rec.datasets == ("m3so", "m3so_nb") and set(rec.configs) == {"sound2sight", "no_audio"}
    flags = " ".join(rec.train_flags)
    assert " ".join(study.RECIPE) in flags and " ".join(study.SCALES["cpu"].train_flags) in flags
    everything = {study.run_name(*r) for r in study.runs(rec, rec.datasets, rec.configs)}
    assert len(everything) == 12 and not any("no_disc" in n for n in everything)
    s = study.Study(tmp_path / "out", tmp_path / "res", "recipe", datasets=("m3so_nb",), configs=("sound2sight",),
                    seeds=(1, 2))
    assert [n for n, _ in s.steps()] == ["data m3so_nb", "train m3so_nb/sound2sight_seed1",
                                         "evaluate m3so_nb/sound2sight_seed1", "train m3so_nb/sound2sight_seed2",
                                         "evaluate m3so_nb/sound2sight_seed2"]
    full = study.Study(tmp_path / "out", tmp_path / "res", "recipe")
    assert "no_disc" not in full.configs and len(full.my_runs()) == 12


@pytest.fixture(scope="module")
def tiny_study(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("study")
    cmd = [sys.executable, str(ROOT / "experiments" / "study.py"), "--scale", "tiny", "--datasets", "m3so",
           "--out", str(tmp / "out"), "--results", str(tmp / "res")]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    return {"tmp": tmp, "cmd": cmd, "stdout": proc.stdout}


def test_tiny_study_runs_every_step_and_reports(tiny_study):
    tmp = tiny_study["tmp"]
    assert "[7/9] evaluate m3so/no_disc_seed1" in tiny_study["stdout"]  # first seeds of every configuration first
    assert "[9/9] evaluate m3so/sound2sight_seed2" in tiny_study["stdout"]
    res = json.loads((tmp / "res" / "results.json").read_text())
    assert set(res["runs"]) == {"m3so/sound2sight_seed1", "m3so/sound2sight_seed2", "m3so/no_audio_seed1",
                                "m3so/no_disc_seed1"}
    agg = res["aggregates"]["m3so"]
    s2s = agg["sound2sight"]["paper SSIM"]
    seeds = [res["runs"][f"m3so/sound2sight_seed{i}"]["paper SSIM"] for i in (1, 2)]
    assert s2s["n"] == 2 and s2s["mean"] == pytest.approx(sum(seeds) / 2)
    assert agg["no_audio"]["shuffled-audio SSIM drop"]["mean"] == 0.0  # no audio: zero by construction
    assert agg["copy_last_frame"]["paper SSIM"]["mean"] is not None
    table = (tmp / "res" / "tables.md").read_text()
    assert "| sound2sight | " in table and "| copy last frame | " in table and "| constant velocity | " in table
    cv = agg["constant_velocity"]
    assert cv["paper SSIM"]["n"] == 1 and cv["SSIM after wall bounce"]["mean"] is not None
    assert cv["diversity"]["n"] == 0  # a figure of sampling: none for a deterministic baseline
    for f in ("curves_m3so.png", "events_m3so.png", "gifs/m3so_sound2sight.gif"):
        assert (tmp / "res" / f).is_file(), f
    assert "train m3so/no_audio_seed1" in res["meta"]["timings_s"]
    assert "--no_audio" in res["train_commands"]["m3so/no_audio_seed1"]


def test_tiny_study_continues_where_it_stopped(tiny_study):
    """A step undone (as if killed before it finished) is the only one that runs again."""
    tmp = tiny_study["tmp"]
    kept = tmp / "res" / "runs" / "m3so" / "no_disc_seed1"
    assert {p.name for p in kept.iterdir()} >= {"metrics.json", "metrics.csv", "train_metrics.csv",
                                                 "train_config.json", "gifs"}
    (kept / "metrics.json").unlink()
    before = json.loads((tmp / "res" / "timings.json").read_text())
    plan = subprocess.run(tiny_study["cmd"] + ["--plan"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    todo = [line for line in plan.stdout.splitlines() if line.startswith("todo")]
    assert todo == ["todo  evaluate m3so/no_disc_seed1"]
    proc = subprocess.run(tiny_study["cmd"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "8/9 steps done" in proc.stdout and "[9/9] evaluate m3so/no_disc_seed1" in proc.stdout
    after = json.loads((tmp / "res" / "timings.json").read_text())
    assert after["train m3so/sound2sight_seed1"] == before["train m3so/sound2sight_seed1"]  # not re-run
    assert after["evaluate m3so/no_disc_seed1"] > before["evaluate m3so/no_disc_seed1"]
    assert (kept / "metrics.json").is_file()


def test_kept_runs_count_as_done_without_the_run_folders(tiny_study):
    """A fresh checkout has the committed report but not --out: nothing is re-run."""
    import shutil

    tmp = tiny_study["tmp"]
    shutil.rmtree(tmp / "out")
    proc = subprocess.run(tiny_study["cmd"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "9/9 steps done" in proc.stdout and "[" not in proc.stdout.split("steps done", 1)[1].split("report")[0]
    assert not (tmp / "out" / "data").exists()  # not even the data was re-made
    assert "| sound2sight | " in (tmp / "res" / "tables.md").read_text()


def test_sigterm_to_the_study_stops_its_step_and_it_continues(tmp_path):
    """SIGTERM to the runner reaches the training it runs (no orphan keeps writing); the study
    exits 143 and the same command then finishes the study."""
    import signal
    import time

    cmd = [sys.executable, str(ROOT / "experiments" / "study.py"), "--scale", "tiny", "--datasets", "m3so_nb",
           "--out", str(tmp_path / "out"), "--results", str(tmp_path / "res")]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    ckpt = tmp_path / "out" / "runs" / "m3so_nb" / "sound2sight_seed1" / "checkpoints" / "last.pt"
    deadline = time.time() + 240
    while not ckpt.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=240)
    assert proc.returncode == 128 + signal.SIGTERM, err[-2000:]
    assert "run the same command again to continue" in err
    log = (tmp_path / "out" / "runs" / "m3so_nb" / "sound2sight_seed1" / "train.log").read_text()
    assert "SIGTERM received" in log  # the training itself got the signal and stopped cleanly
    again = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-2000:]
    assert (tmp_path / "res" / "runs" / "m3so_nb" / "no_disc_seed1" / "metrics.json").is_file()


def test_prior_audio_sees_whether_the_prior_reads_the_sound(tmp_path, tiny_data, capsys):
    """experiments/prior_audio.py: a prior whose mean follows the audio shows a spread and a change
    under swapped audio; the no-audio model's change is exactly 0; one JSON line per checkpoint."""
    import dataclasses

    import torch

    from experiments import prior_audio
    from models.sound2sight import Sound2Sight, Sound2SightConfig

    paths = []
    for name, kw in (("audio", {}), ("silent", {"use_audio": False, "use_disc": False})):
        cfg = Sound2SightConfig(g_dim=16, rnn_size=32, z_dim=4, dim_ff=32, nhead=2, disc_rnn_size=16, nf=8, **kw)
        torch.manual_seed(0)
        model = Sound2Sight(cfg)
        if cfg.use_audio:
            with torch.no_grad():  # make the prior's mean follow the audio strongly
                model.audio_transformer.out.weight.mul_(50.0)
                model.prior.lstm.embed.weight[:, cfg.g_dim:] *= 40.0
                model.prior.lstm.mu.weight.mul_(40.0)
        paths.append(tmp_path / f"{name}.pt")
        torch.save({"model_config": dataclasses.asdict(cfg), "model": model.state_dict(), "epoch": 3}, paths[-1])
    rows = prior_audio.main(["--data_root", str(tiny_data), "--clips", "4", "--frames", "6", *map(str, paths)])
    lines = [json.loads(line) for line in capsys.readouterr().out.strip().splitlines()]
    assert lines == rows and [r["epoch"] for r in rows] == [3, 3]
    audio, silent = rows
    assert audio["audio_change"] > 1e-5 and audio["mu_spread"] > 1e-5
    assert silent["audio_change"] == 0.0 and silent["sigma"] > 0 and silent["kl"] >= 0


def test_a_scale_with_a_learning_curve_evaluates_its_checkpoints_and_draws_the_curve(tmp_path):
    """``tiny_curve``: checkpoint epoch_1.pt evaluated beside the final one, the curve drawn and tabled,
    and a second run of the same command does nothing more (the finished training says so)."""
    cmd = [sys.executable, str(ROOT / "experiments" / "study.py"), "--scale", "tiny_curve",
           "--out", str(tmp_path / "out"), "--results", str(tmp_path / "results")]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    kept = tmp_path / "results" / "runs" / "m3so" / "sound2sight_seed1"
    at1 = json.loads((kept / "curve" / "epoch_1" / "metrics.json").read_text())
    final = json.loads((kept / "metrics.json").read_text())
    assert at1["checkpoint"].endswith("epoch_1.pt") and final["checkpoint"].endswith("last.pt")
    assert (at1["model_iterations"], final["model_iterations"]) == (2, 4)
    assert (tmp_path / "results" / "learning_curve_m3so.png").stat().st_size > 0
    table = (tmp_path / "results" / "learning_curve.md").read_text()
    assert "| m3so/sound2sight_seed1 | 2 |" in table and "| m3so/sound2sight_seed1 | 4 |" in table
    plan = subprocess.run(cmd + ["--plan"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert "todo" not in plan.stdout and "done  evaluate m3so/sound2sight_seed1 at epoch 1" in plan.stdout
