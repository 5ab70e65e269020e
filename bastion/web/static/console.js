// Bastion console. No inline scripts (the CSP forbids them); everything hangs off data attributes.
//
// Case view wellbeing rules:
// - media starts as the server's blurred greyscale preview;
// - a reveal is one deliberate act per item (button or "r"), recorded by the server first;
// - the clear media is fetched into a blob: URL and dropped again (re-blurred) when the pointer
//   leaves the item, the page is hidden or loses focus, another item is revealed, or on Esc;
// - revealed images stay greyscale until the reviewer asks for colour; videos are muted,
//   paused and never autoplay.
"use strict";

(function () {
  const csrf = () => {
    const meta = document.querySelector('meta[name="csrf-token"]');
    return meta ? meta.content : "";
  };

  // Forms that ask before they act (revoke a key, disable a user).
  document.addEventListener("submit", (event) => {
    const form = event.target;
    if (form instanceof HTMLFormElement && form.dataset.confirm) {
      if (!window.confirm(form.dataset.confirm)) event.preventDefault();
    }
  });

  // Times in the reader's own time zone; the UTC time stays in the title (on hover).
  const pad = (n) => String(n).padStart(2, "0");
  document.querySelectorAll("time[datetime]").forEach((el) => {
    const at = new Date(el.getAttribute("datetime"));
    if (Number.isNaN(at.getTime())) return;
    const zone = Intl.DateTimeFormat().resolvedOptions().timeZone || "local";
    el.textContent =
      `${at.getFullYear()}-${pad(at.getMonth() + 1)}-${pad(at.getDate())} ` +
      `${pad(at.getHours())}:${pad(at.getMinutes())} ${zone}`;
  });

  // The queue: t takes the next case, j/k move through the list, Enter opens the selected one.
  // The queue's address (its filters) is remembered, so deciding comes back to the same view.
  const queueTable = document.getElementById("queue");
  const takeNext = document.getElementById("take-next-form");
  if (takeNext) {
    try {
      window.sessionStorage.setItem("bastion.queue", window.location.pathname + window.location.search);
    } catch (err) {
      // storage off: deciding goes back to the plain queue
    }
    const rows = queueTable ? Array.from(queueTable.querySelectorAll("tbody tr")) : [];
    let selected = -1;
    const select = (i) => {
      if (!rows.length) return;
      selected = Math.max(0, Math.min(rows.length - 1, i));
      rows.forEach((r, n) => r.classList.toggle("selected", n === selected));
      rows[selected].scrollIntoView({ block: "nearest" });
    };
    document.addEventListener("keydown", (event) => {
      const t = event.target;
      if (t instanceof HTMLInputElement || t instanceof HTMLSelectElement || t instanceof HTMLTextAreaElement) return;
      if (event.ctrlKey || event.metaKey || event.altKey) return;
      if (event.key === "t") {
        event.preventDefault();
        takeNext.requestSubmit();
      } else if (event.key === "j") {
        select(selected + 1);
      } else if (event.key === "k") {
        select(selected - 1);
      } else if (event.key === "Enter" && selected >= 0) {
        const link = rows[selected].querySelector("a");
        if (link) window.location.assign(link.href);
      }
    });
  }

  const root = document.getElementById("case");
  if (!root) return;

  // After deciding: the next case (the reviewer's choice, remembered) or the queue they came from.
  const thenNext = document.getElementById("then-next");
  let remembered = "";
  try {
    remembered = window.sessionStorage.getItem("bastion.queue") || "";
    if (thenNext) thenNext.checked = window.localStorage.getItem("bastion.thenNext") === "1";
  } catch (err) {
    remembered = "";
  }
  if (thenNext) {
    thenNext.addEventListener("change", () => {
      try {
        window.localStorage.setItem("bastion.thenNext", thenNext.checked ? "1" : "0");
      } catch (err) {
        // not remembered
      }
    });
  }
  document.querySelectorAll("#decide form").forEach((form) => {
    form.addEventListener("submit", () => {
      const add = (name, value) => {
        let field = form.querySelector(`input[type=hidden][name="${name}"]`);
        if (!field) {
          field = document.createElement("input");
          field.type = "hidden";
          field.name = name;
          form.appendChild(field);
        }
        field.value = value;
      };
      if (remembered) add("back", remembered);
      if (thenNext && thenNext.checked) add("then", "next");
    });
  });

  const caseId = root.dataset.case;
  const holder = root.dataset.holder === "1";
  const mustReveal = new Set((root.dataset.mustReveal || "").split(" ").filter(Boolean));
  const items = Array.from(document.querySelectorAll('.item[data-has-media="1"]'));
  const state = new Map(); // item element -> {url, generation}
  let active = null;
  let chosenForm = null;

  const dialog = document.getElementById("break-dialog");
  let pendingItem = null;

  function info(item) {
    if (!state.has(item)) state.set(item, { url: null, generation: 0 });
    return state.get(item);
  }

  function setStatus(item, text) {
    const span = item.querySelector(".tools .state");
    if (span) span.textContent = text;
  }

  function updateExposure(count, limit) {
    const badge = document.getElementById("exposure");
    const number = document.getElementById("exposure-count");
    if (!badge || !number) return;
    number.textContent = String(count);
    badge.dataset.count = String(count);
    badge.classList.toggle("over", limit > 0 && count >= limit);
  }

  function updateDecisionButtons() {
    document.querySelectorAll("#decide button[type=submit]").forEach((button) => {
      const needsReveal = button.hasAttribute("data-needs-reveal");
      button.disabled = !holder || (needsReveal && mustReveal.size > 0);
    });
    const hint = document.getElementById("reveal-hint");
    if (hint && mustReveal.size === 0) hint.hidden = true;
  }

  function mediaElement(item) {
    return item.querySelector(".media-box .media");
  }

  function setActive(item) {
    if (active && active !== item) active.classList.remove("active");
    active = item;
    if (item) item.classList.add("active");
  }

  function reblur(item) {
    const s = info(item);
    s.generation += 1; // a reveal still in flight for this item must not show its result
    if (item.dataset.state === "blurred") return;
    const box = item.querySelector(".media-box");
    const current = mediaElement(item);
    if (current && current.tagName === "VIDEO") current.pause();
    if (item.dataset.closed === "1") {
      // A decided case shows match details only: no preview comes back after a reveal.
      const note = document.createElement("p");
      note.className = "muted closed-note";
      note.textContent = "Decided case: match details only.";
      box.replaceChildren(note);
    } else {
      const img = document.createElement("img");
      img.className = "media greyscale";
      img.alt = "Blurred preview";
      img.src = item.dataset.preview;
      box.replaceChildren(img);
    }
    if (s.url) URL.revokeObjectURL(s.url);
    s.url = null;
    item.dataset.state = "blurred";
    item.querySelector('[data-action="colour"]').hidden = true;
    item.querySelector('[data-action="reblur"]').hidden = true;
    setStatus(item, item.dataset.closed === "1" ? "not shown" : "blurred");
  }

  function reblurAll() {
    items.forEach(reblur);
  }

  // Reviewer's own viewing settings (kept in this browser): a blur that stays on the revealed
  // media (0: none) and a reduced display size; greyscale stays as it is.
  const blurInput = document.getElementById("reveal-blur");
  const sizeInput = document.getElementById("reveal-size");
  const blurLabel = document.getElementById("reveal-blur-value");
  const stored = (key, fallback) => {
    try {
      return window.localStorage.getItem(key) || fallback;
    } catch (err) {
      return fallback;
    }
  };
  if (blurInput) blurInput.value = stored("bastion.revealBlur", "0");
  if (sizeInput) sizeInput.value = stored("bastion.revealSize", "100");
  function applyView(el) {
    if (!el) return;
    const blur = blurInput ? Number(blurInput.value) : 0;
    const size = sizeInput ? Number(sizeInput.value) : 100;
    const grey = el.classList.contains("greyscale");
    el.style.filter = blur > 0 ? `${grey ? "grayscale(1) " : ""}blur(${blur}px)` : "";
    el.style.maxWidth = size < 100 ? `${size}%` : "";
    el.style.maxHeight = size < 100 ? `${size}%` : "";
  }
  function viewChanged() {
    if (blurLabel && blurInput) blurLabel.textContent = blurInput.value === "0" ? "none" : `${blurInput.value} px`;
    try {
      if (blurInput) window.localStorage.setItem("bastion.revealBlur", blurInput.value);
      if (sizeInput) window.localStorage.setItem("bastion.revealSize", sizeInput.value);
    } catch (err) {
      // not kept
    }
    document.querySelectorAll('.item[data-state="revealed"] .media-box .media').forEach(applyView);
  }
  if (blurInput) blurInput.addEventListener("input", viewChanged);
  if (sizeInput) sizeInput.addEventListener("change", viewChanged);
  if (blurLabel && blurInput) blurLabel.textContent = blurInput.value === "0" ? "none" : `${blurInput.value} px`;

  function showClear(item, url) {
    const box = item.querySelector(".media-box");
    const kind = item.dataset.kind;
    let el;
    if (kind === "video") {
      el = document.createElement("video");
      el.muted = true;
      el.defaultMuted = true;
      el.autoplay = false;
      el.controls = true;
      el.preload = "metadata";
      el.playsInline = true;
      el.setAttribute("muted", "");
    } else {
      el = document.createElement("img");
      el.alt = "Revealed item";
    }
    el.className = "media greyscale";
    el.src = url;
    applyView(el);
    box.replaceChildren(el);
    if (el.tagName === "VIDEO") el.pause();
    item.dataset.state = "revealed";
    const colour = item.querySelector('[data-action="colour"]');
    colour.hidden = false;
    colour.textContent = "Show colour";
    item.querySelector('[data-action="reblur"]').hidden = false;
    setStatus(item, "revealed (greyscale)");
  }

  async function reveal(item, carryOn) {
    // Need to know: an active case is revealed by its claim holder only; a decided case
    // needs a stated reason, which the server records in the audit log.
    const closed = item.dataset.closed === "1";
    const reasonField = item.querySelector(".reveal-reason");
    const reason = closed && reasonField ? reasonField.value.trim() : "";
    if (closed && !reason) {
      setStatus(item, "state why you need to see it first");
      if (reasonField) reasonField.focus();
      return;
    }
    if (!closed && !holder) {
      setStatus(item, "claim the case to reveal");
      return;
    }
    items.forEach((other) => {
      if (other !== item) reblur(other);
    });
    setActive(item);
    const s = info(item);
    s.generation += 1;
    const generation = s.generation;
    setStatus(item, "revealing…");
    const body = new URLSearchParams();
    if (carryOn) body.set("continue", "1");
    if (reason) body.set("reason", reason);
    let response;
    try {
      response = await fetch(`/cases/${caseId}/items/${item.dataset.item}/reveal`, {
        method: "POST",
        headers: { "X-CSRF-Token": csrf() },
        body,
        credentials: "same-origin",
      });
    } catch (err) {
      setStatus(item, "reveal failed: network error");
      return;
    }
    let data = {};
    try {
      data = await response.json();
    } catch (err) {
      data = {};
    }
    if (response.status === 409 && data.break) {
      pendingItem = item;
      document.getElementById("break-count").textContent = String(data.count);
      document.getElementById("break-limit").textContent = String(data.limit);
      setStatus(item, "blurred");
      dialog.showModal();
      return;
    }
    if (!response.ok) {
      setStatus(item, `reveal refused: ${data.detail || data.title || response.status}`);
      return;
    }
    updateExposure(data.count, data.limit);
    mustReveal.delete(String(item.dataset.item));
    updateDecisionButtons();
    const media = await fetch(data.url, { credentials: "same-origin", cache: "no-store" });
    if (!media.ok) {
      setStatus(item, `could not load the media (${media.status})`);
      return;
    }
    const blob = await media.blob();
    if (info(item).generation !== generation) {
      setStatus(item, "blurred"); // re-blurred meanwhile: show nothing
      return;
    }
    const url = URL.createObjectURL(blob);
    s.url = url;
    showClear(item, url);
  }

  function toggleColour(item) {
    if (!item || item.dataset.state !== "revealed") return;
    const el = mediaElement(item);
    const grey = el.classList.toggle("greyscale");
    applyView(el);
    item.querySelector('[data-action="colour"]').textContent = grey ? "Show colour" : "Greyscale";
    setStatus(item, grey ? "revealed (greyscale)" : "revealed (colour)");
  }

  function revealNext() {
    if (!items.length) return;
    const start = active ? items.indexOf(active) + 1 : 0;
    const order = items.slice(start).concat(items.slice(0, start));
    const next = order.find((it) => mustReveal.has(String(it.dataset.item))) || order[0];
    next.scrollIntoView({ block: "nearest" });
    reveal(next, false);
  }

  function choose(kind) {
    const form = document.getElementById(`decide-${kind}`);
    if (!form) return;
    document.querySelectorAll("#decide fieldset").forEach((f) => f.classList.remove("chosen"));
    form.querySelector("fieldset").classList.add("chosen");
    chosenForm = form;
    // The free-text reason first (a preset is one Shift+Tab away), else the first field.
    const field =
      form.querySelector("input[name=reason]") ||
      form.querySelector("select, input:not([type=hidden]):not([type=checkbox])");
    if (field) field.focus();
  }

  items.forEach((item) => {
    item.addEventListener("mouseleave", () => reblur(item));
    item.querySelector('[data-action="reveal"]').addEventListener("click", () => reveal(item, false));
    item.querySelector('[data-action="colour"]').addEventListener("click", () => toggleColour(item));
    item.querySelector('[data-action="reblur"]').addEventListener("click", () => reblur(item));
    const reasonField = item.querySelector(".reveal-reason");
    if (reasonField) {
      reasonField.addEventListener("keydown", (event) => {
        if (event.key === "Enter") {
          event.preventDefault();
          reveal(item, false);
        }
      });
    }
  });

  document.addEventListener("visibilitychange", () => {
    if (document.visibilityState !== "visible") reblurAll();
  });
  window.addEventListener("blur", reblurAll);
  window.addEventListener("pagehide", reblurAll);

  document.getElementById("break-continue").addEventListener("click", () => {
    dialog.close();
    const item = pendingItem;
    pendingItem = null;
    if (item) reveal(item, true);
  });
  dialog.addEventListener("close", () => {
    pendingItem = null;
  });

  document.querySelectorAll("#decide form").forEach((form) => {
    form.addEventListener("focusin", () => {
      document.querySelectorAll("#decide fieldset").forEach((f) => f.classList.remove("chosen"));
      form.querySelector("fieldset").classList.add("chosen");
      chosenForm = form;
    });
  });

  document.addEventListener("keydown", (event) => {
    if (dialog.open) return;
    const target = event.target;
    const typing =
      target instanceof HTMLInputElement ||
      target instanceof HTMLTextAreaElement ||
      target instanceof HTMLSelectElement;
    if (event.key === "Escape") {
      reblurAll();
      if (typing) target.blur();
      return;
    }
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) {
      const form = chosenForm;
      const button = form && form.querySelector("button[type=submit]");
      if (form && button && !button.disabled) {
        event.preventDefault();
        form.requestSubmit(button);
      }
      return;
    }
    if (typing || event.ctrlKey || event.metaKey || event.altKey) return;
    const actions = {
      r: revealNext,
      g: () => toggleColour(active),
      c: () => choose("confirmed"),
      n: () => choose("not_abusive"),
      e: () => choose("escalate"),
    };
    const run = actions[event.key];
    if (run) {
      event.preventDefault();
      run();
    }
  });

  // A refused decision re-renders the case page at the POST URL: put the case's own address
  // back, so reloading does not post again and the address can be shared.
  if (/\/(decide|claim)$/.test(window.location.pathname)) {
    window.history.replaceState(null, "", `/cases/${caseId}`);
  }

  // The claim: a live countdown, renewed while the reviewer is active on the page (typing,
  // pointing, scrolling), so a long look at a hard case does not lose the claim under them.
  const lease = document.getElementById("lease");
  if (lease && lease.dataset.left !== "") {
    const leaseMs = Number(lease.dataset.lease || "0") * 1000;
    let deadline = performance.now() + Number(lease.dataset.left) * 1000;
    let lastActive = performance.now();
    let lastRenew = performance.now();
    let renewing = false;
    let lost = false;
    const mark = () => {
      lastActive = performance.now();
    };
    ["keydown", "pointermove", "pointerdown", "wheel", "input"].forEach((type) =>
      document.addEventListener(type, mark, { passive: true, capture: true })
    );
    const left = document.getElementById("lease-left");
    const show = () => {
      const ms = deadline - performance.now();
      if (!left) return ms;
      if (ms <= 0) {
        left.textContent = "claim expired";
        lease.classList.add("expired");
      } else {
        const total = Math.ceil(ms / 1000);
        const minutes = Math.floor(total / 60);
        const seconds = String(total % 60).padStart(2, "0");
        left.textContent = `${minutes}:${seconds} left`;
        lease.classList.remove("expired");
      }
      return ms;
    };
    async function renew() {
      renewing = true;
      try {
        const response = await fetch(`/cases/${caseId}/renew`, {
          method: "POST",
          headers: { "X-CSRF-Token": csrf() },
          credentials: "same-origin",
        });
        const data = await response.json().catch(() => ({}));
        if (response.ok) {
          deadline = performance.now() + Number(data.remaining) * 1000;
          lastRenew = performance.now();
          lease.dataset.renewed = String(Number(lease.dataset.renewed || "0") + 1);
        } else if (data.holder) {
          lost = true;
          const who = document.getElementById("lease-holder");
          if (who) who.textContent = data.holder;
          if (left) left.textContent = "your claim lapsed and they took it";
        }
      } catch (err) {
        // Offline for a moment: the next tick tries again.
      } finally {
        renewing = false;
      }
    }
    const tick = () => {
      if (lost) return;
      const ms = show();
      if (holder && !renewing && leaseMs > 0 && ms < leaseMs / 2 && lastActive > lastRenew) {
        renew();
      }
    };
    tick();
    window.setInterval(tick, 1000);
  }

  updateDecisionButtons();
})();
