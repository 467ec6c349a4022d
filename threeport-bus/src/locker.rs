//! [`NatsLocker`]: leases in a JetStream key-value bucket.
//!
//! A lease is a key whose value names the holder and the deadline. It is taken with
//! create-if-absent, or by compare-and-set over an expired value; renewed and released by
//! compare-and-set on the revision the holder last wrote. Revisions grow with every write to
//! the bucket, so the revision is the fencing token. Deadlines are wall-clock time of the
//! replicas, which must be kept in sync (NTP), as with any lease.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_nats::jetstream::kv::{
    self, CreateErrorKind, Operation, Store as KvStore, UpdateErrorKind,
};
use async_nats::jetstream::stream::StorageType;
use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use threeport_core::{Error, Lease, Locker, Result};

use crate::{NatsConfig, nats_error};

/// The [`Locker`] on a NATS key-value bucket. Cheap to clone.
#[derive(Debug, Clone)]
pub struct NatsLocker {
    kv: KvStore,
}

#[derive(Debug, Serialize, Deserialize)]
struct Held {
    holder: String,
    expires_at_ms: u64,
}

pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or_default()
}

fn value(holder: &str, ttl: Duration) -> Result<bytes::Bytes> {
    let expires_at_ms = now_ms().saturating_add(u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX));
    let held = Held {
        holder: holder.to_owned(),
        expires_at_ms,
    };
    Ok(serde_json::to_vec(&held).map_err(Error::backend)?.into())
}

impl NatsLocker {
    /// Opens (creating if missing) the lease bucket.
    pub async fn new(client: async_nats::Client, config: &NatsConfig) -> Result<Self> {
        let js = async_nats::jetstream::new(client);
        let kv = match js.get_key_value(&config.lease_bucket).await {
            Ok(kv) => kv,
            Err(_) => js
                .create_key_value(kv::Config {
                    bucket: config.lease_bucket.clone(),
                    history: 1,
                    storage: StorageType::File,
                    num_replicas: config.replicas,
                    // Leases of processes that died without releasing vanish eventually.
                    max_age: Duration::from_secs(24 * 3600),
                    ..Default::default()
                })
                .await
                .map_err(|e| {
                    nats_error(&format!("creating lease bucket {}", config.lease_bucket), e)
                })?,
        };
        Ok(NatsLocker { kv })
    }

    /// The bucket.
    pub(crate) fn kv(&self) -> &KvStore {
        &self.kv
    }

    /// The current holder of `key` and the revision, if the key holds a live lease.
    async fn current(&self, key: &str) -> Result<Option<(Held, u64)>> {
        let entry = self
            .kv
            .entry(key)
            .await
            .map_err(|e| nats_error("reading a lease", e))?;
        Ok(match entry {
            Some(entry) if entry.operation == Operation::Put => {
                let held: Held = serde_json::from_slice(&entry.value).map_err(Error::backend)?;
                Some((held, entry.revision))
            }
            _ => None,
        })
    }
}

fn check_key(key: &str) -> Result<()> {
    let ok = !key.is_empty()
        && !key.starts_with('.')
        && !key.ends_with('.')
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-/_=.".contains(c));
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(
            "key",
            format!("{key:?} must be letters, digits and -/_=."),
        ))
    }
}

#[async_trait]
impl Locker for NatsLocker {
    async fn acquire(&self, key: &str, holder: &str, ttl: Duration) -> Result<Option<Lease>> {
        if ttl.is_zero() {
            return Err(Error::invalid("ttl", "must be positive"));
        }
        check_key(key)?;
        let lease = |token| Lease {
            key: key.to_owned(),
            holder: holder.to_owned(),
            token,
            ttl,
        };
        match self.kv.create(key, value(holder, ttl)?).await {
            Ok(revision) => return Ok(Some(lease(revision))),
            Err(err) if err.kind() == CreateErrorKind::AlreadyExists => {}
            Err(err) => return Err(nats_error("taking a lease", err)),
        }
        // Taken, or left over: take it over only if its deadline passed, by compare-and-set.
        let entry = self
            .kv
            .entry(key)
            .await
            .map_err(|e| nats_error("reading a lease", e))?;
        let Some(entry) = entry else { return Ok(None) };
        if entry.operation == Operation::Put {
            let held: Held = serde_json::from_slice(&entry.value).map_err(Error::backend)?;
            if held.expires_at_ms > now_ms() {
                return Ok(None);
            }
        }
        match self
            .kv
            .update(key, value(holder, ttl)?, entry.revision)
            .await
        {
            Ok(revision) => Ok(Some(lease(revision))),
            Err(err) if err.kind() == UpdateErrorKind::WrongLastRevision => Ok(None),
            Err(err) => Err(nats_error("taking over a lease", err)),
        }
    }

    async fn renew(&self, lease: &Lease) -> Result<Lease> {
        match self.current(&lease.key).await? {
            Some((held, revision)) if revision == lease.token && held.expires_at_ms > now_ms() => {}
            _ => return Err(lease.lost()),
        }
        match self
            .kv
            .update(&lease.key, value(&lease.holder, lease.ttl)?, lease.token)
            .await
        {
            Ok(revision) => Ok(Lease {
                token: revision,
                ..lease.clone()
            }),
            Err(err) if err.kind() == UpdateErrorKind::WrongLastRevision => Err(lease.lost()),
            Err(err) => Err(nats_error("renewing a lease", err)),
        }
    }

    async fn release(&self, lease: &Lease) -> Result<()> {
        match self
            .kv
            .delete_expect_revision(&lease.key, Some(lease.token))
            .await
        {
            Ok(()) => Ok(()),
            Err(err) => {
                // A revision mismatch comes back as a plain publish error: look at the key. If
                // its revision is not ours any more, someone else holds it (or it is gone), and
                // there is nothing of ours to release.
                match self.kv.entry(&lease.key).await {
                    Ok(Some(entry)) if entry.revision == lease.token => {
                        Err(nats_error("releasing a lease", err))
                    }
                    Ok(_) => Ok(()),
                    Err(read) => Err(nats_error("releasing a lease", read)),
                }
            }
        }
    }
}
