// BullMQ on Node.js as a benchmark driver: the same workload and JSON line as bench/harness.py.
// `node bench.mjs run '<json>'` prints one JSON line; `node bench.mjs worker '<json>'` is the worker process
// the run spawns (it prints BENCH-READY, then BENCH-RESULT <json>).
import { spawn } from "node:child_process";
import { readFileSync } from "node:fs";
import { randomUUID } from "node:crypto";
import { createRequire } from "node:module";
import { fileURLToPath } from "node:url";
import { Queue, Worker } from "bullmq";
import IORedis from "ioredis";

const READY = "BENCH-READY";
const RESULT = "BENCH-RESULT ";
const SETTLE_MS = 1000;
const IGNORED = new Set(["info", "flushall", "config|resetstat", "client|setname", "hello", "ping", "select", "client|setinfo"]);
const SCRIPTS = new Set(["evalsha", "eval", "fcall", "evalsha_ro", "eval_ro", "fcall_ro"]);

function payload(seq, enqueuedAt = 0) {
  return {
    workspace_id: "T0BENCH01",
    user_id: "U0USER0001",
    channel_id: "C0CHAN0001",
    trigger: "slash_command",
    trigger_text: "Can you review my PR today? The deploy is blocked on it.",
    response_url: `https://hooks.slack.com/commands/T0BENCH01/${1700000000000 + seq}/abcdefghijklmnopqrstuvwx`,
    request_id: randomUUID().replaceAll("-", ""),
    seq,
    enqueued_at: enqueuedAt,
  };
}

function connection(url) {
  const u = new URL(url);
  // Workers need maxRetriesPerRequest null (BullMQ refuses blocking connections without it).
  return { host: u.hostname, port: Number(u.port || 6379), maxRetriesPerRequest: null };
}

// Wall clock with sub-millisecond resolution (Date.now() has whole milliseconds), comparable across processes.
const nowS = () => (performance.timeOrigin + performance.now()) / 1000;
const perf = () => performance.now() / 1000;
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function percentile(values, pct) {
  if (!values.length) return null;
  const sorted = [...values].sort((a, b) => a - b);
  const rank = Math.max(1, Math.ceil((pct / 100) * sorted.length));
  return sorted[Math.min(rank, sorted.length) - 1];
}

async function snapshot(redis) {
  const text = await redis.info("everything");
  const calls = {};
  let cpu = 0;
  for (const line of text.split("\r\n")) {
    const m = line.match(/^cmdstat_([^:]+):calls=(\d+)/);
    if (m) calls[m[1]] = Number(m[2]);
    const c = line.match(/^used_cpu_(user|sys):([\d.]+)/);
    if (c) cpu += Number(c[2]);
  }
  return { calls, cpu };
}

function perJob(before, after, jobs) {
  let total = 0;
  let scripts = 0;
  const deltas = {};
  for (const [name, n] of Object.entries(after.calls)) {
    const d = n - (before.calls[name] || 0);
    if (IGNORED.has(name) || d <= 0) continue;
    deltas[name] = d;
    total += d;
    if (SCRIPTS.has(name)) scripts += d;
  }
  const top = Object.entries(deltas).sort((a, b) => b[1] - a[1]).slice(0, 6);
  return {
    cmds_per_job: total / jobs,
    scripts_per_job: scripts / jobs,
    redis_cpu_ms_per_job: ((after.cpu - before.cpu) * 1000) / jobs,
    top_cmds_per_job: Object.fromEntries(top.map(([k, v]) => [k, Math.round((v / jobs) * 1000) / 1000])),
  };
}

function maxRssMb() {
  // VmHWM is this process's own peak; getrusage's maxrss can carry the spawning parent's peak across exec.
  try {
    const m = readFileSync("/proc/self/status", "utf8").match(/VmHWM:\s+(\d+)/);
    if (m) return Number(m[1]) / 1024;
  } catch {}
  return process.resourceUsage().maxRSS / 1024;
}

const cpuS = () => {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1e6;
};

// -- worker process -----------------------------------------------------------------------------------------

async function workerMain(cfg) {
  const n = cfg.n;
  let started = 0;
  let finished = 0;
  let firstStart = null;
  let cpuAtFirst = 0;
  let doneAt = null;
  const latencies = [];
  const starts = [];
  let resolveDone;
  const done = new Promise((r) => (resolveDone = r));
  const worker = new Worker(
    cfg.queue,
    async (job) => {
      const now = nowS();
      if (firstStart === null) {
        firstStart = now;
        cpuAtFirst = cpuS();
      }
      started += 1;
      if (job.data.enqueued_at) {
        latencies.push(now - job.data.enqueued_at);
        starts.push(now);
      }
      finished += 1;
      if (finished === n) {
        doneAt = nowS();
        resolveDone();
      }
      return null;
    },
    { connection: connection(cfg.url), concurrency: cfg.concurrency },
  );
  worker.on("error", (err) => process.stderr.write(`worker error: ${err}\n`));
  process.stdout.write(READY + "\n");
  const timeout = sleep((cfg.timeout_s || 600) * 1000).then(() => "timeout");
  const outcome = await Promise.race([done, timeout]);
  let result;
  if (outcome === "timeout") {
    result = { error: `timed out after ${cfg.timeout_s} s with ${finished}/${n} jobs finished` };
  } else {
    const span = Math.max(doneAt - firstStart, 1e-9);
    result = {
      started,
      finished,
      per_s: finished / span,
      span_s: span,
      worker_cpu_ms_per_job: ((cpuS() - cpuAtFirst) * 1000) / finished,
      worker_max_rss_mb: maxRssMb(),
    };
    if (latencies.length) {
      const first = Math.min(...starts);
      const later = latencies.filter((_, i) => starts[i] - first >= 1.0);
      result.latency = {
        n: latencies.length,
        p50_ms: percentile(latencies, 50) * 1000,
        p99_ms: percentile(latencies, 99) * 1000,
        max_ms: Math.max(...latencies) * 1000,
        p99_after_1s_ms: later.length ? percentile(later, 99) * 1000 : null,
      };
    }
  }
  process.stdout.write(RESULT + JSON.stringify(result) + "\n", () => process.exit(0));
}

// -- the run ------------------------------------------------------------------------------------------------

function spawnWorker(cfg) {
  const child = spawn(process.execPath, [fileURLToPath(import.meta.url), "worker", JSON.stringify(cfg)], {
    stdio: ["ignore", "pipe", "inherit"],
  });
  let buffer = "";
  const waiters = [];
  const lines = [];
  child.stdout.on("data", (chunk) => {
    buffer += chunk.toString();
    let i;
    while ((i = buffer.indexOf("\n")) >= 0) {
      lines.push(buffer.slice(0, i));
      buffer = buffer.slice(i + 1);
      while (waiters.length && lines.length) waiters.shift()(lines.shift());
    }
  });
  child.on("exit", () => {
    while (waiters.length) waiters.shift()(null);
  });
  const nextLine = () => (lines.length ? Promise.resolve(lines.shift()) : new Promise((r) => waiters.push(r)));
  return {
    child,
    async waitFor(prefix, timeoutMs) {
      const deadline = Date.now() + timeoutMs;
      for (;;) {
        const remaining = deadline - Date.now();
        if (remaining <= 0) return null;
        const line = await Promise.race([nextLine(), sleep(remaining).then(() => undefined)]);
        if (line === null || line === undefined) return null;
        if (line.startsWith(prefix)) return line;
      }
    },
    stop() {
      if (child.exitCode === null) child.kill("SIGKILL");
    },
  };
}

async function guard(fn) {
  try {
    return await fn();
  } catch (err) {
    return { error: `${err.name}: ${String(err.message).split("\n")[0].slice(0, 300)}` };
  }
}

async function enqueueSeq(url, cfg, stats) {
  const queue = new Queue(`${cfg.tag}-seq`, { connection: connection(url) });
  try {
    const datas = Array.from({ length: cfg.n }, (_, i) => payload(i));
    const before = await snapshot(stats);
    const t0 = perf();
    for (const d of datas) await queue.add("noop", d);
    const elapsed = perf() - t0;
    const after = await snapshot(stats);
    return { per_s: cfg.n / elapsed, elapsed_s: elapsed, ...perJob(before, after, cfg.n) };
  } finally {
    await queue.close();
  }
}

async function enqueueFast(url, cfg, stats) {
  const queue = new Queue(`${cfg.tag}-fast`, { connection: connection(url) });
  try {
    const datas = Array.from({ length: cfg.n }, (_, i) => payload(i));
    const before = await snapshot(stats);
    const t0 = perf();
    await queue.addBulk(datas.map((d) => ({ name: "noop", data: d })));
    const elapsed = perf() - t0;
    const after = await snapshot(stats);
    return { per_s: cfg.n / elapsed, elapsed_s: elapsed, ...perJob(before, after, cfg.n) };
  } finally {
    await queue.close();
  }
}

async function processPhase(url, cfg, spec, stats) {
  const name = `${cfg.tag}-proc-${spec.label}`;
  const queue = new Queue(name, { connection: connection(url) });
  await queue.addBulk(Array.from({ length: cfg.n }, (_, i) => ({ name: "noop", data: payload(i) })));
  await queue.close();
  const timeoutS = Math.max(60, cfg.n / 100);
  const before = await snapshot(stats);
  const w = spawnWorker({ url, queue: name, n: cfg.n, concurrency: spec.concurrency, timeout_s: timeoutS - 5 });
  try {
    const line = await w.waitFor(RESULT, timeoutS * 1000);
    if (!line) return { error: `no result within ${timeoutS} s` };
    const result = JSON.parse(line.slice(RESULT.length));
    const after = await snapshot(stats);
    if (result.error) return result;
    return { ...result, concurrency: spec.concurrency, ...perJob(before, after, cfg.n) };
  } finally {
    w.stop();
  }
}

async function latencyPhase(url, cfg) {
  const name = `${cfg.tag}-lat`;
  const paceS = cfg.latency_n / cfg.rate;
  const w = spawnWorker({ url, queue: name, n: cfg.latency_n, concurrency: 10, timeout_s: 25 + paceS });
  try {
    if (!(await w.waitFor(READY, 30000))) return { error: "worker did not start" };
    const queue = new Queue(name, { connection: connection(url) });
    let worst = 0;
    try {
      await sleep(SETTLE_MS);
      const t0 = perf();
      for (let i = 0; i < cfg.latency_n; i++) {
        const target = t0 + i / cfg.rate;
        const delay = target - perf();
        if (delay > 0) await sleep(delay * 1000);
        else worst = Math.max(worst, -delay);
        await queue.add("noop", payload(i, nowS()));
      }
    } finally {
      await queue.close();
    }
    const line = await w.waitFor(RESULT, (30 + paceS) * 1000);
    if (!line) return { error: "no result" };
    const result = JSON.parse(line.slice(RESULT.length));
    if (result.error) return result;
    return { ...result.latency, rate: cfg.rate, enqueue_max_lag_ms: worst * 1000 };
  } finally {
    w.stop();
  }
}

async function runMain(raw) {
  const { url, ...cfg } = raw;
  const phases = cfg.phases || ["enqueue_seq", "enqueue_fast", "process", "latency"];
  const require = createRequire(import.meta.url);
  const version = require("bullmq/package.json").version;
  const out = {
    system: "bullmq-node",
    fast_method: "Queue.addBulk(10k) (one MULTI pipeline)",
    n: cfg.n,
    // ioredis parses replies in JavaScript (no hiredis binding): named so the report says which parser ran.
    version: `bullmq ${version} node ${process.versions.node}, ioredis JavaScript parser`,
  };
  const stats = new IORedis(url);
  try {
    if (phases.includes("enqueue_seq")) out.enqueue_seq = await guard(() => enqueueSeq(url, cfg, stats));
    if (phases.includes("enqueue_fast")) out.enqueue_fast = await guard(() => enqueueFast(url, cfg, stats));
    if (phases.includes("process")) {
      out.process = {};
      for (const spec of cfg.process) out.process[spec.label] = await guard(() => processPhase(url, cfg, spec, stats));
    }
    if (phases.includes("latency")) out.latency = await guard(() => latencyPhase(url, cfg));
  } finally {
    stats.disconnect();
  }
  process.stdout.write(JSON.stringify(out) + "\n", () => process.exit(0));
}

const [command, rawJson] = process.argv.slice(2);
const parsed = JSON.parse(rawJson);
if (command === "worker") await workerMain(parsed);
else await runMain(parsed);
