// The API docs page: fetches openapi.json and asyncapi.json with the reader's
// credential and lists operations and channels. DOM built with textContent only.
"use strict";

const KEY = "relaygate-api-docs";
const METHODS = ["get", "put", "post", "delete", "options", "head", "patch", "trace"];

function el(tag, text, cls) {
  const node = document.createElement(tag);
  if (text !== undefined) node.textContent = text;
  if (cls) node.className = cls;
  return node;
}

function row(cells) {
  const tr = document.createElement("tr");
  for (const cell of cells) {
    const td = document.createElement("td");
    if (cell instanceof Node) td.appendChild(cell); else td.textContent = cell;
    tr.appendChild(td);
  }
  return tr;
}

function headers(credential) {
  const scheme = credential.kind === "apikey" ? "ApiKey " : "Bearer ";
  return { authorization: scheme + credential.secret, accept: "application/json" };
}

async function load(name, credential) {
  const response = await fetch(name, { headers: headers(credential), cache: "no-store" });
  const body = await response.json();
  if (!response.ok) throw new Error(`${name}: ${response.status} ${body.detail || body.title}`);
  return body;
}

function showOperations(doc) {
  const body = document.querySelector("#operations tbody");
  body.replaceChildren();
  for (const [path, item] of Object.entries(doc.paths || {})) {
    for (const method of METHODS) {
      const op = item[method];
      if (!op) continue;
      const security = (op.security || []).map((r) => Object.keys(r).join(" + ") || "none");
      const errors = Object.keys(op.responses || {}).filter((c) => /^[45]\d\d$/.test(c)).join(" ");
      const summary = el("span", op.summary || "");
      if (op.description) summary.appendChild(el("div", op.description, "note"));
      body.appendChild(row([el("span", method, "method"), el("code", path), summary,
        security.join(" or ") || "none", errors]));
    }
  }
}

function showChannels(doc) {
  const body = document.querySelector("#channels tbody");
  body.replaceChildren();
  const ops = Object.entries(doc.operations || {});
  for (const [id, channel] of Object.entries(doc.channels || {})) {
    const mine = ops.filter(([, op]) => op.channel && op.channel.$ref === `#/channels/${id}`)
      .map(([name, op]) => `${op.action} ${name}`);
    body.appendChild(row([id, el("code", channel.address || ""), channel.title || "",
      mine.join(", ")]));
  }
}

async function show(credential) {
  const status = document.getElementById("status");
  status.className = "";
  status.textContent = "Loading…";
  try {
    const [openapi, asyncapi] = await Promise.all([
      load("openapi.json", credential), load("asyncapi.json", credential)]);
    document.getElementById("title").textContent = openapi.info.title;
    showOperations(openapi);
    showChannels(asyncapi);
    status.textContent = `${openapi.info.title} ${openapi.info.version}`;
  } catch (error) {
    status.className = "error";
    status.textContent = error.message;
  }
}

document.addEventListener("DOMContentLoaded", () => {
  const form = document.getElementById("credential");
  const saved = sessionStorage.getItem(KEY);
  if (saved) {
    const credential = JSON.parse(saved);
    document.getElementById("kind").value = credential.kind;
    show(credential);
  }
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const credential = {
      kind: document.getElementById("kind").value,
      secret: document.getElementById("secret").value.trim(),
    };
    sessionStorage.setItem(KEY, JSON.stringify(credential));
    show(credential);
  });
});
