// haita sample app: live updates (server-sent events), checkout heartbeats
// and release on leaving the page. No dependencies.
(function () {
  "use strict";
  var meta = function (n) { var m = document.querySelector('meta[name="' + n + '"]'); return m ? m.content : ""; };
  var csrf = meta("csrf-token"), me = meta("user");

  function clock(iso) {
    var d = new Date(iso);
    if (isNaN(d)) return "";
    return d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  }
  function localTimes(root) {
    root.querySelectorAll("time[datetime]").forEach(function (t) {
      var s = clock(t.getAttribute("datetime"));
      if (s) t.textContent = s;
    });
  }
  function setTime(el, iso) { if (el) { el.setAttribute("datetime", iso); el.textContent = clock(iso); } }

  var editor = document.getElementById("editor");
  var state = { submitting: false, lost: false, timer: 0 };

  function showLost(msg) {
    var el = document.getElementById("lost");
    if (!el) return;
    state.lost = true;
    clearInterval(state.timer);
    el.textContent = msg;
    el.hidden = false;
    var holding = document.getElementById("holding");
    if (holding) holding.hidden = true;
  }

  function heartbeat() {
    if (!editor || state.lost) return;
    var id = editor.dataset.doc;
    fetch("/api/documents/" + encodeURIComponent(id) + "/checkout/heartbeat", {
      method: "POST", credentials: "same-origin",
      headers: { "Checkout-Token": editor.dataset.token, "X-CSRF-Token": csrf }
    }).then(function (r) {
      if (r.ok) return;
      return r.json().catch(function () { return {}; }).then(function (p) {
        if (r.status === 401) { showLost("Your session has ended. Copy your text, then sign in again."); return; }
        if (r.status >= 500) return; // try again on the next beat
        var msg;
        if (p.broken_by) {
          msg = p.broken_by + " broke your checkout" + (p.reason ? ": " + p.reason : "") + ". Your text has not been saved; copy it before leaving.";
        } else {
          msg = "Your checkout has ended (" + (p.detail || r.status) + "). Your text has not been saved; copy it before leaving.";
        }
        showLost(msg);
      });
    }).catch(function () { /* offline: the next beat tries again */ });
  }

  if (editor) {
    editor.addEventListener("submit", function () { state.submitting = true; });
    if (editor.dataset.token) {
      state.timer = setInterval(heartbeat, Number(editor.dataset.heartbeatMs) || 30000);
      // Leaving the page (closing the tab, navigating away) ends the
      // checkout at once instead of when its idle time runs out.
      window.addEventListener("pagehide", function () {
        if (state.submitting || state.lost) return;
        var f = new FormData();
        f.append("csrf", csrf);
        f.append("token", editor.dataset.token);
        navigator.sendBeacon("/docs/" + encodeURIComponent(editor.dataset.doc) + "/release", f);
      });
    }
  }

  function onDoc(ev) {
    var id = ev.id;
    document.querySelectorAll('[data-doc="' + CSS.escape(id) + '"]').forEach(function (el) {
      if (el === editor) return;
      if (ev.deleted) {
        if (el.classList.contains("doc")) el.remove();
        return;
      }
      el.querySelectorAll("[data-f]").forEach(function (f) {
        var k = f.dataset.f;
        if (f.closest("[data-banner]")) return;
        if (k === "updated_at") setTime(f, ev.updated_at);
        else if (k in ev && typeof ev[k] !== "object") f.textContent = ev[k];
      });
      if (el.classList.contains("doc")) {
        el.classList.add("flash-change");
        setTimeout(function () { el.classList.remove("flash-change"); }, 1200);
      }
    });
    document.querySelectorAll('[data-banner="' + CSS.escape(id) + '"]').forEach(function (b) {
      var c = ev.checkout;
      b.hidden = !c;
      if (!c) return;
      b.classList.toggle("mine", c.owner === me);
      b.querySelector('[data-f="owner"]').textContent = c.owner === me ? "you" : c.owner;
      setTime(b.querySelector('[data-f="since"]'), c.since);
      setTime(b.querySelector('[data-f="free_by"]'), c.free_by);
    });
    document.querySelectorAll('[data-admin-break="' + CSS.escape(id) + '"]').forEach(function (f) { f.hidden = !ev.checkout; });
    var edit = document.getElementById("edit");
    if (edit && edit.closest('[data-doc="' + CSS.escape(id) + '"]') && ev.policy === "pessimistic") {
      edit.textContent = ev.checkout && ev.checkout.owner === me ? "Continue editing" : "Check out and edit";
      edit.hidden = !!ev.checkout && ev.checkout.owner !== me; // the banner names the holder
    }
    if (editor && editor.dataset.doc === id) {
      if (ev.deleted) { showLost("This document has been deleted."); return; }
      if (editor.dataset.token) {
        if (!ev.checkout || ev.checkout.owner !== me) heartbeat(); // learn why at once
        return;
      }
      if (ev.version > Number(editor.dataset.version)) {
        var s = document.getElementById("stale");
        s.textContent = ev.updated_by + " saved version " + ev.version + " at " + clock(ev.updated_at) + " while you were editing. " +
          (editor.dataset.policy === "optimistic" ? "If you save, you will see both versions and choose." : "If you save, your text replaces theirs.");
        s.hidden = false;
      }
    }
  }

  function connect() {
    if (!me || !window.EventSource) return;
    var live = document.getElementById("live");
    var es = new EventSource("/events");
    es.onopen = function () { if (live) live.classList.add("on"); };
    es.onerror = function () { if (live) live.classList.remove("on"); };
    es.addEventListener("doc", function (e) {
      try { onDoc(JSON.parse(e.data)); } catch (err) { console.error(err); }
    });
    window.addEventListener("pagehide", function () { es.close(); });
  }

  localTimes(document);
  connect();
})();
