/* The dashboard's only script: small SVG charts, the upload with progress, the live job page and "try it".
   Data comes from the page (json_script) and from the REST API, with the session's cookie and CSRF token. */
(function () {
  "use strict";
  var COLORS = ["#2f6fde", "#d9534f", "#2a8a4a", "#b7791f", "#6b3fc4", "#17a2b8", "#8a5a44"];
  var SVG = "http://www.w3.org/2000/svg";

  function el(name, attrs, parent) {
    var node = document.createElementNS(SVG, name);
    Object.keys(attrs || {}).forEach(function (k) { node.setAttribute(k, attrs[k]); });
    if (parent) parent.appendChild(node);
    return node;
  }
  function fmt(v) { return Math.abs(v) >= 1000 || v === 0 ? String(Math.round(v)) : Number(v.toPrecision(3)).toString(); }
  function data(id) { var node = document.getElementById(id); return node ? JSON.parse(node.textContent) : null; }
  function csrf(form) { var input = form.querySelector("input[name=csrfmiddlewaretoken]"); return input ? input.value : ""; }

  /* A line chart: series = [{name, points: [[x, y], ...]}]; every point is a circle.point (tests count them). */
  function lineChart(container, series, opts) {
    opts = opts || {};
    var W = 520, H = opts.square ? 360 : 220, L = 44, R = 12, T = 10, B = 26;
    container.innerHTML = "";
    var svg = el("svg", { viewBox: "0 0 " + W + " " + H, role: "img" }, container);
    var all = [];
    series.forEach(function (s) { s.points.forEach(function (p) { if (p[1] !== null && isFinite(p[1])) all.push(p); }); });
    if (!all.length) { el("text", { x: W / 2, y: H / 2, "text-anchor": "middle", "class": "empty" }, svg).textContent = opts.empty || "No points yet"; return; }
    var xs = all.map(function (p) { return p[0]; }), ys = all.map(function (p) { return p[1]; });
    var x0 = opts.xmin !== undefined ? opts.xmin : Math.min.apply(null, xs), x1 = opts.xmax !== undefined ? opts.xmax : Math.max.apply(null, xs);
    var y0 = opts.ymin !== undefined ? opts.ymin : Math.min.apply(null, ys), y1 = opts.ymax !== undefined ? opts.ymax : Math.max.apply(null, ys);
    if (x1 === x0) { x0 -= 1; x1 += 1; }
    if (y1 === y0) { y0 -= Math.abs(y0) * 0.1 || 1; y1 += Math.abs(y1) * 0.1 || 1; }
    function sx(x) { return L + (x - x0) / (x1 - x0) * (W - L - R); }
    function sy(y) { return H - B - (y - y0) / (y1 - y0) * (H - T - B); }
    for (var i = 0; i <= 4; i++) {
      var yv = y0 + (y1 - y0) * i / 4, yy = sy(yv);
      el("line", { x1: L, x2: W - R, y1: yy, y2: yy, "class": "grid-line" }, svg);
      el("text", { x: L - 4, y: yy + 3, "text-anchor": "end" }, svg).textContent = fmt(yv);
      if (!opts.integerX) {
        var xv = x0 + (x1 - x0) * i / 4;
        el("text", { x: sx(xv), y: H - 8, "text-anchor": "middle" }, svg).textContent = fmt(xv);
      }
    }
    if (opts.integerX) {  /* epochs: a label at each whole number, thinned to about ten */
      var stride = Math.max(1, Math.ceil((x1 - x0) / 10));
      for (var n = Math.ceil(x0); n <= x1; n += stride) el("text", { x: sx(n), y: H - 8, "text-anchor": "middle" }, svg).textContent = String(n);
    }
    el("line", { x1: L, x2: L, y1: T, y2: H - B, "class": "axis" }, svg);
    el("line", { x1: L, x2: W - R, y1: H - B, y2: H - B, "class": "axis" }, svg);
    if (opts.diagonal) el("line", { x1: sx(0), y1: sy(0), x2: sx(1), y2: sy(1), stroke: "#c3c9d6", "stroke-dasharray": "4 4" }, svg);
    var legend = document.createElement("div");
    legend.className = "legend";
    series.forEach(function (s, index) {
      var color = COLORS[index % COLORS.length];
      var pts = s.points.filter(function (p) { return p[1] !== null && isFinite(p[1]); });
      el("polyline", { points: pts.map(function (p) { return sx(p[0]) + "," + sy(p[1]); }).join(" "), fill: "none", stroke: color, "stroke-width": 2 }, svg);
      if (!opts.noDots) pts.forEach(function (p) {
        var dot = el("circle", { cx: sx(p[0]), cy: sy(p[1]), r: 3, fill: color, "class": "point" }, svg);
        el("title", {}, dot).textContent = s.name + " " + p[0] + ": " + fmt(p[1]);
      });
      var item = document.createElement("span");
      item.innerHTML = '<i style="background:' + color + '"></i>';
      item.appendChild(document.createTextNode(s.name));
      legend.appendChild(item);
    });
    container.appendChild(legend);
  }

  /* A bar chart of one series per day. */
  function barChart(container, labels, values, title) {
    var W = 520, H = 160, L = 44, B = 22, T = 8;
    var card = document.createElement("section");
    card.className = "card";
    card.innerHTML = "<h2></h2>";
    card.firstChild.textContent = title;
    var box = document.createElement("div");
    box.className = "chart";
    card.appendChild(box);
    container.appendChild(card);
    var svg = el("svg", { viewBox: "0 0 " + W + " " + H }, box);
    var top = Math.max.apply(null, values.concat([0])) || 1, step = (W - L) / values.length;
    values.forEach(function (v, i) {
      var h = v / top * (H - T - B);
      var bar = el("rect", { x: L + i * step + 1, y: H - B - h, width: Math.max(step - 2, 1), height: h, fill: "#2f6fde", "class": "bar" }, svg);
      el("title", {}, bar).textContent = labels[i] + ": " + fmt(v);
    });
    el("line", { x1: L, x2: W, y1: H - B, y2: H - B, "class": "axis" }, svg);
    el("text", { x: L - 4, y: T + 8, "text-anchor": "end" }, svg).textContent = fmt(top);
    el("text", { x: L, y: H - 6 }, svg).textContent = labels[0].slice(5);
    el("text", { x: W, y: H - 6, "text-anchor": "end" }, svg).textContent = labels[labels.length - 1].slice(5);
  }

  /* Per-epoch values split into a loss chart and a metrics chart. */
  function epochCharts(epochs) {
    var names = {};
    epochs.forEach(function (row) { Object.keys(row).forEach(function (k) { if (k !== "epoch" && typeof row[k] === "number") names[k] = true; }); });
    var loss = [], metrics = [];
    Object.keys(names).sort().forEach(function (name) {
      var s = { name: name, points: epochs.map(function (row) { return [row.epoch, row[name] === undefined ? null : row[name]]; }) };
      (name.indexOf("loss") >= 0 ? loss : metrics).push(s);
    });
    lineChart(document.getElementById("loss-chart"), loss, { integerX: true, empty: "No epoch finished yet" });
    lineChart(document.getElementById("metric-chart"), metrics, { integerX: true, empty: "No epoch finished yet" });
  }

  function getJSON(url) {
    return fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } }).then(function (r) {
      if (!r.ok) throw new Error(url + " answered " + r.status);
      return r.json();
    });
  }

  function liveJob(root) {
    var id = root.dataset.job, api = "/api/v1/jobs/" + id, lines = root.dataset.logLines;
    var interval = Number(root.dataset.pollMs || 1500);
    epochCharts(data("epochs-data") || []);
    if (root.dataset.active !== "1") return;
    var timer = setInterval(function () {
      Promise.all([getJSON(api), getJSON(api + "/metrics"), getJSON(api + "/logs?lines=" + lines)]).then(function (res) {
        var job = res[0], metrics = res[1], log = res[2];
        var status = document.getElementById("job-status");
        status.textContent = job.status;
        status.className = "badge " + job.status;
        var p = job.progress || {};
        document.getElementById("job-progress").textContent = p.epoch ? "epoch " + p.epoch + "/" + p.epochs + (p.step ? ", step " + p.step + "/" + p.steps : "") : "—";
        document.getElementById("job-attempts").textContent = job.attempts + " of " + (root.dataset.maxAttempts || job.attempts);
        document.getElementById("job-device").textContent = job.device || "—";
        document.getElementById("job-compute").textContent = (job.compute_seconds || 0).toFixed(1) + " s";
        document.getElementById("job-error").textContent = job.error_message || "";
        document.getElementById("job-error-code").textContent = job.error_code || "";
        epochCharts(metrics.epochs);
        var pre = document.getElementById("job-log");
        pre.textContent = log.lines.map(function (l) { return l.time.slice(11, 19) + "  " + l.message; }).join("\n");
        if (["succeeded", "failed", "cancelled"].indexOf(job.status) >= 0) {
          clearInterval(timer);
          var cancel = document.getElementById("cancel-form");
          if (cancel) cancel.remove();
          if (job.model_version) {
            var cell = document.getElementById("job-model"), link = document.createElement("a");
            link.href = root.dataset.versionUrl + job.model_version + "/";
            link.textContent = job.model_name + " v" + job.model_version;
            cell.innerHTML = "";
            cell.appendChild(link);
          }
          var table = document.createElement("table");
          table.className = "compact";
          Object.keys(job.metrics || {}).forEach(function (k) {
            var v = job.metrics[k];
            if (typeof v === "object") return;
            var tr = table.insertRow(), th = document.createElement("th");
            th.textContent = k; tr.appendChild(th); tr.insertCell().textContent = v;
          });
          var final = document.getElementById("final-metrics");
          final.innerHTML = "";
          final.appendChild(table);
        } else if (job.status === "cancelling") {
          var button = document.getElementById("cancel-job");
          if (button) button.disabled = true;
        }
      }).catch(function (err) { console.warn(err); });
    }, interval);
  }

  function upload(form) {
    form.addEventListener("submit", function (event) {
      event.preventDefault();
      var file = form.querySelector("input[type=file]").files[0];
      var status = document.getElementById("upload-status"), bar = document.getElementById("upload-progress");
      if (!file) return;
      if (file.size > Number(form.dataset.limit)) { status.textContent = "The file is larger than your plan allows here."; status.className = "error"; return; }
      // The fields go first and column_tags always: with no PII column the API streams the file to storage as it
      // arrives instead of staging it on disk (it can only do that once it knows no column needs rewriting).
      var body = new FormData();
      body.append("name", form.elements.name.value || file.name.replace(/\.[^.]*$/, "").slice(0, 100));
      ["label_column", "format", "pii_mode"].forEach(function (k) { if (form.elements[k].value) body.append(k, form.elements[k].value); });
      var tags = {};
      form.elements.pii_columns.value.split(",").forEach(function (c) { c = c.trim(); if (c) tags[c] = "pii"; });
      body.append("column_tags", JSON.stringify(tags));
      body.append("file", file);
      var xhr = new XMLHttpRequest();
      xhr.open("POST", form.dataset.api);
      xhr.setRequestHeader("X-CSRFToken", csrf(form));
      xhr.setRequestHeader("Accept", "application/json");
      bar.hidden = false; bar.value = 0;
      document.getElementById("upload-button").disabled = true;
      xhr.upload.onprogress = function (e) {
        if (e.lengthComputable) { bar.value = Math.round(100 * e.loaded / e.total); status.textContent = bar.value + "% of " + file.name; }
      };
      xhr.upload.onload = function () { bar.value = 100; status.textContent = "Uploaded; checking the file…"; };
      xhr.onload = function () {
        var answer = {};
        try { answer = JSON.parse(xhr.responseText); } catch (e) { /* not JSON */ }
        if (xhr.status === 201) { window.location.href = "/datasets/" + answer.id + "/"; return; }
        status.className = "error";
        status.textContent = (answer.error && answer.error.message) || ("Upload failed (" + xhr.status + ").");
        document.getElementById("upload-button").disabled = false;
      };
      xhr.onerror = function () { status.className = "error"; status.textContent = "The upload was interrupted."; document.getElementById("upload-button").disabled = false; };
      xhr.send(body);
    });
  }

  function tryIt(form) {
    form.addEventListener("submit", function (event) {
      event.preventDefault();
      var out = document.getElementById("try-result"), meta = document.getElementById("try-meta");
      var version = document.getElementById("try-version").value;
      var url = form.dataset.url + (version ? "?version=" + encodeURIComponent(version) : "");
      out.textContent = "…"; meta.textContent = "";
      var started = performance.now();
      fetch(url, { method: "POST", credentials: "same-origin", body: document.getElementById("try-body").value,
                   headers: { "Content-Type": "application/json", "X-CSRFToken": csrf(form), Accept: "application/json" } })
        .then(function (r) {
          var answered = r.headers.get("X-Model-Version");
          meta.textContent = "HTTP " + r.status + (answered ? " · answered by v" + answered : "") + " · " + Math.round(performance.now() - started) + " ms";
          return r.text();
        })
        .then(function (text) {
          try { out.textContent = JSON.stringify(JSON.parse(text), null, 2); } catch (e) { out.textContent = text; }
        })
        .catch(function (err) { out.textContent = String(err); });
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    /* No inline handlers (the Content-Security-Policy forbids them): selects that submit, forms that confirm. */
    document.querySelectorAll("select[data-autosubmit]").forEach(function (select) {
      select.addEventListener("change", function () { select.form.submit(); });
    });
    document.querySelectorAll("form[data-confirm]").forEach(function (form) {
      form.addEventListener("submit", function (event) { if (!window.confirm(form.dataset.confirm)) event.preventDefault(); });
    });
    var live = document.getElementById("job-live");
    if (live) liveJob(live);
    var up = document.getElementById("upload-form");
    if (up) upload(up);
    var tryForm = document.getElementById("try-form");
    if (tryForm) tryIt(tryForm);
    var roc = data("roc-data");
    if (roc) lineChart(document.getElementById("roc-chart"), [{ name: "ROC (FPR → TPR)", points: roc.map(function (p) { return [p[0], p[1]]; }) }],
                       { square: true, xmin: 0, xmax: 1, ymin: 0, ymax: 1, diagonal: true, noDots: true });
    var usage = data("usage-data"), charts = document.getElementById("usage-charts");
    if (usage && charts) usage.series.forEach(function (s) { barChart(charts, usage.days, s.values, s.unit + " per day"); });
  });
})();
