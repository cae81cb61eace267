// Fluxloom's extension for the official ComfyUI frontend.
//
// A first-time user (no saved tabs, tutorial not completed) would get a blank canvas and the template
// browser; anyone asking for the default graph would get the package's own, whose nodes we do not
// have. The server ships a FLUX text-to-image graph instead (workflows/default_flux.json): during
// `setup`, which the frontend awaits before it restores or creates the first workflow, we make it the
// frontend's default graph and mark the tutorial done, so startup loads that graph.
const { app } = window.comfyAPI.app;
const { api } = window.comfyAPI.api;

async function fetchDefaultWorkflow() {
  const response = await api.fetchApi("/fluxloom/default_workflow");
  return response.ok ? await response.json() : null;
}

function replaceDefaultGraph(graph) {
  const target = window.comfyAPI.defaultGraph?.defaultGraph;
  if (!target || Object.isFrozen(target)) return false;
  // The frontend clones this object every time it loads "the default", so replacing its contents
  // in place changes startup, "Load Default" and new tabs alike.
  for (const key of Object.keys(target)) delete target[key];
  Object.assign(target, graph);
  return true;
}

app.registerExtension({
  name: "Fluxloom.DefaultWorkflow",
  async setup() {
    let graph = null;
    try {
      graph = await fetchDefaultWorkflow();
    } catch (error) {
      console.warn("[Fluxloom] default workflow unavailable", error);
    }
    if (!graph || !replaceDefaultGraph(graph)) return;
    const settings = app.extensionManager?.setting;
    if (settings && !settings.get("Comfy.TutorialCompleted")) {
      try {
        await settings.set("Comfy.TutorialCompleted", true);
      } catch (error) {
        console.warn("[Fluxloom] could not store Comfy.TutorialCompleted", error);
      }
    }
  },
});
