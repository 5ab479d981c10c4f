// zrpc web UI. Everything shown is put in the page as text (createElement,
// textContent): service names, tags and health output come from the
// registry, that is from anyone who may register, and are never parsed as
// HTML. The Content-Security-Policy forbids inline scripts as a second
// guard.
"use strict";

const TOKEN_KEY = "zrpc-acl-token";
const REFRESH_MS = 3000; // members, raft and blobs have no watch
const DEBOUNCE_MS = 300; // registry bursts refresh a view once
const RETRY_MS = 5000; // while the agent does not answer
const ANSWER_MS = 15000; // a request unanswered by then gets no answer

// el builds an element; children are nodes or strings (made text nodes).
function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null) continue;
    e.setAttribute(k, String(v));
  }
  for (const c of children.flat()) {
    if (c === undefined || c === null) continue;
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}

function headers() {
  const token = sessionStorage.getItem(TOKEN_KEY);
  return token ? { Authorization: "Bearer " + token } : {};
}

// errorOf is the message of a refused or failed request: the "error"
// of a JSON body, else the body's text (the HTTP endpoint's 401), else
// the status.
async function errorOf(resp) {
  const text = await resp.text();
  try {
    const body = JSON.parse(text);
    if (body && body.error) return body.error;
  } catch (e) { /* not JSON */ }
  return text.trim() || resp.status + " " + resp.statusText;
}

// refusal is the error of an answer that is not OK; a 401 says where
// the token goes.
async function refusal(resp) {
  let msg = await errorOf(resp);
  if (resp.status === 401) msg += ". Type a token into the ACL token field.";
  return new Error(msg);
}

// AgentDown is the failure of a request this agent did not answer: no
// connection to it (it is down, restarting, or out of reach) or no answer
// in time (it hangs). The page then says so and retries (agentDown).
class AgentDown extends Error {}

// unanswered is the AgentDown of a fetch that failed with err: the
// browser's own words ("Failed to fetch", "NetworkError when attempting
// to fetch resource", "Load failed") say no more than that.
function unanswered(err) {
  if (err && err.name === "TimeoutError") return new AgentDown("no answer within " + ANSWER_MS / 1000 + " s");
  return new AgentDown("no connection to " + location.host + " (" + String((err && err.message) || err) + ")");
}

// answer awaits an answer of the agent (a fetch, or the reading of its
// body), failing with AgentDown when none comes.
async function answer(promise) {
  let v;
  try {
    v = await promise;
  } catch (err) {
    if (err instanceof SyntaxError) throw err; // an answer, not JSON
    throw unanswered(err);
  }
  agentAnswers();
  return v;
}

async function api(path) {
  const resp = await answer(fetch("/ui/api/" + path, { headers: headers(), cache: "no-store", signal: AbortSignal.timeout(ANSWER_MS) }));
  if (!resp.ok) throw await refusal(resp);
  return answer(resp.json());
}

// down is why the agent does not answer, null while it does. While it is
// set a banner says so, the views and the header are asked again every
// RETRY_MS, and the first answer hides the banner and refreshes the view
// (what changed meanwhile is not replayed).
let down = null;
let retryTimer = null;

function agentDown(err) {
  down = err.message;
  const box = document.getElementById("down");
  box.textContent = "This agent does not answer: " + down + ". It may be restarting — the page retries every " + RETRY_MS / 1000 + " s.";
  box.hidden = false;
  showError(null); // what it said before no longer holds
  // A live stream of an agent that hangs would wait for ever, and still
  // read "live": follow starts it again.
  if (streamAbort && !streamAbort.signal.aborted) streamAbort.abort(err);
  if (!retryTimer) {
    retryTimer = setInterval(() => {
      showAgent();
      refresh();
    }, RETRY_MS);
  }
}

function agentAnswers() {
  if (down === null) return;
  down = null;
  document.getElementById("down").hidden = true;
  clearInterval(retryTimer);
  retryTimer = null;
  showAgent();
  refreshSoon();
}

function showError(err) {
  const box = document.getElementById("error");
  if (!err) {
    box.hidden = true;
    box.textContent = "";
    return;
  }
  box.hidden = false;
  box.textContent = String(err.message || err);
}

function health(h) {
  return el("span", { class: "health " + String(h || "unknown").replace(/[^a-z]/g, "") }, h || "unknown");
}

function table(columns, rows, empty) {
  if (rows.length === 0) return el("p", { class: "muted" }, empty);
  return el("table", {},
    el("thead", {}, el("tr", {}, columns.map((c) => el("th", { class: c.num ? "num" : null }, c.title)))),
    el("tbody", {}, rows.map((r) => el("tr", {}, columns.map((c) => el("td", { class: c.num ? "num" : null }, c.cell(r)))))));
}

function bytes(n) {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) {
    n /= 1024;
    i++;
  }
  return (i === 0 ? n : n.toFixed(1)) + " " + units[i];
}

function serviceLink(name) {
  return el("a", { href: "/ui/services/" + encodeURIComponent(name) }, name);
}

// Pages: each returns the nodes of its view.

async function servicesPage() {
  const data = await api("services");
  return [
    el("h1", {}, "Services"),
    table([
      { title: "Service", cell: (s) => serviceLink(s.name) },
      { title: "Instances", num: true, cell: (s) => s.instances },
      { title: "Passing", num: true, cell: (s) => el("span", { class: "health passing" }, s.passing) },
      { title: "Warning", num: true, cell: (s) => el("span", { class: "health warning" }, s.warning) },
      { title: "Critical", num: true, cell: (s) => el("span", { class: "health critical" }, s.critical) },
    ], data.services, "No services are registered."),
    el("p", { class: "muted" }, "Registry revision " + data.revision),
  ];
}

// afterQuery is the query asking a list's page after the one the
// location names ("" for the first page).
function afterQuery() {
  const after = new URLSearchParams(location.search).get("after");
  return after ? "?after=" + encodeURIComponent(after) : "";
}

// pages says which entries of a list a page shows, count of them, and
// links to the first and the next page (the agent answers at most a few
// hundred entries at a time); base is the view's path, noun what the
// entries are.
function pages(base, data, count, noun) {
  if (data.first === 0 && !data.next) return null;
  const shown = count
    ? noun + " " + (data.first + 1) + "–" + (data.first + count) + " of " + data.total
    : "No " + noun.toLowerCase() + " after this point of " + data.total;
  return el("p", { class: "pages" }, shown,
    data.first > 0 ? [" · ", el("a", { href: base }, "first page")] : null,
    data.next ? [" · ", el("a", { href: base + "?after=" + encodeURIComponent(data.next) }, "next page")] : null);
}

async function servicePage(name) {
  const data = await api("services/" + encodeURIComponent(name) + afterQuery());
  return [
    el("h1", {}, "Service ", el("span", { class: "service-name" }, data.service)),
    pages("/ui/services/" + encodeURIComponent(data.service), data, data.instances.length, "Instances"),
    table([
      { title: "Instance", cell: (i) => i.id },
      { title: "Address", cell: (i) => i.address },
      { title: "Zone", cell: (i) => i.zone },
      { title: "Version", cell: (i) => i.version },
      { title: "Weight", num: true, cell: (i) => i.weight },
      { title: "Tags", cell: (i) => i.tags.map((t) => el("span", { class: "tag" }, t)) },
      { title: "Health", cell: (i) => [health(i.health), i.health_output ? el("div", { class: "output" }, i.health_output) : null] },
      { title: "Check", cell: (i) => i.check },
      { title: "Agent", cell: (i) => i.node },
    ], data.instances, data.total ? "No instances on this page." : "No instances of this service are registered."),
    el("p", { class: "muted" }, "Registry revision " + data.revision),
  ];
}

// memberNotes says what else is worth knowing of a member: no Raft state
// yet, leaving, a clock off by a second or more (as zrpcctl members does).
function memberNotes(m) {
  const notes = [];
  if (m.no_raft_state) notes.push("no Raft state yet");
  if (m.leaving && (m.status === "alive" || m.status === "suspect")) notes.push("leaving");
  const off = m.clock_offset_seconds;
  if (off !== undefined && Math.abs(off) >= 1) notes.push("clock " + Math.abs(off).toFixed(1) + " s " + (off > 0 ? "ahead" : "behind"));
  return notes.length ? " (" + notes.join(", ") + ")" : "";
}

async function membersPage() {
  const data = await api("members");
  return [
    el("h1", {}, "Members"),
    table([
      { title: "Name", cell: (m) => m.name },
      { title: "Address", cell: (m) => m.address },
      { title: "gRPC", cell: (m) => m.grpc_address },
      { title: "Status", cell: (m) => [health(m.status), memberNotes(m)] },
      { title: "Shards", cell: (m) => [m.shards_full ? "full" : "", m.leaving && m.status === "alive" ? " handing off (leaving)" : ""].join("").trim() },
      { title: "Role", cell: (m) => m.role },
      { title: "Zone", cell: (m) => m.zone },
      { title: "Build", cell: (m) => m.build },
    ], data.members, "This agent knows no members yet."),
  ];
}

async function raftPage() {
  const data = await api("raft");
  return [
    el("h1", {}, "Raft"),
    el("dl", { class: "facts" },
      el("dt", {}, "Leader"), el("dd", { id: "raft-leader" }, data.leader || "none known"),
      el("dt", {}, "Term"), el("dd", {}, data.term),
      el("dt", {}, "This agent"), el("dd", {}, data.state),
      el("dt", {}, "Commit index"), el("dd", {}, data.commit_index)),
    el("h2", {}, "Peers"),
    table([
      { title: "ID", cell: (p) => p.id },
      { title: "Address", cell: (p) => p.address },
      { title: "Suffrage", cell: (p) => p.suffrage },
      { title: "Leader", cell: (p) => (p.leader ? "leader" : "") },
      { title: "Last index", num: true, cell: (p) => (p.last_index ? p.last_index : "?") },
      { title: "Lag", num: true, cell: (p) => (p.unreachable ? "unreachable" : p.lag < 0 ? "no answer" : p.lag) },
    ], data.peers, "No Raft configuration yet."),
  ];
}

// MAX_BLOB_REPAIRS bounds the blobs whose own repair state one refresh
// asks for (each is a question to the leader).
const MAX_BLOB_REPAIRS = 20;

// blobRepairs asks the leader about each blob that is not healthy: how
// many of its shards are reported corrupt and not yet rewritten.
async function blobRepairs(blobs) {
  const out = new Map();
  const sick = blobs.filter((b) => b.health !== "healthy").slice(0, MAX_BLOB_REPAIRS);
  await Promise.all(sick.map(async (b) => {
    try {
      out.set(b.name, await api("repair?blob=" + encodeURIComponent(b.name)));
    } catch (err) {
      out.set(b.name, { error: err.message });
    }
  }));
  return out;
}

function blobRepair(b, repairs) {
  if (b.health === "healthy") return "none needed";
  const r = repairs.get(b.name);
  if (!r) return "not asked (too many unhealthy blobs)";
  if (r.error) return "unknown: " + r.error;
  return "missing shards queued by " + r.leader + "; " + r.corrupt + " reported corrupt or lost";
}

async function blobsPage() {
  const data = await api("blobs" + afterQuery());
  const repairs = await blobRepairs(data.blobs);
  const nodes = [
    el("h1", {}, "Blobs"),
    pages("/ui/blobs", data, data.blobs.length, "Blobs"),
    table([
      { title: "Name", cell: (b) => b.name },
      { title: "ID", cell: (b) => b.id },
      { title: "Size", num: true, cell: (b) => bytes(b.size) },
      { title: "Shards", cell: (b) => (b.inline ? "inline" : b.data_shards + "+" + b.parity_shards) },
      { title: "Health", cell: (b) => health(b.health) },
      { title: "Repair", cell: (b) => blobRepair(b, repairs) },
      { title: "Created", cell: (b) => b.created },
    ], data.blobs, data.total ? "No blobs on this page." : "No blobs are stored."),
    el("h2", {}, "Repair"),
  ];
  try {
    const r = await api("repair");
    nodes.push(el("dl", { class: "facts", id: "repair" },
      el("dt", {}, "Run by"), el("dd", {}, r.leader),
      el("dt", {}, "Queued"), el("dd", {}, r.queued),
      el("dt", {}, "In progress"), el("dd", {}, r.in_progress),
      el("dt", {}, "Waiting"), el("dd", {}, r.waiting_for_agent ? `${r.waiting} (${r.waiting_for_agent} for an agent without a shard of their block)` : r.waiting),
      el("dt", {}, "Retrying"), el("dd", {}, r.retrying),
      el("dt", {}, "Rebuilt"), el("dd", {}, r.rebuilt_shards + " shards, " + bytes(r.rebuilt_bytes)),
      el("dt", {}, "Failed"), el("dd", {}, r.failed),
      el("dt", {}, "Last error"), el("dd", {}, r.last_error || "none"),
      el("dt", {}, "Last scan"), el("dd", {}, r.last_scan || "not yet")));
  } catch (err) {
    nodes.push(el("p", { class: "muted" }, "Repair status unavailable: " + err.message));
  }
  return nodes;
}

// route maps the location to a page and what refreshes it.
function route() {
  const path = location.pathname.replace(/\/+$/, "");
  const svc = path.match(/^\/ui\/services\/(.+)$/);
  if (svc) {
    const name = decodeURIComponent(svc[1]);
    return { nav: "services", title: name, render: () => servicePage(name), onChange: (c) => c.reset || c.services.includes(name) };
  }
  switch (path) {
    case "/ui/members":
      return { nav: "members", title: "Members", render: membersPage, poll: true };
    case "/ui/raft":
      return { nav: "raft", title: "Raft", render: raftPage, poll: true };
    case "/ui/blobs":
      return { nav: "blobs", title: "Blobs", render: blobsPage, poll: true };
    default:
      return { nav: "services", title: "Services", render: servicesPage, onChange: () => true };
  }
}

const page = route();
let rendering = false;
let rendered = false;
let again = false;

// refresh renders the page again; calls while it runs coalesce into one
// more run.
async function refresh() {
  if (rendering) {
    again = true;
    return;
  }
  rendering = true;
  try {
    const nodes = await page.render();
    document.getElementById("view").replaceChildren(...nodes.filter((n) => n));
    rendered = true;
    showError(null);
  } catch (err) {
    // A view shown before stays, under the error or the banner.
    if (err instanceof AgentDown) agentDown(err);
    else showError(err);
    if (!rendered) document.getElementById("view").replaceChildren();
  } finally {
    rendering = false;
  }
  if (again) {
    again = false;
    refresh();
  }
}

let pending = null;
function refreshSoon() {
  if (pending) return;
  pending = setTimeout(() => {
    pending = null;
    refresh();
  }, DEBOUNCE_MS);
}

async function showAgent() {
  try {
    const a = await api("agent");
    let text = "agent " + a.name + " (" + a.raft_state + ")";
    if (a.leader) text += ", leader " + a.leader;
    if (a.raft_stopped) text += "; Raft stopped: " + a.raft_stopped;
    else if (a.cut_off) text += "; cut off from the leader: " + a.cut_off;
    document.getElementById("agent").textContent = text;
  } catch (err) {
    document.getElementById("agent").textContent = "";
    if (err instanceof AgentDown) agentDown(err);
  }
}

function setLive(on, text, why) {
  const live = document.getElementById("live");
  live.textContent = text;
  live.className = on ? "live" : "live off";
  if (why) live.setAttribute("title", why);
  else live.removeAttribute("title");
}

// follow reads the live stream (Server-Sent Events) with fetch, which,
// unlike EventSource, can send the ACL token; it reconnects when the
// stream ends and refreshes the view on every registry event that
// concerns it.
//
// The stream is aborted when the page is left: a browser may keep a left
// page (back-forward cache) and with it its connection, and with HTTP/1.1
// a few such connections take all a browser allows to one agent, so that
// the next page's requests wait.
let streamAbort = null;

async function follow() {
  for (;;) {
    try {
      const abort = new AbortController();
      streamAbort = abort;
      let resp;
      try {
        resp = await fetch("/ui/api/events", { headers: headers(), cache: "no-store", signal: abort.signal });
      } catch (err) {
        throw abort.signal.aborted ? err : unanswered(err);
      }
      agentAnswers();
      if (!resp.ok) throw await refusal(resp);
      const reader = resp.body.getReader();
      const decoder = new TextDecoder();
      let buf = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buf += decoder.decode(value, { stream: true });
        let end;
        while ((end = buf.indexOf("\n\n")) >= 0) {
          handleEvent(buf.slice(0, end));
          buf = buf.slice(end + 2);
        }
      }
      setLive(false, "reconnecting");
    } catch (err) {
      if (err instanceof AgentDown) agentDown(err);
      setLive(false, "not live", err.message);
    }
    await new Promise((r) => setTimeout(r, down === null ? 2000 : RETRY_MS));
  }
}

function handleEvent(block) {
  let name = "message";
  let data = "";
  for (const line of block.split("\n")) {
    if (line.startsWith("event:")) name = line.slice(6).trim();
    else if (line.startsWith("data:")) data += line.slice(5).trim();
  }
  const change = data ? JSON.parse(data) : {};
  if (name === "hello") {
    setLive(true, "live");
    // Changes made while the stream was down are not replayed: catch up.
    refreshSoon();
  } else if (name === "registry" && page.onChange && page.onChange(change)) {
    refreshSoon();
  }
}

function init() {
  document.title = "zrpc · " + page.title;
  const nav = document.getElementById("nav-" + page.nav);
  if (nav) nav.classList.add("active");
  const input = document.getElementById("token");
  input.value = sessionStorage.getItem(TOKEN_KEY) || "";
  document.getElementById("token-save").addEventListener("click", () => {
    const v = input.value.trim();
    if (v) sessionStorage.setItem(TOKEN_KEY, v);
    else sessionStorage.removeItem(TOKEN_KEY);
    location.reload();
  });
  showAgent();
  refresh();
  // While the agent does not answer, agentDown's timer asks instead.
  if (page.poll) {
    setInterval(() => {
      if (down === null) refresh();
    }, REFRESH_MS);
  }
  setInterval(() => {
    if (down === null) showAgent();
  }, REFRESH_MS * 2);
  window.addEventListener("pagehide", () => {
    if (streamAbort) streamAbort.abort();
  });
  window.addEventListener("pageshow", (e) => {
    if (e.persisted) refresh(); // back from the cache; follow reconnects
  });
  follow();
}

init();
