// Keeps the status page's live parts current: reads status.json every few seconds and updates
// the running sweep's progress, the badges and the request rate. No library: the page must work
// with no outside network. The charts stay as rendered by the server (reload to redraw them).
(function () {
  "use strict";
  var root = document.getElementById("ops-status");
  if (!root) return;
  var feed = root.getAttribute("data-feed");
  var every = parseInt(root.getAttribute("data-poll-ms"), 10) || 5000;

  function el(id) { return document.getElementById(id); }
  function text(id, value) { var e = el(id); if (e) e.textContent = value === null || value === undefined ? "–" : String(value); }
  function show(id, visible) { var e = el(id); if (e) e.classList.toggle("ops-hidden", !visible); }
  function time(iso) { return iso ? new Date(iso).toLocaleString() : "–"; }

  function render(s) {
    var p = s.progress;
    show("sweep-running", !!p);
    show("sweep-idle", !p);
    if (p) {
      var bar = el("sweep-progress");
      bar.setAttribute("aria-valuenow", String(p.percent));
      el("sweep-progress-fill").style.width = p.percent + "%";
      text("sweep-percent", p.percent + "%");
      text("sweep-id", p.id);
      text("sweep-trigger", p.trigger);
      text("sweep-strategy", p.strategy || null);
      var walking = el("sweep-walk");
      if (walking) walking.textContent = p.walk ? ", walking: " + p.walk : "";
      text("sweep-chunks-done", p.chunks_done);
      text("sweep-chunks-total", p.chunks_total);
      text("sweep-planning", p.planning_done ? "" : " (still planning)");
      text("sweep-chunks-failed", p.chunks_failed);
      text("sweep-courses-seen", p.courses_seen);
      text("sweep-courses-total", p.courses_total);
      text("sweep-rate", p.rate);
      text("sweep-heartbeat", p.heartbeat_age);
      text("sweep-eta", time(p.expected_end));
      show("sweep-stalled", p.stalled);
    }
    var now = el("sweep-now"), resume = el("sweep-resume");
    if (now) now.disabled = !!p && !p.stalled;
    if (resume) resume.disabled = !(p && p.stalled);

    var calls = el("calls-state");
    calls.textContent = s.calls_off ? "OFF" : "ON";
    calls.className = "ops-badge " + (s.calls_off ? "ops-bad" : "ops-good");
    var worker = el("worker-state");
    worker.textContent = s.worker_alive === null ? "unknown" : (s.worker_alive ? "alive" : "none answering");
    worker.className = "ops-badge " + (s.worker_alive === null ? "ops-unknown" : (s.worker_alive ? "ops-good" : "ops-bad"));

    text("rate-value", s.requests_per_minute);
    show("rate-gauge", s.rate_limit_per_minute > 0);
    if (s.rate_limit_per_minute > 0) {
      el("rate-fill").style.width = Math.min(100, 100 * s.requests_per_minute / s.rate_limit_per_minute) + "%";
    }

    var list = el("problems");
    list.textContent = "";
    s.problems.forEach(function (line) { var li = document.createElement("li"); li.textContent = line; list.appendChild(li); });
    show("problems", s.problems.length > 0);
    text("updated-at", time(s.now));
  }

  function poll() {
    fetch(feed, { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (r) { if (!r.ok) throw new Error(r.status); return r.json(); })
      .then(render)
      .catch(function () { text("updated-at", "update failed; retrying"); })
      .finally(function () { setTimeout(poll, every); });
  }
  // Times rendered by the server are ISO strings: show them in the reader's local time at once.
  ["sweep-eta", "updated-at"].forEach(function (id) {
    var e = el(id); var iso = e && (e.getAttribute("datetime") || e.textContent);
    if (iso && iso !== "–" && !isNaN(Date.parse(iso))) e.textContent = time(iso);
  });
  setTimeout(poll, every);
})();
