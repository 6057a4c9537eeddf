// The in-page measurement: fetch the model, create an onnxruntime-web session (WASM execution provider),
// time the first inference and steady-state calls, read memory, and score a fixed subset of inputs.
// Inputs arrive as tokenized tensors (the same token ids as the Python measurement), so no JavaScript
// tokenizer is needed to measure; a real page would tokenize with transformers.js or tokenizers' WASM build.
import * as ort from "/ort/ort.wasm.min.mjs";

const ARRAYS = { float32: Float32Array, int64: BigInt64Array, int32: Int32Array, uint8: Uint8Array,
                 int8: Int8Array, float64: Float64Array, bool: Uint8Array };

function tensor(spec) {
  const bytes = Uint8Array.from(atob(spec.b64), (c) => c.charCodeAt(0));
  const Kind = ARRAYS[spec.dtype];
  if (!Kind) throw new Error(`unsupported input dtype ${spec.dtype}`);
  return new ort.Tensor(spec.dtype, new Kind(bytes.buffer), spec.shape);
}

function feeds(sample) {
  return Object.fromEntries(Object.entries(sample).map(([name, spec]) => [name, tensor(spec)]));
}

async function memoryBytes() {
  // JS heap + WASM memory of this page (needs cross-origin isolation); null where the browser lacks it.
  if (typeof performance.measureUserAgentSpecificMemory !== "function") return null;
  try { return (await performance.measureUserAgentSpecificMemory()).bytes; } catch (e) { return null; }
}

export async function bench(req) {
  ort.env.wasm.numThreads = req.threads;
  ort.env.wasm.wasmPaths = "/ort/";
  ort.env.logLevel = "error";
  const t0 = performance.now();
  const response = await fetch(req.model);
  if (!response.ok) throw new Error(`model fetch: HTTP ${response.status}`);
  const model = new Uint8Array(await response.arrayBuffer());
  // a split model's weights: one fetch per external-data shard, handed over under the name the graph uses
  const externalData = [];
  for (const shard of req.external || []) {
    const part = await fetch(shard.url);
    if (!part.ok) throw new Error(`shard ${shard.path} fetch: HTTP ${part.status}`);
    externalData.push({ path: shard.path, data: new Uint8Array(await part.arrayBuffer()) });
  }
  const t1 = performance.now();
  const session = await ort.InferenceSession.create(model, { executionProviders: ["wasm"],
                                                              graphOptimizationLevel: "all", externalData });
  const t2 = performance.now();
  const first = feeds(req.samples[0]);
  const f0 = performance.now();
  await session.run(first);
  const f1 = performance.now();
  const memory = await memoryBytes();
  const output = session.outputNames[0];
  const logits = [];
  for (const sample of req.samples) {
    const out = await session.run(feeds(sample));
    logits.push(Array.from(out[output].data, Number));
  }
  for (let i = 0; i < req.warmup; i++) await session.run(first);
  const times = [];
  for (let i = 0; i < req.repeats; i++) {
    const s = performance.now();
    await session.run(first);
    times.push(performance.now() - s);
  }
  const resources = performance.getEntriesByType("resource").map((e) => ({
    name: e.name, transferSize: e.transferSize, encodedBodySize: e.encodedBodySize, decodedBodySize: e.decodedBodySize }));
  await session.release();
  return { fetch_ms: t1 - t0, create_ms: t2 - t1, first_ms: f1 - f0, times, logits, memory, resources,
           isolated: self.crossOriginIsolated, threads: ort.env.wasm.numThreads, userAgent: navigator.userAgent };
}
