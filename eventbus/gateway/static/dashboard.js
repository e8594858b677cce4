// The eventbus gateway dashboard: plain JavaScript, no build step, no external files.
// It polls api/state and long-polls api/tail with the admin token as a Bearer header.
"use strict";

(function () {
  const TOKEN_KEY = "eventbus.dashboard.token";
  const STATE_EVERY_MS = 2000;
  const TAIL_WAIT_S = 8;
  const TAIL_ROWS = 300;
  const STATS = ["events_published", "events_received", "events_handled", "events_failed",
    "events_dropped", "reconnects", "gaps_detected", "handler_p50_ms", "handler_p99_ms"];

  const $ = (id) => document.getElementById(id);
  let token = null;
  let after = 0;
  let paused = false;
  let generation = 0; // bumped at sign-in/out: stale loops stop

  // -- token: ?token= or #token= once, then session storage; stripped from the URL --------
  function takeTokenFromUrl() {
    const query = new URLSearchParams(window.location.search);
    const hash = new URLSearchParams(window.location.hash.replace(/^#/, ""));
    const found = hash.get("token") || query.get("token");
    if (found) {
      sessionStorage.setItem(TOKEN_KEY, found.trim());
      window.history.replaceState(null, "", window.location.pathname);
    }
    return sessionStorage.getItem(TOKEN_KEY);
  }

  function setStatus(state, text) {
    const el = $("status");
    el.dataset.state = state;
    el.textContent = text;
  }

  function showLogin(message) {
    generation += 1;
    token = null;
    sessionStorage.removeItem(TOKEN_KEY);
    $("main").hidden = true;
    $("signout").hidden = true;
    $("login").hidden = false;
    $("login-error").textContent = message || "";
    setStatus("idle", "not signed in");
  }

  function start(newToken) {
    token = newToken;
    generation += 1;
    after = 0;
    $("login").hidden = true;
    $("main").hidden = false;
    $("signout").hidden = false;
    const mine = generation;
    stateLoop(mine);
    tailLoop(mine);
  }

  class AuthFailure extends Error {}

  async function api(path) {
    const response = await fetch(path, {
      headers: { Authorization: "Bearer " + token },
      cache: "no-store",
      credentials: "omit",
    });
    let body = null;
    try {
      body = await response.json();
    } catch (e) {
      body = null;
    }
    if (response.status === 401 || response.status === 403) {
      const why = body && body.error ? body.error + ": " + body.message : "HTTP " + response.status;
      throw new AuthFailure(why);
    }
    if (!response.ok) {
      throw new Error(body && body.error ? body.error + ": " + body.message : "HTTP " + response.status);
    }
    return body;
  }

  const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

  // -- DOM helpers: text only, never HTML from the server --------------------------------
  function cell(row, value, className) {
    const td = document.createElement("td");
    td.textContent = value === undefined || value === null ? "" : String(value);
    if (className) td.className = className;
    row.appendChild(td);
    return td;
  }

  function fillRows(tbody, items, render) {
    const fragment = document.createDocumentFragment();
    for (const item of items) {
      const tr = document.createElement("tr");
      render(tr, item);
      fragment.appendChild(tr);
    }
    tbody.replaceChildren(fragment);
  }

  function number(value, digits) {
    if (typeof value !== "number") return "-";
    return digits ? value.toFixed(digits) : String(value);
  }

  function clock(seconds) {
    const d = new Date(seconds * 1000);
    return d.toLocaleTimeString([], { hour12: false }) + "." + String(d.getMilliseconds()).padStart(3, "0");
  }

  function preview(value, max) {
    let text;
    try {
      text = typeof value === "string" ? value : JSON.stringify(value);
    } catch (e) {
      text = String(value);
    }
    if (text === undefined) text = "";
    return text.length > max ? text.slice(0, max) + "\u2026" : text;
  }

  // -- state -----------------------------------------------------------------------------
  function renderState(state) {
    const node = state.node;
    $("node").textContent = "node " + node.node_id + " \u00b7 prefix " + node.key_prefix;
    const counters = Object.entries(node.counters);
    $("node-summary").textContent = "(" + state.sockets.length + " sockets here" +
      (node.tail_running ? "" : ", tail not running") + ")";
    const list = document.createDocumentFragment();
    for (const [name, value] of counters) {
      const item = document.createElement("div");
      const dt = document.createElement("dt");
      const dd = document.createElement("dd");
      dt.textContent = name;
      dd.textContent = typeof value === "object" ? JSON.stringify(value) : String(value);
      item.append(dt, dd);
      list.appendChild(item);
    }
    $("counters").replaceChildren(list);

    const rooms = state.rooms;
    $("rooms-summary").textContent = "(" + rooms.total + " in the cluster" +
      (rooms.truncated ? ", first " + rooms.listed.length + " shown" : "") + ")";
    fillRows($("rooms").tBodies[0], rooms.listed, (tr, room) => {
      cell(tr, room.room);
      cell(tr, room.count, "num");
      const who = room.members.map((m) => {
        const info = m.info && typeof m.info === "object" ? m.info : {};
        return m.id + (info.kind ? " (" + info.kind + ")" : "");
      }).join(", ");
      cell(tr, who + (room.count > room.members.length ? ", \u2026" : ""), "wrap");
    });

    const services = state.services;
    $("services-summary").textContent = "(" + services.total + " live buses)";
    fillRows($("services").tBodies[0], services.listed, (tr, c) => {
      cell(tr, c.service_name);
      cell(tr, c.kind);
      cell(tr, c.client_id, "mono");
      cell(tr, c.host + "/" + c.pid);
      cell(tr, c.transport);
      cell(tr, c.subscriptions.join(", "), "wrap");
      cell(tr, c.rooms.join(", "), "wrap");
      for (const key of STATS) {
        cell(tr, number(c.stats[key], key.endsWith("_ms") ? 2 : 0), "num");
      }
      // Every other stat (a gateway's sockets and relay counters...), folded.
      const other = Object.entries(c.stats).filter(([key]) => !STATS.includes(key));
      const td = cell(tr, "", "small");
      if (other.length) {
        const details = document.createElement("details");
        const summary = document.createElement("summary");
        summary.textContent = other.length + " more";
        const pre = document.createElement("pre");
        pre.textContent = other.map(([key, value]) => key + " = " + preview(value, 80)).join("\n");
        details.append(summary, pre);
        td.appendChild(details);
      }
    });

    $("sockets-summary").textContent = "(" + state.sockets.length + ")";
    fillRows($("sockets").tBodies[0], state.sockets, (tr, s) => {
      cell(tr, s.sid, "mono");
      cell(tr, s.namespace);
      cell(tr, s.user || "");
      cell(tr, s.ip || "");
      cell(tr, typeof s.connected_at === "number" ? clock(s.connected_at) : "");
      cell(tr, typeof s.expires_at === "number" ? clock(s.expires_at) : "");
      cell(tr, s.rooms.join(", "), "wrap");
    });
  }

  function renderNodeServices(list) {
    $("node-services-summary").textContent = "(" + list.length + ")";
    fillRows($("node-services").tBodies[0], list, (tr, svc) => {
      cell(tr, svc.name);
      cell(tr, svc.sid, "mono");
      cell(tr, svc.client_id || "", "mono");
      cell(tr, typeof svc.connected_at === "number" ? clock(svc.connected_at) : "");
      cell(tr, (svc.scopes || []).join(" "), "wrap");
      cell(tr, (svc.subscriptions || []).join(", "), "wrap");
      const counts = Object.entries(svc.counts || {}).map(([k, v]) => k + "=" + v).join(" ");
      cell(tr, counts, "wrap small");
    });
  }

  async function stateLoop(mine) {
    while (mine === generation) {
      try {
        const state = await api("api/state");
        if (mine !== generation) return;
        renderState(state);
        renderNodeServices(state.node_services || []);
        setStatus("live", "live");
      } catch (e) {
        if (e instanceof AuthFailure) return showLogin(e.message);
        setStatus("error", "state: " + e.message);
      }
      // A hidden tab still refreshes, only less often.
      await sleep(document.hidden ? 5 * STATE_EVERY_MS : STATE_EVERY_MS);
    }
  }

  // -- tail ------------------------------------------------------------------------------
  function matchesFilter(tr) {
    const text = $("tail-filter").value.trim().toLowerCase();
    return !text || tr.dataset.search.includes(text);
  }

  function addTailRow(entry) {
    const env = entry.envelope || {};
    const tr = document.createElement("tr");
    tr.dataset.kind = entry.kind;
    cell(tr, entry.seq, "num");
    cell(tr, clock(entry.received));
    cell(tr, entry.kind);
    cell(tr, entry.target);
    cell(tr, env.type || "");
    cell(tr, env.id || "", "mono");
    cell(tr, env.source || "");
    const data = entry.envelope ? preview(env.data, 300) : preview(entry.raw, 300);
    cell(tr, (entry.truncated ? "[cut] " : "") + data, "mono wrap");
    tr.dataset.search = [entry.kind, entry.target, env.type, env.id, env.source, data]
      .join(" ").toLowerCase();
    tr.hidden = !matchesFilter(tr);
    const tbody = $("tail").tBodies[0];
    tbody.insertBefore(tr, tbody.firstChild);
    while (tbody.rows.length > TAIL_ROWS) tbody.deleteRow(tbody.rows.length - 1);
  }

  async function tailLoop(mine) {
    let seen = 0;
    let missed = 0;
    while (mine === generation) {
      try {
        const wait = paused ? 0 : TAIL_WAIT_S;
        const tail = await api("api/tail?after=" + after + "&wait=" + wait + "&limit=200");
        if (mine !== generation) return;
        if (tail.last < after) after = 0; // the gateway restarted: start over
        for (const entry of tail.events) {
          if (!paused) addTailRow(entry);
          after = Math.max(after, entry.seq);
          seen += 1;
        }
        after = Math.max(after, tail.last);
        missed += tail.missed;
        $("tail-summary").textContent = "(" + seen + " seen" +
          (missed ? ", " + missed + " missed" : "") + (paused ? ", paused" : "") + ")";
        if (wait === 0) await sleep(1000);
      } catch (e) {
        if (e instanceof AuthFailure) return showLogin(e.message);
        $("tail-summary").textContent = "(error: " + e.message + "; retrying)";
        await sleep(2000);
      }
    }
  }

  // -- wiring ----------------------------------------------------------------------------
  document.addEventListener("DOMContentLoaded", () => {
    $("login-form").addEventListener("submit", (event) => {
      event.preventDefault();
      const value = $("token-input").value.trim();
      if (!value) return;
      sessionStorage.setItem(TOKEN_KEY, value);
      $("token-input").value = "";
      start(value);
    });
    $("signout").addEventListener("click", () => showLogin(""));
    $("tail-pause").addEventListener("click", () => {
      paused = !paused;
      $("tail-pause").textContent = paused ? "Resume" : "Pause";
    });
    $("tail-clear").addEventListener("click", () => $("tail").tBodies[0].replaceChildren());
    $("tail-filter").addEventListener("input", () => {
      for (const tr of $("tail").tBodies[0].rows) tr.hidden = !matchesFilter(tr);
    });
    const saved = takeTokenFromUrl();
    if (saved) start(saved); else showLogin("");
  });
})();
