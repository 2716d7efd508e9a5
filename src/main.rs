//! The `taskd` binary: parse the configuration, set up logging, bind, hand over to `app`.

use clap::Parser;
use taskd::config::{Cli, Command, LogFormat};
use taskd::handlers::Registry;
use tokio::net::TcpListener;
use tracing_subscriber::EnvFilter;

/// jemalloc serves every allocation of the process: Rust's, and SQLite's and the other C
/// code's through `malloc` (Cargo.toml). Its arenas and thread caches let the writer thread
/// free what the request threads allocated, and the reverse, without waiting on a lock, as
/// glibc's arenas made them: a drain on SQLite ran 17–35 % faster at 256 and 2,048 workers
/// (6–18 % at 64) than with glibc's malloc (docs/benchmarks.md, "jemalloc").
#[cfg(target_os = "linux")]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's settings, read before `main`; `MALLOC_CONF` in the environment overrides any
/// of them. Freed memory goes back to the OS within about a second (`dirty_decay_ms`, no
/// `muzzy` stage), by a thread of jemalloc's own (`background_thread`) even while the server
/// is idle: after a burst of 1 MB bodies, RSS returns near where it was (docs/operations.md,
/// "Memory"). jemalloc's default (10 s, and only when the process allocates again) kept
/// three times as much.
#[cfg(target_os = "linux")]
#[unsafe(export_name = "malloc_conf")]
static MALLOC_CONF: &[u8; 60] = b"background_thread:true,dirty_decay_ms:1000,muzzy_decay_ms:0\0";

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let filter = EnvFilter::try_from_env("TASKD_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    // Lines are formatted where they happen and written by a thread of their own, many to a
    // write, flushed whenever it has caught up: a line per ended attempt cost the pool's
    // threads a write(2) each. Never lossy: a full queue (far behind) makes the loggers wait.
    // The guard flushes what is queued when `main` returns.
    let (writer, _flush_at_exit) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .lossy(false)
        .thread_name("taskd-logs")
        .finish(std::io::BufWriter::with_capacity(
            64 * 1024,
            std::io::stderr(),
        ));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer);
    match cli.log_format {
        LogFormat::Json => logs.json().flatten_event(true).init(),
        // Colour codes only where a person reads them, never into a file or a pipe.
        LogFormat::Text => logs
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
    }
    let outcome = match cli.command {
        Command::Client(command) => return taskd::cli::commands::run(command).await,
        Command::Migrate(database) => taskd::app::migrate(&database.url).await,
        Command::Backup(backup) => {
            return match taskd::cli::backup::run(&backup) {
                Ok(bytes) => {
                    println!("backed up to {} ({bytes} bytes)", backup.out.display());
                    std::process::ExitCode::SUCCESS
                }
                Err(error) => {
                    eprintln!("taskd backup: {error}");
                    std::process::ExitCode::FAILURE
                }
            };
        }
        Command::Keys(keys) => {
            let mut out = std::io::stdout().lock();
            return match taskd::cli::keys::run(keys, &mut out).await {
                Ok(()) => std::process::ExitCode::SUCCESS,
                Err(error) => {
                    eprintln!("taskd keys: {error}");
                    std::process::ExitCode::FAILURE
                }
            };
        }
        Command::Worker(config) => {
            let stop = tokio_util::sync::CancellationToken::new();
            let trigger = stop.clone();
            tokio::spawn(async move {
                taskd::app::shutdown_signal().await;
                trigger.cancel();
            });
            match taskd::cli::worker::run(config, stop).await {
                Ok(()) => Ok(()),
                Err(error) => {
                    tracing::error!(%error, "the worker stopped");
                    return std::process::ExitCode::FAILURE;
                }
            }
        }
        Command::Serve(config) => match TcpListener::bind(config.listen).await {
            Ok(listener) => {
                // Printed (not logged) so scripts and tests can read the bound port.
                match listener.local_addr() {
                    Ok(addr) => println!("taskd listening on http://{addr}"),
                    Err(error) => tracing::warn!(%error, "cannot read the bound address"),
                }
                taskd::app::run(
                    listener,
                    *config,
                    Registry::builtin(),
                    taskd::app::shutdown_signal(),
                )
                .await
            }
            Err(error) => Err(error.into()),
        },
    };
    match outcome {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(%error, "taskd failed");
            std::process::ExitCode::FAILURE
        }
    }
}
