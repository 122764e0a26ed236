"""The preview page: one self-contained HTML file (no external scripts, works offline and via SSH).

It pulls one frame at a time from /frame (the next request goes out when the frame is on the
screen, so nothing queues up), draws both views on canvases, and estimates capture-to-screen
latency as: the frame's age when the server sent it + half the network round trip + the time to
receive, decode and paint it.  It reports that estimate back with its next request (for /stats).
"""

from __future__ import annotations

PAGE = b"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>gtasr-stream preview</title>
<link rel="icon" href="data:,">
<style>
  :root { color-scheme: dark; }
  body { margin: 0; background: #111; color: #ddd; font: 14px system-ui, sans-serif; }
  header { display: flex; flex-wrap: wrap; gap: 1.2em; align-items: center; padding: .6em 1em; }
  h1 { font-size: 16px; margin: 0; }
  #stats { font: 13px ui-monospace, monospace; padding: 0 1em .6em; min-height: 1.4em; }
  main { padding: 0 1em 1em; }
  #view { position: relative; }
  #view.side { display: flex; gap: .5em; }
  #view.side figure { flex: 1; min-width: 0; }
  figure { margin: 0; position: relative; }
  canvas { display: block; width: 100%; height: auto; background: #000; }
  /* fit the window's height too: --aspect (width / height of a frame) is set by the script */
  #view.side { max-width: calc(2 * (100vh - 6.5em) * var(--aspect, 1.333) + .5em); }
  #view.split { max-width: calc((100vh - 6.5em) * var(--aspect, 1.333)); }
  #view.actual { max-width: none; overflow: auto; }
  #view.actual canvas { width: auto; }
  figcaption { position: absolute; top: .4em; padding: .1em .5em; background: #000a; border-radius: 3px; }
  #in-fig figcaption { left: .4em; }
  #out-fig figcaption { right: .4em; }
  #view.split #out-fig { position: absolute; top: 0; left: 0; clip-path: inset(0 0 0 var(--split)); }
  #view.split #in-fig figcaption { z-index: 1; }
  #view.split #out-fig, #view.split #in-fig { width: 100%; }
  #view.actual.split #out-fig, #view.actual.split #in-fig { width: auto; }
  #handle { display: none; position: absolute; top: 0; bottom: 0; left: var(--split); width: 2px;
            background: #fffc; pointer-events: none; }
  #view.split #handle { display: block; }
  #view.split { cursor: ew-resize; touch-action: none; }
</style>
</head>
<body>
<header>
  <h1>gtasr-stream preview</h1>
  <span id="source"></span>
  <label><input type="radio" name="mode" value="side" checked> side by side</label>
  <label><input type="radio" name="mode" value="split"> split</label>
  <label><input type="checkbox" id="actual"> 1:1 pixels</label>
</header>
<div id="stats">connecting&hellip;</div>
<main>
  <div id="view" class="side" style="--split: 50%">
    <figure id="in-fig"><canvas id="input"></canvas><figcaption>input, bicubic 4&times;</figcaption></figure>
    <figure id="out-fig"><canvas id="output"></canvas><figcaption>GTASR 4&times;</figcaption></figure>
    <div id="handle"></div>
  </div>
</main>
<script>
"use strict";
const $ = (id) => document.getElementById(id);
const view = $("view");
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const drawn = [];      // when this page put frames on screen (ms), for its own fps
const latencies = [];  // its capture-to-screen estimates (ms), for the median shown
let report = null;     // the newest estimate, sent with the next request
const viewer = Math.random().toString(36).slice(2);  // one page = one viewer in /stats

function draw(canvas, bitmap) {
  if (canvas.width !== bitmap.width || canvas.height !== bitmap.height) {
    canvas.width = bitmap.width;
    canvas.height = bitmap.height;
    view.style.setProperty("--aspect", bitmap.width / bitmap.height);
  }
  canvas.getContext("2d").drawImage(bitmap, 0, 0);
  bitmap.close();
}

async function pullFrames() {
  let seq = 0;
  for (;;) {
    const t0 = performance.now();
    let r;
    try {
      r = await fetch(`/frame?viewer=${viewer}&after=${seq}` +
                      (report === null ? "" : "&latency=" + report.toFixed(1)), {cache: "no-store"});
    } catch (e) {
      await sleep(1000);  // the preview stopped or the tunnel dropped: keep trying
      continue;
    }
    report = null;
    const t1 = performance.now();
    if (r.status === 204) {  // nothing newer yet (a restarted preview counts from 1 again)
      if (+r.headers.get("X-Seq") < seq) seq = 0;
      continue;
    }
    if (!r.ok) { await sleep(500); continue; }
    const age = +r.headers.get("X-Age-Ms"), held = +r.headers.get("X-Held-Ms");
    const next = +r.headers.get("X-Seq");
    const form = await r.formData();
    const [input, output] = await Promise.all(
      [createImageBitmap(form.get("input")), createImageBitmap(form.get("output"))]);
    draw($("input"), input);
    draw($("output"), output);
    await new Promise(requestAnimationFrame);  // painted with the next display frame
    const t2 = performance.now();
    report = age + Math.max(0, t1 - t0 - held) / 2 + (t2 - t1);
    latencies.push(report);
    if (latencies.length > 15) latencies.shift();
    drawn.push(t2);
    seq = next;
  }
}

const num = (x, digits = 1) => (x === null || x === undefined) ? "-" : x.toFixed(digits);
const median = (a) => a.length ? [...a].sort((x, y) => x - y)[a.length >> 1] : null;

async function pullStats() {
  for (;;) {
    try {
      const s = await (await fetch("/stats", {cache: "no-store"})).json();
      const now = performance.now();
      while (drawn.length && now - drawn[0] > 2000) drawn.shift();
      const here = drawn.length > 1 ? (drawn.length - 1) * 1000 / (drawn[drawn.length - 1] - drawn[0]) : 0;
      $("source").textContent = `${s.source}: ${s.input_size.join("x")} \\u2192 ${s.output_size.join("x")}` +
        ` on ${s.device} ${s.precision}`;
      $("stats").textContent = `${s.state} \\u00b7 source ${num(s.fps.capture)} fps \\u00b7 GTASR ` +
        `${num(s.fps.upscale)} fps \\u00b7 shown here ${num(here)} fps \\u00b7 latency ${num(median(latencies), 0)} ms` +
        ` capture\\u2192screen (model ${num(s.latency_ms.model, 0)} ms) \\u00b7 frames ${s.frames.upscaled}` +
        ` upscaled, ${s.frames.dropped} dropped of ${s.frames.captured} \\u00b7 viewers ${s.viewers}`;
    } catch (e) {
      $("stats").textContent = "the preview is not answering (stopped?)";
    }
    await sleep(500);
  }
}

for (const radio of document.querySelectorAll("input[name=mode]")) {
  radio.addEventListener("change", () => {
    view.classList.toggle("side", radio.value === "side" && radio.checked);
    view.classList.toggle("split", radio.value === "split" && radio.checked);
  });
}
$("actual").addEventListener("change", (e) => view.classList.toggle("actual", e.target.checked));
function moveSplit(e) {
  if (!view.classList.contains("split") || !(e.buttons & 1)) return;
  const box = view.getBoundingClientRect();
  const x = Math.min(Math.max((e.clientX - box.left) / box.width, 0), 1);
  view.style.setProperty("--split", (x * 100).toFixed(2) + "%");
}
view.addEventListener("pointerdown", moveSplit);
view.addEventListener("pointermove", moveSplit);

pullFrames();
pullStats();
</script>
</body>
</html>
"""
