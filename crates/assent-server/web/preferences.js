// The end-user preference center. The server has checked the consent token in the address and
// embedded the organization's look and purpose registry in #config; this script reads the
// user's current status and saves changes as one consent event, both through the public API
// with that token.

import { el } from "./dom.js";

const TEXTS = {
  en: {
    loading: "Loading your choices…",
    save: "Save my choices",
    saving: "Saving…",
    saved: "Your choices have been saved.",
    nothing: "You have not changed anything.",
    unsaved: "You have unsaved changes.",
    allowed: "Allowed",
    refused: "Not allowed",
    none: "No choice yet",
    channels: "How we may contact you",
    empty: "There are no choices to make here yet.",
    loadFailed: "We could not load your choices. Please try again later.",
    saveFailed: "Your choices could not be saved:",
    expired: "This link has expired. Ask for a new link to change your choices.",
    invalid: "This link is not valid. Ask for a new link to change your choices.",
  },
  fr: {
    loading: "Chargement de vos choix…",
    save: "Enregistrer mes choix",
    saving: "Enregistrement…",
    saved: "Vos choix ont été enregistrés.",
    nothing: "Vous n’avez rien modifié.",
    unsaved: "Vous avez des modifications non enregistrées.",
    allowed: "Autorisé",
    refused: "Refusé",
    none: "Pas encore de choix",
    channels: "Comment nous pouvons vous contacter",
    empty: "Il n’y a encore aucun choix à faire ici.",
    loadFailed: "Impossible de charger vos choix. Veuillez réessayer plus tard.",
    saveFailed: "Vos choix n’ont pas pu être enregistrés :",
    expired: "Ce lien a expiré. Demandez un nouveau lien pour modifier vos choix.",
    invalid: "Ce lien n’est pas valide. Demandez un nouveau lien pour modifier vos choix.",
  },
};

const config = JSON.parse(document.getElementById("config").textContent);
const token = new URLSearchParams(location.search).get("token") ?? "";
const languages = [...config.languages, config.look.default_language, "en"];
const uiLanguage = languages.map(base).find((l) => l in TEXTS) ?? "en";
const t = TEXTS[uiLanguage];

/** The language subtag of a tag: `fr` for `fr-CA`. */
function base(tag) {
  return String(tag).toLowerCase().split("-")[0];
}

/** The best text of a `{language: text}` map for this page's languages, or `fallback`. */
function pick(texts, fallback) {
  if (!texts) return fallback;
  const keys = Object.keys(texts);
  for (const lang of languages) {
    const exact = keys.find((k) => k.toLowerCase() === String(lang).toLowerCase());
    if (exact) return texts[exact];
    const loose = keys.find((k) => base(k) === base(lang));
    if (loose) return texts[loose];
  }
  return keys.length ? texts[keys[0]] : fallback;
}

/** Calls the API with the end user's token. */
async function api(method, path, body) {
  const url = new URL(path, location.origin);
  url.searchParams.set("organization_id", config.organization_id);
  const response = await fetch(url, {
    method,
    headers: {
      authorization: `Bearer ${token}`,
      ...(body ? { "content-type": "application/json" } : {}),
    },
    body: body ? JSON.stringify(body) : undefined,
  });
  const data = response.status === 204 ? null : await response.json().catch(() => null);
  return { status: response.status, data };
}

/** The purposes to show: the registry's, then any the user has chosen that it lacks. */
function purposesToShow(status) {
  const shown = config.purposes.map((p) => ({
    id: p.id,
    label: pick(p.labels, p.id),
    description: pick(p.descriptions, ""),
    preferences: (p.preferences ?? []).map((pref) => ({
      id: pref.id,
      label: pick(pref.labels, pref.id),
      description: pick(pref.descriptions, ""),
      multiple: pref.multiple !== false,
      values: (pref.values ?? []).map((v) => ({ id: v.id, label: pick(v.labels, v.id) })),
    })),
    channels: (p.channels ?? []).map((c) => ({ id: c.id, label: pick(c.labels, c.id) })),
  }));
  for (const p of status.purposes ?? []) {
    if (shown.some((s) => s.id === p.id)) continue;
    shown.push({ id: p.id, label: p.id, description: "", preferences: [], channels: [] });
  }
  return shown;
}

/** The user's current choices, per purpose: enabled, selected values, channels. */
function choicesOf(status) {
  const out = new Map();
  for (const p of status.purposes ?? []) {
    const values = {};
    for (const [pref, v] of Object.entries(p.values ?? {})) {
      values[pref] = new Set(String(v.value ?? "").split(",").filter(Boolean));
    }
    const channels = {};
    for (const c of p.channels ?? []) channels[c.id] = c.enabled;
    out.set(p.id, { enabled: p.enabled ?? null, values, channels });
  }
  return out;
}

let baseline = new Map();
let purposes = [];

function switchState(enabled) {
  return enabled === true ? t.allowed : enabled === false ? t.refused : t.none;
}

function renderPurpose(p, choice) {
  const headId = `purpose-${p.id}`;
  const descId = `purpose-${p.id}-description`;
  const stateId = `purpose-${p.id}-state`;
  const toggle = el("input", {
    type: "checkbox",
    role: "switch",
    id: `switch-${p.id}`,
    "data-purpose": p.id,
    "aria-labelledby": headId,
    "aria-describedby": p.description ? descId : null,
    checked: choice?.enabled === true,
  });
  const state = el("span", { id: stateId, text: switchState(choice?.enabled ?? null) });
  const section = el(
    "section",
    { class: "purpose", "aria-labelledby": headId, "data-purpose": p.id },
    el(
      "div",
      { class: "purpose-head" },
      el("div", {}, el("h2", { id: headId, text: p.label }),
        p.description ? el("p", { id: descId, class: "muted", text: p.description }) : null),
      el("label", { class: "switch-label", for: toggle.id }, toggle, state),
    ),
  );
  const details = [];
  for (const pref of p.preferences) {
    const selected = choice?.values?.[pref.id] ?? new Set();
    const fieldset = el("fieldset", { "data-preference": pref.id },
      el("legend", { text: pref.label }),
      pref.description ? el("p", { class: "muted", text: pref.description }) : null);
    const box = el("div", { class: "choices" });
    for (const v of pref.values) {
      const id = `value-${p.id}-${pref.id}-${v.id}`;
      box.append(el("label", { class: "choice", for: id },
        el("input", {
          type: pref.multiple ? "checkbox" : "radio",
          id,
          name: `${p.id}.${pref.id}`,
          value: v.id,
          checked: selected.has(v.id),
        }),
        el("span", { text: v.label })));
    }
    fieldset.append(box);
    details.push(fieldset);
  }
  if (p.channels.length) {
    const fieldset = el("fieldset", { "data-channels": "" }, el("legend", { text: t.channels }));
    const box = el("div", { class: "choices" });
    for (const c of p.channels) {
      const id = `channel-${p.id}-${c.id}`;
      box.append(el("label", { class: "choice", for: id },
        el("input", { type: "checkbox", id, "data-channel": c.id, checked: choice?.channels?.[c.id] === true }),
        el("span", { text: c.label })));
    }
    fieldset.append(box);
    details.push(fieldset);
  }
  section.append(...details);
  const sync = () => {
    state.textContent = switchState(toggle.dataset.touched ? toggle.checked : (choice?.enabled ?? null));
    for (const f of details) f.disabled = !toggle.checked;
  };
  toggle.addEventListener("change", () => {
    toggle.dataset.touched = "1";
    sync();
  });
  sync();
  return section;
}

/** The choices shown on the page now, per purpose. */
function currentChoices() {
  const out = new Map();
  for (const section of document.querySelectorAll("section.purpose")) {
    const id = section.dataset.purpose;
    const toggle = section.querySelector('input[role="switch"]');
    const before = baseline.get(id);
    const enabled = toggle.dataset.touched ? toggle.checked : (before?.enabled ?? null);
    const values = {};
    for (const fieldset of section.querySelectorAll("fieldset[data-preference]")) {
      values[fieldset.dataset.preference] = new Set(
        [...fieldset.querySelectorAll("input:checked")].map((i) => i.value),
      );
    }
    const channels = {};
    for (const input of section.querySelectorAll("input[data-channel]")) {
      channels[input.dataset.channel] = input.checked;
    }
    out.set(id, { enabled, values, channels });
  }
  return out;
}

function sameSet(a, b) {
  return a.size === b.size && [...a].every((x) => b.has(x));
}

/** What changed since the last save, as the `consents.purposes` of one event. */
function changes() {
  const out = [];
  for (const [id, now] of currentChoices()) {
    const before = baseline.get(id) ?? { enabled: null, values: {}, channels: {} };
    const purpose = { id };
    let changed = false;
    if (now.enabled !== null && now.enabled !== before.enabled) {
      purpose.enabled = now.enabled;
      changed = true;
    }
    for (const [pref, set] of Object.entries(now.values)) {
      if (!sameSet(set, before.values[pref] ?? new Set())) {
        purpose.values ??= {};
        purpose.values[pref] = { value: [...set].join(",") };
        changed = true;
      }
    }
    for (const [channel, enabled] of Object.entries(now.channels)) {
      if (enabled !== (before.channels[channel] ?? false)) {
        purpose.channels ??= [];
        purpose.channels.push({ id: channel, enabled });
        changed = true;
      }
    }
    if (changed) out.push(purpose);
  }
  return out;
}

function showNotice(kind, text) {
  const notice = document.getElementById("notice");
  notice.className = `notice ${kind}`;
  notice.textContent = text;
}

function refreshUnsaved() {
  document.getElementById("unsaved").hidden = changes().length === 0;
}

function fail(message) {
  document.getElementById("loading").hidden = true;
  document.getElementById("choices").hidden = true;
  document.getElementById("main").setAttribute("aria-busy", "false");
  showNotice("bad", message);
}

function applyLook(look) {
  const root = document.documentElement.style;
  root.setProperty("--primary", look.colors.primary);
  root.setProperty("--bg", look.colors.background);
  root.setProperty("--text", look.colors.text);
  // Secondary text in the text colour: the look's contrast is checked for that pair only.
  root.setProperty("--muted", look.colors.text);
  document.title = look.title;
  document.getElementById("title").textContent = look.title;
  if (look.intro) {
    const intro = document.getElementById("intro");
    intro.textContent = look.intro;
    intro.hidden = false;
  }
  if (look.logo_url) {
    const logo = document.getElementById("logo");
    logo.src = look.logo_url;
    logo.alt = look.title;
    logo.hidden = false;
  }
}

/** The user's status as the server holds it (empty for a user without events yet). */
async function readStatus() {
  const path = `/v1/consents/users/${encodeURIComponent(config.organization_user_id)}`;
  const { status: code, data } = await api("GET", `${path}?%24by_organization_user_id=true`);
  if (code === 200) return data.consents ?? {};
  if (code === 404) return {};
  throw Object.assign(new Error(`HTTP ${code}`), { expired: code === 401 });
}

async function load() {
  applyLook(config.look);
  document.documentElement.lang = uiLanguage;
  document.getElementById("loading").textContent = t.loading;
  const save = document.getElementById("save");
  save.textContent = t.save;
  document.getElementById("unsaved").textContent = t.unsaved;

  let status;
  try {
    status = await readStatus();
  } catch (err) {
    return fail(err.expired ? t.expired : t.loadFailed);
  }
  baseline = choicesOf(status);
  purposes = purposesToShow(status);
  const list = document.getElementById("purposes");
  list.replaceChildren(...purposes.map((p) => renderPurpose(p, baseline.get(p.id))));
  if (!purposes.length) list.append(el("p", { class: "muted", text: t.empty }));
  document.getElementById("loading").hidden = true;
  const form = document.getElementById("choices");
  form.hidden = false;
  document.getElementById("main").setAttribute("aria-busy", "false");
  form.addEventListener("change", refreshUnsaved);
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    const purposesChanged = changes();
    if (!purposesChanged.length) return showNotice("ok", t.nothing);
    save.disabled = true;
    save.textContent = t.saving;
    try {
      const event = {
        user: { organization_user_id: config.organization_user_id },
        metadata: { source: "preference-center" },
        consents: { purposes: purposesChanged },
      };
      const { status: code, data } = await api("POST", "/v1/consents/events", event);
      if (code === 200) {
        // The page now shows what the server holds: the event carried exactly the differences.
        baseline = currentChoices();
        for (const toggle of form.querySelectorAll('input[role="switch"]')) delete toggle.dataset.touched;
        const when = new Date(data.created_at).toLocaleString(uiLanguage);
        showNotice("ok", `${t.saved} (${when})`);
      } else if (code === 401) {
        showNotice("bad", t.expired);
      } else {
        const detail = data?.errors ? Object.values(data.errors).join("; ") : data?.message;
        showNotice("bad", `${t.saveFailed} ${detail ?? code}`);
      }
    } catch (err) {
      showNotice("bad", `${t.saveFailed} ${err.message}`);
    } finally {
      save.disabled = false;
      save.textContent = t.save;
      refreshUnsaved();
    }
  });
}

load();
