// The pages' one way to call the JSON API: the session cookie, the page's CSRF token, a JSON body,
// and the API's own error message ({"error": {"message"}}) thrown as an Error for the page to show.
"use strict";
window.hotline = {
  async call(method, url, body) {
    const csrf = document.querySelector('meta[name="csrf-token"]').content;
    const opts = {method, headers: {"X-CSRF-Token": csrf}, credentials: "same-origin"};
    if (body !== undefined) { opts.headers["Content-Type"] = "application/json"; opts.body = JSON.stringify(body); }
    const r = await fetch(url, opts);
    const data = r.status === 204 ? null : await r.json();
    if (!r.ok) throw new Error(data && data.error ? data.error.message : ("HTTP " + r.status));
    return data;
  },
  // A table cell holding text (never markup: what the API returns may be anyone's words).
  cell(tr, text) { const td = document.createElement("td"); td.textContent = text ?? ""; tr.appendChild(td); return td; },
};
