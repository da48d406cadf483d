// The API reference, rendered from /openapi.json with plain DOM calls (Swagger UI would need a
// CDN, and this service runs offline).
"use strict";

const TOKEN_KEY = "delivery_lake_token";
const $ = (id) => document.getElementById(id);

function el(name, attrs, ...children) {
  const node = document.createElement(name);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
  for (const c of children) node.append(c);
  return node;
}

function resolve(spec, schema) {
  let s = schema || {};
  for (let i = 0; s.$ref && i < 10; i++) {
    s = s.$ref.replace(/^#\//, "").split("/").reduce((o, k) => (o ? o[k] : undefined), spec) || {};
  }
  return s;
}

function typeOf(spec, schema) {
  const s = resolve(spec, schema);
  if (s.anyOf) return s.anyOf.map((x) => typeOf(spec, x)).join(" | ");
  if (s.enum) return s.enum.map((v) => JSON.stringify(v)).join(" | ");
  if (s.type === "array") return `${typeOf(spec, s.items)}[]`;
  if (s.type === "object" && s.additionalProperties) return `{string: ${typeOf(spec, s.additionalProperties)}}`;
  if (s.const !== undefined) return JSON.stringify(s.const);
  return (s.type || "any") + (s.format ? ` (${s.format})` : "");
}

function limits(spec, schema) {
  const s = resolve(spec, schema);
  const out = [];
  for (const k of ["minLength", "maxLength", "minItems", "maxItems", "minimum", "maximum", "default"]) {
    if (s[k] !== undefined && s[k] !== null) out.push(`${k}: ${JSON.stringify(s[k])}`);
  }
  return out.join(", ");
}

function schemaTable(spec, schema) {
  const s = resolve(spec, schema);
  if (!s.properties) return el("p", {}, el("code", {}, typeOf(spec, schema)));
  const required = new Set(s.required || []);
  const table = el("table", {}, el("tr", {}, el("th", {}, "field"), el("th", {}, "type"), el("th", {}, "required"), el("th", {}, "notes")));
  for (const [name, prop] of Object.entries(s.properties)) {
    const notes = [resolve(spec, prop).description || prop.description || "", limits(spec, prop)].filter(Boolean).join(" — ");
    table.append(el("tr", {}, el("td", {}, el("code", {}, name)), el("td", {}, typeOf(spec, prop)), el("td", {}, required.has(name) ? "yes" : ""), el("td", {}, notes)));
  }
  return table;
}

function render(spec) {
  $("api-title").textContent = `${spec.info.title} ${spec.info.version}`;
  $("api-description").textContent = spec.info.description || "";
  const box = $("endpoints");
  box.replaceChildren();
  for (const [path, ops] of Object.entries(spec.paths || {})) {
    for (const [method, op] of Object.entries(ops)) {
      const section = el("section", { class: "endpoint", id: `${method}-${path.replace(/\W+/g, "-")}` });
      section.append(el("h3", {}, el("span", { class: `method ${method}` }, method.toUpperCase()), path));
      if (op.summary) section.append(el("p", {}, op.summary));
      const body = op.requestBody && op.requestBody.content && op.requestBody.content["application/json"];
      if (body) {
        section.append(el("p", {}, el("strong", {}, "Body (JSON)")));
        section.append(schemaTable(spec, body.schema));
      }
      if (op.security && op.security.length) section.append(el("p", { class: "hint" }, "Needs Authorization: Bearer <token> when the service has a token."));
      const codes = Object.entries(op.responses || {}).map(([code, r]) => `${code} ${r.description || ""}`);
      if (codes.length) section.append(el("p", { class: "hint" }, "Responses: " + codes.join("; ")));
      box.append(section);
    }
  }
}

async function load() {
  $("error").hidden = true;
  const headers = {};
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (token) headers.Authorization = "Bearer " + token;
  let res;
  try {
    res = await fetch("/openapi.json", { headers });
  } catch (e) {
    $("error").textContent = "The service could not be reached.";
    $("error").hidden = false;
    return;
  }
  if (res.status === 401) {
    $("auth").hidden = false;
    return;
  }
  if (!res.ok) {
    $("error").textContent = `Could not load /openapi.json (HTTP ${res.status}).`;
    $("error").hidden = false;
    return;
  }
  render(await res.json());
}

document.addEventListener("DOMContentLoaded", () => {
  $("save-token").addEventListener("click", () => {
    const token = $("token").value.trim();
    if (token) sessionStorage.setItem(TOKEN_KEY, token);
    $("token").value = "";
    $("auth").hidden = true;
    load();
  });
  load();
});
