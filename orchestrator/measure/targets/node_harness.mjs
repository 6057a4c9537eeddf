// The Node.js measurement: onnxruntime-node (CPU execution provider) in this child process.
// Reads one JSON request on stdin, prints one JSON result line on stdout.
import { createRequire } from "node:module";
import { readFileSync } from "node:fs";

const require = createRequire(import.meta.url);
const ort = require(process.env.ORCHESTRATOR_ORT_NODE);

const ARRAYS = { float32: Float32Array, int64: BigInt64Array, int32: Int32Array, uint8: Uint8Array,
                 int8: Int8Array, float64: Float64Array, bool: Uint8Array };

function tensor(spec) {
  const buf = Buffer.from(spec.b64, "base64");
  const bytes = new Uint8Array(buf.buffer.slice(buf.byteOffset, buf.byteOffset + buf.byteLength));
  return new ort.Tensor(spec.dtype, new ARRAYS[spec.dtype](bytes.buffer), spec.shape);
}

const feeds = (s) => Object.fromEntries(Object.entries(s).map(([k, v]) => [k, tensor(v)]));
const now = () => Number(process.hrtime.bigint()) / 1e6;

const req = JSON.parse(readFileSync(0, "utf8"));
const t0 = now();
const session = await ort.InferenceSession.create(req.model, {
  executionProviders: ["cpu"], intraOpNumThreads: req.threads, interOpNumThreads: 1,
  graphOptimizationLevel: "all" });
const t1 = now();
const first = feeds(req.samples[0]);
const f0 = now();
await session.run(first);
const f1 = now();
const rss = process.memoryUsage().rss;
const output = session.outputNames[0];
const logits = [];
for (const s of req.samples) logits.push(Array.from((await session.run(feeds(s)))[output].data, Number));
for (let i = 0; i < req.warmup; i++) await session.run(first);
const times = [];
for (let i = 0; i < req.repeats; i++) {
  const s = now();
  await session.run(first);
  times.push(now() - s);
}
process.stdout.write(JSON.stringify({ load_ms: t1 - t0, first_ms: f1 - f0, rss, times, logits,
                                      node: process.version }) + "\n");
