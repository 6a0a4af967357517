// The operator console's one script: refresh the live part of the page every two
// seconds from the same origin. The fresh part is server-rendered HTML whose values
// are already escaped; DOMParser never runs scripts in what it parses.
"use strict";
(function () {
  const live = document.getElementById("live");
  if (!live || !live.dataset.panel) return;
  const url = live.dataset.panel;
  async function refresh() {
    try {
      const answer = await fetch(url, { credentials: "same-origin", cache: "no-store" });
      if (answer.status === 401) { window.location.reload(); return; }
      if (!answer.ok) return;
      const parsed = new DOMParser().parseFromString(await answer.text(), "text/html");
      const fresh = parsed.getElementById("live");
      if (fresh) live.replaceChildren(...Array.from(fresh.childNodes));
    } catch (e) {
      // the service is restarting or unreachable: keep the last view
    }
  }
  window.setInterval(refresh, 2000);
})();
