// threeport console: a small script over the control plane's own API (/v0). No framework, no
// build step, no request to any other host. The token a person signs in with stays in this
// tab's sessionStorage; with a client certificate (mutual TLS) or in development mode none is
// needed. Live updates come from /v0/watch (server-sent events, read with fetch so the token
// travels in a header).
"use strict";

(() => {
  const TOKEN_KEY = "threeport.token";
  const content = document.getElementById("content");
  const live = document.getElementById("live");
  const kindsNav = document.getElementById("kinds-nav");
  const mainNav = document.getElementById("main-nav");
  const wide = window.matchMedia("(min-width: 761px)");
  let kindsOpenNarrow = false; // whether a person opened the folded kinds list

  // What tests and curious people can read: the API calls the current page made.
  const report = { page: "", calls: 0, renders: 0 };
  window.threeportConsole = report;

  let kinds = null; // [{kind, plural, sealed_fields, secret_field, total, states}]
  let kindsShown = null; // what the side bar was last drawn from (JSON)
  let stream = null; // AbortController of the watch stream
  let view = null; // {refresh(), wants(change)} of the page shown
  let refreshTimer = null;

  // ---- DOM helpers -------------------------------------------------------------------------

  function h(tag, attrs, ...children) {
    const el = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === undefined || value === null || value === false) continue;
      if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
      else if (key === "text") el.textContent = value;
      else el.setAttribute(key, value === true ? "" : value);
    }
    for (const child of children.flat(Infinity)) {
      if (child === null || child === undefined || child === false) continue;
      el.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return el;
  }

  function table(caption, headers, rows, empty) {
    if (rows.length === 0) return h("p", { class: "empty" }, empty);
    // On a phone each row is a card: every cell says which column it is.
    for (const row of rows) {
      [...row.children].forEach((cell, i) => { cell.dataset.label = headers[i].replace(/^~/, ""); });
    }
    return h("div", { class: "scroll" },
      h("table", {},
        h("caption", { class: "skip" }, caption),
        h("thead", {}, h("tr", {}, headers.map((t) =>
          h("th", { scope: "col", class: t.startsWith("~") ? "hide-narrow" : null },
            t.replace(/^~/, ""))))),
        h("tbody", {}, rows)));
  }

  function notice(message) {
    const el = document.getElementById("notice");
    el.textContent = message;
    el.hidden = false;
    clearTimeout(notice.timer);
    notice.timer = setTimeout(() => { el.hidden = true; }, 5000);
  }

  function errorBox(err) {
    const field = err.field ? h("strong", {}, err.field + ": ") : null;
    return h("div", { class: "error", role: "alert" }, field, err.message || String(err));
  }

  // Lifecycle states as the API writes them (snake_case).
  const STOPPED = new Set(["creation_failed", "interrupted"]);
  function stateBadge(state, deleting, failures) {
    const retrying = failures > 0 && !STOPPED.has(state);
    const cls = STOPPED.has(state) ? "bad"
      : retrying || deleting || state.startsWith("deletion") ? "warn"
      : state === "reconciled" || state === "creation_confirmed" ? "ok" : "";
    let text = state.replace(/_/g, " ");
    if (deleting && !state.startsWith("deletion")) text += " · deleting";
    if (retrying) text += ` · retrying (${failures})`;
    return h("span", { class: "badge " + cls, "data-state": state }, text);
  }

  function healthBadge(health) {
    if (!health || !health.status) return h("span", { class: "empty" }, "—");
    const cls = { healthy: "ok", degraded: "bad", down: "bad", progressing: "warn" }[health.status] || "";
    return h("span", { class: "badge " + cls, title: health.reason || "" }, health.status);
  }

  function objectLink(o) {
    return h("a", { href: `#/kinds/${o.plural}/${o.id}` }, o.name);
  }

  // ---- API ---------------------------------------------------------------------------------

  class ApiError extends Error {
    constructor(status, body) {
      super((body && body.message) || `HTTP ${status}`);
      this.status = status;
      this.field = body && body.field;
    }
  }

  function authHeaders() {
    const token = sessionStorage.getItem(TOKEN_KEY);
    return token ? { Authorization: "Bearer " + token } : {};
  }

  async function api(method, path, body, contentType) {
    report.calls += 1;
    const headers = authHeaders();
    const init = { method, headers };
    if (body !== undefined) {
      headers["Content-Type"] = contentType || "application/json";
      init.body = typeof body === "string" ? body : JSON.stringify(body);
    }
    const response = await fetch(path, init);
    const text = await response.text();
    let data = null;
    try { data = text ? JSON.parse(text) : null; } catch (_) { data = { message: text }; }
    if (response.status === 401) {
      signOut("Your session was refused by the control plane: sign in again.");
      throw new ApiError(401, data);
    }
    if (!response.ok) throw new ApiError(response.status, data);
    return data;
  }

  async function loadKinds() {
    const overview = await api("GET", "/v0/overview");
    kinds = overview.kinds;
    renderKindsNav();
    return overview;
  }

  function kindByPlural(plural) { return (kinds || []).find((k) => k.plural === plural); }
  function kindByName(kind) { return (kinds || []).find((k) => k.kind === kind); }

  // ---- Sign-in -----------------------------------------------------------------------------

  // Whether the API lets us in as we are: a token in this tab, a client certificate, or no
  // authentication at all (development mode).
  // `refused`: the credentials were (401, 403); anything else that is not `ok` means the
  // control plane did not answer as it should (down, restarting), which says nothing of them.
  async function probe(token) {
    const headers = token ? { Authorization: "Bearer " + token } : {};
    let response;
    try {
      response = await fetch("/v0/kubernetes-runtime-instances?limit=1", { headers });
    } catch (err) {
      return { ok: false, refused: false, why: `it could not be reached (${err.message})` };
    }
    let body = null;
    try { body = await response.json(); } catch (_) { /* not JSON */ }
    const why = (body && body.message) || `HTTP ${response.status}`;
    return { ok: response.ok, refused: response.status === 401 || response.status === 403, why };
  }

  function signOut(message) {
    sessionStorage.removeItem(TOKEN_KEY);
    if (stream) stream.abort();
    stream = null;
    kinds = null;
    mainNav.hidden = true;
    kindsNav.hidden = true;
    live.textContent = "";
    signInPage(message);
  }

  function signInPage(message) {
    view = null;
    report.page = "signin";
    const error = h("div", { "aria-live": "assertive" });
    if (message) error.append(h("div", { class: "error" }, message));
    const input = h("input", { type: "password", id: "token", name: "token", autocomplete: "off",
      required: true, "aria-describedby": "token-help" });
    const form = h("form", { class: "signin", onsubmit: async (event) => {
      event.preventDefault();
      error.replaceChildren();
      const token = input.value.trim();
      const answer = await probe(token);
      if (!answer.ok) {
        error.append(h("div", { class: "error", role: "alert" }, answer.refused
          ? `The control plane refused this token: ${answer.why}`
          : `The control plane did not answer: ${answer.why}. Try again in a moment.`));
        input.focus();
        return;
      }
      sessionStorage.setItem(TOKEN_KEY, token);
      await enter();
    } },
    h("h1", {}, "Sign in"),
    h("p", { id: "token-help" }, "Paste an API token (threeport-server prints the first one; "
      + "`threeport-server token` makes more). It is kept in this browser tab only."),
    h("label", { for: "token" }, "API token"), input, error,
    h("div", { class: "actions" }, h("button", { type: "submit", class: "primary" }, "Sign in")));
    content.replaceChildren(form);
    if (location.hash !== "#/signin") history.replaceState(null, "", "#/signin");
    input.focus();
  }

  async function enter() {
    mainNav.hidden = false;
    kindsNav.hidden = false;
    openStream();
    if (!location.hash || location.hash === "#/signin") location.hash = "#/";
    else await route();
  }

  // ---- Live updates ------------------------------------------------------------------------

  async function openStream() {
    if (stream) stream.abort();
    const controller = new AbortController();
    stream = controller;
    let delay = 1000;
    while (stream === controller) {
      try {
        const response = await fetch("/v0/watch", { headers: authHeaders(), signal: controller.signal });
        if (response.status === 401) { signOut("Your session was refused: sign in again."); return; }
        if (!response.ok || !response.body) throw new Error(`HTTP ${response.status}`);
        const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
        let buffer = "";
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          buffer += value;
          let end;
          while ((end = buffer.indexOf("\n\n")) >= 0) {
            onEvent(buffer.slice(0, end));
            buffer = buffer.slice(end + 2);
          }
        }
      } catch (err) {
        if (controller.signal.aborted) return;
      }
      live.textContent = "Live updates paused: reconnecting…";
      live.dataset.state = "reconnecting";
      await new Promise((resolve) => setTimeout(resolve, delay));
      delay = Math.min(delay * 2, 15000);
      // Whatever changed while the stream was down.
      scheduleRefresh();
    }
  }

  function onEvent(block) {
    let event = "message";
    let data = "";
    for (const line of block.split("\n")) {
      if (line.startsWith("event:")) event = line.slice(6).trim();
      else if (line.startsWith("data:")) data += line.slice(5).trim();
    }
    if (event === "ready") {
      live.textContent = "Live";
      live.dataset.state = "live";
    } else if (event === "resync") {
      scheduleRefresh();
    } else if (event === "change") {
      const change = JSON.parse(data);
      if (view && view.wants(change)) scheduleRefresh();
    }
  }

  // Changes make one refresh per interval however many come (a busy plane writes all the
  // time): the first change schedules it, the next ones ride along. The overview, which reads
  // every object, refreshes at most every 2 s; other pages every 250 ms.
  let lastRefresh = 0;
  function scheduleRefresh() {
    if (refreshTimer !== null) return;
    const every = view && view.every ? view.every : 250;
    const wait = Math.max(every - (Date.now() - lastRefresh), 50);
    refreshTimer = setTimeout(() => {
      refreshTimer = null;
      if (!view) return;
      if (document.getElementById("confirm").open) { scheduleRefresh(); return; }
      lastRefresh = Date.now();
      view.refresh();
    }, wait);
  }

  // ---- Pages -------------------------------------------------------------------------------

  function renderKindsNav() {
    const groups = [
      ["Workloads", /^(Workload|HelmWorkload)/],
      ["Runtimes", /^(KubernetesRuntime|ControlPlane|AwsEks)/],
      ["AWS", /^Aws/],
      ["Network", /^(Gateway|DomainName)/],
      ["Other", /./],
    ];
    const current = location.hash.split("?")[0].split("/")[2];
    // The overview reloads the kinds every few seconds: a side bar redrawn under a person's
    // pointer loses their click, so it is redrawn only when what it shows changed.
    const shown = JSON.stringify([current, wide.matches, kinds]);
    if (shown === kindsShown) return;
    kindsShown = shown;
    const placed = new Set();
    const sections = groups.map(([title, pattern]) => {
      const items = kinds.filter((k) => !placed.has(k.kind) && pattern.test(k.kind));
      items.forEach((k) => placed.add(k.kind));
      if (items.length === 0) return null;
      return [h("h2", {}, title), h("ul", {}, items.map((k) => h("li", {},
        h("a", { href: `#/kinds/${k.plural}`, "aria-current": k.plural === current ? "page" : null,
          title: k.kind },
        h("span", { class: "kind" }, k.kind), h("span", { class: "count" }, String(k.total))))))];
    });
    // On a phone the list folds away behind one line; on a wide screen it is always open.
    const details = h("details", { open: wide.matches || kindsOpenNarrow },
      h("summary", {}, `All kinds (${kinds.length})`), sections.filter(Boolean).flat());
    details.addEventListener("toggle", () => {
      if (!wide.matches) kindsOpenNarrow = details.open;
    });
    kindsNav.replaceChildren(details);
  }

  function page(name, title) {
    report.page = name;
    report.calls = 0;
    document.title = `${title} · threeport`;
  }

  function focusHeading() {
    const heading = content.querySelector("h1");
    if (heading) { heading.tabIndex = -1; heading.focus({ preventScroll: true }); }
  }

  async function overviewPage() {
    page("overview", "Overview");
    const body = h("div", {});
    content.replaceChildren(h("h1", {}, "Overview"), body);
    focusHeading();
    let shown = null;
    const refresh = async () => {
      const data = await loadKinds();
      // Redraw only what changed: a redraw under a person's pointer loses their click.
      const key = JSON.stringify(data);
      if (key === shown) return;
      shown = key;
      report.renders += 1;
      const attention = data.attention.map((o) => h("tr", {},
        h("td", {}, o.kind), h("td", {}, objectLink(o)), h("td", {}, stateBadge(o.state, o.deleting, o.failures)),
        h("td", {}, healthBadge(o.health)), h("td", { class: "reason" }, o.reason || "")));
      const runtimes = data.runtimes.map((o) => h("tr", {},
        h("td", {}, objectLink(o)), h("td", {}, stateBadge(o.state, o.deleting, o.failures)),
        h("td", { class: "hide-narrow" }, o.conditions.join(", ")),
        h("td", { class: "reason" }, o.reason || "")));
      const workloads = data.workloads.map((o) => h("tr", {},
        h("td", {}, objectLink(o)), h("td", { class: "hide-narrow" }, o.kind),
        h("td", {}, stateBadge(o.state, o.deleting, o.failures)), h("td", {}, healthBadge(o.health)),
        h("td", { class: "reason" }, o.reason || "")));
      const counts = data.kinds.filter((k) => k.total > 0).map((k) => h("tr", {},
        h("td", {}, h("a", { href: `#/kinds/${k.plural}` }, k.kind)), h("td", {}, String(k.total)),
        h("td", { class: "hide-narrow" },
          Object.entries(k.states).map(([s, n]) => `${s.replace(/_/g, " ")} ${n}`).join(", "))));
      body.replaceChildren(
        h("section", { "aria-labelledby": "h-attention" },
          h("h2", { id: "h-attention" }, `Needs attention (${data.attention.length})`),
          table("Objects that failed, were interrupted or are unhealthy",
            ["Kind", "Name", "State", "Health", "Reason"], attention, "Nothing is failing.")),
        h("section", { "aria-labelledby": "h-runtimes" },
          h("h2", { id: "h-runtimes" }, "Runtimes"),
          table("Kubernetes runtimes", ["Name", "State", "~Conditions", "Reason"], runtimes,
            "No runtime yet.")),
        h("section", { "aria-labelledby": "h-workloads" },
          h("h2", { id: "h-workloads" }, "Workload instances"),
          table("Workload instances", ["Name", "~Kind", "State", "Health", "Reason"], workloads,
            "No workload yet.")),
        h("section", { "aria-labelledby": "h-kinds" },
          h("h2", { id: "h-kinds" }, "Objects by kind"),
          table("Objects by kind", ["Kind", "Objects", "~By state"], counts, "No objects yet.")));
    };
    view = { refresh: () => refresh().catch(showError(body)), wants: () => true, every: 2000 };
    await refresh().catch(showError(body));
  }

  function showError(into) {
    return (err) => { if (err.status !== 401) into.replaceChildren(errorBox(err)); };
  }

  async function listPage(plural, params) {
    const kind = kindByPlural(plural);
    const kindName = kind ? kind.kind : plural;
    page("list", kindName);
    const name = h("input", { type: "text", id: "f-name", name: "name", value: params.get("name") || "" });
    const label = h("input", { type: "text", id: "f-label", name: "label", placeholder: "key=value",
      value: params.get("label") || "" });
    const filters = h("form", { class: "filters", role: "search", onsubmit: (event) => {
      event.preventDefault();
      const query = new URLSearchParams();
      if (name.value.trim()) query.set("name", name.value.trim());
      if (label.value.trim()) query.set("label", label.value.trim());
      location.hash = `#/kinds/${plural}` + (query.toString() ? "?" + query : "");
    } },
    h("div", {}, h("label", { for: "f-name" }, "Name"), name),
    h("div", {}, h("label", { for: "f-label" }, "Label"), label),
    h("button", { type: "submit" }, "Filter"));
    const body = h("div", { "aria-live": "polite" });
    const cursors = [null];
    let shown = null;
    content.replaceChildren(h("h1", {}, kindName), filters, body);
    focusHeading();
    const refresh = async () => {
      const query = new URLSearchParams({ limit: "50" });
      if (params.get("name")) query.set("name", params.get("name"));
      if (params.get("label")) query.set("label", params.get("label"));
      const after = cursors[cursors.length - 1];
      if (after) query.set("after", after);
      const data = await api("GET", `/v0/${plural}?${query}`);
      const key = JSON.stringify([after, data.next, data.items.map((o) => [o.id, o.name, o.labels,
        o.deletion_scheduled_at, o.status.state, o.status.failures, o.status.reason,
        o.status.details && o.status.details.health])]);
      if (key === shown) return;
      shown = key;
      report.renders += 1;
      const rows = data.items.map((o) => h("tr", {},
        h("td", {}, objectLink({ plural, id: o.id, name: o.name })),
        h("td", {}, stateBadge(o.status.state, !!o.deletion_scheduled_at, o.status.failures)),
        h("td", {}, healthBadge(o.status.details && o.status.details.health)),
        h("td", { class: "hide-narrow" }, Object.entries(o.labels || {}).map(([k, v]) => `${k}=${v}`).join(", ")),
        h("td", { class: "hide-narrow" }, new Date(o.updated_at).toLocaleString()),
        h("td", { class: "reason" }, o.status.reason || "")));
      const pager = h("div", { class: "pager" },
        cursors.length > 1 ? h("button", { type: "button", onclick: () => { cursors.pop(); refresh(); } },
          "Previous page") : null,
        data.next ? h("button", { type: "button", onclick: () => { cursors.push(data.next); refresh(); } },
          "Next page") : null);
      body.replaceChildren(table(`${kindName} objects`,
        ["Name", "State", "Health", "~Labels", "~Updated", "Reason"], rows,
        params.toString() ? "No object matches." : "None yet."), pager);
    };
    view = {
      refresh: () => refresh().catch(showError(body)),
      wants: (change) => change.kind === kindName,
    };
    await refresh().catch(showError(body));
  }

  // Sealed values (stored encrypted) and the kind's sealed fields are shown as such, never
  // their ciphertext; secret values are never stored, so never shown.
  function redact(value, sealedPaths, path) {
    if (typeof value === "string") {
      return value.startsWith("sealed:v1:") || sealedPaths.has(path) ? "(sealed)" : value;
    }
    if (Array.isArray(value)) return value.map((v) => redact(v, sealedPaths, path));
    if (value && typeof value === "object") {
      const out = {};
      for (const [k, v] of Object.entries(value)) out[k] = redact(v, sealedPaths, path ? `${path}.${k}` : k);
      return out;
    }
    return value;
  }

  function linkList(title, links) {
    if (links.length === 0) return null;
    return [h("h3", {}, title), h("ul", {}, links.map((l) => h("li", {},
      l.field ? h("span", { class: "field" }, l.field + ": ") : null,
      `${l.kind} `, objectLink(l), " ", stateBadge(l.state, l.deleting, l.failures))))];
  }

  async function detailPage(plural, id) {
    const kind = kindByPlural(plural) || { kind: plural, sealed_fields: [] };
    page("detail", kind.kind);
    const body = h("div", {});
    content.replaceChildren(body);
    let shown = null;
    const refresh = async () => {
      let obj;
      try {
        obj = await api("GET", `/v0/${plural}/${id}`);
      } catch (err) {
        if (err.status === 404) {
          body.replaceChildren(h("h1", {}, `${kind.kind}: gone`),
            h("p", {}, "This object does not exist (any more). ",
              h("a", { href: `#/kinds/${plural}` }, `All ${kind.kind} objects`)));
          view.related = new Set();
          return;
        }
        throw err;
      }
      const related = await api("GET", `/v0/${plural}/${id}/related`);
      const key = JSON.stringify([obj, related]);
      if (key === shown) return;
      shown = key;
      report.renders += 1;
      const ids = new Set([id]);
      for (const group of Object.values(related)) group.forEach((l) => ids.add(l.id));
      view.related = ids;
      const sealed = new Set(kind.sealed_fields || []);
      const deleting = !!obj.deletion_scheduled_at;
      const status = obj.status;
      const actions = h("div", { class: "actions" },
        STOPPED.has(status.state)
          ? h("button", { type: "button", class: "primary", onclick: () => retry(plural, obj) }, "Retry")
          : null,
        !deleting ? h("button", { type: "button", class: "danger", onclick: () => remove(plural, obj) }, "Delete")
          : null);
      const facts = [["Kind", obj.kind], ["Id", obj.id], ["Version", obj.version],
        ["Generation", `${obj.generation} (observed ${status.observed_generation})`],
        ["Created", new Date(obj.created_at).toLocaleString()],
        ["Updated", new Date(obj.updated_at).toLocaleString()],
        ["Deletion requested", deleting ? new Date(obj.deletion_scheduled_at).toLocaleString() : null],
        ["Labels", Object.entries(obj.labels || {}).map(([k, v]) => `${k}=${v}`).join(", ") || "none"],
        ["Reason", status.reason], ["Failed reconciles", status.failures || null]]
        .filter(([, v]) => v !== null && v !== undefined && v !== "");
      const conditions = (status.conditions || []).map((c) => h("tr", {},
        h("td", {}, c.type), h("td", {}, c.status), h("td", {}, c.reason),
        h("td", { class: "reason" }, c.message)));
      const events = (status.events || []).slice().reverse().map((e) => h("tr", {},
        h("td", {}, e.type), h("td", {}, e.reason), h("td", { class: "reason" }, e.message),
        h("td", {}, String(e.count)), h("td", { class: "hide-narrow" }, new Date(e.last_seen).toLocaleString())));
      const relatedParts = [
        linkList("References", related.references), linkList("Owned by", related.owners),
        linkList("Owns", related.owns), linkList("Referenced by", related.referenced_by),
      ].filter(Boolean);
      body.replaceChildren(
        h("h1", {}, `${obj.kind} `, h("span", { class: "name" }, obj.name), " ",
          stateBadge(status.state, deleting, status.failures)),
        actions,
        h("section", { "aria-labelledby": "h-summary" }, h("h2", { id: "h-summary" }, "Summary"),
          h("dl", { class: "facts" }, facts.map(([k, v]) => [h("dt", {}, k), h("dd", {}, String(v))])),
          status.details && status.details.health
            ? h("p", {}, "Health: ", healthBadge(status.details.health), " ",
              status.details.health.reason || "") : null),
        h("section", { class: "related", "aria-labelledby": "h-related" },
          h("h2", { id: "h-related" }, "Related"),
          relatedParts.length ? relatedParts : h("p", { class: "empty" }, "No related objects.")),
        h("section", { "aria-labelledby": "h-conditions" }, h("h2", { id: "h-conditions" }, "Conditions"),
          table("Conditions", ["Type", "Status", "Reason", "Message"], conditions, "No conditions.")),
        h("section", { "aria-labelledby": "h-events" }, h("h2", { id: "h-events" }, "Events"),
          table("Events, newest first", ["Type", "Reason", "Message", "Count", "~Last seen"], events,
            "No events.")),
        h("section", { "aria-labelledby": "h-spec" }, h("h2", { id: "h-spec" }, "Spec"),
          h("pre", { id: "spec" }, JSON.stringify(redact(obj.spec, sealed, ""), null, 2))),
        h("section", { "aria-labelledby": "h-details" }, h("h2", { id: "h-details" }, "Status details"),
          h("pre", { id: "details" }, JSON.stringify(redact(status.details, new Set(), ""), null, 2))));
    };
    view = {
      related: new Set([id]),
      refresh: () => refresh().catch(showError(body)),
      wants(change) { return this.related.has(change.id); },
    };
    await refresh().catch(showError(body));
    focusHeading();
  }

  async function retry(plural, obj) {
    try {
      await api("POST", `/v0/${plural}/${obj.id}/retry`, { version: obj.version });
      notice(`Retry of ${obj.name} requested.`);
    } catch (err) {
      notice(`Retry refused: ${err.message}`);
    }
    view.refresh();
  }

  async function remove(plural, obj) {
    let plan;
    try {
      plan = await api("DELETE", `/v0/${plural}/${obj.id}?dry_run=true`);
    } catch (err) {
      notice(`Cannot delete: ${err.message}`);
      return;
    }
    const names = await Promise.all(plan.deletes.slice(0, 50).map(async (ref) => {
      const k = kindByName(ref.kind);
      if (!k) return `${ref.kind} ${ref.id}`;
      try { return `${ref.kind} ${(await api("GET", `/v0/${k.plural}/${ref.id}`)).name}`; } catch (_) {
        return `${ref.kind} ${ref.id}`;
      }
    }));
    const more = plan.deletes.length - names.length;
    const dialog = document.getElementById("confirm");
    document.getElementById("confirm-title").textContent = `Delete ${obj.kind} ${obj.name}?`;
    document.getElementById("confirm-body").replaceChildren(
      h("p", {}, plan.deletes.length === 1 ? "This deletes only this object:"
        : `This deletes ${plan.deletes.length} objects: it and what it owns.`),
      h("ul", { id: "cascade" }, names.map((n) => h("li", {}, n)), more > 0 ? h("li", {}, `and ${more} more`) : null));
    document.getElementById("confirm-ok").textContent =
      plan.deletes.length === 1 ? "Delete" : `Delete ${plan.deletes.length} objects`;
    dialog.returnValue = "";
    dialog.showModal();
    document.getElementById("confirm-cancel").focus();
    dialog.addEventListener("close", async () => {
      if (dialog.returnValue !== "ok") return;
      try {
        await api("DELETE", `/v0/${plural}/${obj.id}`);
        notice(`Deletion of ${obj.name} requested.`);
      } catch (err) {
        notice(`Delete refused: ${err.message}`);
      }
      view.refresh();
    }, { once: true });
  }

  async function createPage() {
    page("create", "Create");
    const text = h("textarea", { id: "config", name: "config", spellcheck: "false",
      "aria-describedby": "config-help" });
    const mode = h("select", { id: "mode", name: "mode" },
      h("option", { value: "create" }, "Create (fail if it exists)"),
      h("option", { value: "apply" }, "Apply (create, or update what exists)"));
    const result = h("div", { "aria-live": "polite", id: "result" });
    const submit = h("button", { type: "submit", class: "primary" }, "Submit");
    const form = h("form", { onsubmit: async (event) => {
      event.preventDefault();
      submit.disabled = true;
      result.replaceChildren();
      try {
        const done = await submitConfig(text.value, mode.value === "apply");
        result.replaceChildren(h("div", { class: "done", role: "status" }, "Done:"),
          h("ul", {}, done.map((o) => h("li", {}, `${o.outcome} ${o.kind} `, objectLink(o)))));
      } catch (err) {
        result.replaceChildren(errorBox(err));
      } finally {
        submit.disabled = false;
      }
    } },
    h("h1", {}, "Create or apply"),
    h("p", { id: "config-help" }, "Paste a Threeport config as tptctl reads it (YAML: ",
      h("code", {}, "WorkloadDefinition:"), ", ", h("code", {}, "KubernetesRuntime:"),
      ", … with file fields given inline), or JSON: ",
      h("code", {}, '{"kind": "AwsAccount", "name": …, "spec": {…}}'), "."),
    h("label", { for: "config" }, "Config"), text,
    h("label", { for: "mode" }, "Mode"), mode,
    h("div", { class: "actions" }, submit), result);
    content.replaceChildren(form);
    view = null;
    focusHeading();
  }

  // JSON: one object `{kind, name, labels?, spec}` (or a list of them) through the generic
  // API; YAML: a tptctl config, expanded and written by the server (/v0/configs).
  async function submitConfig(source, apply) {
    const trimmed = source.trim();
    if (!trimmed) throw new ApiError(400, { field: "config", message: "is empty" });
    if (!/^[[{]/.test(trimmed)) {
      const answer = await api("POST", `/v0/configs?apply=${apply}`, source, "application/yaml");
      await loadKinds();
      return answer.items;
    }
    let parsed;
    try { parsed = JSON.parse(trimmed); } catch (err) {
      throw new ApiError(400, { field: "config", message: `not valid JSON: ${err.message}` });
    }
    const done = [];
    for (const [index, item] of (Array.isArray(parsed) ? parsed : [parsed]).entries()) {
      const where = Array.isArray(parsed) ? `[${index}].` : "";
      const kind = item && kindByName(item.kind);
      if (!kind) {
        throw new ApiError(400, { field: `${where}kind`,
          message: `must name a kind this control plane serves (${item && item.kind} is not one)` });
      }
      const body = { name: item.name, labels: item.labels, spec: item.spec };
      let existing = null;
      if (apply && typeof item.name === "string") {
        const found = await api("GET", `/v0/${kind.plural}?name=${encodeURIComponent(item.name)}`);
        existing = found.items[0] || null;
      }
      let written;
      if (existing) {
        written = await api("PUT", `/v0/${kind.plural}/${existing.id}`,
          { labels: item.labels || {}, spec: item.spec, version: existing.version });
      } else {
        written = await api("POST", `/v0/${kind.plural}`, body);
      }
      done.push({ kind: kind.kind, plural: kind.plural, id: written.id, name: written.name,
        outcome: existing ? "updated" : "created" });
    }
    await loadKinds();
    return done;
  }

  // ---- Routing -----------------------------------------------------------------------------

  async function route() {
    const [path, query] = location.hash.replace(/^#/, "").split("?");
    const parts = path.split("/").filter(Boolean);
    const params = new URLSearchParams(query || "");
    if (parts[0] === "signin") return signOut();
    // The overview loads the kinds itself (one request, not two).
    if (parts.length === 0) return overviewPage();
    if (!kinds) {
      try { await loadKinds(); } catch (err) { return showError(content)(err); }
    } else {
      renderKindsNav();
    }
    if (parts[0] === "create") return createPage();
    if (parts[0] === "kinds" && parts.length === 2) return listPage(parts[1], params);
    if (parts[0] === "kinds" && parts.length === 3) return detailPage(parts[1], parts[2]);
    content.replaceChildren(h("h1", {}, "Not found"), h("p", {}, h("a", { href: "#/" }, "Overview")));
    return undefined;
  }

  document.getElementById("sign-out").addEventListener("click", () => signOut());
  wide.addEventListener("change", () => { if (kinds) renderKindsNav(); });
  window.addEventListener("hashchange", () => {
    if (mainNav.hidden) return;
    route().catch(showError(content));
  });

  (async () => {
    const token = sessionStorage.getItem(TOKEN_KEY);
    const answer = await probe(token);
    if (answer.ok) return enter();
    if (!answer.refused) {
      // Keep the token: the control plane is down or restarting, not refusing it.
      content.replaceChildren(h("h1", {}, "The control plane does not answer"),
        h("p", {}, `${answer.why}.`),
        h("div", { class: "actions" },
          h("button", { type: "button", onclick: () => location.reload() }, "Try again")));
      return undefined;
    }
    if (token) return signOut(`Your token was refused (${answer.why}): sign in again.`);
    return signInPage();
  })();
})();
