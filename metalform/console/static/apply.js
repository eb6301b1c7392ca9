// Follows an apply over Server-Sent Events and updates its page in place: each action's
// status, time and error, the count done and the apply's status. The session cookie
// authenticates the stream (an EventSource cannot send a header).
"use strict";
(function () {
  const table = document.getElementById("actions");
  if (!table || table.dataset.live !== "yes") return;
  const applyId = table.dataset.apply;
  const live = document.getElementById("live");
  const done = document.getElementById("done");
  const progress = document.getElementById("progress");
  const ENDED = ["apply.succeeded", "apply.failed", "apply.interrupted"];
  const FINISHED = ["succeeded", "failed", "skipped", "interrupted"];

  function badge(status) {
    const span = document.createElement("span");
    span.className = "badge s-" + status.toLowerCase();
    span.textContent = status;
    return span;
  }

  function countDone() {
    let n = 0;
    table.querySelectorAll("td.status .badge").forEach(function (b) {
      if (FINISHED.indexOf(b.textContent) >= 0) n += 1;
    });
    done.textContent = String(n);
    progress.value = n;
  }

  function onAction(event) {
    const data = JSON.parse(event.data);
    const p = data.payload || {};
    const row = table.querySelector('tr[data-action="' + Number(p.actionId) + '"]');
    if (!row) return;
    const cell = row.querySelector("td.status");
    cell.replaceChildren(badge(String(p.status)));
    if (typeof p.durationSeconds === "number") {
      row.querySelector("td.time").textContent = p.durationSeconds.toFixed(1) + "s";
    }
    row.querySelector("td.err").textContent = p.error || "";
    countDone();
  }

  function onEnd(event) {
    const status = event.type.split(".")[1];
    const holder = document.getElementById("apply-status");
    holder.dataset.status = status;
    holder.replaceChildren(badge(status));
    const data = JSON.parse(event.data);
    if (data.payload && data.payload.error) {
      const error = document.getElementById("apply-error");
      error.textContent = data.payload.error;
      error.hidden = false;
    }
    live.textContent = "The apply " + status + ".";
    source.close();
  }

  const source = new EventSource("/api/v1/applies/" + encodeURIComponent(applyId) + "/events");
  source.addEventListener("action.updated", onAction);
  source.addEventListener("apply.started", function () {
    const holder = document.getElementById("apply-status");
    holder.dataset.status = "running";
    holder.replaceChildren(badge("running"));
    live.textContent = "Running…";
  });
  ENDED.forEach(function (type) { source.addEventListener(type, onEnd); });
  source.onerror = function () { live.textContent = "Connection lost; retrying…"; };
})();
