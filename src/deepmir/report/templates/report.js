// deepmir subject report: lesion cards drawn page by page from the JSON block,
// rater mode (confirm / reject / relabel / add) and the ratings' download.
(function () {
  "use strict";
  var DATA = JSON.parse(document.getElementById("deepmir-data").textContent);
  var probe = document.createElement("div");
  probe.innerHTML = "<svg></svg>";
  var SVG = probe.firstChild.namespaceURI; // the SVG namespace, without a URL in the page
  var TILE_SCALE = 3.6; // px per mm on lesion tiles
  var byId = {};
  DATA.lesions.forEach(function (l) { byId[l.lesion_id] = l; });
  var state = load();
  var page = 0;
  var adding = false;

  function load() {
    var empty = { rater: "", ratings: {}, added: [] };
    try {
      var saved = JSON.parse(window.localStorage.getItem(DATA.storageKey) || "null");
      return saved && saved.ratings ? saved : empty;
    } catch (e) {
      return empty;
    }
  }
  function save() {
    try { window.localStorage.setItem(DATA.storageKey, JSON.stringify(state)); } catch (e) { /* file:// without storage */ }
    refresh();
  }

  function el(tag, attrs, children) {
    var node = tag.indexOf("svg:") === 0 ? document.createElementNS(SVG, tag.slice(4)) : document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (k) {
      if (k === "text") node.textContent = attrs[k];
      else node.setAttribute(k, attrs[k]);
    });
    (children || []).forEach(function (c) { if (c) node.appendChild(c); });
    return node;
  }

  // a tile scaled to its size in mm, its overlay in mm; marked: crosshair, letters, scale bar
  function tile(png, g, marked, colour) {
    var svg = el("svg:svg", { viewBox: "0 0 " + g.w + " " + g.h, preserveAspectRatio: "none" });
    if (marked) {
      var gap = 2.2, arm = 4.5, width = 0.55;
      [[-1, 0], [1, 0], [0, -1], [0, 1]].forEach(function (d) {
        svg.appendChild(el("svg:line", {
          x1: g.x + d[0] * gap, y1: g.y + d[1] * gap, x2: g.x + d[0] * (gap + arm), y2: g.y + d[1] * (gap + arm),
          stroke: colour, "stroke-width": width, "class": "crosshair"
        }));
      });
      var f = 3.2, L = g.letters;
      svg.appendChild(el("svg:text", { x: 0.4, y: g.h / 2 + f / 2, "font-size": f, text: L[0] }));
      svg.appendChild(el("svg:text", { x: g.w - 0.4, y: g.h / 2 + f / 2, "font-size": f, "text-anchor": "end", text: L[1] }));
      svg.appendChild(el("svg:text", { x: g.w / 2, y: f, "font-size": f, "text-anchor": "middle", text: L[2] }));
      svg.appendChild(el("svg:text", { x: g.w / 2, y: g.h - 0.5, "font-size": f, "text-anchor": "middle", text: L[3] }));
      svg.appendChild(el("svg:line", { x1: g.w - 11.5, x2: g.w - 1.5, y1: g.h - 1.8, y2: g.h - 1.8, stroke: "#fff", "stroke-width": 0.8, "class": "scalebar" }));
      svg.appendChild(el("svg:text", { x: g.w - 6.5, y: g.h - 2.6, "font-size": 2.4, "text-anchor": "middle", text: "10 mm" }));
    }
    var div = el("div", {
      "class": "tile clickable", style: "width:" + (g.w * TILE_SCALE).toFixed(1) + "px;height:" + (g.h * TILE_SCALE).toFixed(1) + "px",
      "data-origin": g.origin.join(","), "data-du": g.du.join(","), "data-dv": g.dv.join(",")
    }, [el("img", { alt: "", src: "data:image/png;base64," + png }), svg]);
    return div;
  }

  function card(l) {
    var colour = DATA.colours[l.label];
    var facts = "p " + l.probability + ", " + l.volume_mm3 + " mm\u00b3" +
      (l.chi_ppm === null || l.chi_ppm === undefined ? "" : ", \u03c7 " + l.chi_ppm + " ppm") +
      (l.region && l.region !== "n/a" ? ", " + l.region : "") +
      (l.structure && l.structure !== "n/a" ? " (" + l.structure + ")" : "") +
      ", x y z " + l.x + " " + l.y + " " + l.z + " mm";
    var head = el("h3", {}, [
      el("span", { "class": l.name, text: "#" + l.lesion_id + " " + l.name }),
      el("span", { text: " \u2014 " + facts })
    ]);
    var confirm = el("button", { type: "button", "class": "confirm", text: "\u2713 confirm" });
    var reject = el("button", { type: "button", "class": "reject", text: "\u2717 reject" });
    var select = el("select", { "class": "relabel", title: "the class you give it" });
    Object.keys(DATA.classes).forEach(function (k) {
      var o = el("option", { value: k, text: DATA.classes[k] });
      select.appendChild(o);
    });
    var status = el("span", { "class": "status" });
    var rating = el("div", { "class": "rating" }, [confirm, reject, el("span", { text: " class: " }), select, el("span", { text: " " }), status]);
    var box = el("div", { "class": "card", id: "lesion-" + l.lesion_id, "data-id": l.lesion_id }, [head, rating]);
    if (l.flags && l.flags.length) box.appendChild(el("div", { "class": "flag", text: "check: " + l.flags.join("; ") }));
    function rate(s) {
      var r = state.ratings[l.lesion_id] || { label: String(l.label) };
      r.status = s;
      state.ratings[l.lesion_id] = r;
      save();
    }
    confirm.addEventListener("click", function () { rate("confirmed"); });
    reject.addEventListener("click", function () { rate("rejected"); });
    select.addEventListener("change", function () {
      var r = state.ratings[l.lesion_id] || { status: "confirmed" };
      r.label = select.value;
      state.ratings[l.lesion_id] = r;
      save();
    });
    if (!l.tiles) {
      box.appendChild(el("p", { "class": "note", text: "No tiles: the lesion has no voxel of its own on this grid." }));
      return box;
    }
    var table = el("table"), header = el("tr", {}, [el("th")]);
    DATA.planes.forEach(function (p) {
      header.appendChild(el("th", { text: p === "minip" ? "SWI minIP, " + l.geometry.minip.slab_mm + " mm slab" : p + " (plain | marked)" }));
    });
    table.appendChild(header);
    DATA.modalities.forEach(function (m) {
      var row = el("tr", {}, [el("th", { text: m.toUpperCase() })]);
      DATA.planes.forEach(function (p) {
        var png = l.tiles[m][p];
        row.appendChild(el("td", {}, png ? [el("span", { "class": "pair" }, [tile(png, l.geometry[p], false), tile(png, l.geometry[p], true, colour)])] : []));
      });
      table.appendChild(row);
    });
    box.appendChild(table);
    return box;
  }

  var cards = document.getElementById("cards");
  var pager = document.getElementById("pager");
  var pages = Math.max(1, Math.ceil(DATA.lesions.length / DATA.pageSize));

  function show(p) {
    page = Math.min(Math.max(p, 0), pages - 1);
    if (!cards) return;
    cards.textContent = "";
    DATA.lesions.slice(page * DATA.pageSize, (page + 1) * DATA.pageSize).forEach(function (l) { cards.appendChild(card(l)); });
    pager.textContent = "";
    if (pages > 1) {
      var prev = el("button", { type: "button", text: "\u2190 previous" });
      var next = el("button", { type: "button", text: "next \u2192", id: "next-page" });
      prev.disabled = page === 0;
      next.disabled = page === pages - 1;
      prev.addEventListener("click", function () { show(page - 1); });
      next.addEventListener("click", function () { show(page + 1); });
      pager.appendChild(el("span", { text: "Lesion cards, page " + (page + 1) + " of " + pages + " (" + DATA.pageSize + " per page, most probable first) " }));
      pager.appendChild(prev);
      pager.appendChild(next);
    }
    refresh();
  }

  function goTo(id) {
    var index = DATA.lesions.findIndex(function (l) { return String(l.lesion_id) === String(id); });
    if (index < 0) return;
    var p = Math.floor(index / DATA.pageSize);
    if (p !== page || !document.getElementById("lesion-" + id)) show(p);
    var target = document.getElementById("lesion-" + id);
    if (target) target.scrollIntoView({ block: "start" });
  }

  function refresh() {
    var rated = 0;
    DATA.lesions.forEach(function (l) {
      var r = state.ratings[l.lesion_id];
      var text = r && r.status ? r.status + (String(r.label) !== String(l.label) ? " as " + DATA.classes[r.label] : "") : "unrated";
      if (r && r.status) rated += 1;
      var row = document.getElementById("row-" + l.lesion_id);
      if (row) {
        row.className = "lesion-row " + (r && r.status ? r.status : "");
        row.querySelector(".status").textContent = text;
      }
      var c = document.getElementById("lesion-" + l.lesion_id);
      if (c) {
        c.className = "card " + (r && r.status ? r.status : "");
        c.querySelector(".status").textContent = text;
        c.querySelector(".relabel").value = r && r.label ? String(r.label) : String(l.label);
      }
    });
    document.getElementById("progress").textContent = rated + " of " + DATA.lesions.length + " rated, " + state.added.length + " added";
    var body = document.querySelector("#added-table tbody");
    body.textContent = "";
    state.added.forEach(function (a, n) {
      var select = el("select", { "class": "added-label" });
      Object.keys(DATA.classes).forEach(function (k) { select.appendChild(el("option", { value: k, text: DATA.classes[k] })); });
      select.value = String(a.label);
      select.addEventListener("change", function () { a.label = select.value; save(); });
      var remove = el("button", { type: "button", text: "remove" });
      remove.addEventListener("click", function () { state.added.splice(n, 1); save(); });
      body.appendChild(el("tr", {}, [el("td", { text: String(n + 1) }), el("td", {}, [select])]
        .concat(["i", "j", "k", "x", "y", "z"].map(function (c) { return el("td", { text: String(a[c]) }); }))
        .concat([el("td", {}, [remove])])));
    });
    document.getElementById("added-note").style.display = state.added.length ? "none" : "";
    document.getElementById("rater").value = state.rater;
  }

  function apply(matrix, v) {
    return [0, 1, 2].map(function (r) {
      return matrix[r][0] * v[0] + matrix[r][1] * v[1] + matrix[r][2] * v[2] + matrix[r][3];
    });
  }
  function round(x, d) { var f = Math.pow(10, d); return Math.round(x * f) / f; }

  // a click on a tile in add mode: the voxel under the pointer
  document.addEventListener("click", function (event) {
    var target = event.target.closest ? event.target.closest(".goto") : null;
    if (target && !adding) {
      event.preventDefault();
      goTo(target.getAttribute("data-id"));
      return;
    }
    var row = event.target.closest ? event.target.closest("tr.lesion-row") : null;
    if (row && !adding) { goTo(row.getAttribute("data-id")); return; }
    var t = event.target.closest ? event.target.closest(".tile.clickable") : null;
    if (!adding || !t) return;
    event.preventDefault();
    var box = t.getBoundingClientRect();
    var u = Math.min(Math.max((event.clientX - box.left) / box.width, 0), 0.9999);
    var v = Math.min(Math.max((event.clientY - box.top) / box.height, 0), 0.9999);
    var origin = t.dataset.origin.split(",").map(Number);
    var du = t.dataset.du.split(",").map(Number);
    var dv = t.dataset.dv.split(",").map(Number);
    var ras = [0, 1, 2].map(function (a) {
      return origin[a] + Math.sign(du[a]) * Math.floor(Math.abs(u * du[a])) + Math.sign(dv[a]) * Math.floor(Math.abs(v * dv[a]));
    });
    var ijk = apply(DATA.toInput, ras), xyz = apply(DATA.affine, ras);
    state.added.push({
      label: document.getElementById("add-label").value,
      i: round(ijk[0], 2), j: round(ijk[1], 2), k: round(ijk[2], 2),
      x: round(xyz[0], 2), y: round(xyz[1], 2), z: round(xyz[2], 2)
    });
    var svg = t.querySelector("svg"), vb = svg.viewBox.baseVal;
    svg.appendChild(el("svg:text", { x: u * vb.width, y: v * vb.height, "font-size": vb.width / 12, "text-anchor": "middle", "class": "added-mark", text: "+" }));
    setAdding(false);
    save();
  });

  function setAdding(on) {
    adding = on;
    document.body.classList.toggle("adding", on);
    document.getElementById("add-mode").textContent = on ? "click a tile (Esc: cancel)" : "add a missed lesion";
  }
  document.getElementById("add-mode").addEventListener("click", function () { setAdding(!adding); });
  document.addEventListener("keydown", function (e) { if (e.key === "Escape") setAdding(false); });
  document.getElementById("rater").addEventListener("change", function (e) { state.rater = e.target.value.trim(); save(); });

  function cell(v) { return v === null || v === undefined || v === "" ? "n/a" : String(v).replace(/[\t\n]/g, " "); }
  function ratingsTsv() {
    var rater = state.rater || "n/a";
    var lines = [DATA.ratingsColumns.join("\t")];
    DATA.lesions.slice().sort(function (a, b) { return a.lesion_id - b.lesion_id; }).forEach(function (l) {
      var r = state.ratings[l.lesion_id] || {};
      var row = { lesion_id: l.lesion_id, status: r.status || "unrated", label: r.label || l.label, predicted_label: l.label,
        i: l.i, j: l.j, k: l.k, x: l.x, y: l.y, z: l.z, rater: rater };
      lines.push(DATA.ratingsColumns.map(function (c) { return cell(row[c]); }).join("\t"));
    });
    state.added.forEach(function (a) {
      var row = { lesion_id: null, status: "added", label: a.label, predicted_label: null,
        i: a.i, j: a.j, k: a.k, x: a.x, y: a.y, z: a.z, rater: rater };
      lines.push(DATA.ratingsColumns.map(function (c) { return cell(row[c]); }).join("\t"));
    });
    return lines.join("\n") + "\n";
  }
  function download(name, text, type) {
    var a = el("a", { href: URL.createObjectURL(new Blob([text], { type: type })), download: name });
    document.body.appendChild(a);
    a.click();
    a.remove();
  }
  document.getElementById("download").addEventListener("click", function () {
    download(DATA.ratingsFile, ratingsTsv(), "text/tab-separated-values");
  });
  document.getElementById("download-json").addEventListener("click", function () {
    download(DATA.ratingsFile.replace(/\.tsv$/, ".json"), JSON.stringify(DATA.ratingsDictionary, null, 2) + "\n", "application/json");
  });

  show(0);
})();
{% include "sortable.js" %}
