"""The search pages ``effstack serve --index`` serves at ``/search`` (:data:`PAGE` for images, :data:`TEXT_PAGE` for
texts): each one self-contained HTML file, no assets."""

# what both pages share: the status line, the results, and the script's first lines
_SCRIPT_START = """<div id="status" role="status"></div>
<div id="results"></div>
<script>
"use strict";
const $ = (id) => document.getElementById(id);
const base = location.pathname.replace(/\\/search\\/?$/, "") + "/search";
function setStatus(text, error) { $("status").textContent = text; $("status").className = error ? "error" : ""; }
"""

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>effstack visual search</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
 body{font:15px system-ui,sans-serif;margin:2rem;color:#222;background:#fafafa}
 h1{font-size:1.3rem;margin:0 0 .3rem} #meta{color:#666;font-size:.85rem;margin-bottom:1rem}
 #drop{border:2px dashed #999;border-radius:10px;padding:1.5rem;text-align:center;background:#fff;cursor:pointer}
 #drop.over{border-color:#2a7;background:#efe} #query{max-height:120px;margin-top:.6rem;display:none}
 #status{margin:1rem 0;min-height:1.2em} #status.error{color:#b00}
 #results{display:flex;flex-wrap:wrap;gap:12px}
 .hit{width:170px;background:#fff;border:1px solid #ddd;border-radius:8px;padding:6px;cursor:pointer}
 .hit img{width:160px;height:160px;object-fit:cover;display:block;border-radius:4px;background:#eee}
 .hit .score{font-weight:600} .hit .id{font-size:.8rem;color:#555;word-break:break-all}
</style></head>
<body>
<h1>Visual search</h1>
<div id="meta">loading index information&hellip;</div>
<label id="drop" for="file">Drop an image here, or click to pick one
 <input type="file" id="file" accept="image/*" hidden><br><img id="query" alt="query image"></label>
<p><label>neighbours <input type="number" id="k" value="12" min="1" max="100" style="width:4em"></label></p>
""" + _SCRIPT_START + """

function render(doc, roundTripMs) {
  const box = $("results");
  box.replaceChildren();
  doc.hits.forEach((h, rank) => {
    const div = document.createElement("div");
    div.className = "hit"; div.dataset.id = h.id; div.dataset.rank = rank + 1; div.title = h.path;
    const img = document.createElement("img");
    img.src = base + "/images/" + encodeURIComponent(h.id).replace(/%2F/g, "/") + "/thumb";
    img.alt = h.id; img.loading = "lazy";
    const score = document.createElement("div"); score.className = "score"; score.textContent = h.score.toFixed(4);
    const id = document.createElement("div"); id.className = "id"; id.textContent = h.id;
    div.append(img, score, id);
    div.addEventListener("click", () => searchId(h.id));
    box.append(div);
  });
  $("status").className = "";
  $("status").innerHTML = "";
  const took = document.createElement("span"); took.id = "took";
  took.textContent = doc.hits.length + " results in " + doc.took_ms.toFixed(1) + " ms on the server (embed " +
    doc.embed_ms.toFixed(1) + " ms, search " + doc.search_ms.toFixed(2) + " ms), " + roundTripMs.toFixed(0) +
    " ms round trip";
  $("status").append(took);
}

async function run(url, init) {
  setStatus("searching\\u2026");
  const t0 = performance.now();
  try {
    const r = await fetch(url, init);
    const doc = await r.json();
    if (!r.ok) { setStatus(doc.error || ("HTTP " + r.status), true); return; }
    render(doc, performance.now() - t0);
  } catch (e) { setStatus("request failed: " + e, true); }
}

function k() { return Math.max(1, Math.min(100, parseInt($("k").value, 10) || 12)); }

function searchFile(file) {
  if (!file) return;
  $("query").src = URL.createObjectURL(file); $("query").style.display = "block";
  run(base + "/query?k=" + k(), {method: "POST", body: file,
      headers: {"Content-Type": file.type || "application/octet-stream"}});
}

function searchId(id) { run(base + "/query?k=" + k() + "&id=" + encodeURIComponent(id), {method: "GET"}); }

$("file").addEventListener("change", (e) => searchFile(e.target.files[0]));
const drop = $("drop");
["dragenter", "dragover"].forEach((t) => drop.addEventListener(t, (e) => { e.preventDefault(); drop.classList.add("over"); }));
["dragleave", "drop"].forEach((t) => drop.addEventListener(t, (e) => { e.preventDefault(); drop.classList.remove("over"); }));
drop.addEventListener("drop", (e) => searchFile(e.dataTransfer.files[0]));

fetch(base + "/info").then((r) => r.json()).then((i) => {
  $("meta").textContent = i.count + " images \\u00b7 " + i.kind + " index \\u00b7 model " + (i.model.name || "?") +
    " (" + i.model.layer + ", " + i.dim + " values)";
}).catch(() => { $("meta").textContent = "index information unavailable"; });
</script>
</body></html>
"""

TEXT_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>effstack text search</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
 body{font:15px system-ui,sans-serif;margin:2rem;color:#222;background:#fafafa;max-width:60rem}
 h1{font-size:1.3rem;margin:0 0 .3rem} #meta{color:#666;font-size:.85rem;margin-bottom:1rem}
 #q{width:100%;font:inherit;padding:.5rem;box-sizing:border-box} #status{margin:1rem 0;min-height:1.2em}
 #status.error{color:#b00} .hit{background:#fff;border:1px solid #ddd;border-radius:8px;padding:.5rem .8rem;margin:.5rem 0}
 .hit .score{font-weight:600;margin-right:.6rem} .hit .id{color:#777;font-size:.8rem}
</style></head>
<body>
<h1>Text search</h1>
<div id="meta">loading index information&hellip;</div>
<form id="form"><input id="q" placeholder="search for texts that mean something like&hellip;" autofocus>
<p><label>results <input type="number" id="k" value="10" min="1" max="100" style="width:4em"></label>
<button type="submit">Search</button></p></form>
""" + _SCRIPT_START + """$("form").addEventListener("submit", async (e) => {
  e.preventDefault();
  const k = Math.max(1, Math.min(100, parseInt($("k").value, 10) || 10));
  setStatus("searching\\u2026");
  const t0 = performance.now();
  try {
    const r = await fetch(base + "/query", {method: "POST", headers: {"Content-Type": "application/json"},
                                            body: JSON.stringify({text: $("q").value, k: k})});
    const doc = await r.json();
    if (!r.ok) { setStatus(doc.error || ("HTTP " + r.status), true); return; }
    const box = $("results"); box.replaceChildren();
    doc.hits.forEach((h) => {
      const div = document.createElement("div"); div.className = "hit"; div.dataset.id = h.id;
      const s = document.createElement("span"); s.className = "score"; s.textContent = h.score.toFixed(4);
      const id = document.createElement("span"); id.className = "id"; id.textContent = "#" + h.id;
      const t = document.createElement("div"); t.textContent = h.text;
      div.append(s, id, t); box.append(div);
    });
    setStatus(doc.hits.length + " results in " + doc.took_ms.toFixed(1) + " ms on the server (embed " +
      doc.embed_ms.toFixed(1) + " ms, search " + doc.search_ms.toFixed(2) + " ms), " +
      (performance.now() - t0).toFixed(0) + " ms round trip");
  } catch (err) { setStatus("request failed: " + err, true); }
});
fetch(base + "/info").then((r) => r.json()).then((i) => {
  $("meta").textContent = i.count + " texts \\u00b7 " + i.kind + " index \\u00b7 model " + (i.model.name || "?") +
    " (" + i.dim + " values)" + (i.data ? " \\u00b7 " + i.data.source : "");
}).catch(() => { $("meta").textContent = "index information unavailable"; });
</script>
</body></html>
"""
