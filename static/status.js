// Follow the submission's live event stream (/api/submissions/S/events), redrawing the
// status at each event until every job has ended; a single solved image then opens its
// result page. Polls the state instead when the stream is unavailable.
(function () {
  "use strict";
  const root = document.getElementById("status");
  if (!root) return;
  const stateUrl = root.dataset.stateUrl;
  const labels = {
    queued: "queued", starting: "starting", extracting: "extracting stars",
    solving: "solving", done: "solved", failed: "failed",
  };

  function el(tag, attrs, text) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
    if (text !== undefined) node.textContent = text;
    return node;
  }

  // The API's queue keys (nova.status): "3 ahead of you, about 20 s".
  function waitText(job) {
    const parts = [];
    if (job.status === "queued" && job.queue_position != null) {
      parts.push(job.queue_position === 0 ? "next" : `${job.queue_position} ahead of you`);
    }
    if (job.eta_seconds != null) parts.push(`about ${job.eta_seconds} s`);
    return parts.join(", ");
  }

  function render(state) {
    root.replaceChildren();
    if (state.error_message) root.append(el("p", { class: "error" }, state.error_message));
    if (state.images.length === 0) {
      root.append(el("p", { class: "stage", "data-stage": "waiting" },
        "Waiting for a worker to read the upload…"));
    }
    for (const image of state.images) {
      const section = el("section", { class: "job", "data-image": image.id });
      section.append(el("h2", {}, image.original_filename || "image"));
      const job = image.job;
      if (job) {
        const stage = el("p", { class: "stage", "data-stage": job.stage }, `Job ${job.id}: `);
        let label = labels[job.stage] || job.stage;
        const wait = waitText(job);
        if (wait) label += ` (${wait})`;
        stage.append(el("strong", {}, label));
        if (job.sources_detected != null) stage.append(` · ${job.sources_detected} stars detected`);
        section.append(stage);
        if (job.failure_reason) section.append(el("p", { class: "error" }, job.failure_reason));
        if (job.log_tail) {
          const details = el("details", {});
          details.append(el("summary", {}, "Engine log (last lines)"), el("pre", {}, job.log_tail));
          section.append(details);
        }
        if (job.status === "success" || job.status === "failure") {
          const p = el("p", {});
          p.append(el("a", { href: image.result_url }, "Go to the result page"));
          section.append(p);
        }
      }
      root.append(section);
    }
  }

  // Fetch the state and draw it; true once every job has ended (a single solved image
  // then opens its result page).
  async function refresh() {
    const response = await fetch(stateUrl, { cache: "no-store" });
    const state = await response.json();
    render(state);
    if (state.finished) {
      const solved = state.images.filter((i) => i.job && i.job.status === "success");
      if (state.images.length === 1 && solved.length === 1) window.location = solved[0].result_url;
    }
    return state.finished;
  }

  // Polling: only when the live event stream is unavailable (no EventSource, the server's
  // cap on watchers reached, a proxy that buffers streams).
  async function poll() {
    let finished = false;
    try {
      finished = await refresh();
    } catch (err) {
      setTimeout(poll, 2000);
      return;
    }
    if (!finished) setTimeout(poll, 1000);
  }

  function follow() {
    if (!root.dataset.eventsUrl || !window.EventSource) return poll();
    const source = new EventSource(root.dataset.eventsUrl);
    let ended = false;
    root.dataset.updates = "events";
    const onEvent = async () => {
      try {
        ended = (await refresh()) || ended;
      } catch (err) { /* the next event or the fallback draws it */ }
      if (ended) source.close();
    };
    for (const name of ["queued", "extracting", "solving", "success", "failure"]) {
      source.addEventListener(name, onEvent);
    }
    source.addEventListener("error", () => {
      // EventSource reconnects by itself after a stream ends; it gives up (CLOSED) on a
      // refusal such as 503, or when the stream has said everything (204).
      if (source.readyState === EventSource.CLOSED && !ended) {
        root.dataset.updates = "polling";
        poll();
      }
    });
  }
  follow();
})();
