//! The five steps of `LockBackend` as etcd transactions (see the crate docs'
//! table).

use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use etcd_client::{
    Compare, CompareOp, GetOptions, KeyValue, PutOptions, Txn, TxnOp, TxnOpResponse, TxnResponse,
};
use heldlock_core::{
    BackendError, Broke, ChangeListener, Created, Holder, Identity, Inspection, LockBackend,
    LockRecord, Observed, OwnerId, Refreshed, Released, Step,
};

use crate::error::EtcdError;
use crate::value::{self, Decoded};
use crate::{EtcdBackend, Held, Holding};

/// What a guarded transaction that failed found at the key instead.
enum Found {
    /// No key.
    Gone,
    /// Another acquisition's key, or ours rewritten without our lease.
    Replaced,
}

#[async_trait]
impl LockBackend for EtcdBackend {
    fn resource(&self) -> String {
        format!(
            "`{}` on etcd at {}",
            String::from_utf8_lossy(&self.key),
            self.at
        )
    }

    async fn try_create(&self, record: &LockRecord) -> Result<Created, BackendError> {
        let step = Step::Create;
        if self.contended.load(Ordering::Acquire)
            && self
                .get(step, "look at the lock before a try")
                .await?
                .is_some()
        {
            return Ok(Created::Exists);
        }
        let mut lease = self.client.lease_client();
        let ttl = ttl_secs(record, self.default_ttl);
        let grant = self
            .call("grant the lock's lease", lease.grant(ttl, None))
            .await
            .map_err(|e| self.fail(step, e))?;
        self.saw(grant.header());
        let lease_id = grant.id();
        let written = value::encode(record, record.acquired_at);
        // Kept before the transaction is sent: a try dropped while it is in
        // flight leaves a lock this handle can still resolve and release.
        let mut held = Held {
            holding: Holding {
                create_revision: 0,
                lease_id,
                ttl: Duration::from_secs(u64::try_from(grant.ttl()).unwrap_or(0)),
            },
            record: record.clone(),
        };
        self.keep_try(&record.owner, &held);
        let key = self.key.to_vec();
        let txn = Txn::new()
            .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
            .and_then([
                TxnOp::put(
                    key.clone(),
                    written,
                    Some(PutOptions::new().with_lease(lease_id)),
                ),
                TxnOp::get(key, None),
            ]);
        let response = match self.txn(step, "create the lock's key", txn).await {
            Ok(response) if response.succeeded() => response,
            outcome => {
                // Taken, or unknown: revoking the lease undoes whatever the
                // transaction did.
                self.forget_try(&record.owner, lease_id);
                self.revoke_later(lease_id);
                outcome?;
                self.contended.store(true, Ordering::Release);
                return Ok(Created::Exists);
            }
        };
        self.contended.store(false, Ordering::Release);
        // The put's revision is the transaction's: the header's, should the
        // read-back be missing.
        held.holding.create_revision = got(&response)
            .map(|kv| kv.create_revision())
            .or_else(|| response.header().map(|h| h.revision()))
            .unwrap_or(0);
        self.keep(record.owner.clone(), held);
        Ok(Created::Created)
    }

    async fn inspect(&self) -> Result<Inspection, BackendError> {
        Ok(match self.get(Step::Inspect, "look at the lock").await? {
            None => Inspection::Absent,
            Some(kv) => Inspection::Present(observe(&kv)),
        })
    }

    async fn refresh(&self, owner: &OwnerId, now: SystemTime) -> Result<Refreshed, BackendError> {
        let step = Step::Refresh;
        let Some(held) = self.resolve(step, owner).await? else {
            // Never created through this handle, or released: not ours.
            return Ok(Refreshed::Lost);
        };
        if !self.keep_alive(held.holding.lease_id).await? {
            self.forget(owner);
            return Ok(Refreshed::Lost);
        }
        let restamped = value::encode(&held.record, now);
        let put = TxnOp::put(
            self.key.to_vec(),
            restamped,
            Some(PutOptions::new().with_lease(held.holding.lease_id)),
        );
        if self
            .guarded(step, "re-stamp the lock", &held, put)
            .await?
            .is_ok()
        {
            return Ok(Refreshed::Refreshed);
        }
        self.forget(owner);
        Ok(Refreshed::Lost)
    }

    async fn break_if_unchanged(&self, observed: &Observed) -> Result<Broke, BackendError> {
        let step = Step::Break;
        let Some((create, modified)) = revisions(&observed.identity) else {
            // Not an observation of this backend's: it cannot be the lock there.
            return Ok(match self.get(step, "look at the lock").await? {
                None => Broke::Absent,
                Some(_) => Broke::Changed,
            });
        };
        let key = self.key.to_vec();
        let txn = Txn::new()
            .when([
                Compare::create_revision(key.clone(), CompareOp::Equal, create),
                Compare::mod_revision(key.clone(), CompareOp::Equal, modified),
            ])
            .and_then([TxnOp::delete(key.clone(), None)])
            .or_else([TxnOp::get(key, None)]);
        let response = self.txn(step, "break the lock", txn).await?;
        Ok(if response.succeeded() {
            Broke::Broken
        } else if got(&response).is_some() {
            Broke::Changed
        } else {
            Broke::Absent
        })
    }

    async fn release(&self, owner: &OwnerId) -> Result<Released, BackendError> {
        let step = Step::Release;
        // Forgotten only once the outcome is known: a release dropped
        // half-way leaves a lock this handle can still refresh or release.
        let Some(held) = self.resolve(step, owner).await? else {
            // Not ours through this handle: say only what is there.
            return Ok(match self.get(step, "look at the lock").await? {
                None => Released::Absent,
                Some(_) => Released::NotOurs,
            });
        };
        let delete = TxnOp::delete(self.key.to_vec(), None);
        let released = match self.guarded(step, "delete the lock", &held, delete).await? {
            Ok(()) => Released::Released,
            Err(Found::Gone) => Released::Absent,
            Err(Found::Replaced) => Released::NotOurs,
        };
        self.forget(owner);
        // The lease holds nothing of ours any more; failing to end it is
        // not worth failing the release over (it lapses by itself).
        let _ = self
            .revoke(step, "revoke the lock's lease", held.holding.lease_id)
            .await;
        Ok(released)
    }

    /// Never releases here (that takes a request): forgets the lock and,
    /// on a tokio runtime, revokes its lease in a task, which deletes the key.
    fn release_blocking(&self, owner: &OwnerId) -> Option<Result<Released, BackendError>> {
        if let Some(held) = self.forget(owner) {
            self.revoke_later(held.holding.lease_id);
        }
        None
    }

    /// The key's create revision: the revision of the transaction that
    /// created it, which etcd raises with every write to the cluster, so
    /// every later grant of this key (a later creating transaction) has a
    /// greater one.
    fn fencing_token(&self, owner: &OwnerId) -> Option<u64> {
        self.create_revision(owner)
            .and_then(|revision| u64::try_from(revision).ok())
            .filter(|&revision| revision > 0)
    }

    fn listen(&self) -> Option<ChangeListener> {
        // Every revision seen is before this call, so the watch misses no
        // later deletion. A connection that has seen nothing watches from
        // the start of the retained history (at worst an early, spurious
        // completion): etcd's "from now" would mean from the first poll.
        let seen = self.seen_revision.load(Ordering::Acquire);
        Some(crate::watch::deletions(
            self.client.watch_client(),
            self.key.to_vec(),
            seen.saturating_add(1),
        ))
    }
}

impl EtcdBackend {
    fn fail(&self, step: Step, error: EtcdError) -> BackendError {
        error.into_backend(step, self.resource())
    }

    /// The key's current entry, if any.
    async fn get(
        &self,
        step: Step,
        action: &'static str,
    ) -> Result<Option<KeyValue>, BackendError> {
        let mut kv = self.client.kv_client();
        let mut response = self
            .call(action, kv.get(self.key.to_vec(), None::<GetOptions>))
            .await
            .map_err(|e| self.fail(step, e))?;
        self.saw(response.header());
        Ok(response.take_kvs().into_iter().next())
    }

    async fn txn(
        &self,
        step: Step,
        action: &'static str,
        txn: Txn,
    ) -> Result<TxnResponse, BackendError> {
        let mut kv = self.client.kv_client();
        let response = self
            .call(action, kv.txn(txn))
            .await
            .map_err(|e| self.fail(step, e))?;
        self.saw(response.header());
        Ok(response)
    }

    /// Runs `op` if the key is still `held`'s: its create revision, and our
    /// lease (unique to this grant: a key rewritten by anyone else, or
    /// deleted and made again, fails one or the other). Not the value we
    /// last wrote: a refresh of ours running at the same moment rewrites
    /// it, and that must not make the lock look lost. Otherwise reports
    /// what is there.
    async fn guarded(
        &self,
        step: Step,
        action: &'static str,
        held: &Held,
        op: TxnOp,
    ) -> Result<Result<(), Found>, BackendError> {
        let key = self.key.to_vec();
        let txn = Txn::new()
            .when([
                Compare::create_revision(
                    key.clone(),
                    CompareOp::Equal,
                    held.holding.create_revision,
                ),
                Compare::lease(key.clone(), CompareOp::Equal, held.holding.lease_id),
            ])
            .and_then([op])
            .or_else([TxnOp::get(key, None)]);
        let response = self.txn(step, action, txn).await?;
        if response.succeeded() {
            return Ok(Ok(()));
        }
        Ok(Err(match got(&response) {
            None => Found::Gone,
            Some(_) => Found::Replaced,
        }))
    }

    /// What this handle holds for `owner`, with the create revision known.
    ///
    /// A `try_create` dropped while its transaction was in flight left it
    /// unknown: the key is ours if it is bound to that try's lease (a lease
    /// is granted for one try only). If no such key is there, the lease is
    /// revoked, so that a transaction still on its way cannot create a lock
    /// nobody holds, and `None` is returned.
    async fn resolve(&self, step: Step, owner: &OwnerId) -> Result<Option<Held>, BackendError> {
        let Some(mut held) = self.held_by(owner) else {
            return Ok(None);
        };
        if held.holding.create_revision != 0 {
            return Ok(Some(held));
        }
        match self.get(step, "look for a lock a dropped try made").await? {
            Some(kv) if kv.lease() == held.holding.lease_id => {
                held.holding.create_revision = kv.create_revision();
                self.keep(owner.clone(), held.clone());
                Ok(Some(held))
            }
            _ => {
                self.revoke(step, "revoke a dropped try's lease", held.holding.lease_id)
                    .await?;
                self.forget(owner);
                Ok(None)
            }
        }
    }

    /// Revokes `lease_id`; one etcd no longer has is as good as revoked.
    async fn revoke(
        &self,
        step: Step,
        action: &'static str,
        lease_id: i64,
    ) -> Result<(), BackendError> {
        let mut lease = self.client.lease_client();
        match self.call(action, lease.revoke(lease_id)).await {
            Ok(response) => {
                self.saw(response.header());
                Ok(())
            }
            Err(EtcdError::Failed {
                source: etcd_client::Error::GRpcStatus(status),
                ..
            }) if status.message().contains("lease not found") => Ok(()),
            Err(error) => Err(self.fail(step, error)),
        }
    }

    /// Renews `lease_id` once: `false` when etcd no longer has it (expired
    /// or revoked: the key went with it).
    async fn keep_alive(&self, lease_id: i64) -> Result<bool, BackendError> {
        let mut lease = self.client.lease_client();
        match self
            .call("keep the lock's lease alive", lease.keep_alive(lease_id))
            .await
        {
            // The first answer came back with a TTL: renewed. Dropping the
            // keeper and its stream ends the keep-alive stream.
            Ok(_) => Ok(true),
            Err(EtcdError::Failed {
                source: etcd_client::Error::LeaseKeepAliveError(message),
                ..
            }) if message.contains("lease not found") => Ok(false),
            Err(error) => Err(self.fail(Step::Refresh, error)),
        }
    }
}

/// What a contender sees: never breakable, since the lease decides when the
/// holder is dead (see the crate docs).
fn observe(kv: &KeyValue) -> Observed {
    let identity = identity(kv.create_revision(), kv.mod_revision());
    let (holder, refreshed_at) = match value::decode(kv.value()) {
        Some(Decoded {
            record,
            refreshed_at,
        }) => (Holder::Record(record), refreshed_at),
        None => (
            Holder::Foreign {
                summary: value::summary(kv.value()),
            },
            UNIX_EPOCH,
        ),
    };
    Observed::new(holder, identity, refreshed_at).with_breakable(false)
}

/// One key instance (create revision) with one content (mod revision).
fn identity(create: i64, modified: i64) -> Identity {
    let mut bytes = Vec::with_capacity(16);
    bytes.extend_from_slice(&create.to_be_bytes());
    bytes.extend_from_slice(&modified.to_be_bytes());
    Identity::new(bytes)
}

fn revisions(identity: &Identity) -> Option<(i64, i64)> {
    let bytes: &[u8; 16] = identity.as_bytes().try_into().ok()?;
    let (create, modified) = bytes.split_at(8);
    Some((
        i64::from_be_bytes(create.try_into().ok()?),
        i64::from_be_bytes(modified.try_into().ok()?),
    ))
}

/// The entry a transaction's get found, if it ran one and found the key.
fn got(response: &TxnResponse) -> Option<KeyValue> {
    response.op_responses().into_iter().find_map(|op| match op {
        TxnOpResponse::Get(mut get) => get.take_kvs().into_iter().next(),
        _ => None,
    })
}

/// The lease TTL for `record`: the `stale` age it declares (else
/// `default`), rounded up to whole seconds: a lease shorter than `stale`
/// would end a live holder's lock before the core's own expiry.
fn ttl_secs(record: &LockRecord, default: Duration) -> i64 {
    let stale = record.declared_stale().unwrap_or(default);
    let secs = stale.as_secs() + u64::from(stale.subsec_nanos() > 0);
    i64::try_from(secs.max(1)).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identities_round_trip() {
        assert_eq!(revisions(&identity(7, 9)), Some((7, 9)));
        assert_eq!(revisions(&Identity::new(vec![1, 2, 3])), None);
    }

    #[test]
    fn ttl_is_the_declared_stale_rounded_up() {
        let mut record = LockRecord::for_this_process(SystemTime::now());
        assert_eq!(ttl_secs(&record, Duration::from_secs(30)), 30);
        record
            .fields
            .push((LockRecord::STALE_FIELD.into(), "1500".into()));
        assert_eq!(ttl_secs(&record, Duration::from_secs(30)), 2);
        record.fields[0].1 = "1".into();
        assert_eq!(ttl_secs(&record, Duration::from_secs(30)), 1);
    }
}
