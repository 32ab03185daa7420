// The Audit tab (administrators): the trail of every write attempt, filtered by person
// and target, paged, and its hash chain checked.

import { $, ApiError, api, cell, clearErrors, say, sentence, session, showFieldErrors, value, when } from "./core.js";

// ------------------------------------------------------------------ audit trail

const AUDIT_PAGE = 50;
// The filters the table shows (as they were when Filter was pressed, so More pages on
// with them even if the fields were edited since), the next page's cursor, and a
// counter so an answer to an older request never lands over a newer one.
let auditFilters = {};
let auditCursor = null;
let auditRequest = 0;

/// A sentence for a refused audit read: the trail is for administrators only.
function auditSentence(e) {
  if (e instanceof ApiError && e.status === 403) {
    return "The audit trail is for administrators: your token's roles do not include admin.";
  }
  return sentence(e);
}

/// A changed value as a person reads it: text as is, nothing as "none", the rest as JSON.
function changeValue(v) {
  if (v === null || v === undefined) return "none";
  if (typeof v === "string") return v === "" ? '""' : v;
  return JSON.stringify(v);
}

/// `sender_number: +15551230000 → +15551239999`; a secret only as `password: changed`.
function changeLines(changes) {
  if (!changes || typeof changes !== "object") return [];
  return Object.entries(changes).map(([field, c]) =>
    c && typeof c === "object" && ("from" in c || "to" in c)
      ? `${field}: ${changeValue(c.from)} → ${changeValue(c.to)}`
      : `${field}: ${changeValue(c)}`,
  );
}

function changesCell(changes) {
  const td = document.createElement("td");
  td.className = "changes";
  const lines = changeLines(changes);
  if (lines.length) {
    const ul = document.createElement("ul");
    for (const line of lines) {
      const li = document.createElement("li");
      li.textContent = line;
      ul.append(li);
    }
    td.append(ul);
  }
  return td;
}

/// The answer the attempt got, in words and a symbol, never colour alone: `✓ 200`,
/// `✗ 403 forbidden`.
function outcomeCell(outcome) {
  const o = outcome || {};
  const ok = o.status >= 200 && o.status < 300;
  const text = [ok ? "✓" : "✗", o.status, o.code].filter((x) => x != null && x !== "").join(" ");
  return cell(text, `status ${ok ? "status-ok" : "status-failed"}`);
}

function auditRow(e) {
  const tr = document.createElement("tr");
  const at = cell(when(e.at));
  at.title = e.at || "";
  const actor = e.actor || {};
  const who = cell(actor.sub, "who");
  if (Array.isArray(actor.roles)) who.title = `Roles: ${actor.roles.join(", ") || "none"}`;
  tr.title = e.audit_id || "";
  tr.append(at, who, cell(e.action), cell(e.target, "path"), outcomeCell(e.outcome), changesCell(e.changes));
  return tr;
}

function auditQuery(cursor) {
  const q = new URLSearchParams({ limit: String(AUDIT_PAGE) });
  for (const [k, v] of Object.entries(auditFilters)) if (v) q.set(k, v);
  if (cursor) q.set("cursor", cursor);
  return q.toString();
}

function auditSummary(count, more) {
  const by = [];
  if (auditFilters.actor) by.push(`person ${auditFilters.actor}`);
  if (auditFilters.target) by.push(`target ${auditFilters.target}`);
  const filtered = by.length ? ` for ${by.join(" and ")}` : "";
  if (!count) return by.length ? `No entries${filtered}.` : "No entries yet.";
  const entries = `${count} ${count === 1 ? "entry" : "entries"}`;
  return `${entries}${filtered}, newest first.${more ? " Older ones: More." : ""}`;
}

/// The first page with the filters typed (`more`: the next page below the rows shown).
export async function loadAudit(more = false) {
  const form = $("audit-filter");
  const table = $("audit-list");
  const body = table.tBodies[0];
  if (!more) {
    auditFilters = { actor: value("audit-actor"), target: value("audit-target") };
    auditCursor = null;
  }
  const request = ++auditRequest;
  clearErrors(form);
  table.setAttribute("aria-busy", "true");
  // One request at a time pages on: More waits for the list it would extend.
  $("audit-more").disabled = true;
  say("audit-message", "Working…");
  try {
    const page = await api("GET", `/v1/audit?${auditQuery(more ? auditCursor : null)}`);
    if (request !== auditRequest) return;
    const rows = (page.entries || []).map(auditRow);
    if (more) body.append(...rows);
    else body.replaceChildren(...rows);
    auditCursor = page.next_cursor || null;
    $("audit-more").hidden = !auditCursor;
    say("audit-message", auditSummary(body.rows.length, Boolean(auditCursor)));
  } catch (e) {
    if (request !== auditRequest) return;
    let text = auditSentence(e);
    if (e instanceof ApiError && e.status === 400) {
      const rest = showFieldErrors(form, e.fields);
      const others = Object.entries(rest).map(([k, v]) => `${k}: ${v}`);
      text = others.length ? `Not shown: ${others.join("; ")}` : "Not shown: correct the filters marked above.";
    }
    if (!more) {
      body.replaceChildren();
      $("audit-more").hidden = true;
    }
    say("audit-message", text, "error");
    if (e instanceof ApiError && e.status === 401) session.signOut(text);
  } finally {
    if (request === auditRequest) {
      table.removeAttribute("aria-busy");
      $("audit-more").disabled = false;
    }
  }
}

async function verifyAudit() {
  const button = $("audit-verify");
  button.disabled = true;
  say("audit-verify-result", "Checking the chain…");
  try {
    const v = await api("GET", "/v1/audit/verify");
    const n = v.entries ?? 0;
    const entries = `${n} ${n === 1 ? "entry" : "entries"}`;
    if (v.intact) {
      say("audit-verify-result", `Chain intact (${entries}).`, "ok");
    } else {
      say(
        "audit-verify-result",
        `Chain broken at ${v.first_broken || "an entry"}: that entry, or the one before it, was altered or removed (${entries} checked).`,
        "error",
      );
    }
  } catch (e) {
    say("audit-verify-result", auditSentence(e), "error");
    if (e instanceof ApiError && e.status === 401) session.signOut(sentence(e));
  } finally {
    button.disabled = false;
  }
}

/// Nothing of one caller's trail is left for the next to sign in.
export function clearAudit() {
  auditRequest += 1;
  auditFilters = {};
  auditCursor = null;
  $("audit-actor").value = "";
  $("audit-target").value = "";
  clearErrors($("audit-filter"));
  $("audit-list").tBodies[0].replaceChildren();
  $("audit-list").removeAttribute("aria-busy");
  $("audit-more").hidden = true;
  say("audit-message", "");
  say("audit-verify-result", "");
}

export function wireAudit() {
  $("audit-filter").addEventListener("submit", (ev) => {
    ev.preventDefault();
    loadAudit();
  });
  $("audit-more").addEventListener("click", () => loadAudit(true));
  $("audit-verify").addEventListener("click", verifyAudit);
}
