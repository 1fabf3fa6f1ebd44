//! The worker processes (`heldlock-bench-worker`, one per contender): the
//! lock kinds they run, spawning one, and the clock their logs are in.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const WORKER: &str = env!("CARGO_BIN_EXE_heldlock-bench-worker");

/// Generous: a worker that takes longer has hung.
const DEADLINE: Duration = Duration::from_secs(180);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Heldlock,
    /// heldlock with bounded waiting, the bound in microseconds.
    Bounded(u32),
    Floor,
    Flock,
    Reference(u32),
}

/// The bounds of the bounded-waiting runs, in microseconds.
pub(crate) const BOUNDS_US: [u32; 2] = [10_000, 2000];

impl Kind {
    pub(crate) const ALL: [Kind; 7] = [
        Kind::Heldlock,
        Kind::Bounded(BOUNDS_US[0]),
        Kind::Bounded(BOUNDS_US[1]),
        Kind::Floor,
        Kind::Flock,
        Kind::Reference(50),
        Kind::Reference(1),
    ];

    fn args(self) -> Vec<String> {
        match self {
            Kind::Heldlock => vec!["heldlock".into()],
            Kind::Bounded(bound) => vec!["heldlock-bounded".into(), bound.to_string()],
            Kind::Floor => vec!["floor".into()],
            Kind::Flock => vec!["flock".into()],
            Kind::Reference(poll) => vec!["reference".into(), poll.to_string()],
        }
    }

    pub(crate) fn label(self) -> String {
        match self {
            Kind::Heldlock => "heldlock".into(),
            Kind::Bounded(bound) => format!("heldlock bounded {bound} us"),
            Kind::Floor => "floor".into(),
            Kind::Flock => "flock".into(),
            Kind::Reference(poll) => format!("reference {poll} ms"),
        }
    }

    pub(crate) fn file_stem(self) -> String {
        self.label().replace(' ', "-")
    }
}

pub(crate) fn epoch_ns() -> u64 {
    let since = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    u64::try_from(since.as_nanos()).unwrap()
}

/// A worker process; killed and reaped on drop unless it finished.
pub(crate) struct Worker {
    pub(crate) child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
}

impl Worker {
    pub(crate) fn spawn(kind: Kind, job: &[&str]) -> Worker {
        let mut child = Command::new(WORKER)
            .args(kind.args())
            .args(job)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (send, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if send.send(line).is_err() {
                    break;
                }
            }
        });
        Worker {
            stdin: child.stdin.take(),
            child,
            lines,
        }
    }

    /// The worker's next line of output.
    pub(crate) fn line(&self) -> String {
        self.lines
            .recv_timeout(DEADLINE)
            .unwrap_or_else(|e| panic!("worker {}: no output ({e})", self.child.id()))
    }

    pub(crate) fn go(&mut self) {
        let mut stdin = self.stdin.take().unwrap();
        stdin.write_all(b"go\n").unwrap();
    }

    /// Waits for a successful exit.
    pub(crate) fn finish(mut self) {
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                assert!(status.success(), "worker {}: {status}", self.child.id());
                return;
            }
            assert!(
                started.elapsed() < DEADLINE,
                "worker {} hung",
                self.child.id()
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
