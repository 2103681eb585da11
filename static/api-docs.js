// /api/docs: render the OpenAPI document (/api/openapi.json) as a readable page, with no
// other code or style from anywhere else. Everything is built as DOM nodes with textContent,
// so nothing in the document is ever parsed as HTML.
(function () {
  "use strict";
  var root = document.getElementById("api-docs");
  if (!root) return;

  // Add children (nodes, or strings as text) to a node.
  function append(node, children) {
    (children || []).forEach(function (child) {
      node.appendChild(typeof child === "string" ? document.createTextNode(child) : child);
    });
    return node;
  }

  function el(tag, attrs, children) {
    var node = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (name) { node.setAttribute(name, attrs[name]); });
    return append(node, children);
  }

  // The small Markdown the document uses: paragraphs, "- " lists, `code` and **bold**.
  function inline(text) {
    var nodes = [];
    text.split(/(`[^`]*`|\*\*[^*]*\*\*)/).forEach(function (part) {
      if (!part) return;
      if (part.charAt(0) === "`") nodes.push(el("code", {}, [part.slice(1, -1)]));
      else if (part.slice(0, 2) === "**") nodes.push(el("strong", {}, [part.slice(2, -2)]));
      else nodes.push(document.createTextNode(part));
    });
    return nodes;
  }

  function prose(text) {
    var box = el("div", { "class": "api-prose" });
    (text || "").split(/\n\s*\n/).forEach(function (block) {
      var lines = block.trim().split("\n");
      if (!lines[0]) return;
      if (lines[0].indexOf("- ") === 0) {
        var list = el("ul");
        var items = block.trim().split(/\n- /);
        items.forEach(function (item) {
          list.appendChild(el("li", {}, inline(item.replace(/^- /, "").replace(/\s*\n\s*/g, " "))));
        });
        box.appendChild(list);
      } else {
        box.appendChild(el("p", {}, inline(lines.join(" "))));
      }
    });
    return box;
  }

  function refName(schema) {
    return schema && schema.$ref ? schema.$ref.split("/").pop() : null;
  }

  function typeNodes(schema) {
    if (!schema) return ["any"];
    var name = refName(schema);
    if (name) return [el("a", { href: "#schema-" + name }, [name])];
    if (schema.oneOf) {
      var nodes = [];
      schema.oneOf.forEach(function (choice, index) {
        if (index) nodes.push(" or ");
        nodes = nodes.concat(typeNodes(choice));
      });
      return nodes;
    }
    if (schema.const !== undefined) return [el("code", {}, [JSON.stringify(schema.const)])];
    if (schema.enum) return [el("code", {}, [schema.enum.map(function (v) { return JSON.stringify(v); }).join(" | ")])];
    if (schema.type === "array") {
      if (schema.prefixItems) return ["[" + schema.prefixItems.map(function (s) { return s.type || "?"; }).join(", ") + "]"];
      return ["array of "].concat(typeNodes(schema.items));
    }
    if (schema.contentSchema) return ["JSON text: "].concat(typeNodes(schema.contentSchema));
    return [String(schema.type || "any")];
  }

  function propertiesTable(schema) {
    var required = schema.required || [];
    var table = el("table", { "class": "calibration api-fields" }, [
      el("thead", {}, [el("tr", {}, [el("th", {}, ["name"]), el("th", {}, ["type"]), el("th", {}, ["notes"])])]),
    ]);
    var body = el("tbody");
    Object.keys(schema.properties || {}).forEach(function (name) {
      var prop = schema.properties[name];
      var notes = [];
      if (required.indexOf(name) >= 0) notes.push("required");
      if (prop.default !== undefined) notes.push("default " + JSON.stringify(prop.default));
      if (prop.minimum !== undefined) notes.push("≥ " + prop.minimum);
      if (prop.exclusiveMinimum !== undefined) notes.push("> " + prop.exclusiveMinimum);
      if (prop.maximum !== undefined) notes.push("≤ " + prop.maximum);
      var cell = el("td", {}, notes.length ? [notes.join(", ") + (prop.description ? ". " : "")] : []);
      if (prop.description) append(cell, inline(prop.description));
      body.appendChild(el("tr", {}, [el("td", {}, [el("code", {}, [name])]), el("td", {}, typeNodes(prop)), cell]));
    });
    table.appendChild(body);
    return table;
  }

  function operationSection(path, methods, operation) {
    var section = el("section", { "class": "job api-endpoint", id: operation.operationId });
    section.appendChild(el("h3", {}, [
      el("span", { "class": "api-methods" }, [methods.join(" ")]), " ", el("code", {}, [path]),
    ]));
    section.appendChild(el("p", {}, [operation.summary || ""]));
    if (operation.description) section.appendChild(prose(operation.description));
    var params = operation.parameters || [];
    if (params.length) {
      section.appendChild(el("h4", {}, ["Parameters"]));
      var list = el("ul");
      params.forEach(function (p) {
        var item = el("li", {}, [el("code", {}, [p.name]), " (" + p.in + (p.required ? ", required" : "") + "): "]);
        append(item, typeNodes(p.schema));
        if (p.description) item.appendChild(document.createTextNode(" — " + p.description));
        list.appendChild(item);
      });
      section.appendChild(list);
    }
    var body = operation.requestBody;
    if (body) {
      var form = body.content["multipart/form-data"] || body.content["application/x-www-form-urlencoded"];
      section.appendChild(el("h4", {}, ["Form fields"]));
      section.appendChild(propertiesTable(form.schema));
      var json = form.schema.properties["request-json"];
      var argsName = json && refName(json.contentSchema);
      if (argsName) {
        section.appendChild(el("h4", {}, [el("code", {}, ["request-json"]), " (" + argsName + ")"]));
        section.appendChild(propertiesTable(spec.components.schemas[argsName]));
      }
    }
    section.appendChild(el("h4", {}, ["Answers"]));
    var answers = el("ul");
    Object.keys(operation.responses).forEach(function (code) {
      var response = operation.responses[code];
      if (response.$ref) response = spec.components.responses[refName(response)];
      var item = el("li", {}, [el("strong", {}, [code]), " "]);
      append(item, inline(response.description || ""));
      Object.keys(response.content || {}).forEach(function (type) {
        append(item, [" (" + type + ": "].concat(typeNodes(response.content[type].schema), [")"]));
      });
      answers.appendChild(item);
    });
    section.appendChild(answers);
    return section;
  }

  var spec = null;

  function render(document_) {
    spec = document_;
    root.textContent = "";
    root.appendChild(el("h2", {}, [spec.info.title + " (OpenAPI " + spec.openapi + ")"]));
    root.appendChild(prose(spec.info.description));
    (spec.tags || []).forEach(function (tag) {
      root.appendChild(el("h2", { id: "tag-" + tag.name.replace(/\W+/g, "-") }, [tag.name]));
      if (tag.description) root.appendChild(el("p", { "class": "meta" }, [tag.description]));
      Object.keys(spec.paths).forEach(function (path) {
        var item = spec.paths[path];
        var methods = Object.keys(item).filter(function (m) { return item[m].tags && item[m].tags.indexOf(tag.name) >= 0; });
        if (!methods.length) return;
        var main = item.post || item[methods[0]];  // POST carries the form fields
        root.appendChild(operationSection(path, methods.map(function (m) { return m.toUpperCase(); }), main));
      });
    });
    root.appendChild(el("h2", { id: "schemas" }, ["Schemas"]));
    Object.keys(spec.components.schemas).forEach(function (name) {
      var schema = spec.components.schemas[name];
      var section = el("section", { "class": "job api-schema", id: "schema-" + name }, [el("h3", {}, [name])]);
      if (schema.description) section.appendChild(prose(schema.description));
      section.appendChild(propertiesTable(schema));
      root.appendChild(section);
    });
  }

  fetch(root.getAttribute("data-spec"), { headers: { Accept: "application/json" } })
    .then(function (response) {
      if (!response.ok) throw new Error("HTTP " + response.status);
      return response.json();
    })
    .then(render)
    .catch(function (error) {
      root.textContent = "";
      root.appendChild(el("p", { "class": "error" }, ["The API description could not be loaded: " + error.message]));
    });
})();
