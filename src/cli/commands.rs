//! The client subcommands as one clap enum (flattened into `taskd`'s own), and the one place
//! that runs them: a command's outcome becomes its exit code, an error its message on stderr
//! (docs/cli.md lists the codes).

use std::process::ExitCode;

use clap::{CommandFactory, Subcommand};

use super::bulk::BulkArgs;
use super::client::CliError;
use super::output::Exit;
use super::queues::{QueueArgs, QueuesArgs};
use super::tasks::{IdArgs, IdsArgs, ListArgs, ResultArgs, SubmitArgs, WaitArgs};
use super::watch::WatchArgs;

#[derive(Debug, Subcommand)]
pub enum ClientCommand {
    /// Submit a task (prints its id; with --wait, the finished task).
    Submit(SubmitArgs),
    /// Show a task.
    Get(IdArgs),
    /// Print a task's result (exit 1 if it failed or was cancelled, 124 if not finished).
    Result(ResultArgs),
    /// Wait for tasks to finish (exit 0: all succeeded, 1: any failed or was cancelled,
    /// 124: --timeout ran out).
    Wait(WaitArgs),
    /// List tasks, newest first, a page at a time.
    List(ListArgs),
    /// Cancel tasks (a running one stops at its next chance).
    Cancel(IdsArgs),
    /// Run failed or cancelled tasks again.
    Retry(IdsArgs),
    /// Show every queue: settings and tasks by state.
    Queues(QueuesArgs),
    /// Show a queue, or pause, resume or limit it.
    Queue(QueueArgs),
    /// Follow a task, or a queue's tasks, live (progress bars on a terminal).
    Watch(WatchArgs),
    /// Submit a file of tasks, one JSON body per line; safe to run again after an interruption.
    Bulk(BulkArgs),
    /// Print a shell completion script: `taskd completions bash > /etc/bash_completion.d/taskd`.
    Completions { shell: clap_complete::Shell },
}

/// Runs a client subcommand and says how the process should exit.
pub async fn run(command: ClientCommand) -> ExitCode {
    let name = command_name(&command);
    let outcome = match command {
        ClientCommand::Submit(args) => super::tasks::submit(args).await,
        ClientCommand::Get(args) => super::tasks::get(args).await,
        ClientCommand::Result(args) => super::tasks::result(args).await,
        ClientCommand::Wait(args) => super::tasks::wait(args).await,
        ClientCommand::List(args) => super::tasks::list(args).await,
        ClientCommand::Cancel(args) => super::tasks::act(args, "cancel").await,
        ClientCommand::Retry(args) => super::tasks::act(args, "retry").await,
        ClientCommand::Queues(args) => super::queues::queues(args).await,
        ClientCommand::Queue(args) => super::queues::queue(args).await,
        ClientCommand::Watch(args) => super::watch::watch(args).await,
        ClientCommand::Bulk(args) => super::bulk::bulk(args).await,
        ClientCommand::Completions { shell } => {
            let mut cli = crate::config::Cli::command();
            clap_complete::generate(shell, &mut cli, "taskd", &mut std::io::stdout());
            Ok(Exit::Success)
        }
    };
    let exit = outcome.unwrap_or_else(|error: CliError| {
        eprintln!("taskd {name}: {error}");
        Exit::Error
    });
    ExitCode::from(exit as u8)
}

fn command_name(command: &ClientCommand) -> &'static str {
    match command {
        ClientCommand::Submit(_) => "submit",
        ClientCommand::Get(_) => "get",
        ClientCommand::Result(_) => "result",
        ClientCommand::Wait(_) => "wait",
        ClientCommand::List(_) => "list",
        ClientCommand::Cancel(_) => "cancel",
        ClientCommand::Retry(_) => "retry",
        ClientCommand::Queues(_) => "queues",
        ClientCommand::Queue(_) => "queue",
        ClientCommand::Watch(_) => "watch",
        ClientCommand::Bulk(_) => "bulk",
        ClientCommand::Completions { .. } => "completions",
    }
}
