// The flagged queue: polls /api/queue every 2 s with the filters; data goes in via textContent.
"use strict";
(function () {
  const form = document.getElementById("filters");
  const body = document.querySelector("#queue tbody");
  const status = document.getElementById("status");
  let seen = null;  // claim ids shown so far; new ones are highlighted

  function cell(tr, text, href) {
    const td = document.createElement("td");
    if (href) {
      const a = document.createElement("a");
      a.href = href; a.textContent = text; td.appendChild(a);
    } else { td.textContent = text; }
    tr.appendChild(td);
  }

  function render(rows) {
    const now = new Set(rows.map(r => r.claim_id));
    body.replaceChildren();
    for (const r of rows) {
      const tr = document.createElement("tr");
      tr.className = "flag" + (seen && !seen.has(r.claim_id) ? " new" : "");
      tr.dataset.claimId = r.claim_id;
      cell(tr, r.claim_id, "/claims/" + encodeURIComponent(r.claim_id));
      cell(tr, r.score.toFixed(3));
      cell(tr, r.reason);
      cell(tr, r.member_id, "/members/" + encodeURIComponent(r.member_id));
      cell(tr, r.provider_id, "/providers/" + encodeURIComponent(r.provider_id));
      cell(tr, r.specialty || "");
      cell(tr, r.total_charge == null ? "" : "$" + r.total_charge.toFixed(2));
      cell(tr, r.service_date || "");
      cell(tr, new Date(r.scored_at).toLocaleTimeString());
      body.appendChild(tr);
    }
    seen = now;
    status.textContent = "(" + rows.length + ")";
  }

  async function refresh() {
    const params = new URLSearchParams();
    for (const [k, v] of new FormData(form)) { if (v !== "") params.set(k, v); }
    params.set("n", "200");
    try {
      const res = await fetch("/api/queue?" + params, {credentials: "same-origin"});
      if (!res.ok) { status.textContent = "(error " + res.status + ")"; return; }
      render(await res.json());
    } catch (e) { status.textContent = "(offline)"; }
  }

  form.addEventListener("input", () => { seen = null; refresh(); });
  form.addEventListener("submit", e => e.preventDefault());
  refresh();
  setInterval(refresh, 2000);
})();
