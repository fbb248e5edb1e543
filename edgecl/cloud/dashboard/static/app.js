// edgecl fleet dashboard: a page per view, refreshed by polling the service's JSON API.
// Every text a device or operator supplied reaches the page as a text node (never as
// HTML), and the service's content security policy allows no inline script.
"use strict";
(() => {
  const state = { me: null, timer: null, page: null, refreshing: false };
  const main = () => document.getElementById("main");
  const HEALTH = ["ok", "silent", "errors", "refused", "new"];
  const EVENT_COLORS = { applied: "#1a7f37", rejected: "#cf222e", rolled_back: "#cf222e",
                         reverted: "#8250df" };
  const DOMAIN_COLOR = "#9a6700";

  // -- DOM helpers ---------------------------------------------------------------------
  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === undefined || value === null || value === false) continue;
      if (key === "class") node.className = value;
      else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
      else node.setAttribute(key, value === true ? "" : String(value));
    }
    for (const child of children.flat()) {
      if (child === undefined || child === null || child === false) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }
  // replaceChildren with the children that are there (it would print null as text)
  const fill = (node, ...children) => node.replaceChildren(
    ...children.flat().filter((c) => c !== undefined && c !== null && c !== false));
  const fmtTime = (ms) => (ms ? new Date(ms).toLocaleString() : "never");
  function ago(ms, now) {
    if (!ms) return "never";
    const s = Math.max(0, Math.round((now - ms) / 1000));
    if (s < 90) return `${s} s ago`;
    if (s < 5400) return `${Math.round(s / 60)} min ago`;
    return `${Math.round(s / 3600)} h ago`;
  }
  const num = (v, digits = 3) => (v === undefined || v === null ? "–" : Number(v).toFixed(digits));
  const badge = (text, cls) => el("span", { class: `badge ${cls}` }, text);
  const chips = (labels) => Object.entries(labels || {}).map(([k, v]) => el("span", { class: "chip" }, `${k}=${v}`));
  function table(head, rows, cls) {
    return el("table", { class: cls },
      el("thead", {}, el("tr", {}, head.map((h) => el("th", { class: h.num ? "num" : null }, h.label || h)))),
      el("tbody", {}, rows));
  }
  const td = (value, isNum) => el("td", { class: isNum ? "num" : null }, value);
  function status(text, cls) {
    const node = document.getElementById("status");
    node.className = cls || "";
    node.textContent = text;
  }

  // -- API -----------------------------------------------------------------------------
  async function api(path, body) {
    const opts = { credentials: "same-origin", headers: {} };
    if (body !== undefined) {
      opts.method = "POST";
      opts.headers["Content-Type"] = "application/json";
      if (state.me) opts.headers["X-Edgecl-Csrf"] = state.me.csrf;
      opts.body = JSON.stringify(body);
    }
    const response = await fetch(path, opts);
    let data = {};
    try { data = await response.json(); } catch (e) { data = {}; }
    if (response.status === 401 && path !== "/api/login") {
      showLogin(data.error || "log in");
      throw new Error(data.error || "unauthenticated");
    }
    if (!response.ok) {
      const err = new Error(data.error || `HTTP ${response.status}`);
      err.status = response.status;
      throw err;
    }
    return data;
  }

  // -- login ---------------------------------------------------------------------------
  function showLogin(message) {
    stopTimer();
    state.me = null;
    document.getElementById("login").hidden = false;
    fill(main());
    document.getElementById("who").textContent = "";
    document.getElementById("logout").hidden = true;
    document.getElementById("login-error").textContent = message && message !== "log in" ? message : "";
  }
  async function login(event) {
    event.preventDefault();
    const token = document.getElementById("token").value;
    try {
      state.me = await api("/api/login", { token });
      document.getElementById("token").value = "";
      start();
    } catch (e) {
      document.getElementById("login-error").textContent = e.message;
    }
  }
  async function logout() {
    try { await api("/api/logout", {}); } catch (e) { /* logged out anyway */ }
    showLogin("logged out");
  }
  function start() {
    document.getElementById("login").hidden = true;
    document.getElementById("who").textContent = `${state.me.name} (${state.me.role})`;
    document.getElementById("logout").hidden = false;
    route();
  }

  // -- routing and refresh ---------------------------------------------------------------
  function stopTimer() {
    if (state.timer) clearInterval(state.timer);
    state.timer = null;
  }
  function route() {
    if (!state.me) return;
    stopTimer();
    const hash = location.hash || "#/";
    let page;
    if (hash.startsWith("#/device/")) page = devicePage(decodeURIComponent(hash.slice(9)));
    else if (hash === "#/rollouts") page = rolloutsPage();
    else if (hash === "#/service") page = servicePage();
    else page = overviewPage();
    for (const a of document.querySelectorAll("#nav a")) a.classList.toggle("active", a.dataset.page === page.name);
    state.page = page;
    fill(main(), page.root);
    refresh();
    state.timer = setInterval(refresh, Math.max(0.5, state.me.refresh_s) * 1000);
  }
  async function refresh() {
    const page = state.page;
    if (!page || state.refreshing || document.hidden) return;  // no polling from hidden tabs
    state.refreshing = true;
    try {
      const data = await api(page.url());
      if (page === state.page) {
        page.update(data);
        status(`updated ${new Date().toLocaleTimeString()}`);
      }
    } catch (e) {
      if (page === state.page && state.me) {
        if (e.status === 404 && page.name === "device") page.missing(e.message);
        else status(`could not refresh: ${e.message}; retrying`, "error");
      }
    } finally {
      state.refreshing = false;
    }
  }
  async function act(path, body, question, output) {
    if (!window.confirm(question)) return;
    try {
      const result = await api(path, body);
      output.className = "notice";
      output.textContent = `done: ${result.state ? `state ${result.state}` : `published v${result.version}`}`;
    } catch (e) {
      output.className = "error";
      output.textContent = e.message;
    }
    refresh();
  }

  // -- plots ---------------------------------------------------------------------------
  function marksPlugin(getMarks) {
    return { hooks: { draw: [(u) => {
      const ctx = u.ctx, dpr = window.devicePixelRatio || 1;
      ctx.save();
      for (const m of getMarks()) {
        const x = Math.round(u.valToPos(m.t, "x", true));
        if (x < u.bbox.left || x > u.bbox.left + u.bbox.width) continue;
        ctx.strokeStyle = m.color;
        ctx.fillStyle = m.color;
        ctx.lineWidth = 1.5 * dpr;
        ctx.setLineDash(m.dash ? [5 * dpr, 4 * dpr] : []);
        ctx.beginPath();
        ctx.moveTo(x, u.bbox.top);
        ctx.lineTo(x, u.bbox.top + u.bbox.height);
        ctx.stroke();
        ctx.font = `${10 * dpr}px sans-serif`;
        ctx.fillText(m.label, x + 3 * dpr, u.bbox.top + (m.dash ? 22 : 11) * dpr);
      }
      ctx.restore();
    }] } };
  }
  function plot(container, title, series, axes, marks, opts) {
    const width = () => Math.max(320, container.clientWidth - 20);
    const u = new uPlot(Object.assign({
      title, width: width(), height: 240,
      scales: { x: { time: true } },
      series: [{ label: "time" }, ...series],
      axes: [{ label: axes[0] }, { label: axes[1], size: 60 }],
      legend: { show: true, live: true },
      plugins: [marksPlugin(marks)],
    }, opts || {}), [[], ...series.map(() => [])], container);
    window.addEventListener("resize", () => u.setSize({ width: width(), height: 240 }));
    return u;
  }
  const markLegend = (parts) => el("div", { class: "caption" }, parts);

  // -- pages ---------------------------------------------------------------------------
  function overviewPage() {
    const groupSel = el("select", { "aria-label": "group" }, el("option", { value: "" }, "all groups"));
    const healthSel = el("select", { "aria-label": "health" }, el("option", { value: "" }, "any health"),
      HEALTH.map((h) => el("option", { value: h }, h)));
    const search = el("input", { type: "search", placeholder: "device id or label", "aria-label": "search" });
    const summary = el("div", { class: "cards" });
    const body = el("div");
    let last = null;
    const draw = () => last && render(last);
    for (const c of [groupSel, healthSel]) c.addEventListener("change", draw);
    search.addEventListener("input", draw);
    const root = el("div", {}, el("h1", {}, "Devices"), summary,
      el("div", { class: "controls" }, groupSel, healthSel, search), body);
    function render(data) {
      const groups = data.groups;
      const known = new Set([...groupSel.options].map((o) => o.value));
      for (const g of groups) if (!known.has(g)) groupSel.append(el("option", { value: g }, g || "(no group)"));
      const q = search.value.trim().toLowerCase();
      const shown = data.devices.filter((d) => (!groupSel.value || d.group === groupSel.value)
        && (!healthSel.value || d.health === healthSel.value)
        && (!q || d.device_id.toLowerCase().includes(q)
          || Object.entries(d.labels).some(([k, v]) => `${k}=${v}`.toLowerCase().includes(q))));
      fill(summary,
        el("div", { class: "stat" }, el("b", {}, data.devices.length), el("span", {}, "devices")),
        ...HEALTH.filter((h) => data.health[h]).map((h) =>
          el("div", { class: "stat" }, el("b", { class: `h-${h}` }, data.health[h]), el("span", {}, h))));
      const rows = [];
      let group = null;
      for (const d of shown) {
        if (d.group !== group) {
          group = d.group;
          const n = shown.filter((x) => x.group === group).length;
          rows.push(el("tr", { class: "group" }, el("th", { colspan: 8 }, `group ${group || "(none)"} · ${n} device${n === 1 ? "" : "s"}`)));
        }
        rows.push(el("tr", { "data-device": d.device_id },
          el("td", {}, el("a", { href: `#/device/${encodeURIComponent(d.device_id)}` }, d.device_id)),
          el("td", {}, chips(d.labels)),
          td(`v${d.served_version} of v${d.latest_version}` + (d.pinned_version >= 0 ? ` (pinned v${d.pinned_version})` : "")),
          td(d.reported_version >= 0 ? `v${d.reported_version}` : "–"),
          td(ago(d.last_seen_ms, data.now_ms)),
          el("td", {}, badge(d.health, `h-${d.health}`)),
          td(num(d.stats.confidence), true), td(num(d.stats.ood_rate), true)));
      }
      fill(body, shown.length ? table(["device", "labels", "served", "reports running",
        "last seen", "health", { label: "confidence", num: true }, { label: "OOD rate", num: true }], rows)
        : el("p", { class: "muted" }, data.devices.length ? "no device matches the filters" : "no device has registered yet"));
    }
    return { name: "overview", root, url: () => "/api/overview", update: (d) => { last = d; render(d); } };
  }

  function devicePage(id) {
    const info = el("div", { class: "card" });
    const healthBox = el("div");
    const series = el("div", { class: "plot" });
    const uploads = el("div", { class: "plot" });
    const events = el("div"), updates = el("div"), config = el("div");
    const root = el("div", {}, el("h1", {}, `Device ${id}`), info,
      el("h2", {}, "Health reports"), series, el("h2", {}, "Uploads"), uploads,
      el("h2", {}, "Update events"), events, el("h2", {}, "Updates of its target"), updates,
      el("h2", {}, "Config: desired and reported"), config, healthBox);
    let marks = [];
    const markCaption = markLegend(["vertical lines: ",
      "updates applied (green), refused or rolled back (red), reverted (violet); ",
      "dashed: a domain change the device reported (a new drift segment)"]);
    const confPlot = plot(series, "Confidence and OOD rate per report", [
      { label: "confidence", stroke: "#0969da", width: 2, scale: "y" },
      { label: "OOD rate", stroke: "#e16f24", width: 2, scale: "y" }],
      ["time", "share of predictions"], () => marks, { scales: { x: { time: true }, y: { range: [0, 1] } } });
    series.append(markCaption);
    const upPlot = plot(uploads, "Samples uploaded per interval", [
      { label: "samples", stroke: "#57606a", fill: "rgba(87,96,106,0.35)", width: 1,
        paths: uPlot.paths.bars({ size: [0.9, 40] }) }],
      ["time", "samples"], () => marks.filter((m) => m.dash));
    uploads.append(markLegend("dashed: domain changes (new drift segments)"));
    function update(data) {
      const d = data.device;
      const dl = el("dl", { class: "info" });
      for (const [k, v] of [["group", d.group || "(none)"], ["labels", chips(d.labels)], ["target", d.target],
        ["health", badge(d.health, `h-${d.health}`)],
        ["served version", `v${d.served_version} (latest v${d.latest_version})`],
        ["reports running", d.reported_version >= 0 ? `v${d.reported_version}` : "–"],
        ["pinned", d.pinned_version >= 0 ? `v${d.pinned_version}` : "no"],
        ["last seen", `${ago(d.last_seen_ms, data.now_ms)} (${fmtTime(d.last_seen_ms)})`],
        ["samples stored", d.samples], ["registered", fmtTime(d.registered_ms)]]) {
        dl.append(el("dt", {}, k), el("dd", {}, v));
      }
      fill(info, dl);
      marks = data.events.map((e) => ({ t: e.time_ms / 1000, color: EVENT_COLORS[e.action] || "#57606a",
        label: `v${e.version} ${e.action}` }))
        .concat(data.uploads.segments.filter((s) => s.segment > 0).map((s) => ({ t: s.t_ms / 1000,
          color: DOMAIN_COLOR, dash: true, label: `domain ${s.segment}` })));
      const xs = data.series.map((r) => r.t_ms / 1000);
      confPlot.setData([xs, data.series.map((r) => r.confidence ?? null), data.series.map((r) => r.ood_rate ?? null)]);
      // empty buckets either side, so a short history is not stretched over years
      const bucketS = data.uploads.bucket_ms / 1000, b = data.uploads.buckets;
      const ux = b.length ? [b[0].t_ms / 1000 - bucketS, ...b.map((x) => x.t_ms / 1000), b[b.length - 1].t_ms / 1000 + bucketS] : [];
      upPlot.setData([ux, b.length ? [0, ...b.map((x) => x.count), 0] : []]);
      fill(events, data.events.length ? table(["time", "version", "action", "reason"],
        data.events.map((e) => el("tr", {}, td(fmtTime(e.time_ms)), td(`v${e.version}`),
          el("td", {}, badge(e.action, e.action === "applied" ? "h-ok" : "h-refused")), td(e.reason))))
        : el("p", { class: "muted" }, "the device has reported no update events"));
      fill(updates, data.updates.length ? table(["version", "from", "published", "parts", "rollout", "agreement"],
        data.updates.map((u) => el("tr", { "data-version": u.version }, td(`v${u.version}`), td(`v${u.base_version}`),
          td(fmtTime(u.created_ms)), td(u.parts.join(", ")), el("td", {}, badge(u.rollout_state, `s-${u.rollout_state}`)),
          td(num(u.metrics.agreement ?? u.metrics.candidate_agreement), true))))
        : el("p", { class: "muted" }, "nothing published for its target yet"));
      const keys = [...new Set([...Object.keys(d.desired_config), ...Object.keys(d.reported_config)])].sort();
      fill(config, keys.length ? table(["key", `desired (revision ${d.desired_revision})`, `reported (revision ${d.reported_revision})`],
        keys.map((k) => el("tr", {}, td(k), td(d.desired_config[k] ?? "–"), td(d.reported_config[k] ?? "–"))))
        : el("p", { class: "muted" }, "no desired config set and none reported"));
    }
    const missing = (message) => fill(root, el("h1", {}, `Device ${id}`), el("p", { class: "error" }, message));
    return { name: "device", root, url: () => `/api/device?id=${encodeURIComponent(id)}`, update, missing };
  }

  function rolloutsPage() {
    const list = el("div"), all = el("div");
    const filter = el("input", { type: "search", placeholder: "target name contains", "aria-label": "target filter" });
    let timer = null;
    filter.addEventListener("input", () => { clearTimeout(timer); timer = setTimeout(refresh, 300); });
    const root = el("div", {}, el("h1", {}, "Updates and rollouts"),
      el("div", { class: "controls" }, filter,
        el("span", { class: "muted" }, "shown in full: rollouts under way, or the targets the filter finds")),
      list, el("h2", {}, "All targets"), all);
    const cards = new Map();
    function card(target) {
      if (cards.has(target)) return cards.get(target);
      const body = el("div"), output = el("p", { role: "status" });
      const reason = el("input", { type: "text", placeholder: "reason (logged)", "aria-label": "reason", maxlength: 300 });
      const revert = el("input", { type: "checkbox", "aria-label": "revert on abort" });
      const version = el("input", { type: "number", min: 0, placeholder: "version", "aria-label": "rollback version" });
      const buttons = {};
      const path = (a) => `/api/rollout/${a}`;
      buttons.pause = el("button", { type: "button", "data-action": "pause", onclick: () => act(path("pause"),
        { target, reason: reason.value }, `Pause the rollout of ${target}? No further wave starts until someone resumes it.`, output) }, "Pause");
      buttons.resume = el("button", { type: "button", "data-action": "resume", onclick: () => act(path("resume"),
        { target, reason: reason.value }, `Resume the rollout of ${target}?`, output) }, "Resume");
      buttons.abort = el("button", { type: "button", class: "danger", "data-action": "abort", onclick: () => act(path("abort"),
        { target, reason: reason.value, revert: revert.checked }, `Abort the rollout of ${target}${revert.checked ? " and give its devices the released version back" : ""}?`, output) }, "Abort");
      buttons.rollback = el("button", { type: "button", class: "danger", "data-action": "rollback", onclick: () => {
        const to = Number.parseInt(version.value, 10);
        if (!Number.isInteger(to)) { output.className = "error"; output.textContent = "enter the version to roll back to"; return; }
        act(path("rollback"), { target, to_version: to, reason: reason.value },
          `Roll ${target} back to v${to}? Its content is published as a new version to every device of ${target}.`, output);
      } }, "Roll back");
      const controls = state.me.role === "operator"
        ? el("div", { class: "actions" }, buttons.pause, buttons.resume, buttons.abort,
          el("label", {}, revert, " revert on abort"), version, buttons.rollback, reason)
        : el("p", { class: "muted" }, "read-only login: an operator can pause, resume, abort or roll back");
      const node = el("div", { class: "card", "data-target": target }, el("h2", {}, target), body, controls, output);
      const entry = { node, body, buttons };
      cards.set(target, entry);
      return entry;
    }
    function update(data) {
      const nodes = [];
      for (const t of data.targets) {
        const c = card(t.target);
        const p = t.policy;
        const gates = [`refusals > ${num(p.max_rollback_rate, 2)}`, `confidence drop > ${num(p.max_confidence_drop, 2)}`,
          `OOD rise > ${num(p.max_ood_rise, 2)}`, `errors > ${p.max_errors}`].join(", ");
        fill(c.body,
          el("p", {}, badge(t.state, `s-${t.state}`), t.version ? ` v${t.version}` : "",
            ` · released v${t.released_version} · ${t.target_devices} device${t.target_devices === 1 ? "" : "s"}`),
          t.reason ? el("p", { class: "reason" }, t.reason) : null,
          el("p", { class: "muted" }, p.mode === "auto" ? "policy auto: every version goes to every device at once"
            : `policy ${p.mode}: canary ${num(p.canary_share * 100, 0)} %, waves of ${num(p.wave_share * 100, 0)} % every ${num(p.wave_interval_s, 0)} s; a wave fails on ${gates}`),
          t.waves.length ? table(["wave", { label: "devices", num: true }, { label: "reported", num: true },
            { label: "applied", num: true }, { label: "refused", num: true }, { label: "started (s after wave 1)", num: true }],
            t.waves.map((w) => el("tr", {}, td(w.wave, true), td(w.devices, true), td(w.reported, true), td(w.applied, true),
              td(w.refused, true), td(num(w.started_s - t.waves[0].started_s, 0), true)))) : null,
          t.updates.length ? table(["version", "from", "published", "parts", "rollout"],
            t.updates.map((u) => el("tr", {}, td(`v${u.version}`), td(`v${u.base_version}`), td(fmtTime(u.created_ms)),
              td(u.parts.join(", ")), el("td", {}, badge(u.rollout_state, `s-${u.rollout_state}`)))))
            : el("p", { class: "muted" }, "nothing published yet"),
          t.rejections.length ? el("p", { class: "muted" }, `${t.rejections.length} candidate${t.rejections.length === 1 ? "" : "s"} rejected by validation, newest: ${t.rejections[0].reason}`) : null);
        const can = { pause: ["rolling", "awaiting"], resume: ["paused", "halted", "awaiting"],
          abort: ["rolling", "paused", "halted", "awaiting"] };
        for (const [a, states] of Object.entries(can)) c.buttons[a].disabled = !states.includes(t.state);
        nodes.push(c.node);
      }
      fill(list, ...(nodes.length ? nodes : [el("p", { class: "muted" },
        data.summary.length ? "no rollout under way (filter to see a target in full)" : "no device has registered yet")]));
      fill(all, data.summary.length ? table(["target", "rollout", { label: "version", num: true }, { label: "devices", num: true }],
        data.summary.map((r) => el("tr", { "data-summary": r.target },
          el("td", {}, el("a", { href: "#/rollouts", onclick: (e) => { e.preventDefault(); filter.value = r.target; refresh(); } }, r.target)),
          el("td", {}, badge(r.state, `s-${r.state}`)), td(r.version ? `v${r.version}` : "–", true), td(r.devices, true)))) : null);
    }
    return { name: "rollouts", root, url: () => `/api/rollouts?q=${encodeURIComponent(filter.value.trim())}`, update };
  }

  function servicePage() {
    const stats = el("div", { class: "cards" });
    const rates = el("div", { class: "plot" }), work = el("div", { class: "plot" });
    const jobs = el("div"), rpcs = el("div");
    const root = el("div", {}, el("h1", {}, "The service"), stats, rates, work,
      el("h2", {}, "Learning jobs"), jobs, el("h2", {}, "RPCs by method (since start)"), rpcs);
    const ratePlot = plot(rates, "RPCs per second", [
      { label: "answered OK", stroke: "#1a7f37", width: 2 },
      { label: "errors", stroke: "#cf222e", width: 2 }], ["time", "RPCs / s"], () => []);
    const workPlot = plot(work, "Labelling", [
      { label: "backlog (samples waiting)", stroke: "#9a6700", width: 2, scale: "n" },
      { label: "uploads / s", stroke: "#0969da", width: 2, scale: "r" },
      { label: "labelled / s", stroke: "#8250df", width: 2, scale: "r" }], ["time", "samples"], () => [],
      { axes: [{ label: "time" }, { label: "backlog (samples)", scale: "n", size: 60 },
        { label: "samples / s", scale: "r", side: 1, size: 60, grid: { show: false } }] });
    function update(data) {
      const stat = (v, label) => el("div", { class: "stat" }, el("b", {}, v), el("span", {}, label));
      const c = data.learning.counts;
      fill(stats, stat(data.backlog, "samples waiting for a label"), stat(data.labelled, "labelled"),
        stat(num(data.label_rate, 1), "labelled / s (recent)"), stat(data.devices, "devices"),
        stat(data.streams_open, "open streams"), stat(data.learning.running.length, "learning jobs running"),
        stat(c.published || 0, "updates published"), stat(c.rejected || 0, "candidates rejected"));
      const h = data.history, xs = h.map((p) => p.t_ms / 1000);
      ratePlot.setData([xs, h.map((p) => p.rpc_ok_per_s), h.map((p) => p.rpc_errors_per_s)]);
      workPlot.setData([xs, h.map((p) => p.backlog), h.map((p) => p.uploads_per_s), h.map((p) => p.labelled_per_s)]);
      const pending = Object.entries(data.learning.pending);
      if (!data.learning.enabled) fill(jobs, el("p", { class: "muted" }, "learning is off ([learning] enabled = false)"));
      else fill(jobs, table(["", { label: "count", num: true }],
        [...Object.entries(c).map(([k, v]) => el("tr", {}, td(k), td(v, true))),
          el("tr", {}, td("running now"), td(data.learning.running.join(", ") || "none")),
          el("tr", {}, td("labelled uploads waiting for a job"), td(pending.map(([t, n]) => `${t}: ${n}`).join(", ") || "none"))]));
      fill(rpcs, table(["method", { label: "OK", num: true }, { label: "errors", num: true }],
        data.rpcs.map((r) => el("tr", {}, td(r.method), td(r.ok, true), td(r.errors, true)))));
    }
    return { name: "service", root, url: () => "/api/service", update };
  }

  // -- start -----------------------------------------------------------------------------
  document.getElementById("login-form").addEventListener("submit", login);
  document.getElementById("logout").addEventListener("click", logout);
  window.addEventListener("hashchange", route);
  document.addEventListener("visibilitychange", () => { if (!document.hidden) refresh(); });
  api("/api/me").then((me) => { state.me = me; start(); }).catch(() => { /* the login form is shown */ });
})();
