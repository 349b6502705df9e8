// routedesk console: the push channel (server-sent events), offer countdowns, keyboard
// shortcuts and browser notifications. Everything else is plain HTML forms and htmx.
(function () {
  "use strict";
  const csrf = () => document.querySelector('meta[name="csrf-token"]').content;

  // htmx requests carry the session's CSRF token as a header.
  document.addEventListener("htmx:configRequest", (e) => { e.detail.headers["X-CSRF-Token"] = csrf(); });

  // Countdown to each live offer's deadline.
  function tick() {
    document.querySelectorAll(".countdown[data-deadline]").forEach((el) => {
      if (!el.dataset.deadline) return;
      const left = Math.max(0, Math.round((Date.parse(el.dataset.deadline) - Date.now()) / 1000));
      el.textContent = left >= 60 ? `${Math.floor(left / 60)}m ${String(left % 60).padStart(2, "0")}s` : `${left}s`;
      el.classList.toggle("low", left <= 15);
    });
  }
  setInterval(tick, 1000);

  function focusOffer() {
    const accept = document.getElementById("accept");
    if (accept) accept.focus();
  }

  function notify(offer) {
    if (!("Notification" in window) || Notification.permission !== "granted" || !document.hidden) return;
    const n = new Notification(`New ${offer.priority} offer ${offer.case}`, {
      body: `${offer.subject}\n${offer.contact_id || ""} · ${offer.queue_id || ""}`,
      tag: `offer-${offer.offer_id}`,
      requireInteraction: true,
    });
    n.onclick = () => { window.focus(); focusOffer(); n.close(); };
  }

  // One event stream per page: offers for the agent view, board changes for every page.
  const url = document.body.dataset.eventsUrl;
  if (url) {
    const source = new EventSource(url);
    source.addEventListener("offer", (e) => {
      document.body.dispatchEvent(new CustomEvent("offer"));
      try { notify(JSON.parse(e.data)); } catch (_) { /* a malformed event: the page still updates */ }
    });
    source.addEventListener("offer_closed", () => document.body.dispatchEvent(new CustomEvent("offer")));
    source.addEventListener("board", () => document.body.dispatchEvent(new CustomEvent("board")));
    source.addEventListener("open", () => document.body.dataset.live = "1");
    source.addEventListener("signed_out", () => { source.close(); window.location.assign("/login"); });
    window.addEventListener("beforeunload", () => source.close());
  }

  document.addEventListener("htmx:afterSwap", (e) => {
    tick();
    if (e.detail.target && e.detail.target.id === "offer") focusOffer();
  });

  // Keyboard: A accepts, D moves to the decline reason (Enter then declines).
  document.addEventListener("keydown", (e) => {
    if (e.altKey || e.ctrlKey || e.metaKey) return;
    const tag = (e.target.tagName || "").toLowerCase();
    if (tag === "input" || tag === "select" || tag === "textarea") return;
    if (e.key === "a" || e.key === "A") {
      const b = document.getElementById("accept");
      if (b) { e.preventDefault(); b.click(); }
    } else if (e.key === "d" || e.key === "D") {
      const r = document.getElementById("decline-reason");
      if (r) { e.preventDefault(); r.focus(); }
    }
  });

  // Notifications need the user's permission, asked from a click.
  const enable = document.getElementById("enable-notifications");
  if (enable && "Notification" in window && Notification.permission === "default") {
    enable.hidden = false;
    enable.addEventListener("click", () => Notification.requestPermission().then(() => { enable.hidden = true; }));
  }
  tick();
})();
