// pg-boss in the configuration its worker docs give for volume (pgboss.io/api/workers): a
// `work()` handler fed batches of 100 (`batchSize`), fetching again at once while batches come
// back full (`burstWhenBatchFull`), LOCAL_CONCURRENCY such workers in this process, polling at
// the 0.5 s minimum otherwise; a pool of 25 connections (as graphile-worker's runner here).
// LISTEN/NOTIFY stays off (the default): it buys pickup latency, and every NOTIFY serialises
// commits.
//
// drain:  `insert()` in chunks of 10,000 while no worker runs, then `work()`; done when
//         pg-boss's job table holds every job in state `completed`.
// submit: `send()` one job per call, 64 calls in flight, the workers running.

import { PgBoss } from 'pg-boss';
import { args, drain, result, submit } from './common.mjs';

const PEER = 'pg-boss';
const QUEUE = 'noop';
const CHUNK = 10_000;
const LOCAL_CONCURRENCY = Number(process.env.PGBOSS_LOCAL_CONCURRENCY ?? 8);
const workOptions = {
  batchSize: 100,
  burstWhenBatchFull: true,
  pollingIntervalSeconds: 0.5,
  localConcurrency: LOCAL_CONCURRENCY,
};

const options = args();
const boss = new PgBoss({ connectionString: options.url, max: 25 });
boss.on('error', (error) => console.error(`pg-boss error: ${error.stack ?? error}`));
await boss.start();
await boss.createQueue(QUEUE);

let completed = 0;
// Returning completes the whole batch in one statement.
const work = () =>
  boss.work(QUEUE, workOptions, async (jobs) => {
    completed += jobs.length;
  });

async function measureDrain() {
  return drain(options, {
    fill: async (tasks) => {
      for (let done = 0; done < tasks; done += CHUNK) {
        const size = Math.min(CHUNK, tasks - done);
        await boss.insert(QUEUE, Array.from({ length: size }, () => ({ data: {} })));
      }
    },
    start: work,
    // The handler's count first (no query while jobs run), then the table.
    finished: async () => {
      if (completed < options.tasks) return false;
      const { rows } = await boss.getDb().executeSql(
        "SELECT count(*)::int AS done FROM pgboss.job WHERE name = $1 AND state = 'completed'",
        [QUEUE],
      );
      return rows[0].done === options.tasks;
    },
    stop: () => boss.offWork(QUEUE),
  });
}

async function measureSubmit() {
  await work();
  return submit(options, () => boss.send(QUEUE, {}));
}

try {
  const fields = options.scenario === 'drain' ? await measureDrain() : await measureSubmit();
  const configuration = `batches of 100, burstWhenBatchFull, ${LOCAL_CONCURRENCY} workers (localConcurrency), pool 25`;
  result(PEER, configuration, fields);
} finally {
  await boss.stop({ graceful: false });
}
