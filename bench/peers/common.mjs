// What every peer runner shares: the command line, the clock, the two measurements' loops and
// the RESULT line bench/run reads (the same `key=value` shape as taskd-load's).
//
// A runner knows its peer's API and nothing of bench/run's table; this file knows neither.

import { readFileSync } from 'node:fs';
import { performance } from 'node:perf_hooks';
import { parseArgs } from 'node:util';

/** The runner's arguments: `drain|submit --url URL [--tasks N] [--duration S] ...`. */
export function args() {
  const { positionals, values } = parseArgs({
    allowPositionals: true,
    options: {
      url: { type: 'string' },
      tasks: { type: 'string', default: '100000' },
      duration: { type: 'string', default: '10' },
      warmup: { type: 'string', default: '1' },
      'in-flight': { type: 'string', default: '64' },
    },
  });
  const scenario = positionals[0];
  if (!['drain', 'submit'].includes(scenario) || !values.url) {
    console.error('usage: RUNNER drain|submit --url DATABASE_URL [--tasks N] [--duration S] [--warmup S] [--in-flight N]');
    process.exit(2);
  }
  return {
    scenario,
    url: values.url,
    tasks: Number(values.tasks),
    duration: Number(values.duration),
    warmup: Number(values.warmup),
    inFlight: Number(values['in-flight']),
  };
}

export const now = () => performance.now();

/**
 * Prints what was measured: `ABOUT PACKAGE VERSION: CONFIGURATION` (the table's label), then
 * `RESULT peer=PACKAGE key=value ...`.
 */
export function result(pkg, configuration, fields) {
  const manifest = new URL(`./node_modules/${pkg}/package.json`, import.meta.url);
  const { version } = JSON.parse(readFileSync(manifest, 'utf8'));
  const pairs = Object.entries(fields).map(([key, value]) => `${key}=${value}`);
  console.log(`ABOUT ${pkg} ${version}: ${configuration}`);
  console.log(`RESULT peer=${pkg} ${pairs.join(' ')}`);
}

/** Resolves once `check()` is true, asking every `every` ms; fails after `timeout` ms. */
export async function until(what, check, { every = 20, timeout = 600_000 } = {}) {
  const deadline = now() + timeout;
  while (!(await check())) {
    if (now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, every));
  }
}

/**
 * The drain: `fill(n)` inserts n jobs in bulk while no worker runs, `start()` starts the
 * workers, `finished()` is true once the peer's own store shows all n done. Completed/s counts
 * from `start()` until then.
 */
export async function drain({ tasks }, { fill, start, finished, stop }) {
  const fillStart = now();
  await fill(tasks);
  const fillSeconds = (now() - fillStart) / 1000;
  const drainStart = now();
  await start();
  await until('the drain', finished);
  const drainSeconds = (now() - drainStart) / 1000;
  await stop();
  return {
    tasks,
    fill_s: fillSeconds.toFixed(3),
    fill_per_s: (tasks / fillSeconds).toFixed(0),
    drain_s: drainSeconds.toFixed(3),
    drain_per_s: (tasks / drainSeconds).toFixed(0),
  };
}

/**
 * Single submits: `inFlight` loops each calling `submitOne()` back to back, for `warmup` then
 * `duration` seconds; only the second window counts. Returns submits/s and the latency
 * percentiles of the counted calls.
 */
export async function submit({ duration, warmup, inFlight }, submitOne) {
  const latencies = [];
  let counting = false;
  let stopAt = Infinity;
  const loop = async () => {
    while (now() < stopAt) {
      const counted = counting;
      const sent = now();
      await submitOne();
      if (counted) latencies.push(now() - sent);
    }
  };
  const loops = Array.from({ length: inFlight }, loop);
  await new Promise((resolve) => setTimeout(resolve, warmup * 1000));
  counting = true;
  const measureStart = now();
  stopAt = measureStart + duration * 1000;
  await Promise.all(loops);
  const seconds = (now() - measureStart) / 1000;
  latencies.sort((a, b) => a - b);
  const at = (q) => (latencies.length ? latencies[Math.min(latencies.length - 1, Math.floor(q * latencies.length))] : 0);
  return {
    submits: latencies.length,
    submit_s: seconds.toFixed(3),
    submit_per_s: (latencies.length / seconds).toFixed(0),
    p50_us: (at(0.5) * 1000).toFixed(0),
    p99_us: (at(0.99) * 1000).toFixed(0),
  };
}
