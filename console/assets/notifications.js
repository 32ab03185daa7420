// The Notifications view: the latest notifications, and one as its recipients by
// channel, refreshed until nothing is pending.

import { $, ApiError, api, cell, encodingText, say, sentence, session, when } from "./core.js";

// How often a notification with pending deliveries is read again.
const REFRESH_MS = 1500;
// ------------------------------------------------------------------ notifications

let refreshTimer = null;
export let shown = null;

export function stopRefresh() {
  if (refreshTimer) clearTimeout(refreshTimer);
  refreshTimer = null;
}


/// Status in words and a symbol, never colour alone.
function statusCell(status) {
  const symbol = { sent: "✓", delivered: "✓✓", failed: "✗", undelivered: "✗", skipped: "–", pending: "…" }[status] || "";
  const td = cell(`${symbol} ${status}`.trim(), `status status-${status}`);
  return td;
}


// A recipient's latest answer: "Responding (by SMS, <time>)".
const ANSWERS = { responding: "Responding", unavailable: "Unavailable" };
const VIA = { app: "in the app", link: "by link", sms: "by SMS" };
const answer = (r) =>
  r.response ? `${ANSWERS[r.response] || r.response} (${VIA[r.responded_via] || r.responded_via}, ${when(r.responded_at)})` : "";

export async function loadNotifications() {
  try {
    const page = await api("GET", "/v1/notifications?limit=25");
    const rows = (page.notifications || []).map((n) => {
      const tr = document.createElement("tr");
      const c = n.counts || {};
      tr.append(
        cell(when(n.created_at)),
        cell(n.category),
        cell(n.incident_id || ""),
        cell(c.sent ?? 0),
        cell(c.delivered ?? 0),
        cell(c.pending ?? 0),
        cell((c.failed ?? 0) + (c.undelivered ?? 0)),
        cell(c.skipped ?? 0),
        cell(c.responding ?? 0),
        cell(c.unavailable ?? 0),
        cell(n.sms_segments ?? 0),
      );
      const td = document.createElement("td");
      const b = document.createElement("button");
      b.type = "button";
      b.textContent = "Show";
      b.setAttribute("aria-label", `Show notification ${n.notification_id}`);
      b.addEventListener("click", () => showNotification(n.notification_id));
      td.append(b);
      tr.append(td);
      return tr;
    });
    $("notifications-list").tBodies[0].replaceChildren(...rows);
    say("notifications-message", rows.length ? "" : "No notifications yet.");
  } catch (e) {
    say("notifications-message", sentence(e), "error");
    if (e instanceof ApiError && e.status === 401) session.signOut(sentence(e));
  }
}

function recipientName(r) {
  if (r.user_id) return r.user_id;
  const c = r.contact || {};
  return c.name || c.mobile || c.email || "contact";
}

// The recipients page shown: the cursors of the pages before it (the first is null),
// so a large notification is read and refreshed one page (500 recipients) at a time.
let pageCursors = [null];
export let shownPage = 0;

export async function showNotification(id, page = 0) {
  stopRefresh();
  if (shown !== id) pageCursors = [null];
  shown = id;
  $("notification").hidden = false;
  let pending = false;
  try {
    const cursor = pageCursors[page];
    const q = cursor ? `?cursor=${encodeURIComponent(cursor)}` : "";
    const n = await api("GET", `/v1/notifications/${encodeURIComponent(id)}${q}`);
    const rows = [];
    let recipients = 0;
    for (const r of n.recipients || []) {
      recipients += 1;
      for (const d of r.deliveries || []) {
        pending = pending || d.status === "pending";
        const tr = document.createElement("tr");
        tr.append(
          cell(recipientName(r)),
          cell(d.channel),
          statusCell(d.status),
          cell([d.reason, d.detail].filter(Boolean).join(": ")),
          cell(d.fallback ? `yes${d.fallback_reason ? ` (${d.fallback_reason})` : ""}` : "no"),
          cell(d.provider ? `${d.provider}${d.failover_from ? ` (failover from ${d.failover_from})` : ""}` : ""),
          cell(d.segments != null ? `${d.segments}${d.encoding ? ` (${encodingText(d.encoding)})` : ""}` : ""),
          cell(d.cycle ?? 0),
          cell(when(d.delivered_at || (d.channel === "push" ? r.delivered_at : null))),
          cell(when(r.acknowledged_at)),
          cell(answer(r)),
        );
        rows.push(tr);
      }
    }
    if (shown !== id) return;
    shownPage = page;
    pageCursors = pageCursors.slice(0, page + 1);
    if (n.next_cursor) pageCursors.push(n.next_cursor);
    const audience = n.audience
      ? n.audience.all
        ? ", for everyone"
        : `, for control centers ${(n.audience.control_centers || []).join(", ")}`
      : "";
    const paged = page > 0 || n.next_cursor ? ` Recipients page ${page + 1}.` : "";
    const segments = n.sms_segments != null ? ` SMS segments: ${n.sms_segments}.` : "";
    $("notification-title").textContent = `Notification ${id}`;
    $("notification-summary").textContent =
      `${n.category} (${n.lane || ""} lane)${audience}, incident ${n.incident_id || "none"}, created ${when(n.created_at)}.${segments}${paged} ` +
      (pending
        ? "Still pending: refreshing."
        : paged
          ? "Nothing on this page is pending."
          : recipients
            ? "Nothing is pending."
            : "No recipients.");
    $("notification-deliveries").tBodies[0].replaceChildren(...rows);
    const previous = $("recipients-previous");
    const next = $("recipients-next");
    previous.hidden = page === 0;
    next.hidden = !n.next_cursor;
    previous.onclick = () => showNotification(id, page - 1);
    next.onclick = () => showNotification(id, page + 1);
  } catch (e) {
    say("notifications-message", sentence(e), "error");
    return;
  }
  // Only the page shown is polled: a 10,000-recipient notification is not read whole
  // every 1.5 s.
  if (pending && !$("panel-notifications").hidden) {
    refreshTimer = setTimeout(() => showNotification(id, page), REFRESH_MS);
  }
}
