//! The integration suite: one binary, a real server per test on an ephemeral port, spoken to
//! over HTTP. Each module covers one feature.

mod auth;
mod backend;
mod backpressure;
mod backup;
mod cancel;
mod child;
mod cli;
mod clock;
mod contract;
mod disk_full;
mod durability;
mod errors;
mod events;
mod helpers;
mod http_kind;
mod limits;
mod logs;
mod management;
mod metrics;
mod multinode;
mod openapi;
mod outbound;
mod poison;
mod pool;
mod queues;
mod receiver;
mod schedules;
mod semantics;
mod shutdown;
mod state_machine;
mod store;
mod tasks;
mod webhooks;
mod worker_processes;
mod workers;
