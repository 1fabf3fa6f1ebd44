//! The four public lock APIs every scenario runs on (`FileLock` on tokio,
//! async-std and smol, and the blocking API), what one attempt came to, and
//! the options the scenarios attempt with.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use heldlock_core::{BackendError, Error, Holder, LockOptions, Released, Runtime, Step};

/// What one attempt to take the lock came to.
#[derive(Debug)]
pub(crate) enum Outcome {
    /// Acquired (the lock file then named us) and released.
    Acquired,
    Timeout(Option<Holder>),
    Failed(Error),
}

/// One public lock API: a strict attempt, and a best-effort `with_lock`
/// that returns whether its task ran under the lock.
pub(crate) struct Api {
    pub(crate) attempt: fn(&Path, LockOptions) -> Outcome,
    pub(crate) best_effort: fn(&Path, LockOptions) -> bool,
}

fn check_ours(path: &Path, owner: &str) {
    let meta = fs::symlink_metadata(path).unwrap();
    assert!(meta.is_file(), "our lock is a regular file");
    assert!(fs::read_to_string(path).unwrap().contains(owner));
}

async fn attempt_async<R: Runtime + Default>(path: PathBuf, options: LockOptions) -> Outcome {
    let lock = match heldlock_fs::FileLock::<R>::new(&path, options) {
        Ok(lock) => lock,
        Err(error) => return Outcome::Failed(error),
    };
    match lock.acquire().await {
        Ok(held) => {
            check_ours(&path, held.owner().as_str());
            assert_eq!(held.release().await.unwrap(), Released::Released);
            Outcome::Acquired
        }
        Err(Error::Timeout { holder, .. }) => Outcome::Timeout(holder),
        Err(error) => Outcome::Failed(error),
    }
}

async fn best_effort_async<R: Runtime + Default>(path: PathBuf, options: LockOptions) -> bool {
    let lock = heldlock_fs::FileLock::<R>::new(&path, options).unwrap();
    lock.with_lock(|state| async move { state.acquired() })
        .await
}

fn tokio_rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap()
}

pub(crate) static TOKIO: Api = Api {
    attempt: |p, o| tokio_rt().block_on(attempt_async::<heldlock_tokio::TokioRuntime>(p.into(), o)),
    best_effort: |p, o| {
        tokio_rt().block_on(best_effort_async::<heldlock_tokio::TokioRuntime>(
            p.into(),
            o,
        ))
    },
};

pub(crate) static ASYNC_STD: Api = Api {
    attempt: |p, o| {
        async_std::task::block_on(attempt_async::<heldlock_async_std::AsyncStdRuntime>(
            p.into(),
            o,
        ))
    },
    best_effort: |p, o| {
        async_std::task::block_on(best_effort_async::<heldlock_async_std::AsyncStdRuntime>(
            p.into(),
            o,
        ))
    },
};

pub(crate) static SMOL: Api = Api {
    attempt: |p, o| smol::block_on(attempt_async::<heldlock_smol::SmolRuntime>(p.into(), o)),
    best_effort: |p, o| {
        smol::block_on(best_effort_async::<heldlock_smol::SmolRuntime>(p.into(), o))
    },
};

pub(crate) static BLOCKING: Api = Api {
    attempt: |path, options| {
        let lock = match heldlock::blocking::FileLock::new(path, options) {
            Ok(lock) => lock,
            Err(error) => return Outcome::Failed(error),
        };
        match lock.acquire() {
            Ok(held) => {
                check_ours(path, held.owner().as_str());
                assert_eq!(held.release().unwrap(), Released::Released);
                Outcome::Acquired
            }
            Err(Error::Timeout { holder, .. }) => Outcome::Timeout(holder),
            Err(error) => Outcome::Failed(error),
        }
    },
    best_effort: |path, options| {
        heldlock::blocking::FileLock::new(path, options)
            .unwrap()
            .with_lock(|state| state.acquired())
    },
};

/// Runs each scenario on every API: `mod <scenario> { tokio, async_std, smol, blocking }`.
macro_rules! on_each_api {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[test]
            fn tokio() {
                super::$name(&$crate::api::TOKIO);
            }
            #[test]
            fn async_std() {
                super::$name(&$crate::api::ASYNC_STD);
            }
            #[test]
            fn smol() {
                super::$name(&$crate::api::SMOL);
            }
            #[test]
            fn blocking() {
                super::$name(&$crate::api::BLOCKING);
            }
        }
    )*};
}
pub(crate) use on_each_api;

/// Options that give up on a busy lock after 100 ms.
pub(crate) fn busy() -> LockOptions {
    LockOptions::new(Duration::from_secs(5)).max_wait(Duration::from_millis(100))
}

/// Options that wait long enough to break anything stale.
pub(crate) fn patient() -> LockOptions {
    LockOptions::new(Duration::from_secs(5)).max_wait(Duration::from_secs(20))
}

/// The refusal of something that is not a regular file, checked to name
/// `path`: what it says stands there.
pub(crate) fn refused_kind(outcome: Outcome, path: &Path) -> String {
    match outcome {
        Outcome::Failed(Error::Backend(BackendError::NotALock {
            step,
            resource,
            what,
        })) => {
            assert_eq!(step, Step::Inspect);
            assert_eq!(resource, path.display().to_string());
            what
        }
        other => panic!("expected NotALock, got {other:?}"),
    }
}
