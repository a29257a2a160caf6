// The GPU grid, the nodes, the queue and the daily summaries.
"use strict";

// GPUs ------------------------------------------------------------------------------

function gpusPage() {
  function render(grid) {
    if (!grid.length) { content.replaceChildren(el("p", { class: "muted" }, "no GPU worker is up")); return; }
    content.replaceChildren(el("div", { class: "grid" }, grid.map((node) => el("section", {},
      el("h2", {}, node.node, node.breaker !== "closed" ? el("span", { class: "error" }, ` breaker ${node.breaker}`) : null),
      el("div", { class: "node-gpus" }, node.gpus.map((gpu) => {
        const state = gpu.idle ? "busy idle" : gpu.state;
        return el("div", { class: `gpu ${state}`, "data-node": node.node, "data-index": gpu.index, "data-state": gpu.state },
          el("div", { class: "head" }, `GPU ${gpu.index}`, el("span", { class: "state" }, gpu.idle ? "busy, idle" : gpu.state)),
          gpu.job ? el("div", {}, el("a", { href: `/jobs/${encodeURIComponent(gpu.job)}` }, gpu.job_name || gpu.job),
            " ", progressBar({ percent: gpu.percent })) : null,
          gpu.blocked ? el("div", { class: "error" }, gpu.blocked) : null,
          el("div", { class: "muted" },
            `util ${gpu.utilization ?? "-"}% · mem ${gpu.memory_used_mb ?? "-"}/${gpu.memory_total_mb ?? "-"} MB · ${gpu.temperature_c ?? "-"}°C`));
      }))))));
  }
  handlers.gpus.push((grid) => { data = grid; render(grid); });
  handlers.resync.push(async () => { data = await getJSON("/api/gpus"); render(data); });
  render(data);
}

// Nodes -----------------------------------------------------------------------------

function nodesPage() {
  function render(nodes) {
    if (!nodes.length) { content.replaceChildren(el("p", { class: "muted" }, "no node has reported yet")); return; }
    content.replaceChildren(table(
      ["node", "score", "level", "breaker", "CPU", "memory", "disk", "GPUs", "checked", "findings"],
      nodes.map((n) => el("tr", { "data-node": n.node },
        el("td", {}, n.node), el("td", {}, n.score ?? "-"),
        el("td", { class: `level-${n.level}` }, n.level || "-"),
        el("td", {}, n.breaker, n.breaker_seconds_left !== null ? ` (${duration(n.breaker_seconds_left)} left)` : ""),
        el("td", {}, n.cpu_percent !== null && n.cpu_percent !== undefined ? `${n.cpu_percent.toFixed(0)}%` : "-"),
        el("td", {}, n.memory_percent !== null && n.memory_percent !== undefined ? `${n.memory_percent.toFixed(0)}%` : "-"),
        el("td", {}, n.disk_percent !== null && n.disk_percent !== undefined ? `${n.disk_percent.toFixed(0)}%` : "-"),
        el("td", {}, n.gpus), el("td", { "data-since": n.checked_at }, age(n.checked_at)),
        el("td", { class: "wrap" }, n.reasons.join("; ") || "all checks pass")))),
      el("div", { class: "charts" }, nodes.map((n) => {
        const series = ["score", "CPU %", "memory %", "GPU util %"].map((name, i) => ({
          name, points: n.history.map((p) => [p[0], p[i + 1]]),
        }));
        return lineChart(`${n.node}: last hours`, series, { yMin: 0, yMax: 100 });
      })));
  }
  const refetch = debounce(async () => { data = await getJSON("/api/nodes"); render(data); }, 300);
  handlers.nodes.push(refetch);
  handlers.resync.push(refetch);
  render(data);
}

// Queue -----------------------------------------------------------------------------

function queuePage() {
  const line = (j) => el("tr", { "data-job": j.id },
    el("td", {}, j.position ?? "-"),
    el("td", {}, el("a", { href: `/jobs/${encodeURIComponent(j.id)}` }, j.id)),
    el("td", {}, j.user || "-"), el("td", {}, j.priority ?? "-"), el("td", {}, j.gpus ?? "-"),
    el("td", { "data-since": j.created_at }, age(j.created_at)),
    el("td", { class: "wrap" }, j.why),
    el("td", { class: "wrap" }, j.next_pass ? `placed on ${j.next_pass.join(", ")} by the next pass`
      : j.holds.length ? `holds ${j.holds.map((h) => `${h.node} (starts in ≤ ${duration(h.starts_in)})`).join(", ")}` : "-"));
  const headers = ["#", "job", "user", "priority", "GPUs", "waiting", "why it waits", "reservation"];
  function render(queue) {
    const part = (title, jobs) => [el("h2", {}, `${title} (${jobs.length})`),
      jobs.length ? table(headers, jobs.map(line)) : el("p", { class: "muted" }, "none")];
    content.replaceChildren(...part("Waiting for GPUs, in the order placement takes them", queue.waiting),
      ...part("Waiting out a retry backoff", queue.backoff),
      ...part("Held back (dependencies, array slots)", queue.held));
  }
  const refetch = debounce(async () => { data = await getJSON("/api/queue"); render(data); }, 300);
  handlers.jobs.push(refetch);
  handlers.gpus.push(refetch);
  handlers.resync.push(refetch);
  render(data);
}

// Summaries -------------------------------------------------------------------------

function summariesPage() {
  function render(pages) {
    if (!pages.length) { content.replaceChildren(el("p", { class: "muted" }, "no daily summary written yet")); return; }
    const index = el("p", {}, pages.map((p) => [el("a", { href: `#day-${p.day}` }, p.day), " "]));
    const articles = pages.map((p) => {
      const article = el("article", { class: "summary", id: `day-${p.day}` });
      article.innerHTML = p.html;  // rendered by the server with raw HTML off
      return article;
    });
    content.replaceChildren(index, ...articles);
  }
  handlers.resync.push(async () => { data = await getJSON("/api/summaries"); render(data); });
  render(data);
}
