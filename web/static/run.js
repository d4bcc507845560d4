// Keeps a run's page current while the run is not finished: status, error and output are refreshed every
// second from the JSON API. When the run finishes or starts another attempt, the page reloads to show the
// attempts table and the right buttons. Without JavaScript the page works the same after a reload.
(function () {
  "use strict";
  var root = document.getElementById("run");
  if (!root || root.dataset.finished === "true") {
    return;
  }
  var id = root.dataset.runId;
  var shownAttempt = root.dataset.attempt;
  var pinned = new URLSearchParams(window.location.search).has("attempt");
  var status = root.querySelector(".status");
  var log = document.getElementById("log");
  var errorText = document.getElementById("run-error");
  var omitted = document.getElementById("log-omitted");
  var finalStatuses = (root.dataset.final || "").split(" ");

  function follow() {
    return window.innerHeight + window.scrollY >= document.body.scrollHeight - 40;
  }

  function tick() {
    fetch("/api/v1/runs/" + encodeURIComponent(id), { headers: { Accept: "application/json" }, credentials: "same-origin" })
      .then(function (resp) {
        if (!resp.ok) {
          throw new Error("HTTP " + resp.status);
        }
        return resp.json();
      })
      .then(function (run) {
        var attempt = String(run.attempts.length ? run.attempts[run.attempts.length - 1].attempt : 0);
        if (finalStatuses.indexOf(run.status) >= 0 || (!pinned && attempt !== shownAttempt)) {
          window.location.reload();
          return;
        }
        status.textContent = run.status;
        status.className = "status status-" + run.status;
        errorText.textContent = run.error || "";
        if (!pinned) {
          var stick = follow();
          log.textContent = run.log;
          omitted.textContent = run.log_omitted_bytes > 0 ? run.log_omitted_bytes + " bytes before this are not shown." : "";
          if (stick) {
            window.scrollTo(0, document.body.scrollHeight);
          }
        }
        window.setTimeout(tick, 1000);
      })
      .catch(function () {
        window.setTimeout(tick, 3000);
      });
  }
  window.setTimeout(tick, 1000);
})();
