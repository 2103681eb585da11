// Poll the submission's state and redraw the status until every job has ended; a single
// solved image then opens its result page.
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

  async function poll() {
    let state;
    try {
      const response = await fetch(stateUrl, { cache: "no-store" });
      state = await response.json();
    } catch (err) {
      setTimeout(poll, 2000);
      return;
    }
    render(state);
    if (state.finished) {
      const solved = state.images.filter((i) => i.job && i.job.status === "success");
      if (state.images.length === 1 && solved.length === 1) window.location = solved[0].result_url;
      return;
    }
    setTimeout(poll, 1000);
  }
  poll();
})();
