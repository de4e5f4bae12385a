// apsis-lite pages: the little that htmx attributes do not say.
// No inline script anywhere; this file and htmx are all the JavaScript.
(function () {
  "use strict";

  // Which rerun groups and folders the user opened or closed, so that a
  // poll that replaces a list keeps them as they were.
  var openGroups = new Set();
  var folders = new Map();

  function setGroup(body, open) {
    body.toggleAttribute("data-open", open);
    var button = body.querySelector("[data-toggle-group]");
    if (button) button.setAttribute("aria-expanded", open ? "true" : "false");
  }

  function restore(root) {
    if (!root || !root.querySelectorAll) return;
    var bodies = root.matches && root.matches("tbody[data-group]") ? [root] : root.querySelectorAll("tbody[data-group]");
    bodies.forEach(function (body) {
      var id = body.getAttribute("data-group");
      if (body.hasAttribute("data-open")) openGroups.add(id);  // opened by the server (a rerun)
      else if (openGroups.has(id)) setGroup(body, true);
    });
    root.querySelectorAll("details[data-key]").forEach(function (d) {
      var key = d.getAttribute("data-key");
      if (folders.has(key)) d.open = folders.get(key);
    });
  }

  document.addEventListener("click", function (event) {
    var toggle = event.target.closest("[data-toggle-group]");
    if (toggle) {
      var body = toggle.closest("tbody");
      var open = !body.hasAttribute("data-open");
      setGroup(body, open);
      var id = body.getAttribute("data-group");
      if (open) openGroups.add(id); else openGroups.delete(id);
      return;
    }
    var dismiss = event.target.closest("[data-dismiss]");
    if (dismiss) {
      dismiss.closest(".message").remove();
      return;
    }
    // A click outside an open menu closes it, as menus do.
    document.querySelectorAll("details.menu[open]").forEach(function (menu) {
      if (!menu.contains(event.target)) menu.open = false;
    });
  });

  document.addEventListener("keydown", function (event) {
    if (event.key !== "Escape") return;
    document.querySelectorAll("details.menu[open]").forEach(function (menu) {
      menu.open = false;
      var summary = menu.querySelector("summary");
      if (summary) summary.focus();
    });
  });

  document.addEventListener("toggle", function (event) {
    var d = event.target;
    if (d.matches && d.matches("details[data-key]")) folders.set(d.getAttribute("data-key"), d.open);
  }, true);

  document.addEventListener("htmx:load", function (event) { restore(event.detail.elt); });

  // Every request htmx sends carries the session's CSRF token; the server
  // refuses a state-changing request from a browser session without it.
  document.addEventListener("htmx:configRequest", function (event) {
    var meta = document.querySelector('meta[name="csrf-token"]');
    if (meta && meta.content) event.detail.headers["X-CSRF-Token"] = meta.content;
    // A background refresh is not the user doing something: it does not keep
    // an idle session alive.
    var elt = event.detail.elt;
    if (elt && elt.hasAttribute && (elt.hasAttribute("data-poll") || elt.classList.contains("heartbeat"))) {
      event.detail.headers["X-Apsis-Poll"] = "1";
    }
  });

  // A filter box asks once per query: Enter fires the form's submit, the
  // field's change and search events and ends a typing pause, each of which
  // would send the same request (and replace the one before it).
  var lastFilter = new WeakMap();
  document.addEventListener("htmx:confirm", function (event) {
    var elt = event.detail.elt;
    var form = elt && elt.closest && elt.closest('form[role="search"]');
    if (!form || event.detail.verb !== "get") return;
    var key = event.detail.path + "?" + new URLSearchParams(new FormData(form)).toString();
    var last = lastFilter.get(form);
    var now = Date.now();
    if (last && last.key === key && now - last.at < 1500) {
      event.preventDefault();
      return;
    }
    lastFilter.set(form, {key: key, at: now});
  });

  // A field that does not read (a date not as YYYY-MM-DD) says why, in its
  // own words (its title) rather than the browser's "match the requested
  // format", and rather than the request being dropped without a word.
  document.addEventListener("invalid", function (event) {
    var field = event.target;
    if (field.classList && field.classList.contains("iso-time") && field.validity.patternMismatch) {
      field.setCustomValidity(field.title);
    }
  }, true);
  document.addEventListener("input", function (event) {
    var field = event.target;
    if (field.classList && field.classList.contains("iso-time")) field.setCustomValidity("");
  }, true);
  document.addEventListener("htmx:validation:halted", function (event) {
    var elt = event.detail.elt;
    if (elt && elt.reportValidity) elt.reportValidity();
  });

  // A poll waits while a menu in what it would replace is open.
  document.addEventListener("htmx:beforeRequest", function (event) {
    var elt = event.detail.elt;
    if (!elt.hasAttribute || !elt.hasAttribute("data-poll")) return;
    var target = event.detail.target || elt;
    if (target.querySelector && target.querySelector("details.menu[open]")) event.preventDefault();
  });

  // Output: keep following the end if the reader was at the end.
  var follow = false;
  document.addEventListener("htmx:beforeSwap", function (event) {
    var t = event.detail.target;
    if (t && t.id === "output") follow = t.scrollTop + t.clientHeight >= t.scrollHeight - 8;
  });
  document.addEventListener("htmx:afterSwap", function (event) {
    var t = event.detail.target;
    if (t && t.id === "output" && follow) t.scrollTop = t.scrollHeight;
  });

  // Connection: say so when the server cannot be reached; polls keep
  // trying, and the first answer hides the notice again.
  function offline(on) {
    var banner = document.getElementById("offline");
    if (banner) banner.hidden = !on;
    document.body.classList.toggle("is-offline", on);
  }
  document.addEventListener("htmx:sendError", function () { offline(true); });
  document.addEventListener("htmx:timeout", function () { offline(true); });
  document.addEventListener("htmx:afterRequest", function (event) {
    var xhr = event.detail.xhr;
    if (xhr && xhr.status > 0) offline(false);
    // A successful action clears the messages of earlier ones.
    var elt = event.detail.elt;
    if (event.detail.successful && elt && elt.hasAttribute && !elt.hasAttribute("data-poll")
        && !elt.classList.contains("heartbeat") && event.detail.requestConfig && event.detail.requestConfig.verb === "post") {
      var messages = document.getElementById("messages");
      if (messages) messages.textContent = "";
    }
  });
})();
