// Load generator of scripts/bench-vs-restate.sh, for the `bench` workflow of services.mjs behind
// Restate's HTTP ingress. Each saga is one workflow run under a key of its own: POST
// /bench/KEY/run, whose answer comes when the workflow has finished its 4 steps.
//
//   node load.mjs --ingress http://127.0.0.1:PORT [--sagas N] [--concurrency C] [--rates R1,R2]
//                 [--rate-secs D] [--warmup W] [--warmup-secs S] [--cpu-pid PID:NAME]...
//                 [--clk-tck HZ]
//
// Phases, in order, one JSON line each on stdout (progress on stderr):
//   warmup  W sagas, C at a time, then bursts of N sagas, C at a time, for S seconds (not
//           measured: first connections, JIT, caches; `sagaflow bench --warmup-secs` does the
//           same); the bursts print progress only, no JSON line;
//   peak    N sagas, C in flight at a time: sagas/s = finished / wall time; latency from send;
//   rate    for each R: open loop at a constant R/s for D s. Saga i is sent at t0 + i/R whatever
//           is still outstanding, and its latency runs from that intended time, not from the
//           actual send, so a stalled sender cannot hide the tail (coordinated omission).
// CPU: user + system time (fields 14 and 15 of /proc/PID/stat, in clock ticks) of every --cpu-pid
// and of this process, between the start of a phase and its last answer, per saga finished.
// Percentiles are nearest-rank, as `sagaflow bench` computes them (rank round(p * (n - 1))).
import * as http from "node:http";
import { readFileSync } from "node:fs";
import { performance } from "node:perf_hooks";

function parseArgs(argv) {
  const o = {
    ingress: null,
    sagas: 3000,
    concurrency: 200,
    rates: [],
    rateSecs: 10,
    warmup: 20,
    warmupSecs: 20,
    cpuPids: [],
    clkTck: 100,
    timeoutMs: 120_000,
  };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const v = () => {
      if (i + 1 >= argv.length) throw new Error(`${a} needs a value`);
      return argv[++i];
    };
    const num = (s) => {
      const n = Number(s);
      if (!Number.isFinite(n) || n < 0) throw new Error(`${a}: '${s}' is not a number`);
      return n;
    };
    switch (a) {
      case "--ingress": o.ingress = v().replace(/\/$/, ""); break;
      case "--sagas": o.sagas = num(v()); break;
      case "--concurrency": o.concurrency = Math.max(1, num(v())); break;
      case "--rates": o.rates = v().split(",").filter((s) => s !== "").map(num); break;
      case "--rate-secs": o.rateSecs = num(v()); break;
      case "--warmup": o.warmup = num(v()); break;
      case "--warmup-secs": o.warmupSecs = num(v()); break;
      case "--clk-tck": o.clkTck = num(v()); break;
      case "--timeout-secs": o.timeoutMs = num(v()) * 1000; break;
      case "--cpu-pid": {
        const [pid, name] = v().split(":");
        o.cpuPids.push({ pid: Number(pid), name: name || pid });
        break;
      }
      default: throw new Error(`unknown argument ${a}`);
    }
  }
  if (!o.ingress) throw new Error("--ingress URL is required");
  if (o.rates.some((r) => r <= 0)) throw new Error("--rates: every rate must be above 0");
  return o;
}

const opts = parseArgs(process.argv.slice(2));
const progress = (msg) => console.error(`load.mjs: ${msg}`);
const ingress = new URL(opts.ingress);
// Keep-alive connections, as many as requests in flight (an open loop must not queue in here).
const agent = new http.Agent({ keepAlive: true, maxSockets: Infinity });
const runId = Date.now().toString(36);

// One saga: resolves to true when the workflow answered with its own id, false on any failure.
function saga(key) {
  const body = JSON.stringify({ id: key });
  return new Promise((resolve) => {
    const req = http.request(
      {
        host: ingress.hostname,
        port: ingress.port,
        method: "POST",
        path: `/bench/${key}/run`,
        agent,
        headers: { "content-type": "application/json", "content-length": Buffer.byteLength(body) },
        timeout: opts.timeoutMs,
      },
      (res) => {
        let data = "";
        res.setEncoding("utf8");
        res.on("data", (c) => (data += c));
        res.on("end", () => {
          if (res.statusCode !== 200) {
            noteFailure(`HTTP ${res.statusCode}: ${data.slice(0, 200)}`);
            return resolve(false);
          }
          try {
            const ok = JSON.parse(data).id === key;
            if (!ok) noteFailure(`unexpected answer ${data.slice(0, 200)}`);
            resolve(ok);
          } catch {
            noteFailure(`answer is not JSON: ${data.slice(0, 200)}`);
            resolve(false);
          }
        });
        res.on("error", (e) => { noteFailure(e.message); resolve(false); });
      },
    );
    req.on("timeout", () => req.destroy(new Error(`no answer within ${opts.timeoutMs} ms`)));
    req.on("error", (e) => { noteFailure(e.message); resolve(false); });
    req.end(body);
  });
}

let failuresShown = 0;
function noteFailure(msg) {
  if (failuresShown++ < 5) progress(`saga failed: ${msg}`);
}

function cpuTicks(pid) {
  const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
  // The command name (field 2) is in parentheses and may hold spaces: count from the last ')'.
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return Number(fields[11]) + Number(fields[12]); // fields 14 (utime) and 15 (stime)
}

const processes = [...opts.cpuPids, { pid: process.pid, name: "load-generator" }];
const cpuSnapshot = () => processes.map((p) => cpuTicks(p.pid));
function cpuSince(before) {
  const after = cpuSnapshot();
  const byProcess = {};
  let total = 0;
  processes.forEach((p, i) => {
    const s = (after[i] - before[i]) / opts.clkTck;
    byProcess[p.name] = s;
    total += s;
  });
  return { total, byProcess };
}

function percentile(sorted, p) {
  if (sorted.length === 0) return null;
  const rank = Math.round((p / 100) * (sorted.length - 1));
  return sorted[Math.min(rank, sorted.length - 1)];
}

const round = (x, digits = 3) => (x === null ? null : Number(x.toFixed(digits)));

function figures(phase, extra, sagas, latencies, failures, secs, cpu) {
  latencies.sort((a, b) => a - b);
  const finished = latencies.length;
  return {
    system: "restate",
    phase,
    ...extra,
    sagas,
    finished,
    failures,
    secs: round(secs),
    sagas_per_s: round(finished / secs),
    p50_ms: round(percentile(latencies, 50)),
    p99_ms: round(percentile(latencies, 99)),
    max_ms: round(latencies.length ? latencies[latencies.length - 1] : null),
    cpu_seconds: round(cpu.total, 4),
    cpu_seconds_per_saga: finished ? round(cpu.total / finished, 6) : null,
    cpu_seconds_by_process: Object.fromEntries(
      Object.entries(cpu.byProcess).map(([k, s]) => [k, round(s, 4)]),
    ),
  };
}

// N sagas, at most C in flight; latency from each saga's send.
async function closedLoop(phase, n, concurrency) {
  const latencies = [];
  let failures = 0;
  let next = 0;
  const cpu0 = cpuSnapshot();
  const t0 = performance.now();
  async function worker() {
    while (next < n) {
      const key = `${runId}-${phase}-${next++}`;
      const start = performance.now();
      if (await saga(key)) latencies.push(performance.now() - start);
      else failures++;
    }
  }
  await Promise.all(Array.from({ length: Math.min(concurrency, n) }, worker));
  const secs = (performance.now() - t0) / 1000;
  return figures(phase, { concurrency }, n, latencies, failures, secs, cpuSince(cpu0));
}

// Open loop: saga i is due at t0 + i/rate and is sent then (or at once, if the timer fires late),
// however many are outstanding; its latency counts from its due time.
async function openLoop(rate, secs) {
  const n = Math.max(10, Math.floor(rate * secs)); // as many as `sagaflow bench --rates` sends
  const latencies = [];
  let failures = 0;
  let maxSendLag = 0;
  const pending = [];
  const cpu0 = cpuSnapshot();
  const t0 = performance.now();
  const due = (i) => t0 + (i * 1000) / rate;
  let i = 0;
  await new Promise((done) => {
    const tick = () => {
      const now = performance.now();
      while (i < n && due(i) <= now) {
        const intended = due(i);
        maxSendLag = Math.max(maxSendLag, now - intended);
        const key = `${runId}-r${rate}-${i}`;
        pending.push(
          saga(key).then((ok) => {
            if (ok) latencies.push(performance.now() - intended);
            else failures++;
          }),
        );
        i++;
      }
      if (i >= n) return done();
      setTimeout(tick, Math.max(0, due(i) - performance.now()));
    };
    tick();
  });
  await Promise.all(pending);
  const wall = (performance.now() - t0) / 1000;
  return figures(
    "rate",
    { rate, rate_secs: secs, max_send_lag_ms: round(maxSendLag) },
    n,
    latencies,
    failures,
    wall,
    cpuSince(cpu0),
  );
}

const emit = (o) => process.stdout.write(`${JSON.stringify(o)}\n`);

if (opts.warmup > 0) {
  progress(`warm-up: ${opts.warmup} sagas`);
  const w = await closedLoop("warmup", opts.warmup, opts.concurrency);
  emit(w);
  if (w.finished === 0) {
    progress("no warm-up saga finished: is the deployment registered?");
    process.exit(1);
  }
}
if (opts.warmupSecs > 0) {
  progress(`warm-up: bursts of ${opts.sagas} sagas for ${opts.warmupSecs} s, not measured`);
  const began = performance.now();
  for (let burst = 1; performance.now() - began < opts.warmupSecs * 1000; burst++) {
    const w = await closedLoop(`warmup${burst}`, opts.sagas, opts.concurrency);
    progress(`warm-up: burst ${burst}: ${w.sagas_per_s} sagas/s, ${w.failures} failed`);
  }
}
progress(`peak: ${opts.sagas} sagas, ${opts.concurrency} in flight`);
const peak = await closedLoop("peak", opts.sagas, opts.concurrency);
emit(peak);
progress(`peak: ${peak.sagas_per_s} sagas/s, p50 ${peak.p50_ms} ms, p99 ${peak.p99_ms} ms, ${peak.failures} failed`);
for (const rate of opts.rates) {
  progress(`${Math.max(10, Math.floor(rate * opts.rateSecs))} sagas at a constant ${rate}/s (open loop)`);
  const r = await openLoop(rate, opts.rateSecs);
  emit(r);
  progress(`${rate}/s: p50 ${r.p50_ms} ms, p99 ${r.p99_ms} ms, max ${r.max_ms} ms, ${r.failures} failed`);
}
agent.destroy();
