//! An etcd for the tests: the cluster named by `HELDLOCK_ETCD_ENDPOINTS`
//! when set, else an `etcd` from PATH started on free loopback ports with
//! its data in a temporary directory, and killed when the guard drops (a
//! panicking test drops it too). Without either, the test reports
//! `SKIPPED <test>: <reason>` and returns.
#![allow(dead_code, unreachable_pub)]

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use heldlock_etcd::EtcdBackend;
use heldlock_etcd::etcd_client::Client;

/// Comma-separated client URLs of a cluster to test against.
pub const ENDPOINTS_ENV: &str = "HELDLOCK_ETCD_ENDPOINTS";
/// Set to `1` to make a test that cannot get an etcd fail instead of skip.
pub const REQUIRE_ENV: &str = "HELDLOCK_REQUIRE_ETCD";

/// How long a started etcd may take to serve: generous for a loaded
/// machine (it takes about 0.1 s when idle).
const START_LIMIT: Duration = Duration::from_secs(30);

/// An etcd to test against; a started one is killed on drop.
pub struct Etcd {
    endpoints: Vec<String>,
    process: Option<EtcdProcess>,
}

impl Etcd {
    /// The cluster of `HELDLOCK_ETCD_ENDPOINTS`, else one started here; `None`
    /// (after a visible skip) when neither can be had.
    pub fn any(test: &str) -> Option<Etcd> {
        if let Ok(list) = std::env::var(ENDPOINTS_ENV) {
            let endpoints: Vec<String> = list
                .split(',')
                .map(str::trim)
                .filter(|e| !e.is_empty())
                .map(str::to_owned)
                .collect();
            if !endpoints.is_empty() {
                return Some(Etcd {
                    endpoints,
                    process: None,
                });
            }
        }
        Self::own(test)
    }

    /// An etcd of this test's own, started here (for tests that enable
    /// authentication or restart it, which no shared cluster may suffer).
    pub fn own(test: &str) -> Option<Etcd> {
        let Some(binary) = find_on_path("etcd") else {
            skip(
                test,
                &format!(
                    "no `etcd` on PATH and {ENDPOINTS_ENV} unset (Debian: apt-get install etcd-server)"
                ),
            );
            return None;
        };
        let process = match EtcdProcess::start(&binary) {
            Ok(process) => process,
            Err(why) => panic!("{test}: could not start {}: {why}", binary.display()),
        };
        Some(Etcd {
            endpoints: vec![process.client_url()],
            process: Some(process),
        })
    }

    pub fn endpoints(&self) -> &[String] {
        &self.endpoints
    }

    /// A new client connection.
    pub async fn client(&self) -> Client {
        Client::connect(&self.endpoints, None)
            .await
            .expect("connect to the test etcd")
    }

    /// A backend on a key no other test uses, over a connection of its own.
    pub async fn backend(&self, name: &str) -> EtcdBackend {
        EtcdBackend::connect(&self.endpoints, unique_key(name))
            .await
            .expect("connect to the test etcd")
    }

    /// Kills the started etcd (as a crash would) and starts it again on the
    /// same ports and data. Panics for an etcd not started here.
    pub fn restart(&mut self) {
        let process = self
            .process
            .as_mut()
            .expect("only an etcd started by the test can be restarted");
        if let Err(why) = process.restart() {
            panic!("could not restart etcd: {why}");
        }
    }
}

/// A key unique to this run and call: `heldlock-test/<pid>-<ns>-<n>/<name>`.
pub fn unique_key(name: &str) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("heldlock-test/{}-{nanos}-{n}/{name}", std::process::id())
}

/// Reports that `test` cannot run here, as the repository's other test
/// suites do: `SKIPPED <test>: <reason>` straight to stderr (past the
/// harness's capture) and to `HELDLOCK_SKIP_LOG` when set; a failure
/// instead under `HELDLOCK_REQUIRE_ALL_TESTS=1` or `HELDLOCK_REQUIRE_ETCD=1`.
pub fn skip(test: &str, reason: &str) {
    heldlock_testkit::skip_unless_required(test, reason, &[REQUIRE_ENV]);
}

fn find_on_path(name: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join(name))
        .find(|path| path.is_file())
}

/// A started etcd: its process, its ports and its data directory.
struct EtcdProcess {
    binary: PathBuf,
    dir: tempfile::TempDir,
    client_port: u16,
    peer_port: u16,
    child: Child,
}

impl EtcdProcess {
    fn start(binary: &Path) -> Result<Self, String> {
        let dir = tempfile::tempdir().map_err(|e| format!("temporary directory: {e}"))?;
        // Ports the kernel just handed out and took back: free, barring a
        // race with another program on this machine.
        let (client_port, peer_port) = {
            let a = TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
            let b = TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
            (
                a.local_addr().map_err(|e| e.to_string())?.port(),
                b.local_addr().map_err(|e| e.to_string())?.port(),
            )
        };
        let child = spawn(binary, dir.path(), client_port, peer_port)?;
        Ok(EtcdProcess {
            binary: binary.to_owned(),
            dir,
            client_port,
            peer_port,
            child,
        })
    }

    fn client_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.client_port)
    }

    fn restart(&mut self) -> Result<(), String> {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.child = spawn(
            &self.binary,
            self.dir.path(),
            self.client_port,
            self.peer_port,
        )?;
        Ok(())
    }
}

impl Drop for EtcdProcess {
    fn drop(&mut self) {
        // Killed and reaped before the temporary directory goes.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts etcd and waits until its log says it serves clients.
///
/// Heartbeat 50 ms and election timeout 500 ms make etcd's minimum lease
/// TTL one second (1.5 × election timeout, rounded up), so TTL tests take
/// seconds, not minutes.
fn spawn(binary: &Path, dir: &Path, client_port: u16, peer_port: u16) -> Result<Child, String> {
    let client = format!("http://127.0.0.1:{client_port}");
    let peer = format!("http://127.0.0.1:{peer_port}");
    let mut child = Command::new(binary)
        .current_dir(dir)
        .args(["--name", "heldlock-test", "--data-dir"])
        .arg(dir.join("data"))
        .args(["--listen-client-urls", &client])
        .args(["--advertise-client-urls", &client])
        .args(["--listen-peer-urls", &peer])
        .args(["--initial-advertise-peer-urls", &peer])
        .args(["--initial-cluster", &format!("heldlock-test={peer}")])
        .args(["--heartbeat-interval", "50", "--election-timeout", "500"])
        .args(["--logger", "zap", "--log-level", "info"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("spawn: {e}"))?;
    let Some(stderr) = child.stderr.take() else {
        return Err("no stderr pipe".into());
    };
    let (ready, wait) = mpsc::channel();
    // Reads the log for good: etcd blocks once a pipe nobody reads is full.
    std::thread::spawn(move || {
        let mut ready = Some(ready);
        let mut seen = Vec::new();
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            // 3.4 says "serving client traffic insecurely", 3.5 and later
            // also "ready to serve client requests".
            if line.contains("serving client traffic") || line.contains("ready to serve client") {
                if let Some(ready) = ready.take() {
                    let _ = ready.send(Ok(()));
                }
            } else if ready.is_some() && seen.len() < 40 {
                seen.push(line);
            }
        }
        if let Some(ready) = ready {
            let _ = ready.send(Err(seen.join("\n")));
        }
    });
    match wait.recv_timeout(START_LIMIT) {
        Ok(Ok(())) => Ok(child),
        outcome => {
            let _ = child.kill();
            let _ = child.wait();
            Err(match outcome {
                Ok(Err(log)) => format!("etcd exited before serving; its log:\n{log}"),
                _ => format!("etcd did not serve within {START_LIMIT:?}"),
            })
        }
    }
}
