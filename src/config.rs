//! Configuration: one clap struct per subcommand. Every flag has an env twin `TASKD_*` and a
//! documented default; `taskd serve --help` lists them, and so does `taskd --help` (rendered
//! from [`ServeConfig`] itself, so the two cannot drift apart).

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::time::Duration;

use clap::builder::StyledStr;
use clap::{Args, Parser, Subcommand};

use crate::access::AuthMode;
use crate::api::{AllowedHosts, BasePath, ProxyConfig, TrustedProxies};
use crate::engine::{EngineConfig, WebhookConfig};
use crate::outbound::{AllowList, DEFAULT_ALLOW_OUTBOUND, Outbound};
use crate::traces::Tracer;

#[derive(Debug, Parser)]
#[command(
    name = "taskd",
    version,
    about = "An HTTP task service: submit, run and await tasks.",
    after_help = "`taskd --help` also lists the options of `taskd serve`, with their environment \
                  variables and defaults.",
    after_long_help = serve_options_help()
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,

    /// How log lines are written to stderr: `text` (coloured only on a terminal) or `json`
    /// (one object per line, for log shippers). `TASKD_LOG` sets which lines (`info`).
    #[arg(long, global = true, env = "TASKD_LOG_FORMAT", default_value = "text")]
    pub log_format: LogFormat,
}

/// The shape of log lines (`--log-format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the HTTP API and run tasks.
    /// Boxed: the serve options are many times the size of the other variants.
    Serve(Box<ServeConfig>),
    /// Apply the database migrations, then exit.
    Migrate(DatabaseArgs),
    /// Serve a remote queue of a taskd server by running a command per task.
    Worker(crate::cli::worker::WorkerConfig),
    /// Create, list and revoke API keys (in the database, like `migrate`).
    Keys(crate::cli::keys::KeysArgs),
    /// Copy a SQLite database consistently while servers run (PostgreSQL: use pg_dump).
    Backup(crate::cli::backup::BackupArgs),
    /// The client: submit, follow and manage tasks on a server, over its HTTP API.
    #[command(flatten)]
    Client(crate::cli::commands::ClientCommand),
}

/// The options of `taskd serve` as `taskd serve --help` shows them (flag, help, env twin,
/// default), for the end of `taskd --help`. Rendered from [`ServeConfig`]'s own definition each
/// time, so it lists exactly the flags `serve` takes.
fn serve_options_help() -> StyledStr {
    let mut serve = ServeConfig::augment_args(clap::Command::new("taskd serve"))
        .disable_help_flag(true)
        .help_template("{options}");
    let header = *clap::builder::Styles::default().get_header();
    let mut help = StyledStr::new();
    // Writing into a `StyledStr` cannot fail.
    let _ = write!(
        help,
        "{header}Options of `taskd serve`{header:#} (each also read from its environment \
         variable):\n{}",
        serve.render_help().ansi()
    );
    help
}

#[derive(Debug, Clone, Args)]
pub struct DatabaseArgs {
    /// Where tasks are stored: `sqlite://PATH` (a file, created if missing), `sqlite::memory:`
    /// (gone when the process ends), or `postgres://USER@HOST/DB` (several nodes may share it;
    /// see docs/scaling.md).
    #[arg(
        long = "database",
        env = "TASKD_DATABASE",
        default_value = "sqlite://taskd.db"
    )]
    pub url: String,
}

#[derive(Debug, Clone, Args)]
pub struct ServeConfig {
    /// The address to listen on.
    #[arg(long, env = "TASKD_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    /// Also serve `GET /metrics` on this address, without keys (for a scraper on a private
    /// network). Unset: `/metrics` is served only on --listen, behind the `read` scope.
    #[arg(long, env = "TASKD_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,

    #[command(flatten)]
    pub database: DatabaseArgs,

    /// How many tasks run at once (the size of the worker pool).
    #[arg(long, env = "TASKD_WORKERS", default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub workers: u32,

    /// How many tasks may wait in one queue; a submit beyond it answers 429.
    #[arg(long, env = "TASKD_MAX_QUEUED", default_value_t = 100_000)]
    pub max_queued: u64,

    /// How many CPU-bound computations (like `sha256`) run at once; default: one less than
    /// the cores, at least one, so the API keeps a core.
    #[arg(long, env = "TASKD_CPU_THREADS")]
    pub cpu_threads: Option<usize>,

    /// The largest request body accepted, in bytes; a larger one answers 413.
    #[arg(long, env = "TASKD_MAX_BODY_BYTES", default_value_t = 1024 * 1024)]
    pub max_body_bytes: usize,

    /// How many long-polls may wait at once; one more answers 429.
    #[arg(long, env = "TASKD_MAX_WAITERS", default_value_t = 65_536)]
    pub max_waiters: usize,

    /// How long running tasks may go on after SIGTERM before they are stopped and re-queued.
    #[arg(long, env = "TASKD_SHUTDOWN_GRACE", default_value = "10s", value_parser = humantime::parse_duration)]
    pub shutdown_grace: Duration,

    /// How long a request may take (long-polls excepted: they end by their own `wait`).
    #[arg(long, env = "TASKD_REQUEST_TIMEOUT", default_value = "30s", value_parser = humantime::parse_duration)]
    pub request_timeout: Duration,

    /// How long a claim holds a task before it counts as lost; renewed while it runs.
    #[arg(long, env = "TASKD_LEASE", default_value = "30s", value_parser = humantime::parse_duration)]
    pub lease: Duration,

    /// How long finished tasks are kept before the maintainer deletes them (then: 404).
    #[arg(long, env = "TASKD_RETENTION", default_value = "7days", value_parser = humantime::parse_duration)]
    pub retention: Duration,

    /// The longest `Retry-After` taskd answers (a full queue, a submit's wait estimate): an
    /// estimate from the measured drain rate is cut to this.
    #[arg(long, env = "TASKD_MAX_RETRY_AFTER", default_value = "60s", value_parser = humantime::parse_duration)]
    pub max_retry_after: Duration,

    /// The backoff base of retries when a task does not set one.
    #[arg(long, env = "TASKD_BACKOFF_BASE", default_value = "1s", value_parser = humantime::parse_duration)]
    pub backoff_base: Duration,

    /// The longest backoff between retries when a task does not set one.
    #[arg(long, env = "TASKD_BACKOFF_CAP", default_value = "1h", value_parser = humantime::parse_duration)]
    pub backoff_cap: Duration,

    /// Which hosts and ports webhooks and the `http` kind may reach: comma-separated entries
    /// `host`, `*.domain`, an address or CIDR (`10.0.0.0/8`, `[::1]`), each with an optional
    /// `:port` (`127.0.0.1:9000`, `*.example.com:443`, `[::1]:9000`; none: every port). A host
    /// is reached only if listed by name or if every address it resolves to is listed;
    /// link-local and cloud metadata addresses never are, taskd's own listen and database
    /// addresses only by an entry naming exactly that host and port. Default: none, so
    /// outbound requests are refused.
    #[arg(long, env = "TASKD_ALLOW_OUTBOUND", default_value = DEFAULT_ALLOW_OUTBOUND, hide_default_value = true)]
    pub allow_outbound: AllowList,

    /// When requests need an API key (`Authorization: Bearer …`): `auto` asks for one on
    /// every route but /healthz, /readyz, /openapi.yaml and the dashboard's page once any key
    /// exists (`taskd keys create`); with no key, it serves open on a loopback address and
    /// refuses to start on any other. `on` always asks; `off` never does (trusted networks
    /// only). See docs/security.md.
    #[arg(long, env = "TASKD_AUTH", default_value = "auto")]
    pub auth: AuthMode,

    /// The `Host` names taskd answers to, comma-separated (`tasks.example.com`,
    /// `*.example.com`); any other gets 421, against DNS rebinding. Default: on a loopback
    /// address, `localhost`, `127.0.0.1` and `[::1]`; on any other, every name.
    #[arg(long, env = "TASKD_ALLOWED_HOSTS")]
    pub allowed_hosts: Option<AllowedHosts>,

    /// The path taskd serves under, such as `/taskd` behind a proxy that passes that prefix
    /// on: every route, the dashboard and its links are then below it, and any other path
    /// answers 404. Default: the root. See docs/operations.md, "Reverse proxies".
    #[arg(
        long,
        env = "TASKD_BASE_PATH",
        default_value = "",
        hide_default_value = true
    )]
    pub base_path: BasePath,

    /// The peers whose `X-Forwarded-Proto`, `X-Forwarded-Host` and `X-Forwarded-Prefix`
    /// headers taskd believes, comma-separated addresses or CIDRs (`127.0.0.1`,
    /// `10.0.0.0/8`): its reverse proxies. From them, links carry the client's scheme, host
    /// and prefix, and `--allowed-hosts` checks `X-Forwarded-Host`. Default: none, so the
    /// headers are ignored from everyone.
    #[arg(
        long,
        env = "TASKD_TRUSTED_PROXIES",
        default_value = "",
        hide_default_value = true
    )]
    pub trusted_proxies: TrustedProxies,

    /// The longest a long-poll waits (`?wait=`, `Prefer: wait=`, a lease's `wait_ms`); a
    /// longer wait asked for is cut to it. A reverse proxy's read timeout must be above it.
    /// At most 1h.
    #[arg(long, env = "TASKD_MAX_WAIT", default_value = "60s", value_parser = parse_max_wait)]
    pub max_wait: Duration,

    /// How many times a completion webhook is tried (the first included) before it is
    /// `failed`.
    #[arg(long, env = "TASKD_WEBHOOK_MAX_ATTEMPTS", default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub webhook_max_attempts: u32,

    /// The wait after a webhook's first failed try; it doubles after each (capped at 1h).
    #[arg(long, env = "TASKD_WEBHOOK_BACKOFF_BASE", default_value = "1s", value_parser = humantime::parse_duration)]
    pub webhook_backoff_base: Duration,

    /// How long one webhook try may take before it counts as failed.
    #[arg(long, env = "TASKD_WEBHOOK_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub webhook_timeout: Duration,

    /// How long a client may take to send a request's head (line and headers), counted from
    /// the connection's accept or from the first byte of the next request on it; then the
    /// connection is closed.
    #[arg(long, env = "TASKD_HEADER_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub header_timeout: Duration,

    /// How long a client may take to send a request's whole body, on any route, counted from
    /// its head; then the request answers 408.
    #[arg(long, env = "TASKD_BODY_TIMEOUT", default_value = "30s", value_parser = humantime::parse_duration)]
    pub body_timeout: Duration,

    /// How long a keep-alive connection may sit with no request in flight before it is
    /// closed. Long-polls and event streams are in flight, so never idle.
    #[arg(long, env = "TASKD_IDLE_TIMEOUT", default_value = "60s", value_parser = humantime::parse_duration)]
    pub idle_timeout: Duration,

    /// How many client connections are open at once; beyond it taskd accepts no more until
    /// one closes. Default: the open-file limit (soft RLIMIT_NOFILE) less 128 and less one per
    /// worker, kept for the database, outbound requests and files; between 16 and 65,536.
    #[arg(long, env = "TASKD_MAX_CONNECTIONS", value_parser = clap::value_parser!(u32).range(1..))]
    pub max_connections: Option<u32>,

    /// How much memory requests with bodies may hold at once, over all requests: each
    /// counts 3 × its Content-Length (or --max-body-bytes when it has none), more if its JSON
    /// parses into many small values, from before its body is read until its answer is sent.
    /// A request that would go beyond answers 503 with Retry-After. Default: 256 MiB.
    #[arg(long, env = "TASKD_MAX_BODY_MEMORY", default_value_t = 256 * 1024 * 1024)]
    pub max_body_memory: usize,

    /// Export spans (each submit, each attempt) over OTLP/HTTP in JSON to this collector:
    /// they are POSTed to URL/v1/traces (`http://otel-collector:4318` sends to
    /// `http://otel-collector:4318/v1/traces`). This destination is the operator's: the
    /// --allow-outbound list does not apply to it, nor does it let tasks reach it. Unset: no
    /// spans are made (a caller's `traceparent` is still passed on). See docs/operations.md.
    #[arg(long, env = "TASKD_OTLP_ENDPOINT", value_parser = otlp_endpoint)]
    pub otlp_endpoint: Option<url::Url>,

    /// How many finished spans may wait for the exporter; a span beyond is dropped and
    /// counted in `taskd_trace_spans_total{outcome="dropped"}`, so no request waits for it.
    #[arg(long, env = "TASKD_OTLP_MAX_QUEUED", default_value_t = 4096, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub otlp_max_queued: u32,
}

/// An `--otlp-endpoint`: an absolute http(s) URL.
fn otlp_endpoint(text: &str) -> Result<url::Url, String> {
    let url = url::Url::parse(text).map_err(|error| format!("not a URL: {error}"))?;
    if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
        return Err("must be an http or https URL with a host".to_owned());
    }
    Ok(url)
}

/// The longest `--max-wait`: a waiting request holds a connection and a waiter slot.
const MAX_MAX_WAIT: Duration = Duration::from_secs(3600);

fn parse_max_wait(text: &str) -> Result<Duration, String> {
    let wait = humantime::parse_duration(text).map_err(|e| e.to_string())?;
    if wait.is_zero() || wait > MAX_MAX_WAIT {
        return Err(format!("must be more than 0 and at most 1h, got {text}"));
    }
    Ok(wait)
}

/// A `TASKD_*` environment variable that does not parse, in clap's words (which name the
/// option and the value).
#[derive(Debug, Clone, thiserror::Error)]
#[error("the TASKD_* environment does not parse: {0}")]
pub struct ConfigError(pub String);

impl ServeConfig {
    /// The configuration of `taskd serve` with no flags: the defaults, overridden by any
    /// `TASKD_*` variable set. A variable that does not parse is an error returned to the
    /// caller — never an exit, since a program that embeds taskd calls this.
    pub fn defaults() -> Result<ServeConfig, ConfigError> {
        #[derive(Parser)]
        struct Defaults {
            #[command(flatten)]
            config: ServeConfig,
        }
        Defaults::try_parse_from(["taskd"])
            .map(|defaults| defaults.config)
            .map_err(|error| ConfigError(error.render().to_string().trim().to_owned()))
    }

    /// What the serving layer needs to know of the reverse proxy in front.
    pub fn proxy(&self) -> ProxyConfig {
        ProxyConfig {
            base_path: self.base_path.clone(),
            trusted: self.trusted_proxies.clone(),
        }
    }

    /// The engine's configuration; `outbound` is the client that delivers webhooks, `tracer`
    /// where spans go.
    pub fn engine(&self, outbound: Outbound, tracer: Tracer) -> EngineConfig {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        EngineConfig {
            workers: self.workers as usize,
            max_queued: self.max_queued,
            cpu_threads: self.cpu_threads.unwrap_or(cores.saturating_sub(1)).max(1),
            max_waiters: self.max_waiters,
            lease: self.lease,
            shutdown_grace: self.shutdown_grace,
            retention: self.retention,
            max_retry_after: self.max_retry_after,
            webhooks: WebhookConfig {
                outbound,
                max_attempts: self.webhook_max_attempts,
                backoff_base: self.webhook_backoff_base,
                timeout: self.webhook_timeout,
            },
            tracer,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_cli_is_well_formed() {
        Cli::command().debug_assert();
    }

    /// A bad `TASKD_*` variable makes `defaults()` return an error, not exit the process.
    /// The variable is set for a child run of this very test, so no other test sees it; a
    /// child that exited (clap's way) would not report the test passed.
    #[test]
    fn a_bad_environment_is_an_error_not_an_exit() {
        const CHILD: &str = "TASKD_TEST_CONFIG_CHILD";
        if std::env::var_os(CHILD).is_some() {
            let error = ServeConfig::defaults().expect_err("TASKD_WORKERS=many is refused");
            let said = error.to_string();
            assert!(
                said.contains("many") && said.contains("--workers"),
                "{said}"
            );
            return;
        }
        let name = "config::tests::a_bad_environment_is_an_error_not_an_exit";
        let output = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["--exact", name, "--test-threads=1"])
            .env(CHILD, "1")
            .env("TASKD_WORKERS", "many")
            .output()
            .expect("the test binary runs");
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success() && stdout.contains("1 passed"),
            "{stdout}\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(ServeConfig::defaults().is_ok(), "the defaults parse");
    }
}
