// The admin console. It signs in with an API key and secret (POST /v1/sessions), keeps the
// session token in memory only, and does everything else through the public API.

import { el } from "./dom.js";

const session = { token: null, organization: null, timer: null };

// ---------------------------------------------------------------------------------------------
// Small helpers

/** A date as the reader's locale shows it, in UTC. */
function when(iso) {
  if (!iso) return "";
  return new Date(iso).toLocaleString(undefined, { timeZone: "UTC", dateStyle: "medium", timeStyle: "medium" }) + " UTC";
}

function badge(value) {
  if (value === true) return el("span", { class: "badge yes", text: "yes" });
  if (value === false) return el("span", { class: "badge no", text: "no" });
  return el("span", { class: "badge none", text: "no choice" });
}

function notice(kind, text) {
  return el("div", { class: `notice ${kind}`, role: kind === "bad" ? "alert" : "status", text });
}

/** The error an API answer carries, in one line. */
function problem(answer) {
  const d = answer.data;
  if (!d) return `HTTP ${answer.status}`;
  const fields = d.errors && Object.keys(d.errors).length
    ? ` (${Object.entries(d.errors).map(([k, v]) => `${k}: ${v}`).join("; ")})`
    : "";
  return `${d.message ?? `HTTP ${answer.status}`}${fields}`;
}

class SignedOut extends Error {}

/** Calls the API with the session token; signs out when the session has ended. */
async function api(method, path, params = {}, body) {
  const url = new URL(path, location.origin);
  url.searchParams.set("organization_id", session.organization);
  for (const [k, v] of Object.entries(params)) {
    for (const item of Array.isArray(v) ? v : [v]) {
      if (item !== undefined && item !== null && item !== "") url.searchParams.append(k, item);
    }
  }
  const response = await fetch(url, {
    method,
    headers: {
      authorization: `Bearer ${session.token}`,
      ...(body ? { "content-type": "application/json" } : {}),
    },
    body: body ? JSON.stringify(body) : undefined,
  });
  const data = response.status === 204 ? null : await response.json().catch(() => null);
  if (response.status === 401) {
    signOut("Your session has ended. Sign in again.");
    throw new SignedOut();
  }
  return { status: response.status, ok: response.ok, data };
}

// ---------------------------------------------------------------------------------------------
// Signing in and out

function payloadOf(jwt) {
  const part = jwt.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
  return JSON.parse(atob(part));
}

async function signIn(event) {
  event.preventDefault();
  const error = document.getElementById("signin-error");
  const button = document.getElementById("signin-button");
  error.textContent = "";
  button.disabled = true;
  try {
    const response = await fetch("/v1/sessions", {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({
        type: "api-key",
        key: document.getElementById("key").value.trim(),
        secret: document.getElementById("secret").value,
      }),
    });
    const data = await response.json().catch(() => null);
    if (!response.ok) {
      error.textContent = response.status === 401
        ? "Wrong key or secret, or the key is disabled."
        : `Sign-in failed: ${data?.message ?? response.status}`;
      return;
    }
    session.token = data.access_token;
    session.organization = payloadOf(data.access_token).org;
    session.timer = setTimeout(() => signOut("Your session has expired. Sign in again."), data.expires_in * 1000);
    document.getElementById("secret").value = "";
    document.getElementById("signin-view").hidden = true;
    document.getElementById("app").hidden = false;
    document.getElementById("organization").textContent = session.organization;
    if (!location.hash || location.hash === "#") location.hash = "#/users";
    else route();
  } catch (err) {
    error.textContent = `Sign-in failed: ${err.message}`;
  } finally {
    button.disabled = false;
  }
}

function signOut(message) {
  session.token = null;
  session.organization = null;
  clearTimeout(session.timer);
  document.getElementById("app").hidden = true;
  document.getElementById("view").replaceChildren();
  document.getElementById("signin-view").hidden = false;
  document.getElementById("signin-error").textContent = message ?? "";
  document.getElementById("key").focus();
}

// ---------------------------------------------------------------------------------------------
// Routing: #/users, #/users/<id>, #/integrations, #/integrations/<id>, #/dashboard

async function route() {
  if (!session.token) return;
  const [, section = "users", id] = location.hash.split("/").map(decodeURIComponent);
  for (const b of document.querySelectorAll("nav button")) {
    if (b.dataset.view === section) b.setAttribute("aria-current", "page");
    else b.removeAttribute("aria-current");
  }
  const view = document.getElementById("view");
  view.replaceChildren(el("p", { class: "muted", text: "Loading…" }));
  try {
    let content;
    if (section === "users" && id) content = await userPage(id);
    else if (section === "users") content = await usersPage();
    else if (section === "integrations" && id) content = await deliveriesPage(id);
    else if (section === "integrations") content = await integrationsPage();
    else if (section === "dashboard") content = await dashboardPage();
    else content = notice("bad", "No such page.");
    view.replaceChildren(content);
    view.focus();
  } catch (err) {
    if (!(err instanceof SignedOut)) view.replaceChildren(notice("bad", `Something went wrong: ${err.message}`));
  }
}

function go(...parts) {
  location.hash = `#/${parts.map(encodeURIComponent).join("/")}`;
}

// ---------------------------------------------------------------------------------------------
// Users

function usersTable(users) {
  return el("div", { class: "table-wrap" }, el("table", {},
    el("thead", {}, el("tr", {},
      el("th", { text: "Organization user id" }), el("th", { text: "User id" }),
      el("th", { text: "Created" }), el("th", { text: "Updated" }))),
    el("tbody", {}, users.map((u) => el("tr", {},
      el("td", {}, el("button", {
        type: "button", class: "link", text: u.organization_user_id ?? "(none)",
        onclick: () => go("users", u.id),
      })),
      el("td", {}, el("code", { text: u.id })),
      el("td", { text: when(u.created_at) }),
      el("td", { text: when(u.updated_at) }))))));
}

async function usersPage() {
  const results = el("div", { id: "user-results" });
  const input = el("input", { type: "search", id: "user-search", name: "organization_user_id", autocomplete: "off" });
  const show = async (id) => {
    results.replaceChildren(el("p", { class: "muted", text: "Searching…" }));
    const answer = await api("GET", "/v1/consents/users", id ? { organization_user_id: id } : { $limit: 25 });
    if (!answer.ok) return results.replaceChildren(notice("bad", problem(answer)));
    const users = answer.data.data;
    if (!users.length) {
      return results.replaceChildren(notice("bad", id ? `No user has the organization user id “${id}”.` : "No users yet."));
    }
    results.replaceChildren(
      el("h2", { text: id ? "Search result" : "Users" }),
      usersTable(users),
    );
  };
  const form = el("form", {
    class: "inline", role: "search",
    onsubmit: (e) => { e.preventDefault(); show(input.value.trim()); },
  },
  el("label", { for: "user-search" }, "Organization user id", input),
  el("button", { type: "submit", class: "primary", text: "Search" }));
  await show("");
  return el("section", {}, el("h1", { text: "Users" }), form, results);
}

/** The regulations a user has events in, newest activity first, gdpr if none. */
function regulationsOf(events) {
  const seen = [];
  for (const e of events) if (!seen.includes(e.regulation)) seen.push(e.regulation);
  return seen.length ? seen : ["gdpr"];
}

function statusTable(consents) {
  const rows = [];
  for (const p of consents.purposes ?? []) {
    const values = Object.entries(p.values ?? {}).map(([k, v]) => `${k}: ${v.value}`).join("; ");
    const channels = (p.channels ?? []).map((c) => `${c.id} ${c.enabled === true ? "on" : c.enabled === false ? "off" : "—"}`).join(", ");
    const prefs = (p.preferences ?? []).map((x) => `${x.id} ${x.enabled === true ? "on" : x.enabled === false ? "off" : "—"}`).join(", ");
    rows.push(el("tr", { "data-purpose": p.id },
      el("th", { scope: "row", text: p.id }),
      el("td", {}, badge(p.enabled ?? null)),
      el("td", {}, p.enabled_li === undefined || p.enabled_li === null ? "" : badge(p.enabled_li)),
      el("td", { text: [values, prefs].filter(Boolean).join("; ") }),
      el("td", { text: channels })));
  }
  const table = rows.length
    ? el("div", { class: "table-wrap" }, el("table", {},
      el("thead", {}, el("tr", {},
        el("th", { text: "Purpose" }), el("th", { text: "Consent" }), el("th", { text: "Legitimate interest" }),
        el("th", { text: "Preferences" }), el("th", { text: "Channels" }))),
      el("tbody", {}, rows)))
    : el("p", { class: "muted", text: "No purpose chosen." });
  const extra = [];
  const channels = consents.channels ?? [];
  if (channels.length) {
    extra.push(el("p", {}, el("strong", { text: "Channels: " }),
      channels.map((c) => `${c.id} ${c.enabled === true ? "on" : c.enabled === false ? "off" : "—"}`).join(", ")));
  }
  const v = consents.vendors ?? {};
  for (const [k, label] of [["enabled", "Vendors allowed"], ["disabled", "Vendors refused"], ["enabled_li", "Vendors (legitimate interest)"], ["disabled_li", "Vendors objected to"]]) {
    if (v[k]?.length) extra.push(el("p", {}, el("strong", { text: `${label}: ` }), v[k].join(", ")));
  }
  if (consents.tcfcs) extra.push(el("p", {}, el("strong", { text: "TCF string: " }), el("code", { text: consents.tcfcs })));
  return el("div", {}, table, extra);
}

/** One line per choice an event makes. */
function eventSummary(e) {
  const lines = [];
  const word = (b) => (b === true ? "given" : b === false ? "refused" : "no choice");
  const c = e.consents ?? {};
  for (const p of c.purposes ?? []) {
    if (p.enabled !== undefined && p.enabled !== null) lines.push(`${p.id}: consent ${word(p.enabled)}`);
    if (p.enabled_li !== undefined && p.enabled_li !== null) lines.push(`${p.id}: legitimate interest ${p.enabled_li ? "accepted" : "objected to"}`);
    for (const [k, v] of Object.entries(p.values ?? {})) lines.push(`${p.id} › ${k} = ${v.value || "(none)"}`);
    for (const ch of p.channels ?? []) lines.push(`${p.id} › channel ${ch.id} ${ch.enabled ? "on" : "off"}`);
    for (const pref of p.preferences ?? []) lines.push(`${p.id} › ${pref.id} ${pref.enabled ? "on" : "off"}`);
  }
  for (const ch of c.channels ?? []) lines.push(`channel ${ch.id} ${ch.enabled ? "on" : "off"}`);
  const v = c.vendors ?? {};
  if (v.enabled?.length) lines.push(`vendors allowed: ${v.enabled.join(", ")}`);
  if (v.disabled?.length) lines.push(`vendors refused: ${v.disabled.join(", ")}`);
  if (c.tcfcs) lines.push("TCF string set");
  if (!lines.length) lines.push("no choice (metadata only)");
  return lines;
}

function timeline(events) {
  if (!events.length) return el("p", { class: "muted", text: "No events." });
  return el("ol", { class: "timeline", id: "timeline" }, events.map((e) => el("li", { "data-event": e.id },
    el("div", {},
      el("span", { class: "when", text: when(e.created_at) }), " ",
      el("span", { class: "badge none", text: e.regulation }), " ",
      e.status === "confirmed" ? null : el("span", { class: "badge no", text: e.status.replace("_", " ") })),
    el("ul", {}, eventSummary(e).map((line) => el("li", { text: line }))),
    e.delegate ? el("p", { class: "muted", text: `On behalf of the user: ${e.delegate.name ?? e.delegate.id}` }) : null,
    e.metadata && Object.keys(e.metadata).length
      ? el("p", { class: "muted", text: Object.entries(e.metadata).map(([k, v]) => `${k}: ${typeof v === "string" ? v : JSON.stringify(v)}`).join(", ") })
      : null,
    el("details", {}, el("summary", { text: "Event" }), el("pre", { text: JSON.stringify(e, null, 2) })))));
}

async function userPage(id) {
  const userAnswer = await api("GET", `/v1/consents/users/${encodeURIComponent(id)}`);
  if (userAnswer.status === 404) return notice("bad", "No such user.");
  if (!userAnswer.ok) return notice("bad", problem(userAnswer));
  const user = userAnswer.data;
  const eventsAnswer = await api("GET", "/v1/consents/events", {
    user_id: user.id,
    "regulation[$ne]": "-",
    "status[$in]": ["confirmed", "pending_approval"],
    "$sort[created_at]": "-1",
    $limit: 1000,
  });
  if (!eventsAnswer.ok) return notice("bad", problem(eventsAnswer));
  const events = eventsAnswer.data.data;
  const regulations = regulationsOf(events);

  const statuses = el("div", { class: "grid", id: "statuses" });
  const at = el("input", { type: "datetime-local", id: "status-at", step: "1" });
  const caption = el("p", { class: "muted", id: "status-caption" });
  // The caption changes with the tables it describes, once they arrived; an answer that a
  // later choice of instant overtook is dropped.
  let shown = 0;
  const showStatuses = async (instant) => {
    const ticket = ++shown;
    const panels = await Promise.all(regulations.map(async (regulation) => {
      const answer = await api("GET", `/v1/consents/users/${encodeURIComponent(user.id)}`, { regulation, at: instant });
      const body = answer.ok ? statusTable(answer.data.consents ?? {}) : notice("bad", problem(answer));
      return el("section", { class: "panel", "data-regulation": regulation },
        el("h3", { text: regulation.toUpperCase() }), body);
    }));
    if (ticket !== shown) return;
    statuses.replaceChildren(...panels);
    caption.textContent = instant ? `As it stood at ${when(instant)}.` : "As it stands now.";
  };
  const atForm = el("form", {
    class: "inline",
    onsubmit: (e) => {
      e.preventDefault();
      showStatuses(at.value ? new Date(`${at.value}Z`).toISOString() : null);
    },
  },
  el("label", { for: "status-at" }, "Status at (UTC)", at),
  el("button", { type: "submit", text: "Show" }),
  el("button", { type: "button", text: "Now", onclick: () => { at.value = ""; showStatuses(null); } }));
  await showStatuses(null);

  const facts = el("dl", { class: "grid" },
    [["Organization user id", user.organization_user_id ?? "(none)"], ["User id", user.id],
      ["Country", user.country ?? "—"], ["Last seen country", user.last_seen_country ?? "—"],
      ["Created", when(user.created_at)], ["Updated", when(user.updated_at)]]
      .map(([k, v]) => el("div", {}, el("dt", { class: "muted", text: k }), el("dd", { class: "mono", text: v }))));
  return el("section", {},
    el("p", {}, el("button", { type: "button", class: "link", text: "← Users", onclick: () => go("users") })),
    el("h1", { id: "user-title", text: user.organization_user_id ?? user.id }),
    el("div", { class: "panel" }, facts,
      user.metadata && Object.keys(user.metadata).length
        ? el("details", {}, el("summary", { text: "Metadata" }), el("pre", { text: JSON.stringify(user.metadata, null, 2) }))
        : null),
    el("h2", { text: "Consent status" }), atForm, caption, statuses,
    el("h2", { text: `History (${events.length} event${events.length === 1 ? "" : "s"})` }), timeline(events));
}

// ---------------------------------------------------------------------------------------------
// Integrations

async function integrationsPage() {
  const answer = await api("GET", "/v1/marketplace/integrations", { $limit: 1000 });
  if (!answer.ok) return notice("bad", problem(answer));
  const rows = answer.data.data.map((i) => el("tr", {},
    el("td", {}, el("button", { type: "button", class: "link", text: i.name ?? i.id, onclick: () => go("integrations", i.id) })),
    el("td", { text: i.type_id }),
    el("td", {}, badge(i.enabled)),
    el("td", { class: "mono", text: i.properties?.url ?? i.properties?.base_url ?? "" })));
  return el("section", {}, el("h1", { text: "Integrations" }),
    rows.length
      ? el("div", { class: "table-wrap" }, el("table", {},
        el("thead", {}, el("tr", {}, el("th", { text: "Integration" }), el("th", { text: "Type" }), el("th", { text: "Enabled" }), el("th", { text: "Destination" }))),
        el("tbody", {}, rows)))
      : el("p", { class: "muted", text: "No integrations." }));
}

async function deliveriesPage(id) {
  const integration = await api("GET", `/v1/marketplace/integrations/${encodeURIComponent(id)}`);
  if (!integration.ok) return notice("bad", problem(integration));
  const status = el("select", { id: "delivery-status" },
    ["", "queued", "retrying", "delivered", "parked"].map((s) => el("option", { value: s, text: s || "all" })));
  const list = el("div", { id: "deliveries" });
  const message = el("div", { role: "status" });
  const load = async () => {
    const answer = await api("GET", `/v1/marketplace/integrations/${encodeURIComponent(id)}/deliveries`, { status: status.value, $limit: 200 });
    if (!answer.ok) return list.replaceChildren(notice("bad", problem(answer)));
    const rows = answer.data.data.map((d) => {
      const last = d.attempts[d.attempts.length - 1];
      const retry = d.status === "parked" || d.status === "retrying"
        ? el("button", {
          type: "button", text: "Retry now", "data-retry": d.id,
          onclick: async (e) => {
            e.target.disabled = true;
            const r = await api("POST", `/v1/marketplace/integrations/${encodeURIComponent(id)}/deliveries/${encodeURIComponent(d.id)}/retry`);
            message.replaceChildren(r.ok ? notice("ok", `Delivery ${d.id} will be attempted now.`) : notice("bad", problem(r)));
            await load();
          },
        })
        : null;
      return el("tr", { "data-delivery": d.id },
        el("td", { text: when(d.created_at) }),
        el("td", { text: d.type }),
        el("td", {}, el("span", { class: `badge ${d.status === "delivered" ? "yes" : d.status === "parked" ? "no" : "none"}`, text: d.status })),
        el("td", { text: String(d.attempts.length) }),
        el("td", { text: last ? `${last.response_code ?? "—"} in ${last.duration_ms} ms` : "—" }),
        el("td", { text: last?.error ?? "" }),
        el("td", { text: when(d.next_attempt_at) }),
        el("td", {}, retry));
    });
    list.replaceChildren(rows.length
      ? el("div", { class: "table-wrap" }, el("table", {},
        el("thead", {}, el("tr", {}, ["Change at", "Type", "Status", "Attempts", "Last answer", "Last error", "Next attempt", ""].map((h) => el("th", { text: h })))),
        el("tbody", {}, rows)))
      : el("p", { class: "muted", text: "No deliveries." }));
  };
  status.addEventListener("change", load);
  await load();
  const i = integration.data;
  return el("section", {},
    el("p", {}, el("button", { type: "button", class: "link", text: "← Integrations", onclick: () => go("integrations") })),
    el("h1", { text: `${i.name ?? i.id} (${i.type_id})` }),
    el("div", { class: "inline" }, el("label", { for: "delivery-status" }, "Show", status),
      el("button", { type: "button", text: "Refresh", onclick: load })),
    message, list);
}

// ---------------------------------------------------------------------------------------------
// Dashboard

const PALETTE = ["#1a56db", "#c2410c", "#047857", "#7e22ce", "#b91c1c", "#0e7490", "#a16207", "#be185d"];

function isoDay(date) {
  return date.toISOString().slice(0, 10);
}

/** An SVG chart: bars (event volume) or lines (opt-in share, 0–100 %), with axes. */
function chart({ days, series, kind, max, unit, label }) {
  const w = 720, h = 240, left = 48, bottom = 28, top = 10, right = 10;
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("viewBox", `0 0 ${w} ${h}`);
  svg.setAttribute("role", "img");
  svg.setAttribute("aria-label", label);
  const node = (tag, attrs, text) => {
    const n = document.createElementNS(ns, tag);
    for (const [k, v] of Object.entries(attrs)) n.setAttribute(k, v);
    if (text !== undefined) n.textContent = text;
    svg.append(n);
    return n;
  };
  const plotW = w - left - right, plotH = h - top - bottom;
  // One band per day; points and bars sit in the middle of their band.
  const x = (i) => left + ((i + 0.5) * plotW) / Math.max(days.length, 1);
  const y = (v) => top + plotH - (max ? (v / max) * plotH : 0);
  for (const f of [0, 0.25, 0.5, 0.75, 1]) {
    const v = max * f;
    node("line", { x1: left, x2: w - right, y1: y(v), y2: y(v), stroke: "#e5e7eb" });
    node("text", { x: left - 6, y: y(v) + 4, "text-anchor": "end", "font-size": 11, fill: "#4b5563" },
      unit === "%" ? `${Math.round(v)}%` : String(Math.round(v)));
  }
  const step = Math.max(1, Math.ceil(days.length / 8));
  days.forEach((d, i) => {
    if (i % step === 0) {
      node("text", { x: x(i), y: h - 8, "text-anchor": "middle", "font-size": 11, fill: "#4b5563" }, d.slice(5));
    }
  });
  if (kind === "bars") {
    const bw = Math.max(1, (plotW / Math.max(days.length, 1)) * 0.7);
    series[0].values.forEach((v, i) => {
      const rect = node("rect", { x: x(i) - bw / 2, y: y(v), width: bw, height: top + plotH - y(v), fill: series[0].color });
      const tip = document.createElementNS(ns, "title");
      tip.textContent = `${days[i]}: ${v} events`;
      rect.append(tip);
    });
  } else {
    for (const s of series) {
      const points = s.values.map((v, i) => (v === null ? null : `${x(i)},${y(v)}`)).filter(Boolean);
      if (points.length > 1) node("polyline", { points: points.join(" "), fill: "none", stroke: s.color, "stroke-width": 2 });
      s.values.forEach((v, i) => {
        if (v === null) return;
        const dot = node("circle", { cx: x(i), cy: y(v), r: 3, fill: s.color });
        const tip = document.createElementNS(ns, "title");
        tip.textContent = `${s.name}, ${days[i]}: ${v.toFixed(1)}% opt-in`;
        dot.append(tip);
      });
    }
  }
  return svg;
}

/** A round axis maximum at or above `n` whose quarters are whole numbers. */
function niceMax(n) {
  if (!(n > 4)) return 4;
  const magnitude = 10 ** Math.floor(Math.log10(n));
  const nice = [1, 2, 2.5, 4, 5, 10].map((f) => f * magnitude).find((m) => m >= n && Number.isInteger(m / 4));
  return nice ?? Math.ceil(n / 4) * 4;
}

function legend(series) {
  return el("div", { class: "legend" }, series.map((s) => {
    const item = el("span", { text: s.name });
    item.style.setProperty("--swatch", s.color);
    return item;
  }));
}

async function dashboardPage() {
  const today = new Date();
  const from = el("input", { type: "date", id: "stats-from", value: isoDay(new Date(today.getTime() - 29 * 86400000)) });
  const to = el("input", { type: "date", id: "stats-to", value: isoDay(today) });
  const regulation = el("input", { type: "text", id: "stats-regulation", value: "gdpr", size: 10 });
  const out = el("div", { id: "dashboard" });
  const load = async () => {
    const answer = await api("GET", "/v1/stats/consents", { from: from.value, to: to.value, regulation: regulation.value.trim() });
    if (!answer.ok) return out.replaceChildren(notice("bad", problem(answer)));
    const stats = answer.data;
    const days = stats.days.map((d) => d.date);
    const volume = stats.days.map((d) => d.events);
    const total = volume.reduce((a, b) => a + b, 0);
    const purposeIds = [...new Set(stats.days.flatMap((d) => Object.keys(d.purposes ?? {})))].sort();
    const shares = purposeIds.map((id, k) => ({
      name: id,
      color: PALETTE[k % PALETTE.length],
      values: stats.days.map((d) => {
        const p = d.purposes?.[id];
        const n = p ? p.given + p.refused : 0;
        return n ? (100 * p.given) / n : null;
      }),
    }));
    const rows = stats.days.map((d) => el("tr", {}, el("td", { text: d.date }), el("td", { text: String(d.events) }),
      purposeIds.map((id) => {
        const p = d.purposes?.[id];
        return el("td", { text: p ? `${p.given} / ${p.given + p.refused}` : "—" });
      })));
    out.replaceChildren(
      el("section", { class: "panel chart", "aria-labelledby": "volume-title" },
        el("h2", { id: "volume-title", text: `Event volume (${total} event${total === 1 ? "" : "s"})` }),
        chart({ days, series: [{ name: "events", color: "#1a56db", values: volume }], kind: "bars", max: niceMax(Math.max(...volume)), unit: "",
          label: `Events per day from ${stats.from} to ${stats.to}; the numbers are in the data table below.` })),
      el("section", { class: "panel chart", "aria-labelledby": "rates-title" },
        el("h2", { id: "rates-title", text: "Opt-in share per purpose, by day" }),
        purposeIds.length
          ? [chart({
            days, series: shares, kind: "lines", max: 100, unit: "%",
            label: `Share of consents given per purpose and day (${purposeIds.join(", ")}); the numbers are in the data table below.`,
          }), legend(shares)]
          : el("p", { class: "muted", text: "No consent given or refused in this period." })),
      el("details", { class: "panel" }, el("summary", { text: "Data (consents given / choices made)" }),
        el("div", { class: "table-wrap" }, el("table", { id: "stats-table" },
          el("thead", {}, el("tr", {}, el("th", { text: "Day" }), el("th", { text: "Events" }), purposeIds.map((id) => el("th", { text: id })))),
          el("tbody", {}, rows)))));
  };
  const form = el("form", { class: "inline", onsubmit: (e) => { e.preventDefault(); load(); } },
    el("label", { for: "stats-from" }, "From", from),
    el("label", { for: "stats-to" }, "To", to),
    el("label", { for: "stats-regulation" }, "Regulation", regulation),
    el("button", { type: "submit", class: "primary", text: "Show" }));
  await load();
  return el("section", {}, el("h1", { text: "Dashboard" }), form, out);
}

// ---------------------------------------------------------------------------------------------

document.getElementById("signin").addEventListener("submit", signIn);
document.getElementById("signout").addEventListener("click", () => signOut("You are signed out."));
for (const b of document.querySelectorAll("nav button")) b.addEventListener("click", () => go(b.dataset.view));
window.addEventListener("hashchange", route);
