// The tr50gw console: log in, then every panel is one or more TR50 usage commands over the same
// window, filters and time zone. No framework: the DOM in index.html, filled from the replies.

import { enterAdmin, initAdmin, reloadAdmin } from "./admin.js";
import { OFFLINE, Tr50Client, Tr50Error } from "./tr50.js";
import {
  browserZone, currentName, durationMs, epochToInput, formatInstant, knownZones, zonedToEpoch,
} from "./time.js";

const $ = (selector, root = document) => root.querySelector(selector);
const PAGE = 50;
const TAIL_KEEP = 500;
const FILTERS = ["who", "service", "command", "transport", "clientId", "remoteAddr", "searchText"];
const ERRORS = {
  [-90002]: "Invalid input",
  [-90003]: "Not allowed",
  [-90004]: "Wrong email or password",
  [-90005]: "Your session has ended",
  [-90012]: "Too many failed logins: wait a few minutes and try again",
};

const state = {
  client: null,
  info: null, // session.info of the logged-in user
  preset: "1h",
  custom: null, // {start, end} in ms, when the range is custom (or zoomed)
  zooms: [], // earlier ranges, for "Undo zoom"
  window: null, // {start, end} in ms of what is shown
  zone: currentName(localStorage.getItem("tr50gw.zone") || browserZone()),
  interval: "",
  showAll: false,
  filters: {},
  offset: 0,
  endpoints: [],
  sort: { key: "hits", dir: -1 },
  tail: null, // {subscriptionId, received, dropped}
  charts: {},
  generation: 0, // a refresh's number: a slower, older refresh does not overwrite a newer one
  snapshot: {}, // what the panels show, for tests and for the curious (window.tr50console)
};

// ---- start -------------------------------------------------------------------------------

async function start() {
  let config = { websocket: null, version: "?" };
  try {
    const response = await fetch("/console/config.json", { cache: "no-store" });
    if (response.ok) config = await response.json();
  } catch {
    /* the gateway is unreachable: the login says so when it is tried */
  }
  $("#gateway-info").textContent = `tr50gw ${config.version}`;
  state.client = new Tr50Client(config, { onNotify: tailReceived, onLink: linkChanged });
  fillZones();
  wire();
  initAdmin({ client: state.client, state, describe, sessionEnded });
  // On a phone the filters start folded: the charts come first.
  if (matchMedia("(max-width: 640px)").matches) $("#filters-box").open = false;
  const sessionId = sessionStorage.getItem("tr50gw.session");
  if (sessionId && (await resume(sessionId))) return;
  showLogin();
}

async function resume(sessionId) {
  state.client.sessionId = sessionId;
  try {
    state.info = await state.client.call("session.info");
  } catch {
    state.client.sessionId = null;
    sessionStorage.removeItem("tr50gw.session");
    return false;
  }
  enter();
  return true;
}

function showLogin(notice = "") {
  $("#app-view").hidden = true;
  $("#login-view").hidden = false;
  $("#login-notice").textContent = notice;
  $("#login-notice").hidden = !notice;
  $("#login-password").value = "";
  $("#login-username").focus();
}

async function login(event) {
  event.preventDefault();
  const error = $("#login-error");
  const button = $("#login-submit");
  error.hidden = true;
  $("#login-notice").hidden = true;
  button.disabled = true;
  button.textContent = "Logging in…";
  try {
    const { sessionId } = await state.client.call("api.authenticate", {
      username: $("#login-username").value.trim(),
      password: $("#login-password").value,
    });
    state.client.sessionId = sessionId;
    sessionStorage.setItem("tr50gw.session", sessionId);
    state.info = await state.client.call("session.info");
    enter();
  } catch (failure) {
    state.client.sessionId = null;
    error.textContent = describe(failure);
    error.hidden = false;
  } finally {
    button.disabled = false;
    button.textContent = "Log in";
  }
}

function enter() {
  const info = state.info;
  $("#login-view").hidden = true;
  $("#app-view").hidden = false;
  $("#whoami").textContent = `${info.whoAmI ?? info.userName ?? info.thingKey} · ${info.orgKey ?? ""}`;
  $("#show-all-label").hidden = !info.hasSuperOps;
  $("#admin-tab").hidden = !info.hasOrgAdmin;
  state.showAll = false;
  $("#show-all").checked = false;
  showView("usage");
}

// The two pages: usage (charts, endpoints, log) and admin (org-admins and Super-Ops).
function showView(name) {
  for (const button of document.querySelectorAll(".views button")) {
    if (button.dataset.view === name) button.setAttribute("aria-current", "page");
    else button.removeAttribute("aria-current");
  }
  $("#usage-view").hidden = name !== "usage";
  $("#admin-view").hidden = name !== "admin";
  $(".range").hidden = name !== "usage";
  $("#refresh").hidden = name !== "usage";
  if (name === "admin") enterAdmin();
  else refresh();
}

async function logout() {
  await stopTail();
  try {
    await state.client.call("session.end");
  } catch {
    /* gone already: logged out all the same */
  }
  state.client.sessionId = null;
  state.info = null;
  sessionStorage.removeItem("tr50gw.session");
  showLogin("You are logged out.");
}

function sessionEnded() {
  state.client.sessionId = null;
  sessionStorage.removeItem("tr50gw.session");
  state.tail = null;
  $("#tail").checked = false;
  showLogin("Your session has ended: log in again.");
}

// ---- controls ----------------------------------------------------------------------------

function wire() {
  $("#login-form").addEventListener("submit", login);
  $("#logout").addEventListener("click", logout);
  $("#refresh").addEventListener("click", () => refresh());
  $("#range-preset").addEventListener("change", (event) => {
    const value = event.target.value;
    $("#custom-range").hidden = value !== "custom";
    if (value === "custom") {
      const { start, end } = state.window ?? presetWindow("1h");
      $("#range-from").value = epochToInput(start, state.zone);
      $("#range-to").value = epochToInput(end, state.zone);
      return;
    }
    state.preset = value;
    state.custom = null;
    state.zooms = [];
    refresh();
  });
  $("#range-apply").addEventListener("click", () => {
    const start = zonedToEpoch($("#range-from").value, state.zone);
    const end = zonedToEpoch($("#range-to").value, state.zone);
    if (!(start < end)) {
      banner("The custom range needs a start before its end.", true);
      return;
    }
    setCustom({ start, end });
  });
  $("#zoom-reset").addEventListener("click", () => {
    const previous = state.zooms.pop();
    if (previous?.custom) setCustom(previous.custom, { remember: false });
    else {
      state.custom = null;
      $("#range-preset").value = state.preset;
      $("#custom-range").hidden = true;
      refresh();
    }
  });
  $("#interval").addEventListener("change", (event) => {
    state.interval = event.target.value;
    refresh();
  });
  $("#timezone").addEventListener("change", (event) => {
    state.zone = event.target.value;
    localStorage.setItem("tr50gw.zone", state.zone);
    if (!$("#custom-range").hidden && state.custom) {
      $("#range-from").value = epochToInput(state.custom.start, state.zone);
      $("#range-to").value = epochToInput(state.custom.end, state.zone);
    }
    refresh();
  });
  $("#show-all").addEventListener("change", (event) => {
    state.showAll = event.target.checked;
    state.offset = 0;
    if (!$("#admin-view").hidden) {
      reloadAdmin();
      return;
    }
    refresh();
    restartTail();
  });
  for (const button of document.querySelectorAll(".views button")) {
    button.addEventListener("click", () => showView(button.dataset.view));
  }
  $("#filters").addEventListener("submit", (event) => {
    event.preventDefault();
    applyFilters();
  });
  $("#filters-clear").addEventListener("click", () => {
    $("#filters").reset();
    applyFilters();
  });
  for (const th of document.querySelectorAll("#endpoints th")) {
    $("button", th).addEventListener("click", () => {
      const key = th.dataset.key;
      state.sort = { key, dir: state.sort.key === key ? -state.sort.dir : key === "command" ? 1 : -1 };
      renderEndpoints();
    });
  }
  $("#page-newer").addEventListener("click", () => page(-PAGE));
  $("#page-older").addEventListener("click", () => page(PAGE));
  $("#tail").addEventListener("change", (event) => (event.target.checked ? startTail() : stopTail()));
  $("#export").addEventListener("click", exportRows);
  $("#detail-close").addEventListener("click", () => $("#detail").close());
  $("#detail").addEventListener("click", (event) => {
    if (event.target === $("#detail")) $("#detail").close(); // the backdrop
  });
  const rows = $("#log tbody");
  rows.addEventListener("click", (event) => openRow(event.target.closest("tr")));
  rows.addEventListener("keydown", (event) => {
    if (event.key === "Enter" || event.key === " ") {
      event.preventDefault();
      openRow(event.target.closest("tr"));
    }
  });
  new ResizeObserver(() => resizeCharts()).observe($("main"));
}

function fillZones() {
  const select = $("#timezone");
  const zones = knownZones();
  if (!zones.includes(state.zone)) state.zone = "UTC";
  for (const zone of zones) select.add(new Option(zone.replaceAll("_", " "), zone));
  select.value = state.zone;
}

function setCustom(range, { remember = true } = {}) {
  if (remember) state.zooms.push({ custom: state.custom });
  state.custom = range;
  $("#range-preset").value = "custom";
  $("#custom-range").hidden = false;
  $("#range-from").value = epochToInput(range.start, state.zone);
  $("#range-to").value = epochToInput(range.end, state.zone);
  refresh();
}

function applyFilters() {
  const form = new FormData($("#filters"));
  const filters = {};
  for (const name of FILTERS) {
    const value = String(form.get(name) ?? "").trim();
    if (value) filters[name] = value;
  }
  if (form.get("hasFailure")) filters.hasFailure = true;
  state.filters = filters;
  const active = Object.keys(filters).length;
  $("#filters-summary").textContent = active ? `${active} active` : "";
  state.offset = 0;
  refresh();
  restartTail();
}

function setFilter(name, value) {
  const form = $("#filters");
  form.elements[name].value = value;
  if (name === "command") form.elements.service.value = "";
  applyFilters();
}

function page(delta) {
  state.offset = Math.max(0, state.offset + delta);
  loadLog(state.generation);
}

// ---- the window and the params -----------------------------------------------------------

function presetWindow(preset) {
  const end = Date.now();
  return { start: end - durationMs(preset), end };
}

// The TR50 filter params (the log explorer's filters; a full command name splits at its dot).
function filterParams() {
  const params = { ...state.filters };
  if (params.command) {
    const dot = params.command.indexOf(".");
    if (dot > 0) {
      params.service = params.command.slice(0, dot);
      params.command = params.command.slice(dot + 1);
    }
  }
  if (state.showAll) params.showAll = true;
  return params;
}

function windowParams() {
  return {
    start: new Date(state.window.start).toISOString(),
    end: new Date(state.window.end).toISOString(),
  };
}

function chartParams() {
  const params = { ...filterParams(), ...windowParams(), timezone: state.zone };
  if (state.interval) params.interval = state.interval;
  return params;
}

// ---- loading -----------------------------------------------------------------------------

async function refresh() {
  if (!state.info) return;
  state.window = state.custom ?? presetWindow(state.preset);
  $("#zoom-reset").hidden = state.zooms.length === 0;
  banner("");
  const generation = ++state.generation;
  const cards = ["calls-card", "latency-card", "commands-card", "callers-card", "endpoints-card"];
  for (const id of cards) setState(id, "loading", "Loading…");
  const params = chartParams();
  const { interval: _interval, timezone: _zone, ...listing } = params;
  const replies = state.client
    .batch({
      statuses: { command: "usage.api.statuses", params },
      times: { command: "usage.api.times", params },
      commands: { command: "usage.api.breakdown", params: { ...params, by: "command", top: 10 } },
      callers: { command: "usage.api.breakdown", params: { ...params, by: "who", top: 10 } },
      endpoints: { command: "usage.api.endpoints", params: { ...listing, limit: 500 } },
    })
    .catch((failure) => failure);
  const log = loadLog(generation);
  const results = await replies;
  if (generation !== state.generation) return;
  if (results instanceof Error) {
    for (const id of cards) setState(id, "error", describe(results), true);
  } else {
    if (Object.values(results).some((r) => r instanceof Tr50Error && r.code === -90005)) {
      sessionEnded();
      return;
    }
    panel("calls-card", results.statuses, renderCalls);
    panel("latency-card", results.times, renderLatency);
    panel("commands-card", results.commands, (r) => renderTop("#top-commands", r, "command"));
    panel("callers-card", results.callers, (r) => renderTop("#top-callers", r, "who"));
    panel("endpoints-card", results.endpoints, (r) => {
      state.endpoints = (r.result ?? []).map((row) => ({
        ...row,
        errorRate: row.hits ? (100 * row.error) / row.hits : 0,
      }));
      $("#endpoints-count").textContent = r.count > state.endpoints.length
        ? `top ${state.endpoints.length} of ${r.count}` : `${r.count}`;
      renderEndpoints();
      return state.endpoints.length ? null : "No calls in this range.";
    });
  }
  await log;
}

// A panel's reply: an error state, or its renderer's (which answers an empty-state text or null).
function panel(id, result, render) {
  if (result instanceof Error) {
    setState(id, "error", describe(result), true);
    return;
  }
  const empty = render(result);
  setState(id, empty ? "empty" : "ready", empty ?? "");
}

function setState(id, kind, text, retry = false) {
  const card = document.getElementById(id);
  card.dataset.state = kind;
  const box = $(".state", card);
  box.textContent = text;
  if (retry) {
    const button = document.createElement("button");
    button.type = "button";
    button.textContent = "Retry";
    button.addEventListener("click", () => refresh());
    box.append(button);
  }
}

function banner(text, error = false) {
  const element = $("#banner");
  element.textContent = text;
  element.hidden = !text;
  element.classList.toggle("error", error);
}

function plural(count, noun) {
  return `${count.toLocaleString()} ${noun}${count === 1 ? "" : "s"}`;
}

function describe(failure) {
  if (!(failure instanceof Tr50Error)) return String(failure?.message ?? failure);
  if (failure.code === OFFLINE) return `Cannot reach the gateway (${failure.message}).`;
  const label = ERRORS[failure.code];
  if (failure.code === -90004 || failure.code === -90012) return label;
  return `${label ?? "Failed"}: ${failure.message} (${failure.code})`;
}

// ---- charts ------------------------------------------------------------------------------

const seconds = (text) => Date.parse(text) / 1000;

function chartOptions(kind, series, extra = {}) {
  const width = Math.max(200, $(`#${kind}-chart`).clientWidth || 300);
  return {
    width,
    height: window.innerWidth <= 640 ? 200 : 240,
    tzDate: (ts) => uPlot.tzDate(new Date(ts * 1e3), state.zone),
    cursor: { drag: { x: true, y: false, setScale: false } },
    legend: { live: true },
    series: [{ label: "Time" }, ...series],
    hooks: { setSelect: [zoomFromChart] },
    ...extra,
  };
}

// Dragging across a chart: the selection becomes the custom range (Undo zoom goes back).
function zoomFromChart(u) {
  const { left, width } = u.select;
  if (width >= 5) {
    const start = Math.floor(u.posToVal(left, "x") * 1000);
    const end = Math.ceil(u.posToVal(left + width, "x") * 1000);
    if (end - start >= 1000) setCustom({ start, end });
  }
  u.setSelect({ left: 0, top: 0, width: 0, height: 0 }, false);
}

function draw(kind, options, data) {
  const target = $(`#${kind}-chart`);
  state.charts[kind]?.destroy();
  delete state.charts[kind];
  target.textContent = "";
  if (typeof uPlot === "undefined") {
    target.textContent = "Charts need the uPlot package: run make node_modules and restart.";
    return;
  }
  state.charts[kind] = new uPlot(options, data, target);
}

function resizeCharts() {
  for (const [kind, chart] of Object.entries(state.charts)) {
    const width = $(`#${kind}-chart`).clientWidth;
    if (width > 0 && Math.abs(width - chart.width) > 2) chart.setSize({ width, height: chart.height });
  }
}

// The x range of bars that start at their bucket's first instant: up to the end of the last one.
function barRange(xs) {
  const step = xs.length > 1 ? xs[xs.length - 1] - xs[xs.length - 2] : 60;
  return () => [xs[0] ?? 0, (xs[xs.length - 1] ?? 0) + step];
}

function renderCalls(reply) {
  const rows = reply.result ?? [];
  const xs = rows.map((row) => seconds(row.timestamp));
  const success = rows.map((row) => row.success);
  const failed = rows.map((row) => row.failed);
  const totals = rows.map((row) => row.count);
  const total = totals.reduce((a, b) => a + b, 0);
  const failures = failed.reduce((a, b) => a + b, 0);
  $("#calls-total").textContent = total
    ? `${plural(total, "call")}, ${failures.toLocaleString()} failed (${((100 * failures) / total).toFixed(1)}%) · per ${reply.interval}`
    : `per ${reply.interval}`;
  state.snapshot.calls = {
    interval: reply.interval, timezone: reply.timezone, window: windowParams(), params: chartParams(),
    timestamps: rows.map((row) => row.timestamp), success, failed,
  };
  const bars = uPlotBars();
  draw("calls", chartOptions("calls", [
    // Drawn in order: the whole bar in the failure colour, its successful part over it.
    { label: "Failed", fill: "#d64545", stroke: "#d64545", width: 0, paths: bars,
      points: { show: false }, value: (u, v, s, i) => (i == null ? "–" : failed[i]) },
    { label: "Succeeded", fill: "#1f9d55", stroke: "#1f9d55", width: 0, paths: bars,
      points: { show: false } },
  ], { scales: { x: { time: true, range: barRange(xs) } }, axes: [{}, { size: 50 }] }),
  [xs, totals, success]);
  return total ? null : "No calls in this range.";
}

function uPlotBars() {
  return typeof uPlot === "undefined" ? undefined : uPlot.paths.bars({ size: [0.8, 80], align: 1 });
}

function renderLatency(reply) {
  const rows = reply.result ?? [];
  const xs = rows.map((row) => seconds(row.timestamp));
  const series = ["p50", "p95", "p99"];
  const colours = { p50: "#2463eb", p95: "#c77700", p99: "#9c36b5" };
  draw("latency", chartOptions("latency", series.map((key) => ({
    label: key, stroke: colours[key], width: 2, spanGaps: false, points: { show: true, size: 4 },
    value: (u, v) => (v == null ? "–" : `${v.toFixed(2)} ms`),
  })), { scales: { x: { time: true } }, axes: [{}, { size: 50 }] }),
  [xs, ...series.map((key) => rows.map((row) => row[key]))]);
  state.snapshot.latency = rows;
  return rows.some((row) => row.count) ? null : "No calls in this range.";
}

// Top commands or callers: each key's calls over the window, a bar per key; a click filters.
function renderTop(selector, reply, filter) {
  const totals = new Map(reply.keys.map((key) => [key, 0]));
  for (const bucket of reply.result ?? []) {
    for (const [key, count] of Object.entries(bucket.counts)) totals.set(key, totals.get(key) + count);
  }
  const list = $(selector);
  list.textContent = "";
  const largest = Math.max(1, ...totals.values());
  for (const [key, count] of totals) {
    const item = document.createElement("li");
    const button = document.createElement("button");
    button.type = "button";
    button.title = `Show only ${key || "(none)"}`;
    const label = Object.assign(document.createElement("span"), { className: "key", textContent: key || "(none)" });
    const number = Object.assign(document.createElement("span"), { className: "count", textContent: count.toLocaleString() });
    const bar = Object.assign(document.createElement("span"), { className: "bar" });
    const fill = document.createElement("span");
    fill.style.width = `${(100 * count) / largest}%`;
    bar.append(fill);
    button.append(label, number, bar);
    button.addEventListener("click", () => setFilter(filter, key));
    item.append(button);
    list.append(item);
  }
  state.snapshot[filter === "who" ? "callers" : "commands"] = Object.fromEntries(totals);
  return totals.size ? null : "No calls in this range.";
}

// ---- endpoints ---------------------------------------------------------------------------

function renderEndpoints() {
  const { key, dir } = state.sort;
  const rows = [...state.endpoints].sort((a, b) => {
    const x = a[key];
    const y = b[key];
    const order = typeof x === "string" ? String(x).localeCompare(String(y)) : (x ?? -1) - (y ?? -1);
    return order * dir || a.command.localeCompare(b.command);
  });
  for (const th of document.querySelectorAll("#endpoints th")) {
    th.setAttribute("aria-sort", th.dataset.key !== key ? "none" : dir > 0 ? "ascending" : "descending");
  }
  const body = $("#endpoints tbody");
  body.textContent = "";
  const ms = (v) => (v == null ? "–" : v.toFixed(2));
  for (const row of rows) {
    body.append(tableRow([
      [row.command || "(none)"],
      [row.hits.toLocaleString(), "num"],
      [row.success.toLocaleString(), "num"],
      [row.error.toLocaleString(), row.error ? "num status-fail" : "num"],
      [`${row.errorRate.toFixed(1)}%`, "num"],
      [ms(row.avg), "num"],
      [ms(row.p95), "num"],
      [ms(row.max), "num"],
      [formatInstant(row.lastHit, state.zone, { millis: false })],
    ]));
  }
}

function tableRow(cells) {
  const tr = document.createElement("tr");
  for (const [text, className] of cells) {
    const td = document.createElement("td");
    td.textContent = text;
    if (className) td.className = className;
    tr.append(td);
  }
  return tr;
}

// ---- log explorer ------------------------------------------------------------------------

async function loadLog(generation) {
  setState("log-card", "loading", "Loading…");
  let reply;
  try {
    reply = await state.client.call("usage.api.list", {
      ...filterParams(), ...windowParams(), offset: state.offset, limit: PAGE,
    });
  } catch (failure) {
    if (generation !== state.generation) return;
    if (failure instanceof Tr50Error && failure.code === -90005) sessionEnded();
    else setState("log-card", "error", describe(failure), true);
    return;
  }
  if (generation !== state.generation) return;
  const records = reply.result ?? [];
  state.snapshot.log = { count: reply.count, offset: state.offset, ids: records.map((r) => r.id) };
  const body = $("#log tbody");
  body.textContent = "";
  for (const record of records) body.append(logRow(record));
  const first = reply.count ? state.offset + 1 : 0;
  $("#log-count").textContent = plural(reply.count, "call");
  $("#page-info").textContent = `${first.toLocaleString()}–${(state.offset + records.length).toLocaleString()} of ${reply.count.toLocaleString()}`;
  $("#page-newer").disabled = state.offset === 0;
  $("#page-older").disabled = state.offset + records.length >= reply.count;
  setState("log-card", records.length ? "ready" : "empty",
    records.length ? "" : "No calls match these filters in this range.");
}

function logRow(record, fresh = false) {
  const failed = !record.success;
  const tr = tableRow([
    [formatInstant(record.ts, state.zone)],
    [record.whoami || "(anonymous)", "caller"],
    [record.service ? `${record.service}.${record.command}` : record.command || "(not an envelope)"],
    [record.transport, "opt"],
    [failed ? `error ${record.errorCode ?? ""}` : "ok", failed ? "status-fail" : "status-ok"],
    [(record.execTime / 1e6).toFixed(2), "num opt"],
  ]);
  tr.tabIndex = 0;
  tr.dataset.id = record.id;
  tr.record = record;
  if (fresh) tr.classList.add("fresh");
  return tr;
}

function openRow(tr) {
  if (!tr?.record) return;
  const record = tr.record;
  $("#detail-title").textContent = record.service ? `${record.service}.${record.command}` : "Call";
  const fields = $("#detail-fields");
  fields.textContent = "";
  const shown = {
    Time: formatInstant(record.ts, state.zone),
    Outcome: record.success ? "succeeded" : `failed, error ${record.errorCode}`,
    "Exec time": `${(record.execTime / 1e6).toFixed(3)} ms`,
    Caller: record.whoami || "(anonymous)",
    Org: record.orgKey || "–",
    Transport: record.transport,
    "Client id": record.clientId || "–",
    Address: record.remoteAddr || "–",
    "Processed by": record.processedBy,
    Id: record.id,
  };
  for (const [name, value] of Object.entries(shown)) {
    fields.append(Object.assign(document.createElement("dt"), { textContent: name }));
    fields.append(Object.assign(document.createElement("dd"), { textContent: String(value) }));
  }
  $("#detail-request").textContent = pretty(record.request);
  $("#detail-response").textContent = pretty(record.response);
  $("#detail").showModal();
}

// The logged text as indented JSON; a text that is no JSON (cut at the log cap, or not an
// envelope) as it is.
function pretty(text) {
  if (text == null || text === "") return "(empty)";
  try {
    return JSON.stringify(JSON.parse(text), null, 2);
  } catch {
    return text;
  }
}

// ---- live tail ---------------------------------------------------------------------------

async function startTail() {
  const status = $("#tail-status");
  if (!state.client.canPush) {
    status.textContent = "Live tail needs the gateway's WebSocket port.";
    $("#tail").checked = false;
    return;
  }
  status.textContent = "Connecting…";
  try {
    const { subscriptionId } = await state.client.call("usage.api.subscribe", filterParams());
    state.tail = { subscriptionId, received: 0, dropped: 0 };
    status.textContent = "Live: waiting for calls…";
  } catch (failure) {
    $("#tail").checked = false;
    state.tail = null;
    status.textContent = describe(failure);
  }
}

async function stopTail() {
  const tail = state.tail;
  state.tail = null;
  $("#tail").checked = false;
  $("#tail-status").textContent = "";
  if (!tail) return;
  try {
    await state.client.call("usage.api.unsubscribe", { subscriptionId: tail.subscriptionId });
  } catch {
    /* the connection is gone, and the subscription with it */
  }
}

async function restartTail() {
  if (!state.tail) return;
  await stopTail();
  $("#tail").checked = true;
  await startTail();
}

function tailReceived(notify) {
  const tail = state.tail;
  const params = notify.params ?? {};
  if (notify.command !== "usage.api.records" || !tail || params.subscriptionId !== tail.subscriptionId) return;
  const records = params.result ?? [];
  tail.received += records.length;
  tail.dropped += params.dropped ?? 0;
  updateTailStatus();
  if (state.offset > 0) {
    // New calls belong on the first page: go there (it lists them), then add on top.
    state.offset = 0;
    loadLog(state.generation);
    return;
  }
  const body = $("#log tbody");
  for (const record of records) body.prepend(logRow(record, true)); // newest on top
  while (body.rows.length > TAIL_KEEP) body.deleteRow(-1);
  if (records.length) setState("log-card", "ready", "");
}

function updateTailStatus() {
  const tail = state.tail;
  $("#tail-status").textContent = `Live: ${tail.received.toLocaleString()} new`
    + (tail.dropped ? `, ${tail.dropped.toLocaleString()} dropped (too many to show)` : "");
}

function linkChanged(link) {
  if (link === "down" && state.tail) {
    // The subscription ended with its connection: open a new one and subscribe again.
    state.tail = null;
    $("#tail-status").textContent = "Connection lost: reconnecting…";
    setTimeout(() => {
      if (state.info && $("#tail").checked) startTail();
    }, 1000);
  }
}

// ---- export ------------------------------------------------------------------------------

// Every call matching the filters and the range, from `GET /usage/export`, saved as a file; the
// bytes are counted as they arrive.
async function exportRows() {
  const format = $("#export-format").value;
  const status = $("#export-status");
  const button = $("#export");
  const params = filterParams();
  const query = new URLSearchParams({ format });
  const { start, end } = windowParams();
  query.set("from", start);
  query.set("to", end);
  if (params.hasFailure) query.set("status", "FAILED");
  for (const name of ["who", "service", "command", "transport", "clientId", "remoteAddr", "searchText"]) {
    if (params[name]) query.set(name, params[name]);
  }
  if (params.showAll) query.set("showAll", "true");
  button.disabled = true;
  status.textContent = "Exporting…";
  try {
    const response = await fetch(`/usage/export?${query}`, {
      headers: { Authorization: `Bearer ${state.client.sessionId}` },
    });
    if (!response.ok) {
      const body = await response.json().catch(() => ({}));
      throw new Error(body.error?.message ?? `HTTP ${response.status}`);
    }
    const rows = Number(response.headers.get("X-Total-Count") ?? 0);
    const reader = response.body.getReader();
    const chunks = [];
    let bytes = 0;
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      chunks.push(value);
      bytes += value.length;
      status.textContent = `Exporting ${rows.toLocaleString()} calls… ${(bytes / 1024).toFixed(0)} KB`;
    }
    const name = /filename="([^"]+)"/.exec(response.headers.get("Content-Disposition") ?? "")?.[1]
      ?? `usage.${format}`;
    const link = document.createElement("a");
    link.href = URL.createObjectURL(new Blob(chunks, { type: response.headers.get("Content-Type") ?? "" }));
    link.download = name;
    document.body.append(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(link.href), 60_000);
    status.textContent = `Exported ${rows.toLocaleString()} calls (${(bytes / 1024).toFixed(0)} KB).`;
  } catch (failure) {
    status.textContent = `Export failed: ${failure.message}`;
  } finally {
    button.disabled = false;
  }
}

// For tests and for the curious: what each panel shows, and the state it was asked with.
window.tr50console = { state, snapshot: () => state.snapshot };

start();
