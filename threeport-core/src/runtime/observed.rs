//! Status written from outside a reconcile (what a watcher observed of an object's things on
//! a cluster, say): under the object's own lease, the one its controller takes for a
//! reconcile, and only over the version read, so such a write never races a reconcile and a
//! reconcile never overwrites it with a status read before it.

use std::time::Duration;

use serde_json::Value;

use super::Backends;
use crate::object::{ObjectId, RawObject, Status};
use crate::store::StatusWrite;
use crate::{ErrorKind, Result};

/// The lease key the controller runtime locks an object by: `<kind>/<id>`.
pub fn lease_key(kind: &str, id: ObjectId) -> String {
    format!("{kind}/{id}")
}

/// What [`write_observed_status`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ObservedWrite {
    /// The status changed and was written; the object's new version.
    Written(u64),
    /// The change left the status as it was: nothing written.
    Unchanged,
    /// A reconcile (or another writer) holds the object's lease: try again shortly.
    Busy,
    /// The object does not exist (any more).
    Gone,
}

/// How long an observed-status write may hold an object's lease at most.
const OBSERVED_LEASE_TTL: Duration = Duration::from_secs(10);

/// Changes an object's status with `change` while holding its lease as `holder`: reads it,
/// lets `change` edit the status (returning whether it changed anything), writes it fenced by
/// the lease, releases the lease.
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// use std::sync::Arc;
/// use threeport_core::runtime::{ObservedWrite, write_observed_status};
/// use threeport_core::{Backends, MemoryBackends, NewObject};
///
/// let memory = MemoryBackends::new();
/// let backends: Backends = memory.backends();
/// let web = backends.store.create(NewObject::new("Widget", "web", serde_json::json!({}))).await?;
/// let written = write_observed_status(&backends, "Widget", web.meta.id, "watcher", |status| {
///     status.details = serde_json::json!({"health": "healthy"});
///     true
/// })
/// .await?;
/// assert!(matches!(written, ObservedWrite::Written(_)));
/// let read = backends.store.get("Widget", web.meta.id).await?;
/// assert_eq!(read.status.details["health"], "healthy");
/// # Ok::<(), threeport_core::Error>(()) }).unwrap();
/// ```
pub async fn write_observed_status(
    backends: &Backends,
    kind: &str,
    id: ObjectId,
    holder: &str,
    change: impl FnOnce(&mut Status<Value>) -> bool,
) -> Result<ObservedWrite> {
    match backends.store.get(kind, id).await {
        Ok(object) => write_observed_change(backends, object, holder, change).await,
        Err(err) if err.kind() == ErrorKind::NotFound => Ok(ObservedWrite::Gone),
        Err(err) => Err(err),
    }
}

/// [`write_observed_status`] for a writer that has just read `object` itself (to decide
/// whether to write at all). `change` edits the status as read; the write then takes the
/// object's lease and succeeds only if the object is still at the version read, so a
/// reconcile in between makes it [`ObservedWrite::Busy`], never lost. A change that changes
/// nothing takes no lease.
pub async fn write_observed_change(
    backends: &Backends,
    mut object: RawObject,
    holder: &str,
    change: impl FnOnce(&mut Status<Value>) -> bool,
) -> Result<ObservedWrite> {
    if !change(&mut object.status) {
        return Ok(ObservedWrite::Unchanged);
    }
    let (kind, id) = (object.meta.kind.as_str(), object.meta.id);
    let key = lease_key(kind, id);
    let Some(lease) = backends
        .locker
        .acquire(&key, holder, OBSERVED_LEASE_TTL)
        .await?
    else {
        return Ok(ObservedWrite::Busy);
    };
    let write = StatusWrite {
        expected_version: Some(object.meta.version),
        fence: Some(lease.token),
        status: object.status,
    };
    let result = match backends.store.write_status(kind, id, write).await {
        Ok(version) => Ok(ObservedWrite::Written(version)),
        Err(err) if err.kind() == ErrorKind::NotFound => Ok(ObservedWrite::Gone),
        // Written since it was read (a reconcile, a spec update): read again.
        Err(err) if err.kind() == ErrorKind::Conflict => Ok(ObservedWrite::Busy),
        Err(err) => Err(err),
    };
    if let Err(err) = backends.locker.release(&lease).await {
        tracing::debug!(error = %err, key, "releasing an observed-status lease failed; it expires");
    }
    result
}
