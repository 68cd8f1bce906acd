// tidecast's console: reads the SRS API and /console/config.json every 2 s and redraws in place.
"use strict";

(function () {
  const $ = (id) => document.getElementById(id);
  const POLL_MS = 2000;
  let config = null;
  let player = null;

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === "class") node.className = v;
      else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
      else node.setAttribute(k, v);
    }
    for (const c of children) node.append(c instanceof Node ? c : document.createTextNode(String(c)));
    return node;
  }

  async function api(path, options) {
    const resp = await fetch(path, { cache: "no-store", ...(options || {}) });
    if (!resp.ok) throw new Error(`${path}: HTTP ${resp.status}`);
    return resp.json();
  }

  function showError(message) {
    const box = $("error");
    box.hidden = !message;
    box.textContent = message || "";
  }

  function duration(s) {
    const d = Math.floor(s / 86400), h = Math.floor((s % 86400) / 3600), m = Math.floor((s % 3600) / 60);
    return (d ? d + "d " : "") + (d || h ? h + "h " : "") + m + "m " + (s % 60) + "s";
  }

  function bytes(n) {
    if (n < 1024) return n + " B";
    if (n < 1048576) return (n / 1024).toFixed(1) + " KiB";
    if (n < 1073741824) return (n / 1048576).toFixed(1) + " MiB";
    return (n / 1073741824).toFixed(2) + " GiB";
  }

  function videoText(v) {
    if (!v) return "—";
    const size = v.width ? ` ${v.width}x${v.height}` : "";
    return [v.codec, v.profile, v.level].filter(Boolean).join(" ") + size;
  }

  function audioText(a) {
    if (!a) return "—";
    const rate = a.sample_rate ? ` ${a.sample_rate} Hz` : "";
    const ch = a.channel ? ` ${a.channel}ch` : "";
    return [a.codec, a.profile].filter(Boolean).join(" ") + rate + ch;
  }

  const vhostName = (s) => (s.vhost || "").replace(/^vhost-/, "");

  // Where the live MP4 endpoint of a stream is: the HTTP server port, which may not be this page's.
  function mp4Url(vhost, app, name) {
    const port = config && config.http ? config.http.port : location.port;
    const host = location.hostname.includes(":") ? `[${location.hostname}]` : location.hostname;
    const path = vhost && vhost !== "__defaultVhost__" ? `/${vhost}/${app}/${name}.mp4` : `/${app}/${name}.mp4`;
    return `${location.protocol}//${host}:${port}${path}`;
  }

  function playPage(vhost, app, name) {
    const q = vhost && vhost !== "__defaultVhost__" ? `?vhost=${encodeURIComponent(vhost)}` : "";
    return `/console/play/${encodeURIComponent(app)}/${encodeURIComponent(name)}${q}`;
  }

  function play(vhost, app, name) {
    if (player) player.close();
    const url = mp4Url(vhost, app, name);
    const section = $("player-section");
    if (section) section.hidden = false;
    $("player-title").textContent = `/${app}/${name}`;
    const link = $("player-link");
    if (link) {
      link.href = playPage(vhost, app, name);
      link.textContent = location.origin + link.getAttribute("href");
    }
    const video = $("video");
    video.muted = true;
    player = new TidecastPlayer(video, url, (state) => {
      $("player-state").textContent = `${state} — ${url}`;
    });
    window.tidecastPlayer = player; // for tests and the devtools console
    player.start();
  }

  function drawHeader(summary) {
    $("version").textContent = "v" + config.version;
    const state = $("state");
    const text = config.draining ? "draining" : config.ready ? "ready" : "starting";
    state.textContent = text;
    state.className = "badge " + (text === "ready" ? "ok" : "bad");
    $("roles").textContent = config.roles.join(", ");
    $("uptime").textContent = "up " + duration(config.uptime_s);
    const r = config.reload;
    $("reload").textContent = r.reloads
      ? `reloads ${r.reloads}, failed ${r.failures}` + (r.err ? ` — last failed: ${r.msg}` : "")
      : "no reload yet";
    const load = summary && summary.data && summary.data.self ? summary.data.self : null;
    const cpu = load ? ` · cpu ${(load.cpu_percent * 100).toFixed(1)}% · rss ${bytes(load.mem_kbyte * 1024)}` : "";
    $("updated").textContent = "updated " + new Date().toLocaleTimeString() + cpu;
  }

  function drawStreams(streams, clients) {
    const tbody = $("streams").tBodies[0];
    const rows = [];
    const byStream = {};
    for (const c of clients) (byStream[c.stream] = byStream[c.stream] || []).push(c);
    for (const s of streams) {
      const mine = byStream[s.id] || [];
      const counts = {};
      let publisher = "—";
      for (const c of mine) {
        if (c.publish) publisher = `${c.ip} (${c.type})`;
        else counts[c.type.replace(/-play$/, "")] = (counts[c.type.replace(/-play$/, "")] || 0) + 1;
      }
      const players = Object.entries(counts).map(([k, n]) => `${k} ${n}`).join(", ") || "0";
      const up = s.upstream ? `${s.upstream.mode} ${s.upstream.origin || ""} ${s.upstream.state || ""}` : "—";
      const vhost = vhostName(s);
      rows.push(
        el("tr", { "data-stream": s.url },
          el("td", {}, vhost !== "__defaultVhost__" ? `${vhost}${s.url}` : s.url, s.publish.active ? "" : " (idle)"),
          el("td", { class: "codec-video" }, videoText(s.video)),
          el("td", { class: "codec-audio" }, audioText(s.audio)),
          el("td", { class: "num" }, s.kbps.recv_30s),
          el("td", { class: "num" }, s.kbps.send_30s),
          el("td", { class: "players" }, players),
          el("td", {}, publisher),
          el("td", {}, up),
          el("td", {}, el("button", { class: "play", onclick: () => play(vhost, s.app, s.name) }, "play"))),
      );
    }
    if (!rows.length) rows.push(el("tr", {}, el("td", { class: "empty", colspan: "9" }, "no streams")));
    tbody.replaceChildren(...rows);
    $("stream-count").textContent = `(${streams.length})`;
  }

  async function kick(id) {
    try {
      const doc = await api(`/api/v1/clients/${encodeURIComponent(id)}`, { method: "DELETE" });
      if (doc.code) showError(`kick ${id}: API code ${doc.code}`);
      refresh();
    } catch (e) {
      showError(`kick ${id}: ${e.message}`);
    }
  }

  function drawClients(clients) {
    const rows = clients.map((c) =>
      el("tr", { "data-client": c.id },
        el("td", {}, c.id),
        el("td", {}, c.type),
        el("td", {}, c.url || "—"),
        el("td", {}, c.ip),
        el("td", { class: "num" }, Math.round(c.alive)),
        el("td", { class: "num" }, bytes(c.send_bytes)),
        el("td", { class: "num" }, bytes(c.recv_bytes)),
        el("td", {}, el("button", { class: "kick", onclick: () => kick(c.id) }, "kick"))),
    );
    if (!rows.length) rows.push(el("tr", {}, el("td", { class: "empty", colspan: "8" }, "no clients")));
    $("clients").tBodies[0].replaceChildren(...rows);
    $("client-count").textContent = `(${clients.length})`;
  }

  function drawCluster(view) {
    const section = $("cluster-section");
    const nodes = view.nodes || [];
    section.hidden = !config.roles.includes("origin-cluster") && nodes.length <= 1;
    if (section.hidden) return;
    $("nodes").tBodies[0].replaceChildren(
      ...nodes.map((n) =>
        el("tr", {},
          el("td", {}, (n.api || "this node") + (n.self ? " (this one)" : "")),
          el("td", {}, n.ok ? "ok" : `unreachable: ${n.error || "?"}`),
          el("td", { class: "num" }, n.streams))),
    );
    $("cluster-streams").tBodies[0].replaceChildren(
      ...(view.streams || []).map((s) =>
        el("tr", {},
          el("td", {}, s.url),
          el("td", {}, s.node || "this node"),
          el("td", {}, videoText(s.video)),
          el("td", {}, audioText(s.audio)),
          el("td", { class: "num" }, s.clients),
          // This node's MP4 endpoint redirects to the origin that has the stream.
          el("td", {}, el("button", { class: "play", onclick: () => play(vhostName(s), s.app, s.name) }, "play")))),
    );
  }

  let busy = false;
  async function refresh() {
    if (busy) return;
    busy = true;
    try {
      config = await api("/console/config.json");
      const [summary, streams, clients] = await Promise.all([
        api("/api/v1/summaries"),
        api("/api/v1/streams?count=1000"),
        api("/api/v1/clients?count=1000"),
      ]);
      drawHeader(summary);
      drawStreams(streams.streams || [], clients.clients || []);
      drawClients(clients.clients || []);
      if (config.roles.includes("origin-cluster")) drawCluster(await api("/api/v1/cluster"));
      showError("");
    } catch (e) {
      showError(`cannot reach the API: ${e.message}`);
    } finally {
      busy = false;
    }
  }

  async function playOnly() {
    // /console/play/APP/STREAM[?vhost=V]: the player alone.
    const parts = location.pathname.replace(/^\/console\/play\//, "").split("/").map(decodeURIComponent);
    const name = parts.pop();
    const app = parts.join("/");
    const vhost = new URLSearchParams(location.search).get("vhost") || "";
    try {
      config = await api("/console/config.json");
    } catch (e) {
      showError(`cannot read /console/config.json: ${e.message}`);
      return;
    }
    document.title = `${app}/${name} — tidecast`;
    play(vhost, app, name);
  }

  if ($("streams")) {
    const close = $("player-close");
    close.addEventListener("click", () => {
      if (player) player.close();
      player = null;
      $("video").removeAttribute("src");
      $("player-section").hidden = true;
    });
    refresh();
    setInterval(refresh, POLL_MS);
  } else {
    playOnly();
  }
})();
