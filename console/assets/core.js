// What every part of the console shares: reading the page, calling the API, saying
// what happened. The part that signed the caller in says how to sign out.

/// Where the bearer token is kept: this browser tab's session only.
export const TOKEN_KEY = "flare.token";

export const $ = (id) => document.getElementById(id);

// ------------------------------------------------------------------ the API

export class ApiError extends Error {
  constructor(status, body) {
    const e = (body && body.error) || {};
    super(e.message || `HTTP ${status}`);
    this.status = status;
    this.code = e.code;
    this.fields = e.fields || {};
  }
}

export async function api(method, path, body) {
  const headers = { Authorization: `Bearer ${sessionStorage.getItem(TOKEN_KEY) || ""}` };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const res = await fetch(path, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
    credentials: "omit",
    cache: "no-store",
  });
  const text = await res.text();
  let json = null;
  try {
    json = text ? JSON.parse(text) : null;
  } catch {
    json = null;
  }
  if (!res.ok) throw new ApiError(res.status, json);
  return json;
}

/// A sentence for an error, as a person should read it.
export function sentence(e) {
  if (!(e instanceof ApiError)) return `Flare could not be reached (${e.message}).`;
  if (e.status === 401) return "Your token was not accepted: it is missing, expired or not for this Flare. Sign in again.";
  if (e.status === 403) return "Your role may look at these settings but not change them: an administrator's token is needed.";
  if (e.status === 400) return `Not saved: ${e.message}`;
  return `${e.message} (HTTP ${e.status}).`;
}

// ------------------------------------------------------------------ forms

export function clearErrors(form) {
  for (const p of form.querySelectorAll(".field-error")) p.textContent = "";
  for (const i of form.querySelectorAll("[aria-invalid]")) i.removeAttribute("aria-invalid");
}

/// Each of the API's `fields` next to the input that holds it; answers the ones the
/// form has no place for.
export function showFieldErrors(form, fields) {
  const rest = {};
  for (const [path, why] of Object.entries(fields)) {
    const p = form.querySelector(`[data-error-for="${CSS.escape(path)}"]`);
    if (p) {
      p.textContent = why;
      const input = form.querySelector(`[data-field="${CSS.escape(path)}"]`);
      if (input) {
        input.setAttribute("aria-invalid", "true");
        p.id = p.id || `${input.id}-error`;
        // Beside a hint the field is already described by, not instead of it.
        const ids = new Set((input.getAttribute("aria-describedby") || "").split(/\s+/).filter(Boolean));
        ids.add(p.id);
        input.setAttribute("aria-describedby", [...ids].join(" "));
      }
    } else {
      rest[path] = why;
    }
  }
  return rest;
}

export function say(id, text, kind = "info") {
  const el = $(id);
  el.textContent = text;
  el.dataset.kind = kind;
}


export const value = (id) => $(id).value.trim();
export const numberOrNull = (id) => (value(id) === "" ? null : Number(value(id)));

export function cell(text, cls) {
  const td = document.createElement("td");
  td.textContent = text == null ? "" : String(text);
  if (cls) td.className = cls;
  return td;
}

export const when = (t) => (t ? new Date(t).toLocaleString() : "");

/// Where a 401 anywhere ends: the sign-in part sets it.
export const session = { signOut: () => {} };

// An SMS's encodings as people read them, and its segments in words.
export const ENCODINGS = { gsm7: "GSM-7", ucs2: "UCS-2" };
export const segmentsText = (segments) => `${segments} segment${segments === 1 ? "" : "s"}`;
export const encodingText = (encoding) => ENCODINGS[encoding] || encoding;
