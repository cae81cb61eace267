// Node packs panel: which custom node packs loaded, which failed and why (from /api/fluxloom/packs).
// Shown as a sidebar tab where the frontend offers one, and as an about-page badge with the counts.
const { app } = window.comfyAPI.app;
const { api } = window.comfyAPI.api;

async function fetchPacks() {
  const response = await api.fetchApi("/fluxloom/packs");
  return response.ok ? await response.json() : { packs: [], loaded: 0, failed: 0 };
}

function row(pack) {
  const item = document.createElement("li");
  item.style.margin = "0.4em 0";
  const title = document.createElement("strong");
  title.textContent = `${pack.loaded ? "✔" : "✘"} ${pack.name}`;
  title.style.color = pack.loaded ? "inherit" : "var(--error-text, #f66)";
  item.appendChild(title);
  const detail = document.createElement("div");
  detail.style.fontSize = "0.85em";
  detail.style.opacity = "0.8";
  detail.textContent = pack.loaded
    ? `${pack.nodes.length} nodes (${pack.origin}, ${pack.seconds}s)`
    : pack.error;
  item.appendChild(detail);
  return item;
}

async function render(element) {
  element.textContent = "Loading…";
  let data;
  try {
    data = await fetchPacks();
  } catch (error) {
    element.textContent = `Node packs unavailable: ${error}`;
    return;
  }
  element.textContent = "";
  const heading = document.createElement("p");
  heading.textContent = `${data.loaded} loaded, ${data.failed} failed`;
  heading.dataset.fluxloomPacks = "summary";
  element.appendChild(heading);
  const list = document.createElement("ul");
  list.style.listStyle = "none";
  list.style.padding = "0 0.5em";
  for (const pack of data.packs) list.appendChild(row(pack));
  element.appendChild(list);
}

app.registerExtension({
  name: "Fluxloom.NodePacks",
  async setup() {
    const manager = app.extensionManager;
    if (manager?.registerSidebarTab) {
      manager.registerSidebarTab({
        id: "fluxloom-node-packs",
        icon: "pi pi-box",
        title: "Node packs",
        tooltip: "Custom node packs: loaded and failed",
        type: "custom",
        render: (element) => {
          render(element);
        },
      });
    }
  },
  aboutPageBadges: [
    { label: "Node packs", url: "/api/fluxloom/packs", icon: "pi pi-box" },
  ],
});
