// The inspector's one script: the jobs table follows the jobs while one is going.
"use strict";
(function () {
  const jobs = document.getElementById("jobs");
  if (!jobs) return;
  const source = jobs.dataset.source;
  let timer = null;
  async function poll() {
    try {
      const answer = await fetch(source, { credentials: "same-origin", cache: "no-store" });
      if (!answer.ok) throw new Error("HTTP " + answer.status);
      const body = await answer.json();
      // The server renders the rows, escaped, as it renders the page.
      jobs.innerHTML = body.html;
      jobs.dataset.active = body.active ? "yes" : "no";
      delete jobs.dataset.error;
    } catch (err) {
      jobs.dataset.error = String(err);
    }
    timer = setTimeout(poll, jobs.dataset.active === "no" ? 5000 : 1000);
  }
  poll();
  window.addEventListener("pagehide", () => clearTimeout(timer));
})();
