// kodo console: one small hand-written script. It submits forms to the JSON API and keeps the run
// page live over Server-Sent Events (GET /api/runs/{wid}/events): on each event it swaps in the
// server-rendered panel (/ui/runs/{wid}/panel). No polling loops, no third-party code.
"use strict";

function toast(text) {
  const box = document.getElementById("toast");
  if (!box) return;
  box.textContent = text;
  box.hidden = false;
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => { box.hidden = true; }, 4000);
}

async function postJSON(url, body) {
  const response = await fetch(url, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify(body),
  });
  let data = {};
  try { data = await response.json(); } catch (e) { data = {}; }
  return { status: response.status, data };
}

function escapeHTML(value) {
  return String(value).replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));
}

// --- the run console: submit a goal ----------------------------------------------------------
async function submitGoal(form) {
  const out = document.getElementById("submit-result");
  const fields = new FormData(form);
  const opts = {
    queuePartitionKey: fields.get("partition"),
    lane: fields.get("lane"),
    autoApprove: fields.get("autoApprove") === "on",
  };
  if (fields.get("useBudget") === "on") {
    opts.budget = {};
    for (const key of ["maxFanout", "maxSBXMinutes", "maxArtifactsMB", "maxRetriesPerStep", "maxWallClockMS"]) {
      opts.budget[key] = Number(fields.get(key));
    }
  }
  const goal = String(fields.get("goal") || "").trim();
  // The canonical ingress: recipe compile-default@v1 with the goal as form data (content-addressed, so
  // the same goal and options replay the same run). Without a recipe registry, fall back to intent + run.
  let started = await postJSON("/api/run", { recipeRef: { id: "compile-default", v: "v1" }, formData: { goal }, opts });
  if (started.status === 404 && started.data.error === "not found") {
    const intent = await postJSON("/api/intents", { goal, inputs: {}, constraints: {} });
    if (intent.status !== 201) { out.innerHTML = `<p class="error">${escapeHTML(intent.data.error || intent.status)}</p>`; return; }
    started = await postJSON("/api/runs", { intentId: intent.data.intentId, ...opts });
  }
  if (started.status === 409 && Array.isArray(started.data.drift)) {
    const rows = started.data.drift.map((d) =>
      `<tr><td>${escapeHTML(d.field)}</td><td>${escapeHTML(JSON.stringify(d.existing))}</td><td>${escapeHTML(JSON.stringify(d.incoming))}</td></tr>`).join("");
    out.innerHTML = `<div class="error" role="alert"><strong>Identity conflict (409)</strong><table><thead><tr><th>Field</th><th>Existing</th><th>Incoming</th></tr></thead><tbody>${rows}</tbody></table></div>`;
    return;
  }
  if (started.status !== 201 && started.status !== 200) {
    out.innerHTML = `<p class="error" role="alert">${escapeHTML(started.data.error || ("HTTP " + started.status))}</p>`;
    return;
  }
  if (started.data.isReplay) toast("Idempotent replay: this run already exists");
  window.location.href = "/?wid=" + encodeURIComponent(started.data.workflowID);
}

// --- the run page: live panel, gate forms, artifacts, retry ----------------------------------
function livePanel(panel) {
  const wid = panel.dataset.wid;
  let refreshing = false;
  let again = false;
  async function refresh() {
    if (refreshing) { again = true; return; }
    refreshing = true;
    try {
      const response = await fetch("/ui/runs/" + encodeURIComponent(wid) + "/panel");
      if (response.ok) {
        const focused = document.activeElement && panel.contains(document.activeElement) && document.activeElement.tagName === "INPUT";
        if (!focused) panel.innerHTML = await response.text();
      }
    } finally {
      refreshing = false;
      if (again) { again = false; refresh(); }
    }
  }
  const source = new EventSource("/api/runs/" + encodeURIComponent(wid) + "/events");
  // Every event refreshes, the first one too: the run may have moved between this page's render and the
  // stream's first snapshot, and that snapshot is then the only event it will ever send.
  source.addEventListener("run", () => { refresh(); });
  source.addEventListener("end", () => { source.close(); refresh(); });
  panel.addEventListener("kodo:changed", refresh);
}

async function answerGate(form, submitter) {
  const fields = new FormData(form);
  const payload = {};
  for (const [key, value] of fields.entries()) { if (value !== "") payload[key] = value; }
  if (submitter && submitter.dataset.choice) payload.choice = submitter.dataset.choice;
  const wid = form.dataset.wid;
  const gate = form.dataset.gate;
  const body = { payload, dedupeKey: `ui:${wid}:${gate}:${form.dataset.created}`, origin: "manual" };
  const result = await postJSON(`/api/runs/${encodeURIComponent(wid)}/gates/${encodeURIComponent(gate)}/reply`, body);
  if (result.status === 200) {
    toast(result.data.isReplay ? "Already answered (replay)" : "Answer sent");
    form.querySelectorAll("button").forEach((b) => { b.disabled = true; });
  } else {
    toast(result.data.error || ("HTTP " + result.status));
  }
}

async function openArtifact(uri) {
  const dialog = document.getElementById("artifact-dialog");
  const response = await fetch("/api/artifacts/" + encodeURIComponent(uri));
  const type = response.headers.get("content-type") || "";
  let text = await response.text();
  if (type.startsWith("application/json")) {
    try { text = JSON.stringify(JSON.parse(text), null, 2); } catch (e) { /* shown as sent */ }
  }
  document.getElementById("artifact-uri").textContent = uri;
  document.getElementById("artifact-type").textContent = type.split(";")[0];
  document.getElementById("artifact-body").textContent = text;
  dialog.showModal();
}

async function retryRun(button) {
  const result = await postJSON(`/runs/${encodeURIComponent(button.dataset.wid)}/retry`, {});
  toast(result.status === 202 ? `Retry accepted from ${result.data.fromStep}` : (result.data.error || "HTTP " + result.status));
}

// --- the ops console: actions with actor + reason ------------------------------------------
async function opsAction(form, submitter) {
  const fields = new FormData(form);
  const op = submitter ? submitter.value : "cancel";
  const body = { actor: fields.get("actor"), reason: fields.get("reason") };
  if (op === "fork") body.stepN = Number(fields.get("stepN") || 1);
  const wid = form.dataset.wid;
  const result = await postJSON(`/api/ops/wf/${encodeURIComponent(wid)}/${op}`, body);
  const out = form.querySelector("[data-kodo=ops-result]");
  const message = result.status === 202 ? `${op} accepted` + (result.data.forkedWorkflowID ? ` → ${result.data.forkedWorkflowID}` : "")
    : (result.data.error || "HTTP " + result.status);
  if (out) out.textContent = message;
  toast(message);
  if (result.status === 202) setTimeout(() => window.location.reload(), 600);
}

async function redeliverWebhook(button) {
  // A dead webhook delivery sent again (operator role): a new round of tries, the same webhook-id.
  button.disabled = true;
  const result = await postJSON(`/api/webhooks/deliveries/${encodeURIComponent(button.dataset.id)}/redeliver`, {});
  toast(result.status === 202 ? `Redelivery queued: ${result.data.workflowId}` : (result.data.error || "HTTP " + result.status));
  if (result.status === 202) setTimeout(() => window.location.reload(), 600);
  else button.disabled = false;
}

// --- recipes: start a run of a stable version with its form data ---------------------------
async function recipeRun(form) {
  const fields = new FormData(form);
  const formData = {};
  for (const [key, value] of fields.entries()) { if (key !== "partition" && value !== "") formData[key] = value; }
  const body = { recipeRef: { id: form.dataset.id, v: form.dataset.v }, formData, opts: { queuePartitionKey: fields.get("partition") } };
  const result = await postJSON("/api/run", body);
  if (result.status === 201 || result.status === 200) {
    window.location.href = "/?wid=" + encodeURIComponent(result.data.workflowID);
  } else {
    toast(result.data.error || ("HTTP " + result.status));
  }
}

document.addEventListener("submit", (event) => {
  const form = event.target;
  const kind = form.dataset.kodo;
  if (!kind) return;
  event.preventDefault();
  if (kind === "submit") submitGoal(form);
  if (kind === "gate") answerGate(form, event.submitter);
  if (kind === "ops") opsAction(form, event.submitter);
  if (kind === "recipe-run") recipeRun(form);
});

document.addEventListener("click", (event) => {
  const button = event.target.closest("[data-kodo]");
  if (!button || button.tagName === "FORM") return;
  if (button.dataset.kodo === "artifact") openArtifact(button.dataset.uri);
  if (button.dataset.kodo === "retry") retryRun(button);
  if (button.dataset.kodo === "redeliver") redeliverWebhook(button);
  if (button.dataset.kodo === "copy") copyText(button);
});

function copyText(button) {
  // The copyable git command of a delivery: the clipboard when the page may use it, else select the text.
  const source = document.getElementById(button.dataset.target);
  if (!source) return;
  if (navigator.clipboard) {
    navigator.clipboard.writeText(source.textContent).then(() => { button.textContent = "Copied"; }, () => {});
  } else {
    window.getSelection().selectAllChildren(source);
  }
}

document.addEventListener("DOMContentLoaded", () => {
  const panel = document.querySelector("[data-kodo=run]");
  if (panel) livePanel(panel);
});
