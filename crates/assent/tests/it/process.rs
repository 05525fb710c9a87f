//! Running the real `assent` binary as a child process.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A child `assent serve`.
pub struct Process {
    /// The child.
    pub child: Child,
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    /// The bootstrap key line, if this start printed one.
    pub bootstrap: Option<serde_json::Value>,
}

/// Starts `assent serve` on a random port over `dir` and waits until it listens.
pub fn serve(dir: &Path) -> Process {
    serve_with(&["--data-dir".as_ref(), dir.as_os_str()])
}

/// Starts `assent serve` on a random port with `args` and waits until it listens.
#[expect(
    clippy::zombie_processes,
    reason = "the child is reaped by Process::kill or its Drop"
)]
pub fn serve_with(args: &[&std::ffi::OsStr]) -> Process {
    let mut child = Command::new(env!("CARGO_BIN_EXE_assent"))
        .args(["serve", "--listen", "127.0.0.1:0"])
        .args(args)
        .env("ASSENT_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("assent starts");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    let mut bootstrap = None;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        assert!(
            Instant::now() < deadline,
            "assent did not start listening in time"
        );
        let line = lines
            .next()
            .expect("assent printed its address")
            .expect("stdout is text");
        if line.starts_with('{') {
            bootstrap = serde_json::from_str(&line).ok();
        }
        if let Some(addr) = line.strip_prefix("Assent listening on ") {
            // The child is waited for by `kill` or `Drop`.
            // Keep draining stdout so the child never blocks on a full pipe.
            std::thread::spawn(move || for _ in lines.by_ref() {});
            return Process {
                child,
                base: addr.trim().to_owned(),
                bootstrap,
            };
        }
    }
}

impl Process {
    /// Kills the process with SIGKILL: no chance to flush anything.
    pub fn kill(mut self) {
        self.child.kill().expect("SIGKILL sent");
        self.child.wait().expect("child reaped");
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
