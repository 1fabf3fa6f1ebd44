//! Several hosts sharing one file system (`--hosts N`): which host each
//! contender runs on, what each host sees of the shared files, and
//! [`SimHost`], the [`HostProbe`] that a contender's lock asks about the
//! holders on its own host.
//!
//! What differs between hosts:
//!
//! * **Device numbers.** Each host mounts the shared file system under its
//!   own `st_dev`, as NFS clients do, so an identity a contender compares
//!   must only ever have been read on its own host.
//! * **Wall clocks.** Contenders on one host share its clock offset (and its
//!   steps); see [`Profile`](crate::Profile).
//! * **Identity.** A record names its writer's host and boot; a process's
//!   start is its contender number. Every simulated process has the real
//!   process's pid, so a probe that judged by pid alone, across hosts,
//!   would take every holder for itself: only host and boot make a verdict.
//! * **Readable files.** With private files, a file is readable only on the
//!   host that created it (another user's `umask 077`); the directory stays
//!   writable to all, so nothing but the protocol stops a contender from
//!   breaking a lock it could not read, and the checker demands it never
//!   does.
//! * **Kernel locks.** A `flock` is its host's: visible to the processes of
//!   that host only (a network file system's client-local locks), and gone
//!   when its open file is closed or its process crashes.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use heldlock_core::{HostProbe, LockRecord};

use crate::fs::Actor;
use crate::fs::tree::SIM_DEV;
use crate::world::{State, World};

/// How the hosts of one run behave; the run's profile decides.
#[derive(Clone, Copy, Debug)]
pub(crate) struct HostModel {
    /// How many hosts the contenders are spread over (round robin).
    pub(crate) count: usize,
    /// Files are readable only on the host that created them.
    pub(crate) private_files: bool,
    /// The probe cannot tell (a `/proc` it may not read): it never judges a
    /// holder dead.
    pub(crate) blind_probe: bool,
}

impl Default for HostModel {
    fn default() -> Self {
        HostModel {
            count: 1,
            private_files: false,
            blind_probe: false,
        }
    }
}

/// One exclusive `flock` on an inode, held through one open file.
#[derive(Debug)]
pub(crate) struct Flock {
    pub(crate) ino: u64,
    /// Cleared when the open file it was taken through is closed.
    pub(crate) open: Arc<AtomicBool>,
    pub(crate) contender: usize,
}

impl State {
    /// The host `contender` runs on.
    pub(crate) fn host_of(&self, contender: usize) -> usize {
        contender % self.hosts.count.max(1)
    }

    /// The host `actor` acts on (outside processes and the setup: host 0).
    pub(crate) fn host_of_actor(&self, actor: Actor) -> usize {
        match actor {
            Actor::Contender(c) => self.host_of(c),
            Actor::Intruder | Actor::Setup => 0,
        }
    }

    /// The device number under which `actor`'s host sees the shared file
    /// system.
    pub(crate) fn dev_seen_by(&self, actor: Actor) -> u64 {
        SIM_DEV + self.host_of_actor(actor) as u64
    }

    /// Whether `actor` may read the inode `ino`.
    pub(crate) fn can_read(&self, ino: u64, actor: Actor) -> bool {
        if !self.hosts.private_files {
            return true;
        }
        let Some(inode) = self.tree.inode(ino) else {
            return true;
        };
        match inode.creator {
            Actor::Contender(creator) => self.host_of(creator) == self.host_of_actor(actor),
            Actor::Intruder | Actor::Setup => true,
        }
    }

    /// Takes an exclusive `flock` on `ino` for `contender` through the open
    /// file `open`: `false` if another open file holds one.
    pub(crate) fn flock(&mut self, ino: u64, open: &Arc<AtomicBool>, contender: usize) -> bool {
        let host = self.host_of(contender);
        if self.flock_held(ino, host, Some(open)) {
            return false;
        }
        if !self.flocks.iter().any(|f| Arc::ptr_eq(&f.open, open)) {
            self.flocks.push(Flock {
                ino,
                open: Arc::clone(open),
                contender,
            });
        }
        true
    }

    /// Lets go of the `flock` taken through `open`.
    pub(crate) fn funlock(&mut self, open: &Arc<AtomicBool>) {
        self.flocks.retain(|f| !Arc::ptr_eq(&f.open, open));
    }

    /// Whether an open file other than `except`, of a live process on
    /// `host`, holds a `flock` on `ino`.
    pub(crate) fn flock_held(
        &self,
        ino: u64,
        host: usize,
        except: Option<&Arc<AtomicBool>>,
    ) -> bool {
        self.flocks.iter().any(|f| {
            f.ino == ino
                && f.open.load(Ordering::Relaxed)
                && except.is_none_or(|e| !Arc::ptr_eq(&f.open, e))
                && self.host_of(f.contender) == host
                && self.procs.get(f.contender).is_some_and(|p| !p.crashed)
        })
    }
}

/// The host probe of one simulated process; see the [module docs](self).
pub(crate) struct SimHost {
    world: Arc<World>,
    contender: usize,
    host: usize,
}

impl SimHost {
    pub(crate) fn new(world: Arc<World>, contender: usize) -> Self {
        let host = world.lock().host_of(contender);
        SimHost {
            world,
            contender,
            host,
        }
    }

    fn host_name(host: usize) -> String {
        format!("sim-host-{host}")
    }

    fn boot_id(host: usize) -> String {
        format!("sim-boot-{host}")
    }

    fn same_host(&self, record: &LockRecord) -> bool {
        record.field("host") == Some(Self::host_name(self.host).as_str())
            && record.field("boot") == Some(Self::boot_id(self.host).as_str())
    }
}

impl std::fmt::Debug for SimHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimHost")
            .field("contender", &self.contender)
            .field("host", &self.host)
            .finish_non_exhaustive()
    }
}

impl HostProbe for SimHost {
    fn fields(&self) -> Vec<(String, String)> {
        vec![
            ("host".to_owned(), Self::host_name(self.host)),
            ("boot".to_owned(), Self::boot_id(self.host)),
            ("start".to_owned(), self.contender.to_string()),
        ]
    }

    fn holder_is_dead(&self, record: &LockRecord) -> bool {
        if !self.same_host(record) {
            return false;
        }
        let Some(writer) = record.field("start").and_then(|s| s.parse::<usize>().ok()) else {
            return false;
        };
        let mut st = self.world.lock();
        if st.hosts.blind_probe {
            return false;
        }
        let dead = st.procs.get(writer).is_some_and(|p| p.crashed);
        if dead {
            st.obs.bump("probe.dead");
            st.note(&format!("the host probe finds c{writer} dead"));
        }
        dead
    }

    fn shares_host(&self, record: &LockRecord) -> bool {
        self.same_host(record)
    }
}
