// Claim page: attention heat map (SVG, switchable layer/head) and the feedback form.
"use strict";
(function () {
  const NS = "http://www.w3.org/2000/svg";
  const dataEl = document.getElementById("attention-data");

  function svg(tag, attrs, text) {
    const el = document.createElementNS(NS, tag);
    for (const k in attrs) el.setAttribute(k, attrs[k]);
    if (text !== undefined) el.textContent = text;
    return el;
  }

  if (dataEl) {
    const data = JSON.parse(dataEl.textContent);
    const layerSel = document.getElementById("layer");
    const headSel = document.getElementById("head");
    const heads = data.layers.length ? data.layers[0].length : 0;
    data.layers.forEach((_, i) => layerSel.appendChild(new Option("layer " + i, i)));
    headSel.appendChild(new Option("mean of heads", "mean"));
    for (let h = 0; h < heads; h++) headSel.appendChild(new Option("head " + h, h));
    headSel.value = heads ? "0" : "mean";

    const tokens = document.getElementById("tokens");
    for (const t of data.tokens) {
      const s = document.createElement("span");
      s.textContent = t.label;
      s.title = t.field + ": surprise " + Math.round(t.surprise * 100) + "%";
      if (t.surprise > 0.5) s.className = "hot";
      tokens.appendChild(s);
    }

    function matrix() {
      const layer = data.layers[+layerSel.value];
      if (headSel.value !== "mean") return layer[+headSel.value];
      return layer[0].map((row, q) => row.map((_, k) =>
        layer.reduce((acc, head) => acc + head[q][k], 0) / layer.length));
    }

    function draw() {
      const m = matrix();
      const n = data.tokens.length, cell = 18, left = 210, top = 210;
      const root = svg("svg", {width: left + n * cell + 10, height: top + n * cell + 10,
                               role: "img", "aria-label": "attention heat map"});
      root.id = "heatmap-svg";
      const max = Math.max(1e-9, ...m.flat());
      data.tokens.forEach((t, i) => {
        const label = t.label.length > 32 ? t.label.slice(0, 31) + "…" : t.label;
        root.appendChild(svg("text", {x: left - 4, y: top + i * cell + 13, "text-anchor": "end"},
                             label));
        root.appendChild(svg("text", {transform: "translate(" + (left + i * cell + 13) + "," +
                                      (top - 4) + ") rotate(-60)"}, label));
      });
      m.forEach((row, q) => row.forEach((w, k) => {
        const a = (w / max).toFixed(3);
        const r = svg("rect", {x: left + k * cell, y: top + q * cell, width: cell - 1,
                               height: cell - 1, fill: "rgba(193,18,31," + a + ")",
                               stroke: "#eee", class: "cell"});
        r.appendChild(svg("title", {}, data.tokens[q].label + " → " + data.tokens[k].label +
                          ": " + w.toFixed(3)));
        root.appendChild(r);
      }));
      document.getElementById("heatmap").replaceChildren(root);
    }
    layerSel.addEventListener("change", draw);
    headSel.addEventListener("change", draw);
    draw();
  }

  const form = document.getElementById("feedback");
  if (form) {
    form.addEventListener("submit", async e => {
      e.preventDefault();
      const status = document.getElementById("feedback-status");
      const fd = new FormData(form);
      const body = {label: fd.get("label"), note: fd.get("note") || null};
      const res = await fetch("/api/claims/" + encodeURIComponent(form.dataset.claim) +
                              "/feedback", {method: "POST", credentials: "same-origin",
                              headers: {"Content-Type": "application/json"},
                              body: JSON.stringify(body)});
      if (res.ok) {
        const fb = await res.json();
        status.textContent = "Saved: " + fb.label + " at " + fb.labelled_at;
        status.dataset.saved = fb.label;
      } else {
        status.textContent = "Not saved (HTTP " + res.status + ")";
      }
    });
  }
})();
