// dsink report: filter and sort the gallery of flagged samples. The state lives in the URL hash
// (#class=3&suggested=6&sort=margin-asc), so a link (or a headless browser) opens the page filtered.
(function () {
  "use strict";
  var grid = document.getElementById("gallery-items");
  if (!grid) { return; }
  var items = Array.prototype.slice.call(grid.querySelectorAll("figure.item"));
  var given = document.getElementById("filter-given");
  var suggested = document.getElementById("filter-suggested");
  var sort = document.getElementById("sort");
  var count = document.getElementById("shown-count");
  var keys = {
    "margin-desc": function (a, b) { return b.dataset.margin - a.dataset.margin || a.dataset.rank - b.dataset.rank; },
    "margin-asc": function (a, b) { return a.dataset.margin - b.dataset.margin || a.dataset.rank - b.dataset.rank; },
    "confidence-desc": function (a, b) { return b.dataset.confidence - a.dataset.confidence || a.dataset.rank - b.dataset.rank; },
    "given": function (a, b) { return a.dataset.given - b.dataset.given || a.dataset.rank - b.dataset.rank; },
    "suggested": function (a, b) { return a.dataset.suggested - b.dataset.suggested || a.dataset.rank - b.dataset.rank; }
  };

  function pick(select, value) {
    for (var i = 0; i < select.options.length; i++) {
      if (select.options[i].value === value) { select.value = value; return; }
    }
  }

  function readHash() {
    var params = new URLSearchParams(window.location.hash.replace(/^#/, ""));
    pick(given, params.get("class") || "all");
    pick(suggested, params.get("suggested") || "all");
    pick(sort, params.get("sort") || "margin-desc");
  }

  function writeHash() {
    var params = new URLSearchParams();
    if (given.value !== "all") { params.set("class", given.value); }
    if (suggested.value !== "all") { params.set("suggested", suggested.value); }
    if (sort.value !== "margin-desc") { params.set("sort", sort.value); }
    var hash = params.toString();
    history.replaceState(null, "", hash ? "#" + hash : window.location.pathname + window.location.search);
  }

  function apply() {
    var shown = 0;
    items.slice().sort(keys[sort.value] || keys["margin-desc"]).forEach(function (item) {
      var ok = (given.value === "all" || item.dataset.given === given.value) &&
               (suggested.value === "all" || item.dataset.suggested === suggested.value);
      item.hidden = !ok;
      if (ok) { shown += 1; }
      grid.appendChild(item);
    });
    count.textContent = String(shown);
    grid.setAttribute("data-shown", String(shown));
  }

  function changed() { writeHash(); apply(); }
  given.addEventListener("change", changed);
  suggested.addEventListener("change", changed);
  sort.addEventListener("change", changed);
  window.addEventListener("hashchange", function () { readHash(); apply(); });
  readHash();
  apply();
}());
