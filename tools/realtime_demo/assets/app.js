// realtime-demo's page: the chat (WebSocket, /chat) and the dashboard (SSE, /events).
// No framework, no build step. State the browser tests read is in `window.demo`.
"use strict";

const $ = (id) => document.getElementById(id);

window.demo = {
  // Chat: what the log shows, as {from, text} (system lines have no `from`).
  messages: [],
  // Dashboard: every event id received, in order, and the ids that broke the sequence.
  ids: [],
  gaps: [],
  replayed: [],
  resets: 0,
  resumes: 0,
  state: "connecting",
};

// ---------------------------------------------------------------- chat

const chat = {
  ws: null,
  name: "",
  clientId: null,
  room: null,          // the room joined now (one at a time on this page)
  members: new Map(),  // room -> [{name, client}]
};

function setChatState(text, cls) {
  const el = $("chat-state");
  el.textContent = text;
  el.className = "state " + (cls || "");
}

function notice(text) {
  $("notice").textContent = text || "";
}

function logLine(from, text, mine) {
  const li = document.createElement("li");
  if (from === null) {
    li.className = "system";
    li.textContent = text;
  } else {
    if (mine) li.className = "me";
    const who = document.createElement("span");
    who.className = "from";
    who.textContent = from;
    const what = document.createElement("span");
    what.className = "text";
    what.textContent = text;
    li.append(who, what);
  }
  const log = $("log");
  log.append(li);
  while (log.children.length > 200) log.firstChild.remove();
  log.scrollTop = log.scrollHeight;
  window.demo.messages.push({ from, text });
}

function renderRoom() {
  const connected = chat.ws && chat.ws.readyState === WebSocket.OPEN;
  $("current-room").textContent = chat.room || "none";
  $("room").disabled = !connected;
  $("join").disabled = !connected;
  $("leave").disabled = !connected || !chat.room;
  $("text").disabled = !connected || !chat.room;
  $("send").disabled = !connected || !chat.room;
  $("connect").textContent = connected ? "Disconnect" : "Connect";
  $("name").disabled = Boolean(chat.ws);
  const list = $("members");
  list.replaceChildren();
  const members = (chat.room && chat.members.get(chat.room)) || [];
  for (const m of members) {
    const li = document.createElement("li");
    li.textContent = m.name;
    li.title = "client " + m.client;
    if (m.client === chat.clientId) li.className = "me";
    list.append(li);
  }
  $("member-count").textContent = chat.room ? `(${members.length})` : "";
}

function send(obj) {
  if (chat.ws && chat.ws.readyState === WebSocket.OPEN) chat.ws.send(JSON.stringify(obj));
}

function connect(name) {
  chat.name = name;
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  const ws = new WebSocket(`${scheme}://${location.host}/chat?name=${encodeURIComponent(name)}`);
  chat.ws = ws;
  setChatState("connecting");
  ws.onopen = () => {
    setChatState(`connected as ${name}`, "open");
    notice("");
    renderRoom();
  };
  ws.onmessage = (e) => {
    let ev;
    try { ev = JSON.parse(e.data); } catch { return; }
    onChatEvent(ev.type, ev.data || {});
  };
  ws.onclose = (e) => {
    setChatState(`disconnected${e.code ? " (" + e.code + (e.reason ? " " + e.reason : "") + ")" : ""}`, "closed");
    if (chat.ws === ws) {
      chat.ws = null;
      chat.room = null;
      chat.members.clear();
      renderRoom();
    }
  };
}

function onChatEvent(type, data) {
  switch (type) {
    case "connection.established":
      chat.clientId = data.clientId;
      break;
    case "subscribed":
      chat.room = data.room;
      logLine(null, `you joined ${data.room}`);
      notice("");
      break;
    case "unsubscribed":
      if (chat.room === data.room) chat.room = null;
      chat.members.delete(data.room);
      logLine(null, `you left ${data.room}`);
      break;
    case "members": {
      const before = chat.members.get(data.room);
      chat.members.set(data.room, data.members);
      if (before && data.room === chat.room) announceChanges(before, data.members);
      break;
    }
    case "message":
      if (data.room === chat.room) logLine(data.from, data.text, data.client === chat.clientId);
      break;
    case "error":
      notice(data.message);
      break;
  }
  renderRoom();
}

// "bob joined" / "bob left" from two member lists of the current room.
function announceChanges(before, after) {
  const ids = (list) => new Set(list.map((m) => m.client));
  const was = ids(before), is = ids(after);
  for (const m of after) if (!was.has(m.client) && m.client !== chat.clientId) logLine(null, `${m.name} joined`);
  for (const m of before) if (!is.has(m.client) && m.client !== chat.clientId) logLine(null, `${m.name} left`);
}

$("connect-form").addEventListener("submit", (e) => {
  e.preventDefault();
  if (chat.ws) {
    chat.ws.close(1000, "bye");
    return;
  }
  const name = $("name").value.trim();
  if (name) connect(name);
});

$("room-form").addEventListener("submit", (e) => {
  e.preventDefault();
  const room = $("room").value.trim();
  if (!room || room === chat.room) return;
  if (chat.room) send({ type: "unsubscribe", room: chat.room });
  send({ type: "subscribe", room });
});

$("leave").addEventListener("click", () => {
  if (chat.room) send({ type: "unsubscribe", room: chat.room });
});

$("say-form").addEventListener("submit", (e) => {
  e.preventDefault();
  const text = $("text").value.trim();
  if (!text || !chat.room) return;
  send({ type: "say", room: chat.room, text });
  $("text").value = "";
});

// ----------------------------------------------------------- dashboard

const dash = {
  es: null,
  lastId: null,          // the last event id received, as a number
  lastUptime: null,      // server uptime (ms) in that event
  lastSeenAt: null,      // when it arrived (performance.now())
  resumeCutoff: null,    // server uptime before which events of a resumed stream are replays
  reopenTimer: null,
};

function setSseState(text, cls) {
  const el = $("sse-state");
  el.textContent = text;
  el.className = "state " + (cls || "");
  window.demo.state = text;
}

function openStream(resumeFrom) {
  const url = resumeFrom ? `/events?lastEventId=${encodeURIComponent(resumeFrom)}` : "/events";
  const es = new EventSource(url);
  dash.es = es;
  setSseState(resumeFrom ? `resuming after #${resumeFrom}` : "connecting");
  es.onopen = () => setSseState(resumeFrom ? `open, resumed after #${resumeFrom}` : "open", "open");
  // The browser reconnects by itself (with Last-Event-ID) when the stream breaks.
  es.onerror = () => setSseState(es.readyState === EventSource.CLOSED ? "closed" : "reconnecting", "closed");
  es.addEventListener("stats", onStats);
  es.addEventListener("sse-reset", (e) => {
    window.demo.resets += 1;
    flagGap(`reset: the server no longer holds what came after #${dash.lastId} (${e.data})`);
    dash.lastId = null;
  });
}

function onStats(e) {
  const id = Number(e.lastEventId);
  let figures;
  try { figures = JSON.parse(e.data); } catch { return; }
  const replayed = dash.resumeCutoff !== null && figures.uptime_ms < dash.resumeCutoff;
  if (dash.lastId !== null && id !== dash.lastId + 1) {
    window.demo.gaps.push({ after: dash.lastId, got: id });
    flagGap(id <= dash.lastId ? `#${id} again after #${dash.lastId}` : `gap: #${dash.lastId + 1} to #${id - 1} missing`);
  }
  dash.lastId = id;
  dash.lastUptime = figures.uptime_ms;
  dash.lastSeenAt = performance.now();
  window.demo.ids.push(id);
  if (replayed) window.demo.replayed.push(id);
  addId(id, replayed);
  renderFigures(figures);
  summarize();
}

function addId(id, replayed) {
  const li = document.createElement("li");
  li.className = "id " + (replayed ? "replayed" : "live");
  li.textContent = "#" + id;
  const ids = $("ids");
  ids.append(li);
  while (ids.children.length > 60) ids.firstChild.remove();
}

function flagGap(text) {
  const li = document.createElement("li");
  li.className = "id gap";
  li.textContent = text;
  $("ids").append(li);
  summarize();
}

function summarize() {
  const d = window.demo, el = $("id-summary");
  if (d.ids.length === 0) return;
  const first = d.ids[0], last = d.ids[d.ids.length - 1];
  if (d.gaps.length === 0 && d.resets === 0) {
    el.className = "ok";
    el.textContent = `${d.ids.length} events, #${first} to #${last}, no gap` +
      (d.resumes ? `; ${d.resumes} resume${d.resumes > 1 ? "s" : ""}, ${d.replayed.length} replayed` : "");
  } else {
    el.className = "bad";
    el.textContent = `${d.gaps.length} gap(s), ${d.resets} reset(s) in ${d.ids.length} events`;
  }
}

function bytes(n) {
  if (n === null || n === undefined) return "n/a";
  const mib = n / (1024 * 1024);
  return mib >= 10 ? `${mib.toFixed(0)} MiB` : `${mib.toFixed(1)} MiB`;
}

function duration(ms) {
  const s = Math.floor(ms / 1000);
  const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60);
  return h ? `${h}h ${m}m` : m ? `${m}m ${s % 60}s` : `${s}s`;
}

function renderFigures(f) {
  $("ws-connections").textContent = f.connections.ws;
  $("sse-connections").textContent = f.connections.sse;
  $("rooms").textContent = f.rooms.count;
  $("chat-rate").textContent = f.messages_per_second.chat;
  $("ws-rate").textContent = `${f.messages_per_second.ws_in} / ${f.messages_per_second.ws_out}`;
  $("sse-rate").textContent = f.messages_per_second.sse_out;
  $("drops").textContent = `${f.drops.ws_slow_closed + f.drops.ws_write_timeouts} / ${f.drops.sse_slow_dropped}`;
  $("memory").textContent = bytes(f.rss_bytes);
  $("uptime").textContent = duration(f.uptime_ms);
  $("top-rooms").textContent = f.rooms.top.length
    ? f.rooms.top.map((r) => `${r.room} (${r.members})`).join(", ")
    : "none";
}

// Drop: close the stream, wait, and reopen it from the last id received.
// Events the server published meanwhile come first (replayed), then live ones.
$("drop").addEventListener("click", () => {
  if (!dash.es || dash.reopenTimer !== null) return;
  dash.es.close();
  dash.es = null;
  const from = dash.lastId;
  setSseState(`dropped after #${from}, reconnecting in 3 s`, "closed");
  $("drop").disabled = true;
  dash.reopenTimer = setTimeout(() => {
    dash.reopenTimer = null;
    // The server's uptime now, from the last event and the time since: older events are replays.
    if (dash.lastUptime !== null) dash.resumeCutoff = dash.lastUptime + (performance.now() - dash.lastSeenAt);
    window.demo.resumes += 1;
    openStream(from === null ? null : String(from));
    $("drop").disabled = false;
  }, 3000);
});

openStream(null);
