//! A real `taskd serve` child process on an ephemeral port, for tests that kill it (SIGKILL)
//! or run several of them on one database.

use std::io::{BufRead, BufReader};
use std::process::{Child, ChildStderr, Command, Stdio};

pub struct Server {
    child: Child,
    pub base: String,
}

impl Server {
    /// Starts `taskd serve` on `database_url` with `--workers` and any further `args`; returns
    /// once it printed the address it listens on.
    pub fn start(database_url: &str, workers: u32, args: &[&str]) -> Server {
        Server::spawn(database_url, workers, args, "warn", Stdio::inherit())
    }

    /// As [`Server::start`], logging at `info` into a pipe; returns the server and a reader of
    /// its log lines (stderr).
    pub fn start_logging(database_url: &str, args: &[&str]) -> (Server, ChildStderr) {
        let mut server = Server::spawn(database_url, 2, args, "info", Stdio::piped());
        let stderr = server.child.stderr.take().expect("stderr");
        (server, stderr)
    }

    fn spawn(database_url: &str, workers: u32, args: &[&str], log: &str, stderr: Stdio) -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_taskd"))
            .args(["serve", "--listen", "127.0.0.1:0", "--workers"])
            .arg(workers.to_string())
            .arg("--database")
            .arg(database_url)
            .args(args)
            .env("TASKD_LOG", log)
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("taskd starts");
        let stdout = child.stdout.take().expect("stdout");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("the listening line");
        let base = line
            .trim()
            .strip_prefix("taskd listening on ")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .to_owned();
        Server { child, base }
    }

    /// SIGKILL: no shutdown code runs.
    pub fn kill_9(mut self) {
        // Child::kill sends SIGKILL on Unix.
        self.child.kill().expect("SIGKILL");
        self.child.wait().expect("reaped");
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
