"""The preview's web page: one self-contained HTML document (no external assets), showing each
camera's MJPEG stream with its live figures beside it, refreshed from ``/stats.json`` every
second. Values are inserted with ``textContent``, so labels from a model cannot inject markup.
"""

from __future__ import annotations

import json

_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>edge preview</title>
<style>
  body { margin: 0; font: 14px/1.4 system-ui, sans-serif; background: #15181c; color: #e8e8e8; }
  header { padding: 8px 16px; background: #23272e; display: flex; gap: 16px;
           align-items: baseline; }
  header h1 { font-size: 16px; margin: 0; }
  #state { color: #9aa3ad; }
  #state.down { color: #ff7b72; }
  .cam { display: flex; flex-wrap: wrap; gap: 16px; padding: 16px; align-items: flex-start; }
  .cam img { max-width: min(100%, 960px); background: #000; min-width: 320px;
             min-height: 240px; display: block; }
  table { border-collapse: collapse; min-width: 260px; }
  th { text-align: left; color: #9aa3ad; font-weight: normal; padding: 2px 12px 2px 0; }
  td { text-align: right; font-variant-numeric: tabular-nums; padding: 2px 0; }
  h2 { font-size: 15px; margin: 0 0 8px; }
  ul { list-style: none; padding: 0; margin: 8px 0 0; }
  li { font-variant-numeric: tabular-nums; }
</style>
</head>
<body>
<header><h1>edge preview</h1><span id="device"></span><span id="state">connecting</span></header>
<main id="cams"></main>
<script>
"use strict";
const CAMERAS = __CAMERAS__;
const ROWS = [
  ["fps_in", "fps in"], ["fps_out", "fps out"], ["infer", "inference ms p50 / p95"],
  ["e2e", "end-to-end ms p50 / p95"], ["dropped", "dropped"], ["skipped", "skipped"],
  ["inferred", "results"], ["viewers", "stream clients"],
];
const cells = {};
for (const name of CAMERAS) {
  const sec = document.createElement("section");
  sec.className = "cam";
  const img = document.createElement("img");
  img.src = "/stream.mjpg?camera=" + encodeURIComponent(name);
  img.alt = "annotated stream of " + name;
  img.id = "stream-" + name;
  const side = document.createElement("div");
  const h = document.createElement("h2");
  h.textContent = name;
  const table = document.createElement("table");
  cells[name] = {};
  for (const [key, title] of ROWS) {
    const tr = table.insertRow();
    const th = document.createElement("th");
    th.textContent = title;
    tr.appendChild(th);
    const td = tr.insertCell();
    td.textContent = "–";
    td.dataset.figure = key;
    cells[name][key] = td;
  }
  const labels = document.createElement("ul");
  labels.className = "labels";
  cells[name].labels = labels;
  side.append(h, table, labels);
  sec.append(img, side);
  document.getElementById("cams").appendChild(sec);
}
function pair(p) {
  return p && p.p50 !== undefined ? p.p50.toFixed(1) + " / " + p.p95.toFixed(1) : "–";
}
function items(result) {
  if (!result) return [];
  if (result.detections) return result.detections.map(d => d.label + " " + d.score.toFixed(2));
  if (result.classes) return result.classes.map(c => c.label + " " + c.score.toFixed(2));
  if (result.segments)
    return result.segments.map(s => s.label + " " + (100 * s.fraction).toFixed(0) + "%");
  return (result.outputs || []).map(o => o.name + " " + JSON.stringify(o.shape));
}
function show(stats) {
  document.getElementById("device").textContent = stats.device + " · up " +
    Math.round(stats.uptime_s) + " s · CPU " + stats.cpu_percent + "% · RSS " +
    stats.rss_mb + " MiB";
  for (const name of CAMERAS) {
    const c = stats.cameras[name];
    if (!c) continue;
    const t = cells[name];
    t.fps_in.textContent = c.fps_in.toFixed(1);
    t.fps_out.textContent = c.fps_out.toFixed(1);
    t.infer.textContent = pair(c.latency_ms.invoke);
    t.e2e.textContent = pair(c.latency_ms.e2e);
    t.dropped.textContent = c.dropped;
    t.skipped.textContent = c.skipped_latency + c.skipped_motion;
    t.inferred.textContent = c.inferred;
    t.viewers.textContent = (stats.preview.clients[name] || 0);
    const list = items(c.latest && c.latest.result);
    t.labels.replaceChildren(...list.map(text => {
      const li = document.createElement("li");
      li.textContent = text;
      return li;
    }));
  }
}
async function poll() {
  const state = document.getElementById("state");
  try {
    const r = await fetch("/stats.json", {cache: "no-store"});
    show(await r.json());
    state.textContent = "live";
    state.className = "";
  } catch (e) {
    state.textContent = "disconnected";
    state.className = "down";
  }
  setTimeout(poll, 1000);
}
poll();
</script>
</body>
</html>
"""


def page(cameras: list[str]) -> bytes:
    """The page for these camera names, UTF-8 encoded."""
    names = json.dumps(cameras).replace("</", "<\\/")  # never close the script element
    return _PAGE.replace("__CAMERAS__", names).encode()
