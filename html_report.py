"""``report.html``: one evaluation as a page a person opens from disk, with no server and no network.

Everything is inside the one file: the headline table (the model, every baseline, the
shuffled-audio drop, the prior's figures), the curves and event images (PNG data URIs), the
clip videos with their sound (MP4 data URIs, H.264 + AAC, which Chromium plays and decodes:
``tests/browser_check.py``), the command and the checkpoint. Opened as ``report.html?check``,
its script measures every video (duration, frame width, the decoded sound's length and peak,
through the browser's own decoders) and image, and writes the figures as JSON into
``<pre id="check">``: what the browser check reads.
"""
from __future__ import annotations

import base64
import html
from pathlib import Path
from typing import Any

from files import atomic_write_text

_CHECK_SCRIPT = """
if (location.search.includes('check')) {
  const out = document.getElementById('check');
  const res = {videos: [], images: []};
  const show = () => { out.textContent = JSON.stringify(res); };
  for (const img of document.images) {
    const rec = {src: img.alt, width: 0};
    res.images.push(rec);
    const done = () => { rec.width = img.naturalWidth; show(); };
    if (img.complete) done(); else img.addEventListener('load', done);
  }
  for (const v of document.querySelectorAll('video')) {
    const rec = {name: v.dataset.name, duration: null, width: 0, audio_s: null, peak: null};
    res.videos.push(rec);
    v.addEventListener('loadedmetadata', () => { rec.duration = v.duration; rec.width = v.videoWidth; show(); });
    v.addEventListener('error', () => { rec.error = v.error ? v.error.code : 'error'; show(); });
    v.load();
    fetch(v.src).then(r => r.arrayBuffer()).then(b => new OfflineAudioContext(1, 48000, 48000).decodeAudioData(b))
      .then(a => { const d = a.getChannelData(0); let m = 0; for (let i = 0; i < d.length; i++) m = Math.max(m, Math.abs(d[i]));
                   rec.audio_s = a.duration; rec.peak = m; show(); })
      .catch(e => { rec.audio_error = String(e); show(); });
  }
  show();
}
"""


def _data_uri(path: Path, mime: str) -> str:
    return f"data:{mime};base64,{base64.b64encode(path.read_bytes()).decode()}"


def _fmt(v: Any, digits: int = 4) -> str:
    return f"{v:.{digits}f}" if isinstance(v, (int, float)) else "-"


def headline_table(result: dict[str, Any]) -> str:
    """The model and every baseline, per protocol and metric (HTML table rows)."""
    protos, names = result["protocols"], result["metrics"]
    head = "".join(f"<th>{html.escape(p)} {n.upper()}</th>" for p in protos for n in names)
    digits = {"psnr": 2}
    rows = [("<b>" + html.escape(result.get("label", "model")) + "</b>", result)]
    rows += [(html.escape(label), result[name]) for name, label in result.get("baselines", {}).items()]
    body = "".join("<tr><td>" + label + "</td>" + "".join(
        f"<td>{_fmt(block.get(p, {}).get(n), digits.get(n, 4))}</td>" for p in protos for n in names) + "</tr>"
        for label, block in rows)
    return f"<table><tr><th></th>{head}</tr>{body}</table>"


def extra_lines(result: dict[str, Any]) -> str:
    """The shuffled-audio drop and the prior's figures, when the evaluation has them."""
    items = []
    if "audio_shuffled" in result:
        drop = result["audio_shuffled"]["drop"][result["protocols"][0]]
        items.append("Every clip's audio swapped for another clip's costs "
                     + ", ".join(f"{n.upper()} {_fmt(v, 4 if n != 'psnr' else 2)}" for n, v in drop.items()
                                 if isinstance(v, (int, float)))
                     + " (positive: the sound helps).")
    prior = result.get("prior") or {}
    if prior:
        items.append("The prior: " + ", ".join(f"{html.escape(k.replace('_', ' '))} {_fmt(v, 4)}"
                                               for k, v in prior.items()) + ".")
    return "".join(f"<p>{html.escape(t) if '<' not in t else t}</p>" for t in items)


def write_html_report(log_dir: Path, result: dict[str, Any], command: str, label: str) -> Path:
    """Write ``<log_dir>/report.html`` from the evaluation's ``result`` (metrics.json's content) and the
    files already in ``log_dir`` (curves.png, events.png, gifs/clip_*.mp4); returns its path."""
    log_dir = Path(log_dir)
    images = "".join(f'<figure><img alt="{name}" src="{_data_uri(log_dir / name, "image/png")}">'
                     f"<figcaption>{name}</figcaption></figure>"
                     for name in ("curves.png", "events.png") if (log_dir / name).is_file())
    videos = "".join(f'<figure><video controls preload="auto" data-name="{p.name}" '
                     f'src="{_data_uri(p, "video/mp4")}"></video><figcaption>{p.stem.replace("_", " ")}: the real '
                     "clip, the posterior, the best sample and random samples, with the clip's sound</figcaption>"
                     "</figure>" for p in sorted((log_dir / "gifs").glob("clip_*.mp4")))
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Sound2Sight evaluation: {html.escape(log_dir.name)}</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:1300px}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:4px 8px;text-align:right}}td:first-child{{text-align:left}}
figure{{display:inline-block;margin:0 1em 1em 0}}img,video{{max-width:100%}}code{{background:#f4f4f4}}</style>
</head><body>
<h1>{html.escape(label)}: {result['num_clips']} test clips x {result['nsample']} samples</h1>
<p>{result['n_past']} context frames, {result['n_future']} predicted. Checkpoint <code>{html.escape(str(result.get('checkpoint')))}</code>
(epoch {result.get('model_epoch')}, {result.get('model_iterations')} iterations) on <code>{html.escape(str(result.get('data_root')))}</code>.
Command: <code>{html.escape(command)}</code>. Folder: <code>{html.escape(str(log_dir))}</code>.</p>
{headline_table({**result, 'label': label})}
{extra_lines(result)}
<p>Paper protocol: per clip and future frame the best of the samples; best-sample protocol: the one sample
with the best mean SSIM per clip. Green frames are the context the model is given, red ones generated, grey ones
the real future.</p>
<h2>Curves and events</h2>{images or '<p>none</p>'}
<h2>Clips, with their sound</h2>{videos or '<p>no clip videos (the data keeps no waveform, or --num_gifs 0)</p>'}
<pre id="check"></pre>
<script>{_CHECK_SCRIPT}</script>
</body></html>
"""
    path = log_dir / "report.html"
    atomic_write_text(path, page)
    return path
