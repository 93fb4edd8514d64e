// The fairpool dashboard: plain JavaScript, no build step, no third-party code.
// Every figure comes from the scheduler's JSON API (/api/VERB), whose answers are
// the ones `fairpool admin --json` prints. Live updates: server-sent events
// (/api/events) say when something changed and the page re-reads what it shows;
// without them it polls. Data is put in the page as text, never as HTML.
import { ago, badge, el, formatNumber, lineChart, percent, runtime, table } from "/static/views.js";

const PALETTE = ["#2f6fdb", "#e0713b", "#2a9d6f", "#b4489e", "#c9a227", "#5b5fc7", "#d1495b", "#3a8fb7",
  "#7a9a01", "#8c564b", "#e377c2", "#17becf"];
const FINAL = new Set(["FINISHED", "FAILED", "CANCELLED", "ABANDONED"]);
const JOB_ROWS = 200;

const app = { me: null, csrf: "", page: "", jobUid: "", events: null, poller: null, timer: null, busy: false,
  again: false };

const $ = (selector) => document.querySelector(selector);

class ApiError extends Error {
  constructor(status, message) { super(message); this.status = status; }
}

async function api(path, options = {}) {
  const init = { method: options.method || "GET", credentials: "same-origin", headers: {} };
  if (init.method !== "GET") {
    init.headers["content-type"] = "application/json";
    init.headers["x-csrf-token"] = app.csrf;
    init.body = JSON.stringify(options.body || {});
  }
  const response = await fetch(path, init);
  let data = null;
  try { data = await response.json(); } catch (_) { data = null; }
  if (response.status === 401 && path !== "/api/login") {
    showLogin();
    throw new ApiError(401, "log in first");
  }
  if (!response.ok) throw new ApiError(response.status, (data && data.error) || response.statusText);
  return data;
}

function query(params) {
  const q = new URLSearchParams();
  for (const [key, value] of Object.entries(params)) if (value !== "" && value != null) q.set(key, value);
  const text = q.toString();
  return text ? "?" + text : "";
}

// --- messages ------------------------------------------------------------------

function toast(message, bad) {
  const node = $("#toast");
  node.textContent = message;
  node.className = bad ? "toast bad" : "toast";
  node.hidden = false;
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => { node.hidden = true; }, 4000);
}

// --- pages -------------------------------------------------------------------------------

const pages = {
  async overview() {
    const [status, history] = await Promise.all([api("/api/status"), api("/api/history")]);
    const stats = $("#stats");
    stats.replaceChildren();
    const figures = [["Nodes", status.nodes], ["CPUs", status.cpus], ["Busy", status.busy],
      ["Queued", status.queued], ["Running", status.running], ["Finished", status.finished],
      ["Tenants", status.tenants], ["Policy", status.policy]];
    for (const [label, value] of figures) {
      const card = el("div", null, "stat");
      card.dataset.stat = label.toLowerCase();
      card.append(el("span", String(value ?? "—"), "value"), el("span", label, "label"));
      stats.append(card);
    }
    lineChart($("#chart-throughput"), history.at, [{ name: "jobs/s", values: history.throughput,
      color: PALETTE[0] }]);
    lineChart($("#chart-load"), history.at, [
      { name: "queued", values: history.queued, color: PALETTE[1] },
      { name: "running", values: history.running, color: PALETTE[2] },
      { name: "CPUs up", values: history.cpus, color: "#888", dashed: true }]);
  },

  async nodes() {
    const nodes = await api("/api/nodes.list");
    table($("#nodes-table"), [
      { key: "name", label: "Node" },
      { key: "state", label: "State", render: (n) => badge(n.state) },
      { key: "cpus", label: "CPUs" },
      { key: "busy", label: "Busy" },
      { key: "load", label: "Load", render: loadMeter },
      { key: "assigned", label: "Jobs held" },
      { key: "done", label: "Done" },
      { key: "last_heartbeat", label: "Heartbeat", render: (n) => ago(n.last_heartbeat) },
      { key: "actions", label: "Actions", render: nodeActions },
    ], nodes, (tr, n) => { tr.dataset.node = n.name; });
  },

  async tenants() {
    const admin = app.me.role === "admin";
    const history = await api("/api/history");
    const series = [];
    Object.entries(history.tenants).forEach(([name, s], i) => {
      const color = PALETTE[i % PALETTE.length];
      series.push({ name: `${name} received`, values: s.received, color });
      series.push({ name: `${name} entitled`, values: s.entitlement, color, dashed: true });
    });
    lineChart($("#chart-shares"), history.at, series, { max: 1, percent: true });
    $("#tenants-card").hidden = !admin;
    if (!admin) return;
    const tenants = await api("/api/tenants.list");
    const latest = (name, key) => {
      const values = (history.tenants[name] || {})[key] || [];
      return values.length ? values[values.length - 1] : null;
    };
    table($("#tenants-table"), [
      { key: "name", label: "Tenant" },
      { key: "weight", label: "Weight" },
      { key: "tier", label: "Tier" },
      { key: "running", label: "Running" },
      { key: "queued", label: "Queued" },
      { key: "entitlement", label: "Entitled", render: (t) => percent(latest(t.name, "entitlement")) },
      { key: "received", label: "Received", render: (t) => percent(latest(t.name, "received")) },
      { key: "jobs", label: "Jobs", render: (t) => link(`#/jobs?tenant=${encodeURIComponent(t.name)}`, "jobs") },
    ], tenants, (tr, t) => { tr.dataset.tenant = t.name; });
  },

  async jobs(params) {
    const form = $("#job-filter");
    for (const key of ["tenant", "status", "node"]) if (params.has(key)) form.elements[key].value = params.get(key);
    const filters = { tenant: form.elements.tenant.value.trim(), status: form.elements.status.value,
      node: form.elements.node.value.trim() };
    if (app.me.role !== "admin") delete filters.tenant;
    const jobs = await api("/api/jobs.list" + query({ ...filters, newest: 1, limit: JOB_ROWS }));
    const admin = app.me.role === "admin";
    const columns = [
      { key: "uid", label: "Job", render: (j) => link(`#/jobs/${encodeURIComponent(j.uid)}`, j.uid, "mono") },
      { key: "status", label: "Status", render: (j) => badge(j.status) },
      { key: "node", label: "Node", render: (j) => j.node || "—" },
      { key: "submitted_at", label: "Submitted", render: (j) => ago(j.submitted_at) },
      { key: "runtime", label: "Ran", render: runtime },
      { key: "actions", label: "Actions", render: jobActions },
    ];
    if (admin) columns.splice(1, 0, { key: "tenant", label: "Tenant" });
    table($("#jobs-table"), columns, jobs, (tr, j) => { tr.dataset.job = j.uid; tr.dataset.status = j.status; });
  },

  async job() {
    $("#job-uid").textContent = app.jobUid;
    const facts = $("#job-facts");
    let job;
    try {
      job = await api("/api/jobs.show" + query({ uid: app.jobUid }));
    } catch (error) {
      if (error.status !== 404) throw error;
      facts.replaceChildren(el("dd", "The scheduler does not hold this job (any more): a job is forgotten once " +
        "its client has its result.", "gone"));
      $("#job-actions").replaceChildren();
      for (const id of ["#job-stdout", "#job-stderr", "#job-traceback"]) $(id).closest(".card").hidden = true;
      return;
    }
    for (const id of ["#job-stdout", "#job-stderr", "#job-traceback"]) $(id).closest(".card").hidden = false;
    facts.replaceChildren();
    const rows = [["Status", badge(job.status)], ["Tenant", job.tenant], ["Cluster", job.cluster_id],
      ["Node", job.node || "—"], ["Submitted", ago(job.submitted_at)], ["Started", ago(job.started_at)],
      ["Ended", ago(job.finished_at)], ["Ran", runtime(job)], ["CPUs", job.cpus],
      ["Exit code", job.exit_code ?? "—"], ["Reason", job.reason || "—"]];
    for (const [label, value] of rows) {
      const dd = el("dd");
      dd.append(value instanceof Node ? value : document.createTextNode(String(value)));
      facts.append(el("dt", label), dd);
    }
    $("#job-actions").replaceChildren(jobActions(job));
    $("#job-stdout").textContent = job.stdout || "(empty)";
    $("#job-stderr").textContent = job.stderr || "(empty)";
    $("#job-traceback").textContent = job.traceback || "(none)";
  },
};

function link(href, text, className) {
  const a = el("a", text, className);
  a.href = href;
  return a;
}

function loadMeter(node) {
  const meter = el("meter");
  meter.min = 0;
  meter.max = Math.max(node.cpus, 1);
  meter.value = node.busy;
  meter.title = `${node.busy} of ${node.cpus} CPUs busy`;
  const wrap = el("span", null, "load");
  wrap.append(meter, document.createTextNode(` ${percent(node.cpus ? node.busy / node.cpus : 0)}`));
  return wrap;
}

function actionButton(label, action, run) {
  const button = el("button", label, "small");
  button.type = "button";
  button.dataset.action = action;
  button.addEventListener("click", async () => {
    button.disabled = true;
    try { await run(); } catch (error) { toast(error.message, true); } finally { button.disabled = false; }
  });
  return button;
}

function nodeActions(node) {
  if (app.me.role !== "admin" || node.state === "down") return "—";
  const draining = node.state === "draining" || node.state === "drained";
  const verb = draining ? "undrain" : "drain";
  return actionButton(draining ? "Undrain" : "Drain", verb, async () => {
    const view = await api(`/api/nodes.${verb}`, { method: "POST", body: { name: node.name } });
    toast(`node ${view.name} is ${view.state}`);
    refresh();
  });
}

function jobActions(job) {
  if (FINAL.has(job.status)) return "—";
  return actionButton("Cancel", "cancel", async () => {
    const result = await api("/api/jobs.cancel", { method: "POST", body: { uids: [job.uid] } });
    toast(result.cancelled.length ? `cancelling job ${job.uid}` : `job ${job.uid} had already ended`);
    refresh();
  });
}

// --- navigation, login and live updates -----------------------------------------------------

function currentRoute() {
  const [path, search] = location.hash.replace(/^#\/?/, "").split("?");
  const [page, ...rest] = path.split("/");
  return { page, rest, params: new URLSearchParams(search || "") };
}

function route() {
  if (!app.me) return;
  const admin = app.me.role === "admin";
  let { page, rest, params } = currentRoute();
  if (!pages[page] || (!admin && (page === "overview" || page === "nodes"))) page = admin ? "overview" : "jobs";
  if (page === "jobs" && rest.length && rest[0]) {
    page = "job";
    app.jobUid = decodeURIComponent(rest.join("/"));
  }
  app.page = page;
  app.params = params;
  for (const section of document.querySelectorAll(".page")) section.hidden = section.id !== `page-${page}`;
  for (const a of document.querySelectorAll("#nav a")) {
    a.classList.toggle("current", a.dataset.page === page || (page === "job" && a.dataset.page === "jobs"));
  }
  refresh();
}

async function refresh() {
  if (!app.me || !app.page) return;
  if (app.busy) { app.again = true; return; }
  app.busy = true;
  try {
    await pages[app.page](app.params || new URLSearchParams());
  } catch (error) {
    if (error.status !== 401) toast(error.message, true);
  } finally {
    app.busy = false;
    if (app.again) { app.again = false; setTimeout(refresh, 200); }
  }
}

function soon() {
  clearTimeout(app.timer);
  app.timer = setTimeout(refresh, 250);
}

function startLive() {
  stopLive();
  if (!window.EventSource) { startPolling(); return; }
  const events = new EventSource("/api/events");
  events.addEventListener("pulse", () => { setLive(true); soon(); });
  events.addEventListener("logout", () => { stopLive(); checkSession(); });
  events.onerror = () => {
    setLive(false);
    if (events.readyState === EventSource.CLOSED) { app.events = null; startPolling(); }
  };
  app.events = events;
}

function startPolling() {
  clearInterval(app.poller);
  app.poller = setInterval(refresh, 3000);
}

function stopLive() {
  if (app.events) app.events.close();
  app.events = null;
  clearInterval(app.poller);
  setLive(false);
}

function setLive(on) { $("#live").classList.toggle("on", on); }

function signedIn(me) {
  app.me = me;
  app.csrf = me.csrf;
  const admin = me.role === "admin";
  $("#login").hidden = true;
  $("#nav").hidden = false;
  $("#who").hidden = false;
  $("#who-name").textContent = admin ? "admin" : `tenant ${me.tenant}`;
  for (const a of document.querySelectorAll("[data-admin-only]")) a.hidden = !admin;
  $("#nav-tenants").textContent = admin ? "Tenants" : "My share";
  $("#tenants-title").textContent = admin ? "Tenants" : `Share of ${me.tenant}`;
  $("#filter-tenant-label").hidden = !admin;
  startLive();
  route();
}

function showLogin() {
  app.me = null;
  app.page = "";
  stopLive();
  for (const section of document.querySelectorAll(".page")) section.hidden = true;
  $("#nav").hidden = true;
  $("#who").hidden = true;
  $("#login").hidden = false;
}

async function checkSession() {
  try {
    signedIn(await api("/api/session"));
  } catch (error) {
    if (error.status !== 401) toast(error.message, true);
  }
}

async function logIn(event) {
  event.preventDefault();
  const form = event.target;
  const secret = form.elements.secret.value;
  const body = secret ? { secret } : { tenant: form.elements.tenant.value.trim(), token: form.elements.token.value.trim() };
  $("#login-error").textContent = "";
  try {
    const me = await api("/api/login", { method: "POST", body });
    form.reset();
    signedIn(me);
  } catch (error) {
    $("#login-error").textContent = error.message;
  }
}

async function logOut() {
  try { await api("/api/logout", { method: "POST" }); } catch (_) { /* logged out either way */ }
  showLogin();
}

document.addEventListener("DOMContentLoaded", () => {
  $("#login-form").addEventListener("submit", logIn);
  $("#logout").addEventListener("click", logOut);
  $("#job-filter").addEventListener("submit", (event) => {
    event.preventDefault();
    const form = event.target;
    const q = query({ tenant: form.elements.tenant.value.trim(), status: form.elements.status.value,
      node: form.elements.node.value.trim() });
    if (location.hash === `#/jobs${q}`) refresh(); else location.hash = `#/jobs${q}`;
  });
  window.addEventListener("hashchange", route);
  checkSession();
});
