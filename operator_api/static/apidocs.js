// The operator API's documentation, rendered from the OpenAPI document inlined in the
// page (operator_api/apidocs.py). Plain JavaScript, no library, nothing from outside.
"use strict";

(function () {
  const spec = JSON.parse(document.getElementById("openapi").textContent);
  const root = document.getElementById("docs");
  let token = "";

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === "class") node.className = v;
      else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
      else node.setAttribute(k, v);
    }
    for (const c of children) {
      if (c === null || c === undefined) continue;
      node.append(c instanceof Node ? c : String(c));
    }
    return node;
  }

  function resolve(schema) {
    if (schema && schema.$ref) {
      const name = schema.$ref.split("/").pop();
      return { name, schema: (spec.components.schemas || {})[name] || {} };
    }
    return { name: null, schema: schema || {} };
  }

  function typeOf(schema) {
    const { name, schema: s } = resolve(schema);
    if (name) return name;
    if (s.anyOf) return s.anyOf.map(typeOf).join(" | ");
    if (s.type === "array") return typeOf(s.items) + "[]";
    if (s.enum) return s.enum.map((v) => JSON.stringify(v)).join(" | ");
    return (s.type || "any") + (s.format ? " (" + s.format + ")" : "");
  }

  function schemaTable(schema) {
    const { schema: s } = resolve(schema);
    if (!s.properties) return el("code", {}, typeOf(schema));
    const required = new Set(s.required || []);
    const rows = Object.entries(s.properties).map(([name, p]) =>
      el("tr", {}, el("td", {}, el("code", {}, name), required.has(name) ? " *" : ""),
        el("td", {}, typeOf(p)), el("td", {}, p.description || p.title || "")));
    return el("table", {}, el("tr", {}, el("th", {}, "field"), el("th", {}, "type"),
      el("th", {}, "description")), ...rows);
  }

  function tryIt(method, path, params) {
    const inputs = {};
    const out = el("pre", { class: "out" });
    const fields = params.map((p) => {
      const input = el("input", { placeholder: p.name + (p.required ? " *" : "") });
      inputs[p.name] = [p, input];
      return el("label", {}, p.in + " " + p.name + " ", input);
    });
    const body = ["post", "put", "patch"].includes(method) ?
      el("textarea", { rows: "3", placeholder: "JSON body" }) : null;
    async function send() {
      let url = path;
      const query = new URLSearchParams();
      for (const [name, [p, input]] of Object.entries(inputs)) {
        if (!input.value) continue;
        if (p.in === "path") url = url.replace("{" + name + "}", encodeURIComponent(input.value));
        else if (p.in === "query") query.append(name, input.value);
      }
      const qs = query.toString();
      const headers = { Authorization: "Bearer " + token };
      if (body && body.value) headers["Content-Type"] = "application/json";
      out.textContent = "…";
      try {
        const res = await fetch(url + (qs ? "?" + qs : ""), {
          method: method.toUpperCase(), headers, body: body && body.value ? body.value : undefined,
        });
        const text = await res.text();
        let shown = text;
        try { shown = JSON.stringify(JSON.parse(text), null, 2); } catch (e) { /* not JSON */ }
        out.textContent = res.status + " " + res.statusText + "\n" + shown;
      } catch (e) {
        out.textContent = String(e);
      }
    }
    return el("div", { class: "try" }, ...fields, body,
      el("button", { onclick: send, type: "button" }, "Send"), out);
  }

  function operation(path, method, op) {
    const params = op.parameters || [];
    const table = params.length ? el("table", {},
      el("tr", {}, el("th", {}, "parameter"), el("th", {}, "in"), el("th", {}, "type"),
        el("th", {}, "description")),
      ...params.map((p) => el("tr", {}, el("td", {}, el("code", {}, p.name), p.required ? " *" : ""),
        el("td", {}, p.in), el("td", {}, typeOf(p.schema)),
        el("td", {}, p.description || (p.schema && p.schema.description) || "")))) : null;
    const reqBody = op.requestBody && op.requestBody.content &&
      op.requestBody.content["application/json"];
    const responses = Object.entries(op.responses || {}).map(([code, r]) => {
      const content = r.content && r.content["application/json"];
      return el("div", { class: "resp" }, el("b", {}, code + " "), r.description || "",
        content ? schemaTable(content.schema) : null);
    });
    return el("details", { class: "op", id: method + path },
      el("summary", {}, el("span", { class: "method " + method }, method.toUpperCase()),
        el("code", {}, path), " ", op.summary || ""),
      op.description ? el("p", { class: "desc" }, op.description) : null,
      table,
      reqBody ? el("div", {}, el("h4", {}, "Request body"), schemaTable(reqBody.schema)) : null,
      el("h4", {}, "Responses"), ...responses,
      tryIt(method, path, params));
  }

  const tokenInput = el("input", { type: "password", placeholder: "Bearer token", id: "token" });
  tokenInput.addEventListener("input", () => { token = tokenInput.value.trim(); });
  const byTag = {};
  for (const [path, ops] of Object.entries(spec.paths || {})) {
    for (const [method, op] of Object.entries(ops)) {
      const tag = (op.tags && op.tags[0]) || "other";
      (byTag[tag] = byTag[tag] || []).push(operation(path, method, op));
    }
  }
  const schemas = Object.entries((spec.components && spec.components.schemas) || {}).map(
    ([name, s]) => el("details", { class: "op", id: "schema-" + name },
      el("summary", {}, el("code", {}, name)), schemaTable({ $ref: "#/components/schemas/" + name })));
  root.replaceChildren(
    el("h1", {}, spec.info.title, " ", el("small", {}, "v" + spec.info.version)),
    el("p", {}, spec.info.description || ""),
    el("p", {}, el("a", { href: "/openapi.json" }, "openapi.json"), " · token: ", tokenInput),
    ...Object.entries(byTag).flatMap(([tag, ops]) => [el("h2", {}, tag), ...ops]),
    el("h2", {}, "Schemas"), ...schemas);
  document.body.dataset.ready = "1";
})();
