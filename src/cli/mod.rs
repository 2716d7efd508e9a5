//! Subcommands that are HTTP clients of a taskd server: `taskd worker` (a remote worker that
//! runs a command per task). They speak the public API only, like any other client.

pub mod worker;
