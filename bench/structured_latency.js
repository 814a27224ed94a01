// ONNX Runtime latency of ONNX models (onnxruntime-node): one session per
// model with one intra-op and one inter-op thread, the same random input
// batch for every model of a run, warm-up runs, then the median and the
// interquartile range of timed runs. Models are timed round-robin so that
// load on the machine affects them alike.
//
//   NODE_PATH=.ci/ort/node_modules node bench/structured_latency.js BATCH RUNS MODEL...
//
// Prints one JSON object per model: {"model", "batch", "median_ms", "q1_ms", "q3_ms"}.
const ort = require("onnxruntime-node");

async function main() {
  const [batch, runs] = process.argv.slice(2, 4).map(Number);
  const models = process.argv.slice(4);
  const sessions = [];
  for (const m of models) {
    const s = await ort.InferenceSession.create(m, {
      intraOpNumThreads: 1, interOpNumThreads: 1, executionMode: "sequential", graphOptimizationLevel: "all",
    });
    const meta = s.inputNames[0];
    sessions.push({ m, s, name: meta });
  }
  // Input: [batch, 784] ([batch, 1, 784] for the MatMul MLP, [batch, 1,
  // 28, 28] for the ViT) from a fixed sequence.
  const feeds = sessions.map(({ s, name, m }) => {
    let dims = m.includes("matmul") ? [batch, 1, 784] : [batch, 784];
    if (m.includes("vit")) dims = [batch, 1, 28, 28];
    const data = new Float32Array(batch * 784);
    for (let i = 0; i < data.length; i++) data[i] = ((i * 0.61803398875) % 1);
    return { [name]: new ort.Tensor("float32", data, dims) };
  });
  const times = sessions.map(() => []);
  for (let w = 0; w < 10; w++) for (let k = 0; k < sessions.length; k++) await sessions[k].s.run(feeds[k]);
  for (let r = 0; r < runs; r++) {
    for (let k = 0; k < sessions.length; k++) {
      const t0 = process.hrtime.bigint();
      await sessions[k].s.run(feeds[k]);
      times[k].push(Number(process.hrtime.bigint() - t0) / 1e6);
    }
  }
  for (let k = 0; k < sessions.length; k++) {
    const t = times[k].sort((a, b) => a - b);
    const q = (p) => t[Math.min(t.length - 1, Math.floor(p * t.length))];
    console.log(JSON.stringify({ model: sessions[k].m, batch, median_ms: q(0.5), q1_ms: q(0.25), q3_ms: q(0.75) }));
  }
}
main().catch((e) => { console.error(e); process.exit(1); });
