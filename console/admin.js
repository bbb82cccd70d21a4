// The console's admin page (SPEC §10): users, applications, things and, for Super-Ops, orgs,
// each a table from its TR50 listing with create, disable, delete and rotate. Only for
// org-admins and Super-Ops; the gateway checks every right again.

import { Tr50Error } from "./tr50.js";
import { formatInstant } from "./time.js";

const $ = (selector, root = document) => root.querySelector(selector);

let ctx = null; // {client, state, describe, sessionEnded}
let tab = "users";

export function initAdmin(context) {
  ctx = context;
  for (const button of document.querySelectorAll("#admin-view .tabs button")) {
    button.addEventListener("click", () => showTab(button.dataset.tab));
  }
  $("#user-form").addEventListener("submit", (event) => submit(event, createUser));
  $("#app-form").addEventListener("submit", (event) => submit(event, createApp));
  $("#org-form").addEventListener("submit", (event) => submit(event, createOrg));
  $("#token-copy").addEventListener("click", copyToken);
  $("#token-done").addEventListener("click", hideToken);
}

export function enterAdmin() {
  const info = ctx.state.info;
  document.body.classList.toggle("super", Boolean(info.hasSuperOps));
  $("#orgs-tab").hidden = !info.hasSuperOps;
  showTab(tab);
}

export function reloadAdmin() {
  LOADERS[tab]();
}

function showTab(name) {
  tab = name;
  for (const button of document.querySelectorAll("#admin-view .tabs button")) {
    button.setAttribute("aria-selected", String(button.dataset.tab === name));
  }
  for (const panel of document.querySelectorAll(".admin-panel")) panel.hidden = panel.id !== `${name}-panel`;
  LOADERS[name]();
}

const LOADERS = { users: loadUsers, apps: loadApps, things: loadThings, orgs: loadOrgs };

// ---- plumbing ----------------------------------------------------------------------------

function scope() {
  return ctx.state.showAll ? { showAll: true } : {};
}

async function call(command, params) {
  try {
    return await ctx.client.call(command, params);
  } catch (failure) {
    if (failure instanceof Tr50Error && failure.code === -90005) ctx.sessionEnded();
    throw failure;
  }
}

function setState(panel, kind, text = "") {
  const card = document.getElementById(`${panel}-panel`);
  card.dataset.state = kind;
  $(".state", card).textContent = text;
}

function banner(text, error = false) {
  const element = $("#admin-banner");
  element.textContent = text;
  element.hidden = !text;
  element.classList.toggle("error", error);
}

async function load(panel, command, params, render) {
  setState(panel, "loading", "Loading…");
  try {
    const reply = await call(command, params);
    const rows = reply.result ?? [];
    $(`#${panel}-panel .count`).textContent = `${reply.count ?? rows.length}`;
    const body = $(`#${panel}-table tbody`);
    body.textContent = "";
    for (const row of rows) body.append(render(row));
    setState(panel, rows.length ? "ready" : "empty", rows.length ? "" : "None yet.");
  } catch (failure) {
    setState(panel, "error", ctx.describe(failure));
  }
}

// A form's submit: its non-empty fields as params; the form is cleared when it worked.
async function submit(event, action) {
  event.preventDefault();
  const form = event.target;
  const params = {};
  for (const [name, value] of new FormData(form)) {
    if (String(value).trim()) params[name] = String(value).trim();
  }
  const button = $("button[type=submit]", form);
  button.disabled = true;
  banner("");
  try {
    await action(params);
    form.reset();
  } catch (failure) {
    banner(ctx.describe(failure), true);
  } finally {
    button.disabled = false;
  }
}

// A row action: confirmed first when it destroys something, then the listing again.
async function act(question, command, params, after = () => {}) {
  if (question && !window.confirm(question)) return;
  banner("");
  try {
    const result = await call(command, params);
    after(result);
    LOADERS[tab]();
  } catch (failure) {
    banner(ctx.describe(failure), true);
  }
}

function cell(text, className = "") {
  const td = document.createElement("td");
  td.textContent = text ?? "–";
  if (className) td.className = className;
  return td;
}

function actions(...buttons) {
  const td = document.createElement("td");
  td.className = "actions";
  const group = document.createElement("div");
  for (const [label, handler, danger] of buttons) {
    const button = document.createElement("button");
    button.type = "button";
    button.textContent = label;
    if (danger) button.className = "danger";
    button.addEventListener("click", handler);
    group.append(button);
  }
  td.append(group);
  return td;
}

function row(key, ...cells) {
  const tr = document.createElement("tr");
  tr.dataset.key = key;
  tr.append(...cells);
  return tr;
}

const when = (text) => (text ? formatInstant(text, ctx.state.zone, { millis: false }) : "never");

// ---- users -------------------------------------------------------------------------------

function loadUsers() {
  return load("users", "user.list", { ...scope(), limit: 500 }, (user) => {
    const self = user.emailAddress === ctx.state.info.userName || user.emailAddress === ctx.state.info.whoAmI;
    const status = document.createElement("span");
    status.className = user.disabled ? "badge off" : "badge";
    status.textContent = user.disabled ? "disabled" : "active";
    const statusCell = cell("");
    statusCell.append(status);
    const buttons = self ? [] : [
      user.disabled
        ? ["Enable", () => act(null, "user.update", { emailAddress: user.emailAddress, disabled: false })]
        : ["Disable", () => act(`Disable ${user.emailAddress}? Its sessions end now.`, "user.update",
          { emailAddress: user.emailAddress, disabled: true })],
      [user.role === "org-admin" ? "Make user" : "Make org-admin", () => act(null, "user.update",
        { emailAddress: user.emailAddress, role: user.role === "org-admin" ? "user" : "org-admin" })],
      ["Delete", () => act(`Delete ${user.emailAddress}? This cannot be undone.`, "user.delete",
        { emailAddress: user.emailAddress }), true],
    ];
    if (user.role === "super-ops" && !ctx.state.info.hasSuperOps) buttons.length = 0;
    return row(
      user.emailAddress,
      cell(user.emailAddress),
      cell([user.firstName, user.lastName].filter(Boolean).join(" ") || "–"),
      cell(user.orgKey, "opt"),
      cell(user.role),
      statusCell,
      cell(when(user.lastLoginOn), "opt"),
      actions(...buttons),
    );
  });
}

async function createUser(params) {
  await call("user.create", params);
  banner(`User ${params.emailAddress} created.`);
  loadUsers();
}

// ---- applications ------------------------------------------------------------------------

function loadApps() {
  return load("apps", "app.list", { ...scope(), limit: 500 }, (app) => row(
    app.id,
    cell(app.name),
    cell(app.desc || "–", "opt"),
    cell(app.orgKey, "opt"),
    cell(app.id),
    cell(when(app.rotatedOn ?? app.createdOn), "opt"),
    actions(
      ["Rotate token", () => act(
        `Give ${app.name} a new token? Things using the old one are logged out and refused.`,
        "app.token.rotate", { id: app.id }, (result) => showToken(app.name, result))],
      ["Delete", () => act(`Delete ${app.name}? Its things can no longer log in.`, "app.delete",
        { id: app.id }), true],
    ),
  ));
}

async function createApp(params) {
  const result = await call("app.create", params);
  showToken(params.name, result);
  loadApps();
}

// The token of a new or rotated app: shown this once, with a copy button; gone with "Done".
function showToken(name, result) {
  $("#token-app").textContent = name;
  $("#token-app-id").textContent = result.id;
  $("#token-value").textContent = result.token;
  $("#token-copied").textContent = "";
  $("#token-box").hidden = false;
}

async function copyToken() {
  try {
    await navigator.clipboard.writeText($("#token-value").textContent);
    $("#token-copied").textContent = "Copied.";
  } catch {
    // No clipboard (an insecure origin, a refused permission): select it for Ctrl-C.
    window.getSelection().selectAllChildren($("#token-value"));
    $("#token-copied").textContent = "Selected: press Ctrl-C (or ⌘-C) to copy.";
  }
}

function hideToken() {
  $("#token-value").textContent = "";
  $("#token-box").hidden = true;
}

// ---- things ------------------------------------------------------------------------------

function loadThings() {
  return load("things", "thing.list", { limit: 2000 }, (thing) => row(
    thing.key,
    cell(thing.key),
    cell(thing.name),
    cell((thing.tags ?? []).join(", ") || "–", "opt"),
    cell(when(thing.lastSeen)),
    actions(
      ["Rename", () => {
        const name = window.prompt(`New name for ${thing.key}`, thing.name);
        if (name?.trim()) act(null, "thing.update", { key: thing.key, name: name.trim() });
      }],
      ["Delete", () => act(`Delete ${thing.key} and all its data? Its usage records stay.`,
        "thing.delete", { key: thing.key }), true],
    ),
  ));
}

// ---- orgs (Super-Ops) --------------------------------------------------------------------

function loadOrgs() {
  return load("orgs", "org.list", { limit: 2000 }, (org) => row(
    org.key,
    cell(org.key),
    cell(org.name),
    cell(org.desc || "–", "opt"),
    cell(org.id),
    cell(when(org.createdOn), "opt"),
  ));
}

async function createOrg(params) {
  await call("org.create", params);
  banner(`Org ${params.key} created.`);
  loadOrgs();
}
