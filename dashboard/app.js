// Sluice dashboard: plain JavaScript over the JSON API. The API key lives in sessionStorage
// (this tab only) and goes out as x-api-key; data is only ever written with textContent.
"use strict";

(() => {
  const STORAGE_KEY = "sluice.apiKey";
  const STATUSES = ["pending", "processing", "completed", "failed", "cancelled"];
  const REFRESH_MS = 5000;
  const CHART_EVERY = 3; // refreshes between chart reloads (the chart reads up to 1000 jobs)
  const CHART_MINUTES = 60;
  const CHART_BARS = 30;
  const SVG_NS = "http://www.w3.org/2000/svg";

  const $ = (id) => document.getElementById(id);
  const state = {
    key: null,
    admin: false,
    filters: { status: "", type: "", tenant: "", id: "" },
    cursor: null,
    pages: 0,
    timer: null,
    ticks: 0,
    busy: false,
    opener: null,
    job: null,
    bulk: null,
    chart: null,
  };

  class ApiError extends Error {
    constructor(status, code, message) {
      super(message);
      this.status = status;
      this.code = code;
    }
  }

  async function api(method, path, key = state.key, body = undefined) {
    let response;
    const headers = { "x-api-key": key, accept: "application/json" };
    if (body !== undefined) headers["content-type"] = "application/json";
    try {
      response = await fetch(path, {
        method,
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
        cache: "no-store",
        credentials: "omit",
      });
    } catch (err) {
      throw new ApiError(0, "network", "The server could not be reached.");
    }
    const text = await response.text();
    let data = text;
    try {
      data = text ? JSON.parse(text) : null;
    } catch (err) {
      // Not JSON (the metrics endpoint speaks Prometheus text): keep the text.
    }
    if (!response.ok) {
      const error = data && data.error ? data.error : { code: `http_${response.status}`, message: response.statusText };
      throw new ApiError(response.status, error.code, error.message || `HTTP ${response.status}`);
    }
    return data;
  }

  // -- small helpers -----------------------------------------------------------------------------

  function el(tag, attrs = {}, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attrs)) {
      if (name === "text") node.textContent = value;
      else if (name === "class") node.className = value;
      else node.setAttribute(name, value);
    }
    for (const child of children) node.append(child);
    return node;
  }

  function svg(tag, attrs = {}) {
    const node = document.createElementNS(SVG_NS, tag);
    for (const [name, value] of Object.entries(attrs)) node.setAttribute(name, String(value));
    return node;
  }

  function duration(seconds) {
    const s = Math.max(0, Math.round(seconds));
    if (s < 60) return `${s} s`;
    if (s < 3600) return `${Math.floor(s / 60)} min ${s % 60} s`;
    if (s < 86400) return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
    return `${Math.floor(s / 86400)} d ${Math.floor((s % 86400) / 3600)} h`;
  }

  function relative(iso) {
    if (!iso) return "–";
    const seconds = (Date.now() - new Date(iso).getTime()) / 1000;
    return seconds >= 0 ? `${duration(seconds)} ago` : `in ${duration(-seconds)}`;
  }

  function timeEl(iso) {
    if (!iso) return document.createTextNode("–");
    return el("time", { datetime: iso, title: new Date(iso).toLocaleString(), text: relative(iso) });
  }

  function toast(message, kind = "info") {
    const box = $("toast");
    box.textContent = message;
    box.dataset.kind = kind;
    box.classList.add("shown");
    clearTimeout(toast.timer);
    toast.timer = setTimeout(() => box.classList.remove("shown"), 8000);
  }

  function statusBadge(status) {
    return el("span", { class: `status status-${status}`, text: status });
  }

  // -- sign in and out ---------------------------------------------------------------------------

  function loginMessage(err) {
    if (err.status === 401) return "That API key is not valid.";
    if (err.status === 403) return "That key may not read the queue.";
    // The server's own words: no key configured, a setting that cannot work, a database to migrate.
    if (err.code === "not_configured") return `The server is not configured: ${err.message}`;
    return `Could not sign in: ${err.message}`;
  }

  async function signIn(key) {
    await api("GET", "/api/jobs/status", key);
    state.key = key;
    sessionStorage.setItem(STORAGE_KEY, key);
    try {
      await api("GET", "/api/jobs/metrics", key);
      state.admin = true;
    } catch (err) {
      state.admin = false;
    }
    showApp();
  }

  function showLogin(message = "") {
    stopTimer();
    state.key = null;
    sessionStorage.removeItem(STORAGE_KEY);
    $("app").hidden = true;
    $("toolbar").hidden = true;
    $("login").hidden = false;
    $("login-error").textContent = message;
    $("key").setAttribute("aria-invalid", message ? "true" : "false");
    $("key").focus();
  }

  function showApp() {
    $("login").hidden = true;
    $("app").hidden = false;
    $("toolbar").hidden = false;
    $("key").value = "";
    $("drain").hidden = !state.admin;
    $("role").textContent = state.admin ? "admin key" : "tenant key";
    state.ticks = 0;
    refresh(true);
    startTimer();
  }

  // A request refused mid-session (the key was rotated away): back to the login.
  function handleError(err, context) {
    if (err instanceof ApiError && err.status === 401) {
      showLogin("Your API key is no longer accepted; sign in again.");
      return;
    }
    toast(`${context}: ${err.message}`, "error");
  }

  // -- refreshing --------------------------------------------------------------------------------

  function startTimer() {
    stopTimer();
    if ($("auto").checked) state.timer = setInterval(() => refresh(false), REFRESH_MS);
  }

  function stopTimer() {
    if (state.timer) clearInterval(state.timer);
    state.timer = null;
  }

  async function refresh(full) {
    if (state.busy || !state.key || (!full && document.hidden)) return;
    state.busy = true;
    try {
      const work = [api("GET", "/api/jobs/status").then(renderStatus)];
      if (state.pages <= 1) work.push(loadJobs(false));
      if (full || state.ticks % CHART_EVERY === 0) work.push(loadChart());
      if (state.job && $("detail").open) work.push(reloadJob());
      await Promise.all(work);
      $("updated").textContent = `Updated ${new Date().toLocaleTimeString()}`;
    } catch (err) {
      handleError(err, "Refresh failed");
    } finally {
      state.ticks += 1;
      state.busy = false;
    }
  }

  function renderStatus(status) {
    const list = $("counts");
    if (!list.children.length) {
      // Built once and then updated, so a focused button keeps its focus across refreshes.
      for (const name of STATUSES) {
        const button = el(
          "button",
          { type: "button", class: `count status-${name}`, "data-status": name },
          el("span", { class: "count-label", text: name }),
          el("span", { class: "count-value", id: `count-${name}`, text: "0" }),
        );
        button.addEventListener("click", () => filterByStatus(name));
        list.append(el("li", {}, button));
      }
    }
    for (const button of list.querySelectorAll("button")) {
      const name = button.dataset.status;
      const n = status.counts[name] ?? 0;
      $(`count-${name}`).textContent = String(n);
      button.setAttribute("aria-label", `${n} ${name}: show these jobs`);
    }
    syncPressed();
    $("ready").textContent = String(status.ready);
    $("scheduled").textContent = String(status.scheduled);
    $("oldest").textContent = status.oldestReadyAgeSeconds == null ? "none ready" : duration(status.oldestReadyAgeSeconds);
    const last = status.lastDrain;
    const drain = $("last-drain");
    drain.replaceChildren();
    if (last) {
      drain.append(
        timeEl(last.at),
        document.createTextNode(
          ` · ${last.source} · ${last.processed} jobs in ${last.durationMs} ms · stopped by ${last.stoppedBy}`,
        ),
      );
    } else {
      // Drains that found nothing are counted (metrics), not recorded: none yet is normal at first.
      drain.textContent = state.admin ? "none yet" : "not shown to tenant keys";
    }
    renderTypes(status.byType || {});
  }

  function renderTypes(byType) {
    const table = $("types");
    const head = table.tHead.rows[0];
    head.replaceChildren(el("th", { scope: "col", text: "Type" }), ...STATUSES.map((s) => el("th", { scope: "col", class: "num", text: s })));
    const body = table.tBodies[0];
    body.replaceChildren();
    const types = Object.keys(byType).sort();
    if (!types.length) {
      body.append(el("tr", {}, el("td", { colspan: String(STATUSES.length + 1), class: "muted", text: "No jobs yet." })));
      return;
    }
    for (const type of types) {
      const row = el("tr", {}, el("th", { scope: "row", text: type }));
      for (const status of STATUSES) row.append(el("td", { class: "num", text: String(byType[type][status] ?? 0) }));
      body.append(row);
    }
  }

  // -- job list ----------------------------------------------------------------------------------

  function filterByStatus(status) {
    state.filters = { ...state.filters, status: state.filters.status === status ? "" : status, id: "" };
    $("f-status").value = state.filters.status;
    $("f-id").value = "";
    reloadJobs();
  }

  // The status cards show which status the list is filtered on.
  function syncPressed() {
    document.querySelectorAll("#counts button").forEach((b) => {
      b.setAttribute("aria-pressed", String(b.dataset.status === state.filters.status && !state.filters.id));
    });
  }

  function reloadJobs() {
    syncPressed();
    loadJobs(false).catch((err) => handleError(err, "Could not load jobs"));
  }

  async function loadJobs(append) {
    const { status, type, tenant, id } = state.filters;
    const message = $("jobs-message");
    if (id) {
      try {
        const job = await api("GET", `/api/jobs/${encodeURIComponent(id)}`);
        renderJobs([job], false);
        message.textContent = "";
      } catch (err) {
        if (err.status !== 404) throw err;
        renderJobs([], false);
        message.textContent = "No job has that id.";
      }
      state.cursor = null;
      state.pages = 1;
      $("more").hidden = true;
      return;
    }
    const params = new URLSearchParams({ limit: "50" });
    if (status) params.set("status", status);
    if (type) params.set("type", type);
    if (tenant) params.set("tenantId", tenant);
    if (append && state.cursor) params.set("cursor", state.cursor);
    const page = await api("GET", `/api/jobs?${params}`);
    renderJobs(page.jobs, append);
    state.cursor = page.nextCursor;
    state.pages = append ? state.pages + 1 : 1;
    $("more").hidden = !page.nextCursor;
    const rows = $("jobs").tBodies[0].rows.length;
    message.textContent = rows ? `${rows} job${rows === 1 ? "" : "s"} shown, newest first.` : "No jobs match.";
  }

  function renderJobs(jobs, append) {
    const body = $("jobs").tBodies[0];
    // A refresh rebuilds the rows: keep keyboard focus on the same job's button.
    const focused = body.contains(document.activeElement) ? document.activeElement.closest("tr")?.dataset.id : null;
    if (!append) body.replaceChildren();
    for (const job of jobs) {
      const open = el("button", { type: "button", class: "link mono", text: job.id.slice(-12) });
      open.setAttribute("aria-label", `Show job ${job.id}`);
      open.addEventListener("click", () => openJob(job.id, open));
      body.append(
        el(
          "tr",
          { "data-id": job.id, "data-status": job.status },
          el("td", { "data-label": "Job" }, open),
          el("td", { "data-label": "Type", text: job.type }),
          el("td", { "data-label": "Status" }, statusBadge(job.status)),
          el("td", { "data-label": "Attempts", class: "num", text: `${job.attempts}/${job.maxAttempts}` }),
          el("td", { "data-label": "Created" }, timeEl(job.createdAt)),
          el("td", { "data-label": "Tenant", text: job.tenantId ?? "–" }),
        ),
      );
    }
    if (focused) body.querySelector(`tr[data-id="${CSS.escape(focused)}"] button`)?.focus();
  }

  // -- job detail --------------------------------------------------------------------------------

  async function openJob(id, opener) {
    state.opener = opener;
    try {
      renderJob(await api("GET", `/api/jobs/${encodeURIComponent(id)}`));
      await loadAttempts(id);
    } catch (err) {
      handleError(err, "Could not load the job");
      return;
    }
    $("detail-error").textContent = "";
    const dialog = $("detail");
    if (!dialog.open) dialog.showModal();
    $("detail-title").focus();
  }

  async function reloadJob() {
    try {
      const id = state.job.id;
      renderJob(await api("GET", `/api/jobs/${encodeURIComponent(id)}`));
      await loadAttempts(id);
    } catch (err) {
      if (err.status === 404) $("detail-error").textContent = "This job no longer exists.";
      else throw err;
    }
  }

  function pretty(value) {
    return value === null || value === undefined ? "none" : JSON.stringify(value, null, 2);
  }

  function renderJob(job) {
    state.job = job;
    $("detail-title").textContent = `Job ${job.id}`;
    const fields = [
      ["Status", statusBadge(job.status)],
      ["Type", job.type],
      ["Attempts", `${job.attempts} of ${job.maxAttempts}`],
      ["Priority", String(job.priority)],
      ["Timeout", `${job.timeoutSeconds} s`],
      ["Run at", timeEl(job.runAt)],
      ["Created", timeEl(job.createdAt)],
      ["Started", timeEl(job.startedAt)],
      ["Finished", timeEl(job.finishedAt)],
      ["Tenant", job.tenantId ?? "–"],
      ["Correlation id", job.correlationId],
      ["Idempotency key", job.idempotencyKey ?? "–"],
      [
        "Concurrency key",
        job.concurrencyKey == null ? "–" : `${job.concurrencyKey} (at most ${job.concurrencyLimit} at once)`,
      ],
      ["Runs after", job.after?.length ? job.after.join(", ") : "–"],
    ];
    $("detail-fields").replaceChildren(
      ...fields.map(([name, value]) => el("div", {}, el("dt", { text: name }), el("dd", {}, value))),
    );
    const progress = $("detail-progress");
    // No value would draw an "indeterminate" bar, which reads as "working"; hide it instead.
    progress.hidden = job.progress == null;
    if (job.progress == null) {
      $("detail-progress-text").textContent = "not reported";
    } else {
      progress.value = job.progress;
      $("detail-progress-text").textContent = `${job.progress}%`;
    }
    $("detail-step").textContent = job.step ?? "none reported";
    $("detail-last-error").textContent = job.lastError ?? "none";
    $("detail-payload").textContent = pretty(job.payload);
    $("detail-result").textContent = pretty(job.result);
    $("retry").disabled = !["failed", "cancelled"].includes(job.status);
    $("cancel").disabled = job.status !== "pending";
  }

  async function loadAttempts(id) {
    const { attempts, steps } = await api("GET", `/api/jobs/${encodeURIComponent(id)}/attempts`);
    if (!state.job || state.job.id !== id) return;
    renderAttempts(attempts);
    renderSteps(steps ?? []);
  }

  // Finished ctx.step / ctx.sleep calls: names and sizes only (results stay on the server).
  function renderSteps(steps) {
    const list = $("detail-steps");
    list.replaceChildren();
    $("detail-steps-empty").textContent = steps.length ? "" : "No durable step has finished.";
    for (const s of steps) {
      list.append(el("li", { class: "step-item" },
        el("strong", { text: s.name }),
        document.createTextNode(" · finished "),
        timeEl(s.finishedAt),
        document.createTextNode(` · ${s.resultBytes} B`)));
    }
  }

  function renderAttempts(attempts) {
    const list = $("detail-attempts");
    // Keep open tracebacks open across refreshes.
    const open = new Set([...list.querySelectorAll("details[open]")].map((d) => d.dataset.index));
    list.replaceChildren();
    $("detail-attempts-empty").textContent = attempts.length ? "" : "No attempt has run yet.";
    attempts.forEach((a, index) => {
      const took = a.durationMs == null ? "" : ` · ${a.durationMs} ms`;
      const item = el(
        "li",
        { class: `attempt outcome-${a.outcome}` },
        el("span", { class: "attempt-head" },
          el("strong", { text: `Attempt ${a.attempt}` }),
          document.createTextNode(" · "),
          el("span", { class: "outcome", text: a.outcome.replace("_", " ") }),
          document.createTextNode(" · finished "),
          timeEl(a.finishedAt),
          document.createTextNode(took)),
      );
      if (a.error) item.append(el("pre", { class: "code attempt-error", text: a.error }));
      if (a.traceback) {
        const details = el("details", { "data-index": String(index) },
          el("summary", { text: "Traceback" }),
          el("pre", { class: "code traceback", text: a.traceback }));
        if (open.has(String(index))) details.open = true;
        item.append(details);
      }
      list.append(item);
    });
  }

  async function act(verb) {
    const job = state.job;
    if (!job) return;
    $("detail-error").textContent = "";
    try {
      const updated = await api("POST", `/api/jobs/${encodeURIComponent(job.id)}/${verb}`);
      renderJob(updated);
      toast(verb === "retry" ? `Job ${job.id} is pending again.` : `Job ${job.id} was cancelled.`);
      $("detail-title").focus();
      refresh(true);
    } catch (err) {
      if (err.status === 401) return handleError(err, verb);
      $("detail-error").textContent = err.message;
    }
  }

  function closeJob() {
    $("detail").close();
  }

  // -- bulk retry and cancel --------------------------------------------------------------------

  // The list's filters as a bulk request body; null when there is no filter (never "every job").
  function bulkFilters() {
    const { status, type, tenant, id } = state.filters;
    const body = {};
    if (id) body.ids = [id];
    if (status) body.status = status;
    if (type) body.type = type;
    if (tenant) body.tenantId = tenant;
    return Object.keys(body).length ? body : null;
  }

  async function bulkAsk(verb) {
    const message = $("bulk-message");
    message.textContent = "";
    const filters = bulkFilters();
    if (!filters) {
      message.textContent = "Search by status, type, tenant or id first: bulk actions act on the jobs the list is filtered on.";
      return;
    }
    try {
      const { matched } = await api("POST", `/api/jobs/${verb}`, state.key, { ...filters, dryRun: true });
      if (!matched) {
        message.textContent = verb === "retry"
          ? "No failed or cancelled job matches these filters."
          : "No pending job matches these filters.";
        return;
      }
      state.bulk = { verb, filters, matched };
      const what = verb === "retry" ? "retried (pending again, attempts reset)" : "cancelled";
      $("bulk-question").textContent = `${matched} job${matched === 1 ? "" : "s"} will be ${what}. Go ahead?`;
      $("bulk-confirm").hidden = false;
      $("bulk-go").textContent = verb === "retry" ? `Retry ${matched}` : `Cancel ${matched}`;
      $("bulk-go").focus();
    } catch (err) {
      if (err.status === 401) return handleError(err, "Bulk action");
      message.textContent = err.message;
    }
  }

  async function bulkGo() {
    const pending = state.bulk;
    bulkBack();
    if (!pending) return;
    try {
      const { changed } = await api("POST", `/api/jobs/${pending.verb}`, state.key, pending.filters);
      const done = pending.verb === "retry" ? "retried" : "cancelled";
      $("bulk-message").textContent = `${changed} job${changed === 1 ? "" : "s"} ${done}.`;
      refresh(true);
    } catch (err) {
      if (err.status === 401) return handleError(err, "Bulk action");
      $("bulk-message").textContent = err.message;
    }
  }

  function bulkBack() {
    state.bulk = null;
    $("bulk-confirm").hidden = true;
  }

  // -- throughput chart --------------------------------------------------------------------------

  async function loadChart() {
    const [done, failed] = await Promise.all([
      api("GET", "/api/jobs?status=completed&limit=500"),
      api("GET", "/api/jobs?status=failed&limit=500"),
    ]);
    const now = Date.now();
    const span = CHART_MINUTES * 60 * 1000;
    const width = span / CHART_BARS;
    const bars = Array.from({ length: CHART_BARS }, () => ({ ok: 0, bad: 0 }));
    const add = (jobs, field) => {
      for (const job of jobs) {
        if (!job.finishedAt) continue;
        const age = now - new Date(job.finishedAt).getTime();
        if (age < 0 || age >= span) continue;
        bars[CHART_BARS - 1 - Math.floor(age / width)][field] += 1;
      }
    };
    add(done.jobs, "ok");
    add(failed.jobs, "bad");
    state.chart = [bars, now, width];
    drawChart(bars, now, width);
  }

  function drawChart(bars, now, width) {
    // Drawn at the container's own width, so the labels keep their size on a phone.
    const W = Math.max(280, Math.round($("chart").clientWidth) || 600);
    const H = 170, top = 12, bottom = 24, left = 34;
    const plot = H - top - bottom;
    const max = Math.max(1, ...bars.map((b) => b.ok + b.bad));
    const totalOk = bars.reduce((n, b) => n + b.ok, 0);
    const totalBad = bars.reduce((n, b) => n + b.bad, 0);
    const summary = `${totalOk} completed and ${totalBad} failed in the last ${CHART_MINUTES} minutes`;
    const chart = svg("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-labelledby": "chart-svg-title", class: "chart-svg" });
    const title = svg("title", { id: "chart-svg-title" });
    title.textContent = summary;
    chart.append(title);
    chart.append(svg("line", { x1: left, y1: top + plot, x2: W, y2: top + plot, class: "axis" }));
    const yLabel = svg("text", { x: left - 6, y: top + 8, "text-anchor": "end", class: "tick" });
    yLabel.textContent = String(max);
    chart.append(yLabel);
    const step = (W - left) / bars.length;
    bars.forEach((bar, i) => {
      const x = left + i * step + 1;
      const okH = (bar.ok / max) * plot;
      const badH = (bar.bad / max) * plot;
      const group = svg("g", {});
      const from = new Date(now - (bars.length - i) * width);
      const label = svg("title", {});
      label.textContent = `${from.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" })}: ${bar.ok} completed, ${bar.bad} failed`;
      group.append(label);
      if (bar.ok) group.append(svg("rect", { x, y: top + plot - okH, width: step - 2, height: okH, class: "bar-ok" }));
      if (bar.bad) group.append(svg("rect", { x, y: top + plot - okH - badH, width: step - 2, height: badH, class: "bar-bad" }));
      chart.append(group);
    });
    for (const [text, x, anchor] of [[`${CHART_MINUTES} min ago`, left, "start"], ["now", W, "end"]]) {
      const t = svg("text", { x, y: H - 6, "text-anchor": anchor, class: "tick" });
      t.textContent = text;
      chart.append(t);
    }
    $("chart").replaceChildren(chart);
    $("chart-caption").replaceChildren(
      el("span", { class: "legend legend-ok", text: `${totalOk} completed` }),
      el("span", { class: "legend legend-bad", text: `${totalBad} failed` }),
      document.createTextNode(" per 2-minute bar (from the 500 most recent jobs of each state)."),
    );
  }

  // -- drain -------------------------------------------------------------------------------------

  async function runDrain() {
    const button = $("drain");
    button.disabled = true;
    button.setAttribute("aria-busy", "true");
    try {
      const s = await api("POST", "/api/jobs/process");
      toast(
        `Drain: processed ${s.processed} (${s.succeeded} succeeded, ${s.retried} retried, ${s.failed} failed) ` +
          `in ${s.durationMs} ms, stopped by ${s.stoppedBy}; ${s.remaining} ready left.`,
      );
      refresh(true);
    } catch (err) {
      handleError(err, "Drain failed");
    } finally {
      button.disabled = false;
      button.removeAttribute("aria-busy");
    }
  }

  // -- wiring ------------------------------------------------------------------------------------

  function wire() {
    $("login-form").addEventListener("submit", async (event) => {
      event.preventDefault();
      const key = $("key").value.trim();
      if (!key) {
        $("login-error").textContent = "Enter an API key.";
        $("key").setAttribute("aria-invalid", "true");
        $("key").focus();
        return;
      }
      const submit = event.submitter || $("login-form").querySelector("button");
      submit.disabled = true;
      try {
        await signIn(key);
      } catch (err) {
        showLogin(loginMessage(err));
      } finally {
        submit.disabled = false;
      }
    });
    $("signout").addEventListener("click", () => {
      showLogin("");
      toast("Signed out; the key was forgotten.");
    });
    $("refresh").addEventListener("click", () => refresh(true));
    $("auto").addEventListener("change", startTimer);
    $("drain").addEventListener("click", runDrain);
    $("more").addEventListener("click", () => loadJobs(true).catch((err) => handleError(err, "Could not load jobs")));
    $("filters").addEventListener("submit", (event) => {
      event.preventDefault();
      state.filters = {
        status: $("f-status").value,
        type: $("f-type").value.trim(),
        tenant: $("f-tenant").value.trim(),
        id: $("f-id").value.trim(),
      };
      reloadJobs();
    });
    $("filters").addEventListener("reset", () => {
      state.filters = { status: "", type: "", tenant: "", id: "" };
      reloadJobs();
    });
    $("bulk-retry").addEventListener("click", () => bulkAsk("retry"));
    $("bulk-cancel").addEventListener("click", () => bulkAsk("cancel"));
    $("bulk-go").addEventListener("click", bulkGo);
    $("bulk-back").addEventListener("click", () => {
      bulkBack();
      $("bulk-message").textContent = "Nothing changed.";
    });
    $("retry").addEventListener("click", () => act("retry"));
    $("cancel").addEventListener("click", () => act("cancel"));
    $("close").addEventListener("click", closeJob);
    $("detail").addEventListener("close", () => {
      state.job = null;
      const back = state.opener && document.contains(state.opener) ? state.opener : $("jobs-title");
      back.focus();
    });
    let resizing = null;
    window.addEventListener("resize", () => {
      clearTimeout(resizing);
      resizing = setTimeout(() => state.chart && drawChart(...state.chart), 150);
    });
    document.addEventListener("visibilitychange", () => {
      if (!document.hidden && state.key) refresh(false);
    });
  }

  async function start() {
    wire();
    const saved = sessionStorage.getItem(STORAGE_KEY);
    if (!saved) return showLogin("");
    try {
      await signIn(saved);
    } catch (err) {
      showLogin(err.status === 401 ? "Your saved API key is no longer accepted; sign in again." : loginMessage(err));
    }
  }

  start();
})();
