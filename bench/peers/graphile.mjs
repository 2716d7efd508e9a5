// graphile-worker in the configuration of its performance page (worker.graphile.org/docs/
// performance, "With batching"): 24 concurrent jobs, a pool of 25 connections, a local queue
// of 500 and job completions batched with a delay of 0 ms. One Node process (the page's
// figures used four on a 24-core machine; this one has two cores).
//
// drain:  `addJobs` in chunks of 10,000 while no worker runs, then `run()`; done when
//         graphile's job table is empty (it deletes a job on completion).
// submit: `runner.addJob` one job per call, 64 calls in flight, the worker running.

import { Logger, makeWorkerUtils, run } from 'graphile-worker';
import pg from 'pg';
import { args, drain, result, submit } from './common.mjs';

const PEER = 'graphile-worker';
const CHUNK = 10_000;
const preset = {
  worker: {
    concurrentJobs: 24,
    maxPoolSize: 25,
    localQueue: { size: 500 },
    completeJobBatchDelay: 0,
    failJobBatchDelay: 0,
  },
};

// Warnings and errors only: the info lines would go to stdout beside the RESULT line.
const logger = new Logger(() => (level, message) => {
  if (level === 'error' || level === 'warning') console.error(`graphile-worker ${level}: ${message}`);
});

const options = args();
const common = { connectionString: options.url, logger, noHandleSignals: true, preset };
let completed = 0;
const taskList = {
  noop: async () => {
    completed += 1;
  },
};

async function measureDrain() {
  const utils = await makeWorkerUtils({ connectionString: options.url, logger });
  await utils.migrate();
  const pool = new pg.Pool({ connectionString: options.url, max: 1 });
  let runner;
  try {
    return await drain(options, {
      fill: async (tasks) => {
        for (let done = 0; done < tasks; done += CHUNK) {
          const size = Math.min(CHUNK, tasks - done);
          await utils.addJobs(Array.from({ length: size }, () => ({ identifier: 'noop', payload: {} })));
        }
      },
      start: async () => {
        runner = await run({ ...common, taskList });
      },
      // The handler's count first (no query while jobs run), then the table: a job is done
      // when its completion has been written.
      finished: async () => {
        if (completed < options.tasks) return false;
        const { rows } = await pool.query('SELECT count(*)::int AS left FROM graphile_worker._private_jobs');
        return rows[0].left === 0;
      },
      stop: () => runner.stop(),
    });
  } finally {
    await pool.end();
    await utils.release();
  }
}

async function measureSubmit() {
  const runner = await run({ ...common, taskList });
  try {
    return await submit(options, () => runner.addJob('noop', {}));
  } finally {
    await runner.stop();
  }
}

const fields = options.scenario === 'drain' ? await measureDrain() : await measureSubmit();
result(PEER, '24 concurrent jobs, local queue 500, completions batched (0 ms), pool 25', fields);
