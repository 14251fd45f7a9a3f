// The comparison table of scripts/bench-vs-restate.sh, from the raw results of each run.
//
//   node report.mjs --rates R1,R2 LABEL=FILE...
//
// FILE is either `sagaflow bench --json` output (one JSON object with `peak` and `rates`) or
// load.mjs output (JSON lines, one a phase). A run whose FILE is missing or unreadable gets a row
// saying so. Cells: peak sagas/s; p50/p99 ms at each rate (latency from each saga's intended
// start; "k/n done" when fewer than all sagas of the phase finished); CPU seconds per saga
// finished, at peak and at each rate, counting every process of that side.
import { readFileSync } from "node:fs";

const args = process.argv.slice(2);
let rates = [];
const runs = [];
for (let i = 0; i < args.length; i++) {
  if (args[i] === "--rates") rates = args[++i].split(",").filter(Boolean).map(Number);
  else {
    const eq = args[i].indexOf("=");
    runs.push({ label: args[i].slice(0, eq), file: args[i].slice(eq + 1) });
  }
}

// { peak: {sagas_per_s, p50_ms, p99_ms, cpu_seconds_per_saga, ...}, rates: [{rate, ...}] }
function load(file) {
  const text = readFileSync(file, "utf8").trim();
  if (!text) throw new Error("empty");
  try {
    const doc = JSON.parse(text);
    if (doc && typeof doc === "object" && doc.peak) return { peak: doc.peak, rates: doc.rates ?? [] };
  } catch {
    // JSON lines
  }
  const phases = text.split("\n").filter(Boolean).map((l) => JSON.parse(l));
  const peak = phases.find((p) => p.phase === "peak");
  if (!peak) throw new Error("no peak phase");
  return { peak, rates: phases.filter((p) => p.phase === "rate") };
}

const num = (x, digits) => (x === null || x === undefined || !Number.isFinite(x) ? "-" : x.toFixed(digits));
const ms = (x) => (x === null || x === undefined ? "-" : x >= 100 ? x.toFixed(0) : x.toFixed(1));
const cpu = (x) => (x === null || x === undefined || !Number.isFinite(x) ? "-" : x.toPrecision(3));
const done = (p) => {
  const failed = p.failures ?? 0;
  const incomplete = p.finished < p.sagas;
  return incomplete || failed ? ` (${p.finished}/${p.sagas} done)` : "";
};

const header = [
  "system",
  "peak sagas/s",
  ...rates.map((r) => `p50/p99 ms at ${r}/s`),
  "CPU s/saga at peak",
  ...rates.map((r) => `CPU s/saga at ${r}/s`),
];
const rows = runs.map(({ label, file }) => {
  let res;
  try {
    res = load(file);
  } catch (e) {
    return [label, `no result (${e.code === "ENOENT" ? "missing" : e.message}: ${file})`];
  }
  const at = (r) => res.rates.find((p) => Math.abs(p.rate - r) < 1e-9);
  return [
    label,
    num(res.peak.sagas_per_s, 0) + done(res.peak),
    ...rates.map((r) => {
      const p = at(r);
      return p ? `${ms(p.p50_ms)} / ${ms(p.p99_ms)}${done(p)}` : "-";
    }),
    cpu(res.peak.cpu_seconds_per_saga),
    ...rates.map((r) => cpu(at(r)?.cpu_seconds_per_saga)),
  ];
});

const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? "").length)));
const line = (cells) =>
  `| ${header.map((_, i) => (cells[i] ?? "").padEnd(widths[i])).join(" | ")} |`;
console.log(line(header));
console.log(`|${widths.map((w) => "-".repeat(w + 2)).join("|")}|`);
for (const r of rows) console.log(line(r));
