// Live parts of a console page: every element with data-live="URL" has its content
// replaced with the HTML fragment that URL returns, every few seconds while the page is
// visible. The pages read the same without this script; it only saves a reload.
(function () {
  "use strict";
  var PERIOD = 2000;
  function poll(element) {
    var url = element.getAttribute("data-live");
    var stopped = false;
    function tick() {
      if (stopped) return;
      if (document.hidden) { setTimeout(tick, PERIOD); return; }
      fetch(url, { credentials: "same-origin", headers: { "Accept": "text/html" } })
        .then(function (response) {
          if (response.status === 401) { stopped = true; return null; }
          return response.ok ? response.text() : null;
        })
        .then(function (html) {
          // Keep what the reader has open (a provider log entry) open.
          if (html !== null && html !== undefined && element.innerHTML !== html) {
            var open = Array.prototype.map.call(element.querySelectorAll("details[open] summary"),
              function (s) { return s.textContent; });
            element.innerHTML = html;
            Array.prototype.forEach.call(element.querySelectorAll("details summary"), function (s) {
              if (open.indexOf(s.textContent) >= 0) s.parentNode.open = true;
            });
          }
        })
        .catch(function () {})
        .then(function () { setTimeout(tick, PERIOD); });
    }
    setTimeout(tick, PERIOD);
  }
  document.addEventListener("DOMContentLoaded", function () {
    Array.prototype.forEach.call(document.querySelectorAll("[data-live]"), poll);
  });
})();
