// The web UI without a build step or a framework: every page works without this file; with it,
// copy buttons work, extension search filters as one types, and builds show live progress.
"use strict";
(function () {
  function copyButtons() {
    document.querySelectorAll("button.copy[data-copy]").forEach(function (button) {
      var source = document.getElementById(button.dataset.copy);
      if (!source || !navigator.clipboard) return;
      button.hidden = false;
      var label = button.textContent;
      button.addEventListener("click", function () {
        navigator.clipboard.writeText(source.textContent.trim()).then(function () {
          button.textContent = "✓ " + label;
          setTimeout(function () { button.textContent = label; }, 2000);
        });
      });
    });
  }

  function liveSearch() {
    var input = document.getElementById("search");
    var list = document.getElementById("extensions");
    if (!input || !list) return;
    input.addEventListener("input", function () {
      var needle = input.value.trim().toLowerCase();
      list.querySelectorAll(".extension").forEach(function (row) {
        var box = row.querySelector("input");
        var text = row.textContent.toLowerCase();
        row.hidden = !(box.checked || needle === "" || text.indexOf(needle) !== -1);
      });
    });
  }

  function follow(box) {
    var key = box.dataset.buildKey;
    var bar = box.querySelector("progress");
    var stage = box.querySelector(".stage");
    var eta = box.querySelector(".eta");
    var refresh = box.querySelector(".refresh");
    if (refresh) refresh.hidden = true; // updated live instead
    function poll() {
      fetch("/builds/" + key, { headers: { Accept: "application/json" } })
        .then(function (r) { return r.ok ? r.json() : null; })
        .then(function (doc) {
          if (!doc) { setTimeout(poll, 5000); return; }
          if (doc.status === "succeeded" || doc.status === "failed") { window.location.reload(); return; }
          bar.value = Math.round((doc.progress || 0) * 100);
          bar.textContent = bar.value + "%";
          stage.textContent = doc.stage || doc.status;
          eta.textContent = doc.etaSeconds ? "≈ " + doc.etaSeconds + " s" : "";
          setTimeout(poll, 2000);
        })
        .catch(function () { setTimeout(poll, 5000); });
    }
    poll();
  }

  document.addEventListener("DOMContentLoaded", function () {
    copyButtons();
    liveSearch();
    document.querySelectorAll("[data-build-key]").forEach(follow);
  });
})();
