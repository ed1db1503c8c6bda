"""``natsim demo --html``: the demo's stories side by side on one page, for a projector.

Each story is its run's own page (:mod:`simulator.views.run_page`), embedded whole in a
frame of the demo page (``srcdoc``: the file stays self-contained, and the frames share its
origin, so one script can drive them). One clock drives them all: the play button replays
model time in every story at once, and the step button stops at the next moment that decides
one of them (an expiry, an RST, a probe, an answer, a time-out), so a room sees the same
instant in each story.
"""

from __future__ import annotations

import html
import json
from collections.abc import Mapping, Sequence
from pathlib import Path

from simulator.core.jsonvalue import Json
from simulator.support.results import Folder, ResultsError
from simulator.views.run_page import run_page_html

TEMPLATE = r"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>__TITLE__</title>
<style>
body { margin: 0 1em; font-family: system-ui, sans-serif; }
h1 { font-size: 1.4em; margin: .5em 0 .2em; }
#controls { display: flex; gap: .8em; align-items: center; margin: .4em 0 .6em;
  font-size: 1.2em; }
#controls button { font-size: 1em; }
#stories { display: flex; gap: .5em; }
.story { flex: 1; display: flex; flex-direction: column; min-width: 0; }
.story h2 { font-size: 1.05em; margin: 0 0 .3em; }
iframe { border: 1px solid #aaa; width: 100%; height: 82vh; }
#moral { font-size: 1.1em; max-width: 70em; }
</style>
</head>
<body>
<h1 id="title">__TITLE__</h1>
<div id="controls">
  <button id="play" type="button">&#9654; play</button>
  <button id="step" type="button">next decisive moment &#8677;</button>
  <button id="restart" type="button">back to 0 s</button>
  <output id="now"></output>
</div>
<div id="stories">__FRAMES__</div>
<p id="moral">__MORAL__</p>
<script>
"use strict";
const frames = Array.from(document.querySelectorAll("iframe"));
let now = 0, playing = null;
const pages = () => frames.map((f) => f.contentWindow && f.contentWindow.natsimPage)
  .filter((p) => p);
const end = () => Math.max(0, ...pages().map((p) => p.end));

function show(t) {
  now = Math.min(Math.max(t, 0), end());
  for (const page of pages()) page.show(now);
  document.getElementById("now").textContent =
    `model time ${(Math.round(now * 10) / 10).toFixed(1)} s`;
}

function stop() {
  if (playing !== null) cancelAnimationFrame(playing);
  playing = null;
  document.getElementById("play").textContent = "\u25B6 play";
}

function play() {
  if (playing !== null) { stop(); return; }
  const from = now >= end() ? 0 : now, seconds = 12;  // the longest story in 12 s
  let started = null;
  document.getElementById("play").textContent = "pause";
  const tick = (stamp) => {
    if (started === null) started = stamp;
    const t = from + (stamp - started) / 1000 * end() / seconds;
    show(t);
    if (t >= end()) { stop(); return; }
    playing = requestAnimationFrame(tick);
  };
  playing = requestAnimationFrame(tick);
}

function step() {
  stop();
  const next = pages().flatMap((p) => p.moments()).concat([end()])
    .filter((t) => t > now + 1e-6).sort((a, b) => a - b)[0];
  show(next === undefined ? end() : next);
}

document.getElementById("play").addEventListener("click", play);
document.getElementById("step").addEventListener("click", step);
document.getElementById("restart").addEventListener("click", () => { stop(); show(0); });
let loaded = 0;
for (const f of frames) {
  f.addEventListener("load", () => { if (++loaded === frames.length) show(0); });
}
</script>
</body>
</html>
"""


def demo_page(title: str, moral: str, stories: Sequence[tuple[str, str]]) -> str:
    """The page: ``stories`` are (heading, that run's page) in the demo's column order."""
    frames = "".join(
        f'<section class="story"><h2>{html.escape(heading)}</h2>'
        f'<iframe title="{html.escape(heading, quote=True)}" '
        f'srcdoc="{html.escape(page, quote=True)}"></iframe></section>'
        for heading, page in stories)
    return (TEMPLATE.replace("__TITLE__", html.escape(title))
            .replace("__MORAL__", html.escape(moral)).replace("__FRAMES__", frames))


def write_demo_page(path: Path, title: str, moral: str,
                    runs: Sequence[tuple[str, Path]]) -> Path:
    """Write the demo page to ``path`` from the runs' results folders."""
    stories = []
    for heading, results in runs:
        with Folder.create(results, reuse=True) as out:
            text = out.read_text("result.json", 1 << 28)
            if text is None:
                raise ResultsError(f"{results}: no result.json to draw the story from")
            result: Mapping[str, Json] = json.loads(text)
            stories.append((heading, run_page_html(out, result)))
    with Folder.create(path.parent, reuse=True) as folder:
        return folder.write(path.name, demo_page(title, moral, stories))
