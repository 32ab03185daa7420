// The Flare console: the seed's Settings > Organization > Interfaces screen, the
// delivery log and (administrators) the audit trail, over the public /v1 routes only
// (same origin, bearer token).

import { $, ApiError, TOKEN_KEY, api, clearErrors, encodingText, numberOrNull, say, segmentsText, sentence, session, showFieldErrors, value } from "./core.js";
import { loadNotifications, showNotification, shown, shownPage, stopRefresh } from "./notifications.js";
import { clearAudit, loadAudit, wireAudit } from "./audit.js";

const METHODS = [
  ["app_only", "Via the Mobile App Only"],
  ["app_then_sms_email", "SMS/Email if Mobile App Fails"],
  ["app_sms_email", "Mobile App, SMS and Email"],
];
// An SMS's length: the default cap, and the encodings' names as people read them.
const DEFAULT_MAX_SEGMENTS = 3;

/// Runs a form's request: errors beside their fields, the rest as a sentence; nothing
/// typed is touched when it fails.
async function submit(form, messageId, run) {
  clearErrors(form);
  say(messageId, "Working…");
  try {
    const out = await run();
    return out;
  } catch (e) {
    let text = sentence(e);
    if (e instanceof ApiError && e.status === 400) {
      const rest = showFieldErrors(form, e.fields);
      const others = Object.entries(rest).map(([k, v]) => `${k}: ${v}`);
      text = others.length ? `Not saved: ${others.join("; ")}` : "Not saved: correct the fields marked below.";
    }
    say(messageId, text, "error");
    if (e instanceof ApiError && e.status === 401) signOut(text);
    return undefined;
  }
}


// ------------------------------------------------------------------ tabs

const TABS = ["sms", "email", "communication", "notifications", "audit"];

/// The tabs this caller is shown (Audit only to administrators), in order.
const shownTabs = () => TABS.filter((t) => !$(`tab-${t}`).hidden);

function selectTab(name, focus = false) {
  for (const t of TABS) {
    const tab = $(`tab-${t}`);
    const on = t === name;
    tab.setAttribute("aria-selected", String(on));
    tab.tabIndex = on ? 0 : -1;
    $(`panel-${t}`).hidden = !on;
    if (on && focus) tab.focus();
  }
  if (name === "notifications") loadNotifications();
  else stopRefresh();
  if (name === "audit") loadAudit();
}

function wireTabs() {
  const list = document.querySelector('[role="tablist"]');
  for (const t of TABS) $(`tab-${t}`).addEventListener("click", () => selectTab(t));
  list.addEventListener("keydown", (ev) => {
    const tabs = shownTabs();
    const current = tabs.findIndex((t) => $(`tab-${t}`).getAttribute("aria-selected") === "true");
    const to = { ArrowRight: current + 1, ArrowLeft: current - 1, Home: 0, End: tabs.length - 1 }[ev.key];
    if (to === undefined) return;
    ev.preventDefault();
    selectTab(tabs[(to + tabs.length) % tabs.length], true);
  });
}

// ------------------------------------------------------------------ SMS

let smsStored = {}; // control center id -> its stored view

function showSmsProvider() {
  const http = $("sms-provider").value === "http";
  for (const el of document.querySelectorAll(".http-only")) el.hidden = !http;
}

function fillSms(cc) {
  const v = smsStored[cc];
  $("sms-origin").textContent = v
    ? `Settings of control center ${cc}.`
    : cc === "main"
      ? "No settings yet: SMS is not configured."
      : `No settings of its own: ${cc} sends with main's settings until you save these.`;
  $("sms-provider").value = v ? v.provider : "sns";
  $("sms-url").value = (v && v.url) || "";
  $("sms-format").value = (v && v.format) || "json";
  $("sms-username").value = (v && v.username) || "";
  $("sms-password").value = "";
  const set = Boolean(v && v.password_set);
  $("sms-password-state").textContent = set ? "Password: set (type a new one to replace it)" : "Password: not set";
  $("sms-password").placeholder = set ? "set" : "";
  $("sms-header").value = (v && v.http_header) || "";
  $("sms-sender").value = (v && v.sender_number) || "";
  $("sms-failover").value = (v && v.failover) || "";
  $("sms-rate").value = v && v.max_per_second != null ? v.max_per_second : "";
  // Absent (no settings of its own yet): the defaults, smart encoding on and 3 segments.
  $("sms-smart").checked = !(v && v.smart_encoding === false);
  $("sms-max-segments").value = v && v.max_segments != null ? v.max_segments : DEFAULT_MAX_SEGMENTS;
  $("sms-health").textContent = healthText(v && v.health);
  $("sms-delete").disabled = !v;
  showSmsProvider();
  clearErrors($("sms-form"));
}

function healthText(h) {
  if (!h) return "";
  const state = { ok: "Healthy", failing: "Failing", open: "Circuit open: sending through the failover provider" }[h.state] || h.state;
  const last = h.last_error ? `; last error ${h.last_error}` : "";
  return `Provider health: ${state} (${h.consecutive_failures} failures in a row${last}).`;
}

function smsBody() {
  const provider = $("sms-provider").value;
  const body = { provider, smart_encoding: $("sms-smart").checked };
  const sender = value("sms-sender");
  if (sender) body.sender_number = sender;
  // Sent as typed (the API says what is wrong with it); left empty, the default.
  const maxSegments = numberOrNull("sms-max-segments");
  if (maxSegments !== null) body.max_segments = maxSegments;
  if (provider === "http") {
    body.url = value("sms-url");
    body.format = $("sms-format").value;
    if (value("sms-username")) body.username = value("sms-username");
    // Only a typed password is sent: left empty, the stored one is kept.
    if ($("sms-password").value) body.password = $("sms-password").value;
    if (value("sms-header")) body.http_header = value("sms-header");
    if ($("sms-failover").value) body.failover = $("sms-failover").value;
    const rate = numberOrNull("sms-rate");
    if (rate !== null) body.max_per_second = rate;
  }
  return body;
}

function listControlCenters(selected) {
  const select = $("sms-cc");
  const ids = new Set(["main", ...Object.keys(smsStored)]);
  if (selected) ids.add(selected);
  select.replaceChildren(
    ...[...ids].sort((a, b) => (a === "main" ? -1 : b === "main" ? 1 : a.localeCompare(b))).map((id) => {
      const o = document.createElement("option");
      o.value = id;
      o.textContent = smsStored[id] ? id : `${id} (no settings of its own)`;
      return o;
    }),
  );
  select.value = selected || "main";
}

async function loadSms(selected) {
  const list = await api("GET", "/v1/settings/sms");
  const items = Array.isArray(list) ? list : (list && (list.sms || list.settings || list.control_centers)) || [];
  smsStored = {};
  for (const s of items) smsStored[s.control_center_id] = s;
  listControlCenters(selected);
  fillSms($("sms-cc").value);
}

function wireSms() {
  $("sms-provider").addEventListener("change", showSmsProvider);
  $("sms-cc").addEventListener("change", () => fillSms($("sms-cc").value));
  $("sms-add-cc").addEventListener("click", () => {
    const form = $("sms-form");
    clearErrors(form);
    const id = value("sms-new-cc");
    if (!/^[A-Za-z0-9._-]{1,128}$/.test(id) || id === "." || id === "..") {
      showFieldErrors(form, { new_control_center: "1 to 128 letters, digits, '-', '_' or '.'" });
      return;
    }
    $("sms-new-cc").value = "";
    listControlCenters(id);
    fillSms(id);
    $("sms-provider").focus();
  });
  $("sms-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const cc = $("sms-cc").value;
    const saved = await submit(ev.target, "sms-message", () =>
      api("PUT", `/v1/settings/sms/${encodeURIComponent(cc)}`, smsBody()),
    );
    if (saved) {
      smsStored[cc] = saved;
      listControlCenters(cc);
      fillSms(cc);
      say("sms-message", `Saved the SMS settings of ${cc}.`, "ok");
    }
  });
  $("sms-delete").addEventListener("click", async () => {
    const cc = $("sms-cc").value;
    if (!window.confirm(`Delete the SMS settings of ${cc}? Its stored password and header go too.`)) return;
    const done = await submit($("sms-form"), "sms-message", () =>
      api("DELETE", `/v1/settings/sms/${encodeURIComponent(cc)}`).then(() => true),
    );
    if (done) {
      delete smsStored[cc];
      listControlCenters(cc);
      fillSms(cc);
      say("sms-message", `Deleted the SMS settings of ${cc}.`, "ok");
    }
  });
  $("sms-test").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const cc = $("sms-cc").value;
    const body = { to: value("sms-test-to") };
    // Empty: the API's built-in test sentence. Sent as typed, blanks and all.
    const text = $("sms-test-text").value;
    if (text !== "") body.text = text;
    $("sms-test-sent").hidden = true;
    const out = await submit(ev.target, "sms-test-result", () =>
      api("POST", `/v1/settings/sms/${encodeURIComponent(cc)}/test`, body),
    );
    if (out) {
      say("sms-test-result", smsTestText(out), "ok");
      if (out.text != null) {
        $("sms-test-sent-text").textContent = out.text;
        $("sms-test-sent").hidden = false;
      }
    }
  });
}

function testText(out) {
  const id = out.provider_message_id ? `, message id ${out.provider_message_id}` : "";
  return `Sent through ${out.provider}${id}.`;
}

/// How an SMS went, as a person reads it: "1 segment", "GSM-7".

/// "Sent through sns: GSM-7, 1 segment, message id ...".
function smsTestText(out) {
  const how = [];
  if (out.encoding) how.push(encodingText(out.encoding));
  if (out.segments != null) how.push(segmentsText(out.segments));
  if (out.cut) how.push("cut to fit Max segments");
  if (out.provider_message_id) how.push(`message id ${out.provider_message_id}`);
  return `Sent through ${out.provider}${how.length ? `: ${how.join(", ")}` : ""}.`;
}

// ------------------------------------------------------------------ email

let emailStored = null;

function showEmailProvider() {
  const smtp = $("email-provider").value === "smtp";
  for (const el of document.querySelectorAll(".smtp-only")) el.hidden = !smtp;
}

function fillEmail() {
  const v = emailStored;
  const smtp = (v && v.smtp) || {};
  $("email-provider").value = v ? v.provider : "ses";
  $("email-sender").value = (v && v.sender_email) || "";
  $("email-server").value = smtp.server_url || "";
  $("email-port").value = smtp.port != null ? smtp.port : "";
  $("email-username").value = smtp.username || "";
  $("email-password").value = "";
  const set = Boolean(smtp.password_set);
  $("email-password-state").textContent = set ? "Password: set (type a new one to replace it)" : "Password: not set";
  $("email-password").placeholder = set ? "set" : "";
  $("email-tls").checked = smtp.use_tls !== false;
  $("email-failover").value = (v && v.failover) || "";
  $("email-health").textContent = healthText(v && v.health);
  $("email-delete").disabled = !v;
  showEmailProvider();
  clearErrors($("email-form"));
}

function emailBody() {
  const provider = $("email-provider").value;
  const body = { provider };
  if (value("email-sender")) body.sender_email = value("email-sender");
  if (provider === "smtp") {
    const smtp = { server_url: value("email-server"), use_tls: $("email-tls").checked };
    const port = numberOrNull("email-port");
    if (port !== null) smtp.port = port;
    if (value("email-username")) smtp.username = value("email-username");
    if ($("email-password").value) smtp.password = $("email-password").value;
    body.smtp = smtp;
    if ($("email-failover").value) body.failover = $("email-failover").value;
  }
  return body;
}

async function loadEmail() {
  try {
    emailStored = await api("GET", "/v1/settings/email");
  } catch (e) {
    if (!(e instanceof ApiError && e.status === 404)) throw e;
    emailStored = null;
  }
  fillEmail();
}

function wireEmail() {
  $("email-provider").addEventListener("change", showEmailProvider);
  $("email-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const saved = await submit(ev.target, "email-message", () => api("PUT", "/v1/settings/email", emailBody()));
    if (saved) {
      emailStored = saved;
      fillEmail();
      say("email-message", "Saved the email settings.", "ok");
    }
  });
  $("email-delete").addEventListener("click", async () => {
    if (!window.confirm("Delete the email settings? Email goes from the default account again.")) return;
    const done = await submit($("email-form"), "email-message", () => api("DELETE", "/v1/settings/email").then(() => true));
    if (done) {
      emailStored = null;
      fillEmail();
      say("email-message", "Deleted the email settings: email goes from the default account.", "ok");
    }
  });
  $("email-test").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const out = await submit(ev.target, "email-test-result", () =>
      api("POST", "/v1/settings/email/test", { to: value("email-test-to") }),
    );
    if (out) say("email-test-result", testText(out), "ok");
  });
}

// ------------------------------------------------------------------ communication

function fillCommunication(c) {
  $("comm-dispatch").value = c.dispatch;
  $("comm-incident-contacts").value = c.incident_contacts;
  $("comm-messages").value = c.messages;
  $("comm-distress").checked = Boolean(c.distress);
  $("comm-virtual").checked = Boolean(c.dispatch_virtual_users);
  $("comm-manual").checked = Boolean(c.manual_sms);
  $("comm-fallback").value = c.app_fallback_seconds != null ? c.app_fallback_seconds : "";
  $("comm-help").value = c.sms_help_text || "";
  const esc = c.dispatch_escalation;
  $("comm-escalate").checked = Boolean(esc);
  $("comm-escalate-after").value = esc ? esc.after_seconds : "";
  $("comm-escalate-cycles").value = esc ? esc.cycles : "";
  showEscalation();
}

function showEscalation() {
  const on = $("comm-escalate").checked;
  $("comm-escalate-after").disabled = !on;
  $("comm-escalate-cycles").disabled = !on;
}

function communicationBody() {
  const body = {
    dispatch: $("comm-dispatch").value,
    incident_contacts: $("comm-incident-contacts").value,
    messages: $("comm-messages").value,
    distress: $("comm-distress").checked,
    dispatch_virtual_users: $("comm-virtual").checked,
    manual_sms: $("comm-manual").checked,
    dispatch_escalation: $("comm-escalate").checked
      ? { after_seconds: numberOrNull("comm-escalate-after"), cycles: numberOrNull("comm-escalate-cycles") }
      : null,
  };
  const fallback = numberOrNull("comm-fallback");
  if (fallback !== null) body.app_fallback_seconds = fallback;
  // Empty: back to the default text.
  const help = $("comm-help").value;
  body.sms_help_text = help === "" ? null : help;
  return body;
}

function wireCommunication() {
  for (const select of document.querySelectorAll("select.method")) {
    select.replaceChildren(
      ...METHODS.map(([v, text]) => {
        const o = document.createElement("option");
        o.value = v;
        o.textContent = text;
        return o;
      }),
    );
  }
  $("comm-escalate").addEventListener("change", showEscalation);
  $("communication-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const saved = await submit(ev.target, "communication-message", () =>
      api("PUT", "/v1/settings/communication", communicationBody()),
    );
    if (saved) {
      fillCommunication(saved);
      say("communication-message", "Saved the communication settings.", "ok");
    }
  });
}

// ------------------------------------------------------------------ sign-in

function claims(token) {
  try {
    const part = token.split(".")[1];
    return JSON.parse(atob(part.replace(/-/g, "+").replace(/_/g, "/")));
  } catch {
    return {};
  }
}

/// The token's roles as the API reads them (an array, or one string such as
/// `admin dispatcher`; none when it has no `roles`), or null when the page cannot read
/// the token at all.
function tokenRoles(c) {
  if (!c.sub) return null;
  if (c.roles === undefined || c.roles === null) return [];
  if (Array.isArray(c.roles)) return c.roles.map(String);
  if (typeof c.roles === "string") {
    return c.roles
      .replace(/[[\]"]/g, " ")
      .split(/[\s,]+/)
      .filter(Boolean);
  }
  return null;
}

function signOut(message) {
  stopRefresh();
  clearAudit();
  sessionStorage.removeItem(TOKEN_KEY);
  $("console").hidden = true;
  $("sign-out").hidden = true;
  $("who").textContent = "";
  $("sign-in").hidden = false;
  say("sign-in-message", message || "", message ? "error" : "info");
}

async function start() {
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (!token) return signOut();
  try {
    const comm = await api("GET", "/v1/settings/communication");
    fillCommunication(comm);
    await Promise.all([loadSms(), loadEmail()]);
  } catch (e) {
    return signOut(sentence(e));
  }
  const c = claims(token);
  const known = tokenRoles(c);
  const roles = known ? known.join(", ") : "";
  $("who").textContent = `Signed in as ${c.sub || "?"} of ${c.org_id || "?"}${roles ? ` (${roles})` : ""}`;
  // The Audit tab is for administrators; a token whose roles the page cannot read gets
  // it too, and the API's refusal is said there in a sentence.
  $("tab-audit").hidden = Boolean(known) && !known.includes("admin");
  $("sign-in").hidden = true;
  $("console").hidden = false;
  $("sign-out").hidden = false;
  say("sign-in-message", "");
  selectTab("sms");
}

function wireSignIn() {
  $("sign-in-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    sessionStorage.setItem(TOKEN_KEY, $("token").value.trim());
    $("token").value = "";
    start();
  });
  $("sign-out").addEventListener("click", () => signOut());
}

session.signOut = signOut;
wireTabs();
wireSms();
wireEmail();
wireCommunication();
wireAudit();
wireSignIn();
$("notifications-refresh").addEventListener("click", () => {
  loadNotifications();
  if (shown) showNotification(shown, shownPage);
});
start();
