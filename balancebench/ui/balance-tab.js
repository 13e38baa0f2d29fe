// The Balance tab's live panel: Jain, max/mean, state and the report links of finished runs.
// Locust's own table (extended_tables) shows the per-pod rows while a run is going; Locust stops polling
// when a run stops, so this panel keeps fetching ./balance/data and shows the finished run's report link.
(function () {
  const fmt = (x, d) => (x === null || x === undefined ? "–" : x.toFixed(d));
  const esc = (s) => String(s).replace(/[&<>"]/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;" }[c]));
  let data = null;

  function panel() {
    if (new URLSearchParams(location.search).get("tab") !== "balance") return null;
    const table = document.querySelector("main table, table");
    if (!table) return null;
    const container = table.closest(".MuiTableContainer-root") || table.parentElement;
    let node = document.getElementById("bb-balance-panel");
    if (node && node.nextElementSibling === container) return node;
    {
      if (node) node.remove();
      node = document.createElement("div");
      node.id = "bb-balance-panel";
      node.className = "MuiPaper-root MuiPaper-elevation1 MuiPaper-rounded";
      node.style.cssText = "padding:16px;margin:0 0 16px;display:flex;gap:32px;flex-wrap:wrap;align-items:baseline;" +
        "box-shadow:0 2px 1px -1px rgba(0,0,0,.2),0 1px 1px rgba(0,0,0,.14),0 1px 3px rgba(0,0,0,.12);border-radius:4px;";
      container.parentElement.insertBefore(node, container);
    }
    return node;
  }

  let shown = "";
  function render(force) {
    const before = document.getElementById("bb-balance-panel");
    const node = panel();
    if (!node || !data) return;
    const html = content();
    // Only write when something changed: writing is itself a mutation the observer sees.
    if (node === before && !force && html === shown) return;
    shown = html;
    node.innerHTML = html;
  }

  function content() {
    const figure = (id, value, label) =>
      `<div><div data-figure="${id}" style="font-size:24px">${value}</div><div style="opacity:.7">${label}</div></div>`;
    const runs = data.runs.length
      ? data.runs.map((r) => `<a class="bb-report" style="color:inherit" href="./${esc(r.report_url)}" target="_blank">${esc(r.label)}</a>`).join("<br>")
      : '<span style="opacity:.7">a report appears here when a run stops</span>';
    return (
      figure("label", esc(data.label || "no run yet"), "run") +
      figure("state", esc(data.state), "state") +
      figure("jain", fmt(data.jain, 3), "Jain's index (1 = even)") +
      figure("max_mean", fmt(data.max_mean, 2), "max/mean") +
      figure("used", `${data.pods_used} of ${data.pods_total}`, "pods used") +
      `<div style="margin-left:auto"><div style="opacity:.7">Reports</div>${runs}<br>` +
      `<a href="./balance" style="color:inherit" target="_blank">full view with the source × target matrix</a></div>`
    );
  }

  async function refresh() {
    if (new URLSearchParams(location.search).get("tab") === "balance") {
      try {
        data = await (await fetch("./balance/data")).json();
      } catch (e) {
        return;
      }
    }
    render(false);
  }

  new MutationObserver(() => render(false)).observe(document.documentElement, { childList: true, subtree: true });
  setInterval(refresh, 1500);
  refresh();
})();
