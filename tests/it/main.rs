//! The integration suite: one binary, a real server per test on an ephemeral port, spoken to
//! over HTTP. Each module covers one feature.

mod backpressure;
mod cancel;
mod durability;
mod errors;
mod helpers;
mod openapi;
mod pool;
mod shutdown;
mod tasks;
