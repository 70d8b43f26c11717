// Live refresh: every few seconds the page is fetched again and its
// <main> replaced, unless the box is unticked or the tab is hidden. A
// session that ended sends the page to the sign-in form.
(function () {
  "use strict";
  const main = document.getElementById("live");
  if (!main || !main.dataset.refresh) return;
  const every = Number(main.dataset.refresh) || 3000;
  let busy = false;
  async function refresh() {
    const auto = document.getElementById("auto");
    if (busy || document.hidden || (auto && !auto.checked)) return;
    busy = true;
    try {
      const resp = await fetch(location.href, { credentials: "same-origin", cache: "no-store" });
      if (resp.redirected && new URL(resp.url).pathname === "/console/login") {
        location.reload();
        return;
      }
      if (!resp.ok) return;
      const doc = new DOMParser().parseFromString(await resp.text(), "text/html");
      const next = doc.getElementById("live");
      if (!next) return;
      const checked = auto ? auto.checked : true;
      main.replaceChildren(...next.childNodes);
      const box = document.getElementById("auto");
      if (box) box.checked = checked;
    } catch (e) {
      // The server is restarting or the network is down: try again later.
    } finally {
      busy = false;
    }
  }
  setInterval(refresh, every);
})();
