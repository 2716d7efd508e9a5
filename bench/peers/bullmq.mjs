// BullMQ on Redis, as its docs set it up for volume (docs.bullmq.io/guide/workers/concurrency,
// guide/queues/adding-bulks): one Worker with a concurrency factor of 50 (the docs' example;
// BULLMQ_CONCURRENCY), jobs added with `addBulk`. Completed jobs are kept, as by default.
// bench/run starts a Redis of its own with `appendonly yes` and `appendfsync always`, so an
// acknowledged add is on disk as a PostgreSQL commit is; the RESULT line says what it found.
//
// drain:  `addBulk` in chunks of 1,000 while no worker runs, then a Worker; done when the
//         queue counts every job completed.
// submit: `queue.add` one job per call, 64 calls in flight, the Worker running.
//
// Here --url is redis://HOST:PORT.

import { Queue, Worker } from 'bullmq';
import { Redis } from 'ioredis';
import { args, drain, result, submit } from './common.mjs';

const PEER = 'bullmq';
const QUEUE = 'noop';
const CHUNK = 1_000;
const CONCURRENCY = Number(process.env.BULLMQ_CONCURRENCY ?? 50);

const options = args();
const { hostname, port } = new URL(options.url);
// A Worker's blocking reads need `maxRetriesPerRequest: null` (BullMQ's connection docs).
const connection = { host: hostname, port: Number(port), maxRetriesPerRequest: null };
const queue = new Queue(QUEUE, { connection });
const redis = new Redis(connection);
const [, appendfsync] = await redis.config('GET', 'appendfsync');
const [, appendonly] = await redis.config('GET', 'appendonly');
redis.disconnect();

let completed = 0;
let worker;
const work = async () => {
  worker = new Worker(QUEUE, async () => {
    completed += 1;
  }, { connection, concurrency: CONCURRENCY });
  worker.on('error', (error) => console.error(`bullmq worker error: ${error.stack ?? error}`));
  await worker.waitUntilReady();
};

async function measureDrain() {
  return drain(options, {
    fill: async (tasks) => {
      for (let done = 0; done < tasks; done += CHUNK) {
        const size = Math.min(CHUNK, tasks - done);
        await queue.addBulk(Array.from({ length: size }, () => ({ name: 'noop', data: {} })));
      }
    },
    start: work,
    // The handler's count first (no query while jobs run), then the queue's own count.
    finished: async () => {
      if (completed < options.tasks) return false;
      return (await queue.getCompletedCount()) === options.tasks;
    },
    stop: () => worker.close(),
  });
}

async function measureSubmit() {
  await work();
  try {
    return await submit(options, () => queue.add('noop', {}));
  } finally {
    await worker.close();
  }
}

try {
  const fields = options.scenario === 'drain' ? await measureDrain() : await measureSubmit();
  const configuration = `concurrency ${CONCURRENCY}, Redis appendonly ${appendonly}, appendfsync ${appendfsync}`;
  result(PEER, configuration, fields);
} finally {
  await queue.close();
}
