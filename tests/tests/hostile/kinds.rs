//! Kinds of file other than a regular one at the lock path: a directory,
//! a FIFO, a socket and a device node are refused at once however old, with
//! a typed error; a node is never opened (an open could block, or reach a
//! device), never moved or removed.

use std::fs;
use std::os::unix::net::UnixListener;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use heldlock_core::{BackendError, Error};
use rustix::fs::{CWD, FileType, Mode};

use crate::api::{Api, Outcome, on_each_api, patient, refused_kind};
use crate::observe::{Watcher, assert_no_io, hour_ago, minute_ago, names_in, snap, stamp};
use crate::support::{self, *};
use crate::vfs_faults::Warnings;

/// What a FIFO, socket or device is called in a refusal.
const NODE: &str = "a FIFO, socket or device";

on_each_api!(
    a_directory_at_the_lock_path_is_refused_and_left_alone,
    a_fifo_at_the_lock_path_is_never_opened,
    a_socket_at_the_lock_path_is_never_connected,
    a_device_node_at_the_lock_path_is_never_opened,
);

fn a_directory_at_the_lock_path_is_refused_and_left_alone(api: &Api) {
    let (_dir, path) = lock_path();
    fs::create_dir(&path).unwrap();
    fs::write(path.join("inside"), b"data").unwrap();
    stamp(&path, minute_ago()); // old: still never broken
    let before = (snap(&path), snap(&path.join("inside")));
    match (api.attempt)(&path, patient()) {
        Outcome::Failed(Error::Backend(BackendError::NotALock { resource, .. })) => {
            assert!(resource.contains("state.lock"), "{resource}");
        }
        other => panic!("expected NotALock, got {other:?}"),
    }
    let warnings = Warnings::default();
    assert!(!(api.best_effort)(&path, warnings.hook(patient())));
    assert!(warnings.any("a directory"), "{:?}", warnings.all());
    assert_eq!((snap(&path), snap(&path.join("inside"))), before);
}

/// Opens the FIFO for writing if a reader still blocks in `open` after
/// 20 s, so that a regression fails the test instead of hanging it.
struct Unblocker {
    done: Arc<AtomicBool>,
    rescued: Arc<AtomicBool>,
}

impl Unblocker {
    fn new(fifo: &Path) -> Self {
        let (done, rescued) = (
            Arc::new(AtomicBool::new(false)),
            Arc::new(AtomicBool::new(false)),
        );
        let (d, r, fifo) = (Arc::clone(&done), Arc::clone(&rescued), fifo.to_path_buf());
        std::thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(20);
            while !d.load(Ordering::SeqCst) {
                if Instant::now() > deadline {
                    let flags = rustix::fs::OFlags::WRONLY | rustix::fs::OFlags::NONBLOCK;
                    if rustix::fs::open(&fifo, flags, Mode::empty()).is_ok() {
                        r.store(true, Ordering::SeqCst);
                    }
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        Unblocker { done, rescued }
    }

    fn finish(self) -> bool {
        self.done.store(true, Ordering::SeqCst);
        self.rescued.load(Ordering::SeqCst)
    }
}

/// A special file at the lock path: refused at once however old, never
/// opened, never moved or removed.
fn special_file(api: &Api, path: &Path) {
    let dir = path.parent().unwrap();
    stamp(path, hour_ago());
    let names = names_in(dir);
    let watcher = Watcher::new(&[path]);
    let unblocker = Unblocker::new(path);
    let before = snap(path);
    let started = Instant::now();
    assert_eq!(refused_kind((api.attempt)(path, patient()), path), NODE);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "refused only after {:?}",
        started.elapsed()
    );
    let warnings = Warnings::default();
    assert!(!(api.best_effort)(path, warnings.hook(patient())));
    assert!(warnings.any(NODE), "{:?}", warnings.all());
    assert!(!unblocker.finish(), "an open blocked on the node");
    let events = watcher.events();
    assert_no_io(&events, "the node at the lock path");
    assert_eq!(events, vec![], "the node is not even touched");
    assert_eq!(snap(path), before);
    assert_eq!(names_in(dir), names, "nothing moved or made beside it");
    assert!(trash_in(dir).is_empty());
}

fn a_fifo_at_the_lock_path_is_never_opened(api: &Api) {
    let (_dir, path) = lock_path();
    rustix::fs::mkfifoat(CWD, &path, Mode::from_raw_mode(0o644)).unwrap();
    special_file(api, &path);
}

fn a_socket_at_the_lock_path_is_never_connected(api: &Api) {
    let (_dir, path) = lock_path();
    let listener = UnixListener::bind(&path).unwrap();
    listener.set_nonblocking(true).unwrap();
    special_file(api, &path);
    let accepted = listener.accept().map(|_| ());
    assert_eq!(
        accepted.map_err(|e| e.kind()),
        Err(std::io::ErrorKind::WouldBlock),
        "nobody connected to the socket"
    );
}

fn a_device_node_at_the_lock_path_is_never_opened(api: &Api) {
    let (_dir, path) = lock_path();
    // A node like /dev/null (char 1:3): harmless if the test itself fails.
    let dev = rustix::fs::makedev(1, 3);
    if let Err(error) = rustix::fs::mknodat(
        CWD,
        &path,
        FileType::CharacterDevice,
        Mode::from_raw_mode(0o666),
        dev,
    ) {
        // The harness names the thread after the test (`<case>::<api>`).
        let test = std::thread::current()
            .name()
            .unwrap_or("a_device_node_at_the_lock_path_is_never_opened")
            .to_owned();
        support::skip(
            &test,
            &format!("cannot make a device node here ({error}); needs CAP_MKNOD"),
        );
        return;
    }
    special_file(api, &path);
}
