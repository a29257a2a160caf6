// The jobs list and a job's page.
"use strict";

// Jobs ------------------------------------------------------------------------------

function jobsPage() {
  const params = new URLSearchParams(location.search);
  const wanted = Object.fromEntries(["status", "user", "tag", "node", "name", "array"]
    .map((k) => [k, params.get(k) || null]));
  const byId = new Map(data.map((row) => [row.id, row]));
  const open = new Set();
  const matches = (row) =>
    (!wanted.status || row.status === wanted.status) && (!wanted.user || row.user === wanted.user) &&
    (!wanted.tag || row.tags.includes(wanted.tag)) && (!wanted.node || row.nodes.includes(wanted.node)) &&
    (!wanted.name || row.name.toLowerCase().includes(wanted.name.toLowerCase())) &&
    (!wanted.array || row.array_id === wanted.array);

  const headers = ["job", "name", "status", "user", "progress", "epochs", "best", "latest", "ETA",
    "GPUs", "node(s)", "age"];
  const jobRow = (row) => el("tr", { "data-job": row.id, class: row.array_id ? "task" : "" },
    el("td", {}, el("a", { href: `/jobs/${encodeURIComponent(row.id)}` }, row.id)),
    el("td", {}, row.name, row.tags.length ? el("span", { class: "muted" }, ` [${row.tags.join(", ")}]`) : null),
    el("td", { class: "status-cell" }, statusCell(row.status)),
    el("td", {}, row.user || "-"),
    el("td", { class: "progress-cell" }, progressBar(row)),
    el("td", { class: "epochs" }, epochs(row)),
    el("td", {}, score(row.best_score)),
    el("td", {}, score(row.latest_score)),
    el("td", {}, row.status === "running" ? duration(row.eta_seconds) : "-"),
    el("td", {}, row.num_nodes > 1 ? `${row.num_nodes}x${row.gpus}` : row.gpus,
      row.gpu_indices.length ? el("span", { class: "muted" }, ` (${row.gpu_indices.join(",")})`) : null),
    el("td", {}, row.nodes.join(", ") || "-"),
    el("td", { title: when(row.created_at), "data-since": row.created_at }, age(row.created_at)));

  function arrayRow(id, tasks) {
    const counts = {};
    tasks.forEach((t) => { counts[t.status] = (counts[t.status] || 0) + 1; });
    const pcts = tasks.map((t) => (t.status === "finished" ? 100 : t.percent || 0));
    const mean = pcts.reduce((a, b) => a + b, 0) / tasks.length;
    const best = Math.max(...tasks.map((t) => t.best_score ?? -Infinity));
    const toggle = () => { open.has(id) ? open.delete(id) : open.add(id); render(); };
    return el("tr", { class: "array-row", "data-array": id, onclick: toggle },
      el("td", {}, `${open.has(id) ? "▾" : "▸"} `, el("a", { href: `/jobs?array=${encodeURIComponent(id)}` }, id)),
      el("td", {}, `${tasks[0].name}: array of ${tasks.length}`),
      el("td", {}, Object.entries(counts).map(([s, n]) => el("span", {}, statusCell(s), ` ${n} `))),
      el("td", {}, tasks[0].user || "-"),
      el("td", {}, progressBar({ percent: mean, complete: mean >= 100 })),
      el("td", {}, "-"), el("td", {}, Number.isFinite(best) ? score(best) : "-"),
      el("td", {}, "-"), el("td", {}, "-"), el("td", {}, "-"), el("td", {}, "-"),
      el("td", { "data-since": tasks[tasks.length - 1].created_at }, age(tasks[tasks.length - 1].created_at)));
  }

  function render() {
    const rows = [...byId.values()].sort((a, b) =>
      (b.created_at || "").localeCompare(a.created_at || "") || a.id.localeCompare(b.id));
    const body = [];
    const arrays = new Map();
    for (const row of rows) {
      if (row.array_id && !wanted.array) {
        if (!arrays.has(row.array_id)) { arrays.set(row.array_id, []); body.push(row.array_id); }
        arrays.get(row.array_id).push(row);
      } else body.push(row);
    }
    const trs = [];
    for (const item of body) {
      if (typeof item === "string") {
        const tasks = arrays.get(item).sort((a, b) => (a.array_index ?? 0) - (b.array_index ?? 0));
        trs.push(arrayRow(item, tasks));
        if (open.has(item)) tasks.forEach((t) => trs.push(jobRow(t)));
      } else trs.push(jobRow(item));
    }
    content.replaceChildren(trs.length ? table(headers, trs) : el("p", { class: "muted" }, "no job matches"));
    document.getElementById("count").textContent = `${rows.length} job(s)`;
  }

  handlers.jobs.push((rows) => {
    let full = false;
    for (const row of rows) {
      const had = byId.has(row.id);
      if (!matches(row)) { if (had) { byId.delete(row.id); full = true; } continue; }
      byId.set(row.id, row);
      const tr = content.querySelector(`tr[data-job="${CSS.escape(row.id)}"]`);
      if (tr && !row.array_id) tr.replaceWith(jobRow(row));
      else full = true;
    }
    if (full) render();
  });
  handlers.resync.push(async () => {
    const fresh = await getJSON(`/api/jobs${location.search}`);
    byId.clear();
    fresh.forEach((row) => byId.set(row.id, row));
    render();
  });
  render();
}

// One job ---------------------------------------------------------------------------

function jobPage() {
  const id = data.job.id;
  const logBox = el("pre", { class: "log", id: "log" });
  const chartsBox = el("div", { class: "charts", id: "metrics" });
  const rankPick = el("select", { id: "log-rank" });
  let records = [];
  let logStream = null;

  function header(page) {
    const job = page.job;
    const terminal = ["finished", "failed", "cancelled"].includes(job.status);
    const retryable = ["failed", "cancelled", "lost"].includes(job.status);
    const kv = [
      ["status", statusCell(job.status)], ["name", job.name], ["kind", job.kind],
      ["user", `${job.user || "-"}${job.group ? ` (${job.group})` : ""}`],
      ["progress", progressBar(job)], ["epochs", epochs(job)],
      ["best score", `${score(job.best_score)}${job.score_name ? ` (${job.score_name})` : ""}`],
      ["latest score", score(job.latest_score)],
      ["ETA", job.status === "running" ? duration(job.eta_seconds) : "-"],
      ["GPUs", `${job.num_nodes > 1 ? `${job.num_nodes} nodes x ` : ""}${job.gpus} (${job.gpu_indices.join(",") || "-"})`],
      ["node(s)", job.nodes.join(", ") || "-"], ["attempt", job.attempt],
      ["priority", job.priority], ["tags", job.tags.join(", ") || "-"],
      ["created", when(job.created_at)], ["started", when(job.started_at)],
      ["finished", when(job.finished_at)], ["exit", job.exit_reason || "-"],
      ["error", job.error || "-"], ["folder", page.job_dir],
    ];
    if (page.why_waiting) kv.push(["why it waits", page.why_waiting]);
    if (job.array_id) kv.push(["array", el("a", { href: `/jobs?array=${encodeURIComponent(job.array_id)}` }, `${job.array_id} #${job.array_index}`)]);
    const buttons = el("div", { class: "actions" },
      terminal ? null : el("button", { id: "cancel", class: "danger", onclick: () => act("cancel") }, "Cancel"),
      retryable ? el("button", { id: "retry", onclick: () => act("retry") }, "Retry") : null,
      el("span", { id: "action-result", class: "muted" }));
    return el("div", { id: "job-head" }, buttons,
      el("dl", { class: "kv" }, kv.flatMap(([k, v]) => [el("dt", {}, k), el("dd", { "data-field": k }, v)])));
  }

  async function act(action) {
    if (!confirm(`${action === "cancel" ? "Cancel" : "Retry"} job ${id}?`)) return;
    const result = document.getElementById("action-result");
    const response = await fetch(`/actions/jobs/${encodeURIComponent(id)}/${action}`, {
      method: "POST", headers: { "x-csrf-token": CSRF, "content-type": "application/json" }, body: "{}",
    });
    const body = await response.json();
    result.textContent = response.ok ? `${action}: ${body.status}` : `${action} refused: ${body.error}`;
  }

  function attempts(page) {
    if (!page.attempts.length) return el("p", { class: "muted" }, "no attempt yet");
    return table(["#", "node", "GPUs", "started", "ended", "exit class", "code", "why"],
      page.attempts.map((a) => el("tr", { "data-attempt": a.number },
        el("td", {}, a.number), el("td", {}, a.node), el("td", {}, a.gpus.join(",")),
        el("td", {}, when(a.started_at)), el("td", {}, when(a.ended_at)),
        el("td", {}, a.exit_reason || (a.ended_at ? "-" : "running")),
        el("td", {}, a.exit_signal ? `signal ${a.exit_signal}` : a.exit_code ?? "-"),
        el("td", { class: "wrap" }, a.why || "-"))));
  }

  function drawCharts() {
    const xKey = records.some((r) => r.step !== undefined && r.step !== null) ? "step" : "epoch";
    const keys = new Set();
    records.forEach((r) => Object.entries(r).forEach(([k, v]) => {
      if (typeof v === "number" && !["step", "epoch", "time"].includes(k)) keys.add(k);
    }));
    const series = (filter) => [...keys].filter(filter).map((k) => ({
      name: k, points: records.map((r, i) => [r[xKey] ?? i, typeof r[k] === "number" ? r[k] : null]),
    }));
    const isLoss = (k) => /loss/i.test(k);
    chartsBox.replaceChildren(
      lineChart(`loss (by ${xKey})`, series(isLoss)),
      lineChart(`scores (by ${xKey})`, series((k) => !isLoss(k) && !/lr|learning_rate/i.test(k))));
  }

  function follow() {
    if (logStream) logStream.close();
    const rank = rankPick.value;
    logBox.textContent = "";
    logStream = new EventSource(`/events/jobs/${encodeURIComponent(id)}${rank ? `?rank=${rank}` : ""}`);
    logStream.addEventListener("log", (e) => {
      const atEnd = logBox.scrollTop + logBox.clientHeight >= logBox.scrollHeight - 4;
      logBox.append(document.createTextNode(JSON.parse(e.data)));
      if (atEnd) logBox.scrollTop = logBox.scrollHeight;
    });
    logStream.addEventListener("log-reset", () => { logBox.textContent = ""; });
    logStream.addEventListener("metrics-reset", (e) => { records = JSON.parse(e.data); drawCharts(); });
    logStream.addEventListener("metrics", (e) => { records = records.concat(JSON.parse(e.data)); drawCharts(); });
    // On a reconnect the stream starts over with the tail: no line is shown twice.
    logStream.addEventListener("open", () => { logBox.textContent = ""; });
  }

  function render() {
    rankPick.replaceChildren(el("option", { value: "" }, "training log"),
      ...Array.from({ length: data.ranks }, (_, r) => el("option", { value: r }, `rank ${r}`)));
    content.replaceChildren(...[header(data),
      el("h2", {}, "Metrics"), chartsBox,
      el("h2", {}, "Log ", rankPick), logBox,
      el("h2", {}, "Attempts"), attempts(data),
      data.members.length ? el("div", {}, el("h2", {}, "Members"),
        table(["rank", "node"], data.members.map((m) => el("tr", {}, el("td", {}, m.rank), el("td", {}, m.node))))) : null,
      el("h2", {}, "Spec"), el("pre", { class: "log spec" }, JSON.stringify(data.spec, null, 2)),
      el("h2", {}, "console.log"), el("pre", { class: "log console" }, data.console || "")]
      .filter(Boolean));
  }

  const refresh = async () => {
    data = await getJSON(`/api/jobs/${encodeURIComponent(id)}`);
    document.getElementById("job-head").replaceWith(header(data));
  };
  handlers.jobs.push((rows) => {
    const row = rows.find((r) => r.id === id);
    if (!row) return;
    if (row.status !== data.job.status || row.attempt !== data.job.attempt) refresh();
    else { data.job = row; document.getElementById("job-head").replaceWith(header(data)); }
  });
  handlers.resync.push(refresh);
  rankPick.addEventListener("change", follow);
  render();
  drawCharts();
  follow();
}
