// The vault's web page: folders, upload, download, delete, node status.
// Plain DOM, no framework. Every API request carries the session's CSRF
// token in X-CSRF-Token (the cookie alone opens only this page's shell);
// download links carry, instead, the file's key from the listing.
"use strict";

const $ = (id) => document.getElementById(id);
const KEY = "vault-csrf";

// The CSRF token: the token visit redirects to /#k=TOKEN (a fragment is
// never sent to a server). Kept in sessionStorage (this tab only), and
// the fragment leaves the address bar.
const csrf = (() => {
  const m = /^#k=([0-9a-f]{32,128})$/.exec(location.hash);
  if (m) {
    try { sessionStorage.setItem(KEY, m[1]); } catch (_) { /* storage off: this load only */ }
    history.replaceState(null, "", location.pathname);
    return m[1];
  }
  try { return sessionStorage.getItem(KEY); } catch (_) { return null; }
})();

// No token, or the server refused it: say how to get a session.
function noSession() {
  try { sessionStorage.removeItem(KEY); } catch (_) { /* nothing kept */ }
  $("no-session").hidden = false;
  for (const id of ["nodes", "crumbs", "error", "actions", "uploads", "listing", "truncated", "empty"]) {
    $(id).hidden = true;
  }
}

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") e.className = v; else e.setAttribute(k, v);
  }
  for (const c of children) e.append(c);
  return e;
}

// The folder shown: "" (the top) or "photos/2024", kept in the URL's hash.
function current() {
  try { return decodeURIComponent(location.hash.slice(1)); } catch (_) { return ""; }
}
function go(folder) { location.hash = folder ? encodeURIComponent(folder) : ""; }
function base(name) { return name.slice(name.lastIndexOf("/") + 1); }

function showError(msg) {
  if (!$("no-session").hidden) return; // that message says it all
  const p = $("error");
  p.textContent = msg || "";
  p.hidden = !msg;
}

async function api(method, path, params) {
  const q = new URLSearchParams(params || {}).toString();
  const headers = { "X-CSRF-Token": csrf };
  const r = await fetch(path + (q ? "?" + q : ""), { method, headers, credentials: "same-origin" });
  if (r.status === 403) noSession();
  let body = null;
  try { body = await r.json(); } catch (_) { /* not JSON */ }
  if (!r.ok) {
    const why = body && body.error ? body.error : r.status + " " + r.statusText;
    const err = new Error(why);
    err.status = r.status;
    throw err;
  }
  return body;
}

function size(n) {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return (i ? n.toFixed(1) : String(n)) + " " + units[i];
}
function when(ms) { return ms ? new Date(ms).toLocaleString() : ""; }

function crumbs(folder) {
  const nav = $("crumbs");
  nav.replaceChildren();
  const top = el("a", { href: "#" }, "vault");
  nav.append(top);
  let path = "";
  for (const part of folder ? folder.split("/") : []) {
    path = path ? path + "/" + part : part;
    nav.append(" / ", el("a", { href: "#" + encodeURIComponent(path) }, part));
  }
}

async function load() {
  const folder = current();
  crumbs(folder);
  let data;
  try {
    data = await api("GET", "/api/list", { prefix: folder });
  } catch (e) {
    if (e.status === 404 && folder) {
      // The folder went away (its last file deleted): show its parent.
      const up = folder.includes("/") ? folder.slice(0, folder.lastIndexOf("/")) : "";
      go(up);
      return;
    }
    showError("Cannot list the folder: " + e.message);
    return;
  }
  showError("");
  const body = $("entries");
  body.replaceChildren();
  for (const f of data.folders) {
    const link = el("a", { href: "#" + encodeURIComponent(f), class: "folder" }, base(f));
    const del = el("button", { type: "button", class: "delete-folder" }, "remove");
    del.addEventListener("click", () => removeFolder(f));
    body.append(el("tr", { class: "folder" }, el("td", {}, link), el("td"), el("td"), el("td", {}, del)));
  }
  for (const f of data.files) {
    // A link cannot send a header: the file's download key goes in k=.
    const href = "/api/file?" + new URLSearchParams({ name: f.name, k: f.k }).toString();
    const link = el("a", { href, class: "file" }, base(f.name));
    const del = el("button", { type: "button", class: "delete", "data-name": f.name }, "delete");
    del.addEventListener("click", () => removeFile(f.name));
    body.append(el("tr", { class: "file" },
      el("td", {}, link),
      el("td", { class: "num" }, size(f.size)),
      el("td", {}, when(f.mtime_ms)),
      el("td", {}, del)));
  }
  $("truncated").hidden = !data.truncated;
  $("empty").hidden = data.folders.length + data.files.length > 0;
}

async function removeFile(name) {
  if (!confirm("Delete " + name + " from the vault?")) return;
  try {
    await api("DELETE", "/api/file", { name });
  } catch (e) {
    showError("Cannot delete " + name + ": " + e.message);
    return;
  }
  await load();
}

async function removeFolder(name) {
  if (!confirm("Remove the empty folder " + name + "?")) return;
  try {
    await api("DELETE", "/api/folder", { name });
  } catch (e) {
    showError("Cannot remove " + name + ": " + e.message);
    return;
  }
  await load();
}

async function newFolder() {
  const n = prompt("Name of the new folder:");
  if (!n) return;
  const folder = current();
  const name = folder ? folder + "/" + n : n;
  try {
    await api("POST", "/api/folder", { name });
  } catch (e) {
    showError("Cannot make " + name + ": " + e.message);
    return;
  }
  go(name);
}

// One file: a PUT whose body is the file (the browser streams it), with
// the upload's progress shown.
function uploadOne(file, folder) {
  const name = folder ? folder + "/" + file.name : file.name;
  const bar = el("progress", { max: "1", value: "0" });
  const state = el("span", {}, "waiting");
  const row = el("li", { class: "upload" }, base(name), bar, state);
  $("uploads").append(row);
  return new Promise((resolve) => {
    const xhr = new XMLHttpRequest();
    xhr.open("PUT", "/api/file?" + new URLSearchParams({ name }).toString());
    xhr.setRequestHeader("X-CSRF-Token", csrf);
    xhr.setRequestHeader("Content-Type", file.type || "application/octet-stream");
    xhr.upload.addEventListener("progress", (ev) => {
      if (ev.lengthComputable && ev.total > 0) {
        bar.value = ev.loaded / ev.total;
        state.textContent = size(ev.loaded) + " of " + size(ev.total);
      }
    });
    xhr.upload.addEventListener("load", () => { state.textContent = "storing…"; });
    xhr.addEventListener("load", () => {
      if (xhr.status === 403) noSession();
      if (xhr.status >= 200 && xhr.status < 300) {
        bar.value = 1;
        state.textContent = "done";
        row.classList.add("done");
      } else {
        let why = xhr.status + " " + xhr.statusText;
        try { why = JSON.parse(xhr.responseText).error || why; } catch (_) { /* not JSON */ }
        state.textContent = "failed: " + why;
        row.classList.add("failed");
      }
      resolve();
    });
    xhr.addEventListener("error", () => {
      state.textContent = "failed: the connection broke";
      row.classList.add("failed");
      resolve();
    });
    state.textContent = "uploading";
    xhr.send(file);
  });
}

async function upload() {
  const input = $("files");
  const files = Array.from(input.files);
  input.value = "";
  const folder = current();
  // One at a time: each is spooled, then stored on all four nodes.
  for (const f of files) {
    await uploadOne(f, folder);
    if (current() === folder) await load();
  }
}

async function status() {
  const ul = $("status");
  let data;
  try {
    data = await api("GET", "/api/status");
  } catch (e) {
    ul.replaceChildren(el("li", { class: "down" }, "unknown: " + e.message));
    return;
  }
  ul.replaceChildren(...data.nodes.map((n) => {
    const li = el("li", { class: n.up ? "up" : "down", "data-node": n.name },
      n.name + ": " + (n.up ? "up" : "down"));
    if (!n.up && n.error) li.title = n.error;
    return li;
  }));
}

if (!csrf) {
  noSession();
} else {
  window.addEventListener("hashchange", load);
  $("files").addEventListener("change", upload);
  $("new-folder").addEventListener("click", newFolder);
  $("refresh-status").addEventListener("click", status);
  load();
  status();
  setInterval(status, 30000);
}
