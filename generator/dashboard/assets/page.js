"use strict";
// The SMT fleet dashboard: renders the data embedded in #smt-data. No network, no libraries.
(function () {
  const data = JSON.parse(document.getElementById("smt-data").textContent);
  const techniques = data.techniques;
  const libraryVersion = Object.fromEntries(techniques.map((t) => [t.name, t.version]));
  const models = data.models;

  const esc = (value) =>
    String(value === null || value === undefined ? "" : value).replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);
  const pct = (x, digits = 1) => (x === null || x === undefined ? "" : (100 * x).toFixed(digits) + "%");
  const signedPct = (x, digits = 2) => (x === null || x === undefined ? "n/a" : (x >= 0 ? "+" : "") + (100 * x).toFixed(digits) + "%");
  const fixed = (x, digits) => (x === null || x === undefined ? "" : Number(x).toFixed(digits));
  const int = (x) => (x === null || x === undefined ? "" : Number(x).toLocaleString("en-US"));
  const byId = (id) => document.getElementById(id);

  function firstObjective(model, split) {
    const run = model.run;
    if (!run || !run.metrics || !run.metrics[split]) return null;
    const name = model.objectives.find((o) => run.metrics[split][o]) || Object.keys(run.metrics[split])[0];
    return name ? run.metrics[split][name] : null;
  }
  function overBudget(model) {
    return model.capacity ? !model.capacity.within : null;
  }

  // --- summary -------------------------------------------------------------------------------
  const pairs = models.reduce((n, m) => n + Object.keys(m.techniques).length, 0);
  const outOfSync = models.filter((m) => m.differing_files).length;
  byId("summary").textContent =
    `${data.repository}: ${models.length} models, ${techniques.length} techniques, ${pairs} technique-model pairs; ` +
    `template ${data.template_version}; ${outOfSync} model(s) out of sync; ` +
    `${data.qualifications.length} qualification(s), ${data.tuning.length} tuning stud${data.tuning.length === 1 ? "y" : "ies"}; ` +
    `generated ${data.generated_at} by smt ${data.smt_version}.`;

  // --- the adoption matrix ---------------------------------------------------------------------
  const columns = [
    { key: "name", label: "model", value: (m) => m.name },
    { key: "template", label: "template", value: (m) => m.template_version },
    { key: "sync", label: "sync", value: (m) => (m.differing_files === null ? -1 : m.differing_files) },
    ...techniques.map((t) => ({ key: "t:" + t.name, label: t.name, tech: t.name, value: (m) => (m.techniques[t.name] ? 1 : 0) })),
    { key: "local", label: "local", value: (m) => m.local_techniques.length },
    { key: "params", label: "params / budget", value: (m) => (m.capacity ? m.capacity.params_share : -1), num: true },
    { key: "mflops", label: "MFLOPs / budget", value: (m) => (m.capacity ? m.capacity.mflops_share : -1), num: true },
    { key: "ne", label: "test NE", value: (m) => { const o = firstObjective(m, "test"); return o && o.ne !== null ? o.ne : Infinity; }, num: true },
    { key: "auc", label: "test AUC", value: (m) => { const o = firstObjective(m, "test"); return o && o.auc !== null ? o.auc : -1; }, num: true },
  ];
  const state = { sort: "name", direction: 1 };

  function budgetCell(share) {
    if (share === null || share === undefined) return '<td class="num muted">–</td>';
    const width = Math.max(1, Math.min(60, Math.round(60 * share)));
    return `<td class="num"><span class="bar${share > 1 ? " over" : ""}" style="width:${width}px"></span>${pct(share)}</td>`;
  }
  function techniqueCell(model, name) {
    const use = model.techniques[name];
    if (!use) return '<td class="tech off">·</td>';
    const version = use.version || "?";
    const stale = use.version && use.version !== libraryVersion[name];
    const params = Object.entries(use.params || {}).map(([k, v]) => `${k}=${JSON.stringify(v)}`).join(", ");
    const title = `${name} ${version}${stale ? " (library has " + libraryVersion[name] + ": regenerate)" : ""}${params ? "; " + params : ""}`;
    return `<td class="tech${stale ? " stale" : ""}" title="${esc(title)}">${esc(version)}</td>`;
  }
  function rowHtml(m) {
    const sync = m.differing_files === null ? '<td class="muted">?</td>'
      : m.differing_files === 0 ? '<td class="ok">yes</td>' : `<td class="bad" title="${m.differing_files} file(s) differ">NO (${m.differing_files})</td>`;
    const test = firstObjective(m, "test");
    return `<tr data-model="${esc(m.name)}"><td>${esc(m.name)}</td><td>${esc(m.template_version)}</td>${sync}` +
      techniques.map((t) => techniqueCell(m, t.name)).join("") +
      `<td>${esc(m.local_techniques.join(", "))}</td>` +
      budgetCell(m.capacity ? m.capacity.params_share : null) + budgetCell(m.capacity ? m.capacity.mflops_share : null) +
      `<td class="num">${test ? fixed(test.ne, 4) : ""}</td><td class="num">${test ? fixed(test.auc, 4) : ""}</td></tr>`;
  }

  const techniqueFilter = byId("filter-technique");
  techniqueFilter.innerHTML = '<option value="">any</option><option value="-none">no technique</option>' +
    techniques.map((t) => `<option value="${esc(t.name)}">uses ${esc(t.name)}</option>`).join("");

  function visibleModels() {
    const text = byId("filter-text").value.trim().toLowerCase();
    const technique = techniqueFilter.value;
    const sync = byId("filter-sync").value;
    const budget = byId("filter-budget").value;
    return models.filter((m) => {
      if (text && !m.name.toLowerCase().includes(text) && !m.description.toLowerCase().includes(text)) return false;
      if (technique === "-none" && Object.keys(m.techniques).length) return false;
      if (technique && technique !== "-none" && !m.techniques[technique]) return false;
      if (sync === "yes" && m.differing_files !== 0) return false;
      if (sync === "no" && !m.differing_files) return false;
      if (budget === "over" && overBudget(m) !== true) return false;
      if (budget === "within" && overBudget(m) !== false) return false;
      return true;
    });
  }

  function renderMatrix() {
    const column = columns.find((c) => c.key === state.sort);
    const rows = visibleModels().sort((a, b) => {
      const x = column.value(a), y = column.value(b);
      const order = x < y ? -1 : x > y ? 1 : 0;
      return order * state.direction || (a.name < b.name ? -1 : 1);
    });
    const table = byId("matrix");
    table.tBodies[0].innerHTML = rows.map(rowHtml).join("");
    byId("shown").textContent = `${rows.length} of ${models.length} models shown`;
    for (const th of table.tHead.rows[0].cells) {
      th.classList.toggle("sorted-asc", th.dataset.key === state.sort && state.direction === 1);
      th.classList.toggle("sorted-desc", th.dataset.key === state.sort && state.direction === -1);
    }
  }

  byId("matrix").tHead.innerHTML = "<tr>" + columns.map((c) =>
    `<th data-key="${esc(c.key)}"${c.tech ? ' class="tech"' : ""} title="${esc(c.tech ? (techniques.find((t) => t.name === c.tech).summary || c.tech) : "sort by " + c.label)}">${esc(c.label)}</th>`
  ).join("") + "</tr>";
  byId("matrix").tHead.addEventListener("click", (event) => {
    const th = event.target.closest("th");
    if (!th) return;
    state.direction = state.sort === th.dataset.key ? -state.direction : 1;
    state.sort = th.dataset.key;
    renderMatrix();
  });
  for (const id of ["filter-text", "filter-technique", "filter-sync", "filter-budget"]) {
    byId(id).addEventListener("input", renderMatrix);
  }
  byId("matrix").tBodies[0].addEventListener("click", (event) => {
    const tr = event.target.closest("tr");
    if (tr) showModel(models.find((m) => m.name === tr.dataset.model));
  });

  function metricsTable(metrics) {
    const rows = [];
    for (const [split, objectives] of Object.entries(metrics || {})) {
      for (const [objective, v] of Object.entries(objectives)) {
        rows.push(`<tr><td>${esc(split)}</td><td>${esc(objective)}</td><td class="num">${fixed(v.logloss, 5)}</td><td class="num">${fixed(v.ne, 4)}</td><td class="num">${fixed(v.auc, 4)}</td><td class="num">${fixed(v.calibration, 3)}</td></tr>`);
      }
    }
    return rows.length ? `<table><thead><tr><th>split</th><th>objective</th><th>logloss</th><th>NE</th><th>AUC</th><th>calibration</th></tr></thead><tbody>${rows.join("")}</tbody></table>` : "";
  }

  function showModel(m) {
    if (!m) return;
    const uses = Object.entries(m.techniques).map(([name, use]) =>
      `<span class="pill">${esc(name)} ${esc(use.version || "?")}${Object.keys(use.params).length ? " " + esc(JSON.stringify(use.params)) : ""}</span>`).join("") || "none";
    const c = m.capacity;
    const capacity = c ? `${int(c.parameters)} parameters of ${int(c.max_params)} (${pct(c.params_share)}); ${fixed(c.mflops, 4)} MFLOPs per example of ${c.max_mflops} (${pct(c.mflops_share)}); ${c.within ? '<span class="ok">within budget</span>' : '<span class="bad">over budget</span>'}`
      : `not measured (${esc(data.capacity.note)})`;
    const run = m.run ? `<p>Latest run <code>${esc(m.run.run)}</code>, finished ${esc(m.run.finished)} UTC: ${esc(m.run.steps)} steps, ${esc(m.run.epochs)} epoch(s), best step ${esc(m.run.best_step)}${m.run.train_seconds !== null ? ", " + fixed(m.run.train_seconds, 1) + " s" : ""}.</p>${metricsTable(m.run.metrics)}` : "<p>No training run (no metrics.json under runs/).</p>";
    const detail = byId("model-detail");
    detail.hidden = false;
    detail.innerHTML = `<h3>${esc(m.name)}</h3><p>${esc(m.description)}</p>` +
      `<p>Objectives: ${esc(m.objectives.join(", "))}; ${m.sparse_features} sparse and ${m.dense_features} dense features; template ${esc(m.template_version)}; ` +
      `${m.differing_files === 0 ? "in sync" : m.differing_files === null ? "sync unknown" : m.differing_files + " file(s) differ from a fresh regeneration"}.</p>` +
      `<p>Techniques: ${uses}${m.local_techniques.length ? "; local: " + esc(m.local_techniques.join(", ")) : ""}</p><p>Capacity: ${capacity}</p>${run}`;
  }

  // --- techniques ------------------------------------------------------------------------------
  byId("technique-list").innerHTML = `<table><thead><tr><th>technique</th><th>version</th><th>models</th><th>params</th><th>summary</th><th>reference</th></tr></thead><tbody>` +
    techniques.map((t) => {
      const link = /^https?:\/\//.test(t.reference) ? `<a href="${esc(t.reference)}">${esc(t.reference)}</a>` : esc(t.reference);
      return `<tr><td>${esc(t.name)}</td><td>${esc(t.version)}</td><td class="num">${t.users}</td><td>${esc(t.params.join(", "))}</td><td style="white-space:normal;min-width:28em">${esc(t.summary)}</td><td style="white-space:normal;min-width:22em">${link}</td></tr>`;
    }).join("") + "</tbody></table>";

  // --- template releases -----------------------------------------------------------------------
  function pairList(pairs) {
    const byTechnique = {};
    for (const [model, technique] of pairs) (byTechnique[technique] = byTechnique[technique] || []).push(model);
    return Object.entries(byTechnique).sort().map(([t, ms]) => `<li><b>${esc(t)}</b> (${ms.length}): ${esc(ms.join(", "))}</li>`).join("");
  }
  function releaseBlock(title, release, notes) {
    const adopted = release.adopted.length ? `<p>Adopted:</p><ul>${pairList(release.adopted)}</ul>` : "<p>No pair adopted.</p>";
    const dropped = release.dropped.length ? `<p>Dropped:</p><ul>${pairList(release.dropped)}</ul>` : "";
    return `<details class="release"><summary>${title}: ${release.pairs} pairs, <span class="ok">+${release.adopted.length}</span> <span class="${release.dropped.length ? "bad" : "muted"}">-${release.dropped.length}</span></summary>` +
      adopted + dropped + (notes ? `<div class="notes">${esc(notes)}</div>` : "") + "</details>";
  }
  const rel = data.releases;
  byId("release-list").innerHTML = `<p class="muted">${esc(rel.note)}</p>` +
    releaseBlock(`Unreleased (working tree, template ${esc(rel.unreleased.version)})`, rel.unreleased, "") +
    rel.releases.map((r) => releaseBlock(`${esc(r.version)} (${esc(r.changelog_date || r.date)}, commit <code>${esc(r.commit)}</code>)`, r, r.notes)).join("");

  // --- qualifications --------------------------------------------------------------------------
  function qualificationBlock(q) {
    const verdict = q.passed ? '<span class="ok">PASS</span>' : '<span class="bad">FAIL</span>';
    const rows = q.models.map((m) => `<tr><td>${esc(m.model)}</td><td class="num">${signedPct(m.delta)}${m.se !== null ? " ± " + pct(m.se, 2) : ""}</td>` +
      `<td>${esc(m.objectives.map((o) => o.name + " " + signedPct(o.delta)).join("; "))}</td><td class="num">${m.params_delta === null ? "" : (m.params_delta >= 0 ? "+" : "") + int(m.params_delta)}</td>` +
      `<td class="num">${m.mflops_delta === null ? "" : (m.mflops_delta >= 0 ? "+" : "") + fixed(m.mflops_delta, 4)}</td><td class="${m.verdict === "FAIL" ? "bad" : "ok"}">${esc(m.verdict)}</td><td style="white-space:normal">${esc(m.problems.concat(m.error ? [m.error] : []).join("; "))}</td></tr>`).join("");
    const what = q.technique ? `${esc(q.technique)} ${esc(q.technique_version || "")}` : `template against ${esc(q.against || "?")}`;
    return `<details class="qualification" data-id="${esc(q.id)}"><summary>${esc(q.date)} · <b>${esc(q.change)}</b> (${what}, template ${esc(q.template_version)}) · ${verdict} · mean gain ${signedPct(q.mean_gain, 3)} · ${q.models.length} model(s)</summary>` +
      `<p class="muted">Dated by ${esc(q.dated_by)}; ${esc(q.seeds)} seed(s), ${esc(q.steps)} steps${q.seconds !== null ? ", " + Math.round(q.seconds) + " s" : ""}; report <code>${esc(q.report)}</code>.</p>` +
      (q.reasons.length ? `<ul>${q.reasons.map((r) => `<li>${esc(r)}</li>`).join("")}</ul>` : "") +
      `<table><thead><tr><th>model</th><th>Δlogloss (rel.)</th><th>per objective</th><th>Δparams</th><th>ΔMFLOPs</th><th>verdict</th><th>why</th></tr></thead><tbody>${rows}</tbody></table>` +
      (q.plot ? `<img class="plot" loading="lazy" alt="per-model deltas of ${esc(q.change)}" src="${esc(q.plot)}">` : "") + "</details>";
  }
  byId("qualification-list").innerHTML = data.qualifications.length
    ? '<p class="muted">Every <code>smt qualify</code> report under <code>qualification/reports/</code>, newest first: the mean gain is the mean over models of the relative test logloss improvement; a model\'s Δ is candidate − baseline (negative is better).</p>' + data.qualifications.map(qualificationBlock).join("")
    : "<p>No qualification yet (<code>smt qualify CHANGE</code> writes one).</p>";

  // --- tuning studies --------------------------------------------------------------------------
  function historySvg(trials) {
    const done = trials.filter((t) => t.value !== null);
    if (!done.length) return "";
    const w = 420, h = 140, pad = 24;
    const xs = done.map((t) => t.number), ys = done.map((t) => t.value);
    const x0 = Math.min(...xs), x1 = Math.max(...xs, x0 + 1), y0 = Math.min(...ys, 0), y1 = Math.max(...ys, 0);
    const sx = (x) => pad + ((x - x0) / (x1 - x0)) * (w - 2 * pad);
    const sy = (y) => h - pad - ((y - y0) / (y1 - y0 || 1)) * (h - 2 * pad);
    let best = Infinity; const line = [];
    for (const t of done.slice().sort((a, b) => a.number - b.number)) {
      if (t.feasible && t.value < best) best = t.value;
      if (best !== Infinity) line.push(`${sx(t.number).toFixed(1)},${sy(best).toFixed(1)}`);
    }
    const dots = done.map((t) => `<circle cx="${sx(t.number).toFixed(1)}" cy="${sy(t.value).toFixed(1)}" r="3" fill="${t.feasible ? "#2855a8" : "#9aa5b1"}"><title>trial ${t.number}: ${signedPct(t.value, 3)}${t.feasible ? "" : " (violates a constraint)"}</title></circle>`).join("");
    return `<svg width="${w}" height="${h}" role="img" aria-label="optimization history"><line x1="${pad}" x2="${w - pad}" y1="${sy(0)}" y2="${sy(0)}" stroke="#999" stroke-width="0.5"/>` +
      (line.length ? `<polyline fill="none" stroke="#e07b00" points="${line.join(" ")}"/>` : "") + dots +
      `<text x="${pad}" y="12" font-size="10" fill="#5f6b76">mean relative logloss change per trial (dots), best feasible so far (line)</text></svg>`;
  }
  function studyBlock(s) {
    const counts = Object.entries(s.counts).map(([k, v]) => `${v} ${k}`).join(", ");
    const best = s.best ? `best trial #${s.best.number}: ${signedPct(s.best.value, 3)} (${s.best.feasible ? "feasible" : "violates a constraint"}): ${esc(Object.entries(s.best.params).map(([k, v]) => k + "=" + v).join(", "))}` : "no completed trial";
    const importances = Object.keys(s.importances).length ? "importances: " + esc(Object.entries(s.importances).map(([k, v]) => `${k} ${fixed(v, 2)}`).join(", ")) : esc(s.importance_note);
    const trials = s.trials.map((t) => `<tr><td class="num">${t.number}</td><td>${esc(t.state)}</td><td class="num">${t.value === null ? "–" : signedPct(t.value, 3)}</td><td>${t.feasible ? "yes" : "no"}</td><td>${esc(t.params)}</td></tr>`).join("");
    return `<details class="study" open><summary><b>${esc(s.study)}</b>: ${esc(counts || "no trials")} on ${esc(s.models.join(", ") || "-")}</summary>` +
      `<p>${best}</p><p class="muted">${importances}</p>${s.violations.length ? `<ul>${s.violations.map((v) => `<li class="bad">${esc(v)}</li>`).join("")}</ul>` : ""}` +
      historySvg(s.trials) + (s.plot ? `<img class="plot" loading="lazy" alt="history of ${esc(s.study)}" src="${esc(s.plot)}">` : "") +
      (trials ? `<table><thead><tr><th>trial</th><th>state</th><th>value</th><th>feasible</th><th>params</th></tr></thead><tbody>${trials}</tbody></table>` : "") +
      `<p class="muted">Report <code>${esc(s.report)}</code>; storage <code>${esc(s.storage)}</code>.</p></details>`;
  }
  byId("tuning-list").innerHTML = data.tuning.length ? data.tuning.map(studyBlock).join("")
    : "<p>No tuning study yet (<code>smt tune --study NAME</code> writes <code>tuning/reports/NAME/</code>).</p>";

  // --- capacity --------------------------------------------------------------------------------
  const measured = models.filter((m) => m.capacity);
  const over = measured.filter((m) => !m.capacity.within);
  byId("capacity-list").innerHTML = data.capacity.measured
    ? `<p>${measured.length} model(s) measured (${esc(data.capacity.note)}); ${over.length ? `<span class="bad">${over.length} over budget</span>: ${esc(over.map((m) => m.name).join(", "))}` : '<span class="ok">every model within its budget</span>'}. ` +
      'The matrix shows each model\'s parameters and MFLOPs per example as a share of its spec\'s <code>serving</code> budget; filter "over budget" to list the offenders.</p>'
    : `<p>Not measured: ${esc(data.capacity.note)}.</p>`;

  // --- training runs ---------------------------------------------------------------------------
  const trained = models.filter((m) => m.run);
  byId("run-list").innerHTML = trained.length
    ? `<p class="muted">The newest <code>metrics.json</code> of each model (under <code>generated/&lt;model&gt;/runs/</code> or <code>runs/</code>).</p>` +
      trained.map((m) => `<details class="run"><summary><b>${esc(m.name)}</b>: <code>${esc(m.run.run)}</code>, ${esc(m.run.finished)} UTC, ${esc(m.run.steps)} steps</summary>${metricsTable(m.run.metrics)}</details>`).join("")
    : "<p>No training run yet: <code>smt train MODEL</code> writes <code>runs/&lt;model&gt;-&lt;time&gt;/metrics.json</code>.</p>";

  renderMatrix();
  window.smtRenderedAt = performance.now(); // read by the scale benchmark: navigation start -> matrix rendered
  document.body.dataset.rendered = "matrix";
})();
