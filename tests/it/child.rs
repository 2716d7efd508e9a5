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
        let server = Server { child, base };
        server.wait_started();
        server
    }

    /// Blocks until the server is past start-up: it prints its address once bound, and
    /// answers 503 `starting` until its store is open.
    fn wait_started(&self) {
        let address = self.base.trim_start_matches("http://");
        let start = std::time::Instant::now();
        loop {
            let answer = std::net::TcpStream::connect(address).and_then(|mut stream| {
                use std::io::{Read, Write};
                write!(
                    stream,
                    "GET /readyz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
                )?;
                let mut answer = String::new();
                stream.read_to_string(&mut answer)?;
                Ok(answer)
            });
            if answer.is_ok_and(|text| !text.is_empty() && !text.contains("\"starting\"")) {
                return;
            }
            assert!(
                start.elapsed() < crate::helpers::DEADLINE,
                "taskd at {} did not start in time",
                self.base
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    /// SIGTERM, and waits for the exit: the shutdown runs, and log lines still queued for
    /// the log thread are written before the process ends. Fails if it has not exited
    /// within the deadline.
    pub fn stop(mut self) {
        assert!(
            crate::helpers::terminate(&mut self.child),
            "taskd at {} did not stop on SIGTERM in time",
            self.base
        );
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
