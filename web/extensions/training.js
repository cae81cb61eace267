// Live loss on Train LoRA nodes: draws the loss (raw and smoothed) and the fixed-timestep
// evaluation loss under the node while it trains, from the server's "fluxloom.training" messages
// (one per optimizer step: step, total, loss, smoothed, eval_loss, lr).
const { app } = window.comfyAPI.app;
const { api } = window.comfyAPI.api;

const HEIGHT = 110;
const runs = new Map(); // node id -> { points: [{step, loss, smoothed, eval}], total, lr }

function nodeFor(id) {
  const graph = app.graph;
  return graph?.getNodeById?.(Number(id)) ?? graph?.getNodeById?.(id) ?? null;
}

function draw(node, ctx) {
  const run = runs.get(String(node.id));
  if (!run || run.points.length < 1 || node.flags?.collapsed) return;
  const width = node.size[0] - 16;
  const top = node.size[1] + 6;
  ctx.save();
  ctx.fillStyle = "rgba(0,0,0,0.35)";
  ctx.fillRect(8, top, width, HEIGHT);
  const values = run.points.flatMap((p) => [p.loss, p.smoothed, p.eval].filter((v) => Number.isFinite(v)));
  const low = Math.min(...values);
  const high = Math.max(...values);
  const span = high - low || 1;
  const x = (step) => 8 + ((step - 1) / Math.max(run.total - 1, 1)) * width;
  const y = (v) => top + HEIGHT - 4 - ((v - low) / span) * (HEIGHT - 8);
  const line = (key, color, lineWidth) => {
    ctx.beginPath();
    ctx.strokeStyle = color;
    ctx.lineWidth = lineWidth;
    run.points.forEach((p, i) => (i ? ctx.lineTo(x(p.step), y(p[key])) : ctx.moveTo(x(p.step), y(p[key]))));
    ctx.stroke();
  };
  line("loss", "rgba(200,200,200,0.6)", 1);
  line("smoothed", "#4fa3ff", 2);
  ctx.fillStyle = "#ff5a5a";
  for (const p of run.points) {
    if (Number.isFinite(p.eval)) ctx.fillRect(x(p.step) - 2, y(p.eval) - 2, 4, 4);
  }
  const last = run.points[run.points.length - 1];
  ctx.fillStyle = "#ddd";
  ctx.font = "11px sans-serif";
  ctx.fillText(
    `step ${last.step}/${run.total}  loss ${last.loss.toFixed(4)}  avg ${last.smoothed.toFixed(4)}` +
      (Number.isFinite(last.eval) ? `  eval ${last.eval.toFixed(4)}` : ""),
    12,
    top + 12,
  );
  ctx.restore();
}

app.registerExtension({
  name: "Fluxloom.TrainingLoss",
  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (nodeData.name !== "TrainLoraNode") return;
    const previous = nodeType.prototype.onDrawForeground;
    nodeType.prototype.onDrawForeground = function (ctx) {
      previous?.apply(this, arguments);
      draw(this, ctx);
    };
  },
  async setup() {
    api.addEventListener("fluxloom.training", ({ detail }) => {
      const key = String(detail.node);
      let run = runs.get(key);
      if (!run || detail.step <= 1 || run.prompt !== detail.prompt_id) {
        run = { points: [], total: detail.total, prompt: detail.prompt_id };
        runs.set(key, run);
      }
      run.total = detail.total;
      run.points.push({ step: detail.step, loss: detail.loss, smoothed: detail.smoothed, eval: detail.eval_loss ?? NaN });
      const node = nodeFor(key);
      if (node) node.setDirtyCanvas?.(true, true);
      else app.graph?.setDirtyCanvas?.(true, true);
    });
  },
});
