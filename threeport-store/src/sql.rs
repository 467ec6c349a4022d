//! What both SQL backends share: error mapping, retry of serialization failures, and the
//! encoding of operations.

use std::future::Future;
use std::time::Duration;

use std::collections::HashMap;

use serde_json::Value;
use sqlx::types::Json;
use threeport_core::{
    Error, Labels, Notification, ObjectId, ObjectMeta, ObjectRef, Operation, OutboxEntry,
    RawObject, Reference, Status, Timestamp,
};

/// A failed step inside a store operation: a database error (maybe worth retrying) or a
/// decided API error.
#[derive(Debug)]
pub(crate) enum OpError {
    Sql(sqlx::Error),
    Api(Error),
}

impl From<sqlx::Error> for OpError {
    fn from(err: sqlx::Error) -> Self {
        OpError::Sql(err)
    }
}

impl From<Error> for OpError {
    fn from(err: Error) -> Self {
        OpError::Api(err)
    }
}

pub(crate) type OpResult<T> = Result<T, OpError>;

/// SQLSTATEs that mean "the transaction lost a race; run it again": serialization failure
/// (CockroachDB's normal answer to contention) and deadlock.
const RETRYABLE_STATES: [&str; 2] = ["40001", "40P01"];

/// Transactions retried after losing a race, since the process started (diagnostics, tests).
static RETRIES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// How many transactions this process retried after a serialization failure (SQLSTATE 40001),
/// deadlock or busy SQLite database.
pub fn transaction_retries() -> u64 {
    RETRIES.load(std::sync::atomic::Ordering::Relaxed)
}

/// Attempts before a retryable failure is reported as `Unavailable`.
const MAX_ATTEMPTS: u32 = 10;

fn is_retryable(err: &sqlx::Error) -> bool {
    match err {
        sqlx::Error::Database(db) => {
            db
            .code()
            .is_some_and(|code| RETRYABLE_STATES.contains(&code.as_ref()))
            // SQLite reports a busy database (another writer) as "database is locked".
            || db.message().contains("database is locked")
        }
        _ => false,
    }
}

/// SQLSTATEs of a database going away or not taking connections: class 08 (connection
/// exceptions) and 57P01-57P03 (administrator or crash shutdown, cannot connect now), as when a
/// PostgreSQL server stops (`pg_ctl stop -m fast`) or fails over. The request may be retried.
fn is_connection_failure(code: Option<&str>) -> bool {
    code.is_some_and(|c| c.starts_with("08") || matches!(c, "57P01" | "57P02" | "57P03"))
}

/// Runs `op` until it succeeds, fails for good, or loses the race `MAX_ATTEMPTS` times,
/// backing off exponentially with jitter between attempts.
pub(crate) async fn with_retry<T, F, Fut>(what: &str, mut op: F) -> Result<T, Error>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = OpResult<T>>,
{
    let mut attempt = 0;
    loop {
        attempt += 1;
        match op().await {
            Ok(value) => return Ok(value),
            Err(OpError::Api(err)) => return Err(err),
            Err(OpError::Sql(err)) if is_retryable(&err) && attempt < MAX_ATTEMPTS => {
                RETRIES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let base = Duration::from_millis(2u64 << attempt.min(8));
                let delay = base.mul_f64(0.5 + fastrand::f64());
                tracing::debug!(operation = what, attempt, error = %err, ?delay, "transaction conflict; retrying");
                tokio::time::sleep(delay).await;
            }
            Err(OpError::Sql(err)) => return Err(map_sql_error(what, err)),
        }
    }
}

/// Maps a database error onto the portable error kinds.
pub(crate) fn map_sql_error(what: &str, err: sqlx::Error) -> Error {
    match &err {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => Error::unavailable(format!("{what}: {err}")),
        sqlx::Error::Database(db) if is_connection_failure(db.code().as_deref()) => {
            Error::unavailable(format!(
                "{what}: the database is unavailable: {}",
                db.message()
            ))
        }
        sqlx::Error::Database(db) if is_retryable(&err) => Error::unavailable(format!(
            "{what}: gave up after {MAX_ATTEMPTS} conflicting attempts: {}",
            db.message()
        )),
        sqlx::Error::Database(db) if db.is_unique_violation() => {
            Error::conflict(format!("{what}: {}", db.message()))
        }
        _ => Error::backend(format!("{what}: {err}")),
    }
}

pub(crate) fn operation_name(operation: Operation) -> &'static str {
    match operation {
        Operation::Created => "created",
        Operation::Updated => "updated",
        Operation::Deleted => "deleted",
        Operation::Resync => "resync",
        Operation::Related => "related",
        Operation::Followed => "followed",
    }
}

pub(crate) fn parse_operation(name: &str) -> Result<Operation, Error> {
    match name {
        "created" => Ok(Operation::Created),
        "updated" => Ok(Operation::Updated),
        "deleted" => Ok(Operation::Deleted),
        "resync" => Ok(Operation::Resync),
        "related" => Ok(Operation::Related),
        "followed" => Ok(Operation::Followed),
        other => Err(Error::backend(format!(
            "outbox row has unknown operation {other:?}"
        ))),
    }
}

/// A duration as whole microseconds, saturating.
pub(crate) fn micros(d: Duration) -> i64 {
    i64::try_from(d.as_micros()).unwrap_or(i64::MAX)
}

/// Converts a stored counter; negative values cannot come from this code.
pub(crate) fn as_u64(v: i64) -> u64 {
    u64::try_from(v).unwrap_or_default()
}

/// Converts a counter for storage.
pub(crate) fn as_i64(v: u64) -> Result<i64, Error> {
    i64::try_from(v).map_err(|_| Error::invalid("version", "out of range"))
}

/// The stored facts that explain why a conditional write matched no row.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RowState {
    pub version: u64,
    pub fence: u64,
    pub deleting: bool,
}

/// Why a conditional write of `kind`/`id` matched no row: gone, version moved, stale fence,
/// or being deleted.
pub(crate) fn explain_miss(
    kind: &str,
    id: ObjectId,
    row: Option<RowState>,
    expected: Option<u64>,
    fence: Option<u64>,
) -> Error {
    let Some(row) = row else {
        return Error::not_found(kind, id);
    };
    if let Some(expected) = expected.filter(|v| *v != row.version) {
        return Error::conflict(format!(
            "{kind} {id} is at version {}, not {expected}",
            row.version
        ));
    }
    if let Some(token) = fence.filter(|t| *t < row.fence) {
        return Error::conflict(format!(
            "stale fencing token {token} for {kind} {id}: a newer lease holder ({}) wrote since",
            row.fence
        ));
    }
    if row.deleting {
        return Error::conflict(format!(
            "{kind} {id} is being deleted; its desired state can no longer change"
        ));
    }
    Error::conflict(format!("{kind} {id} changed concurrently; retry"))
}

/// Checks references against the referenced rows found (id → kind, being deleted): each must
/// exist with the named kind and not be on its way out. The error names the spec field.
pub(crate) fn check_references(
    references: &[Reference],
    found: &HashMap<uuid::Uuid, (String, bool)>,
) -> Result<(), Error> {
    for r in references {
        let field = format!("spec.{}", r.field);
        match found.get(&r.id.0) {
            Some((kind, false)) if *kind == r.kind => {}
            Some((kind, true)) if *kind == r.kind => {
                return Err(Error::invalid(
                    field,
                    format!("references {} {} which is being deleted", r.kind, r.id),
                ));
            }
            _ => {
                return Err(Error::invalid(
                    field,
                    format!("references {} {} which does not exist", r.kind, r.id),
                ));
            }
        }
    }
    Ok(())
}

/// Checks the owners of new object `id` against the owner rows found (id → kind, being
/// deleted): each must exist with the named kind (earlier in the same transaction counts)
/// and not be on its way out, and none may be the object itself. The error names
/// `owners[i]`.
pub(crate) fn check_owners(
    id: ObjectId,
    owners: &[ObjectRef],
    found: &HashMap<uuid::Uuid, (String, bool)>,
) -> Result<(), Error> {
    for (i, owner) in owners.iter().enumerate() {
        let field = format!("owners[{i}]");
        if owner.id == id {
            return Err(Error::invalid(field, "an object cannot own itself"));
        }
        match found.get(&owner.id.0) {
            Some((kind, false)) if *kind == owner.kind => {}
            Some((kind, true)) if *kind == owner.kind => {
                return Err(Error::invalid(
                    field,
                    format!("owner {owner} is being deleted"),
                ));
            }
            _ => {
                return Err(Error::invalid(
                    field,
                    format!("owner {owner} does not exist"),
                ));
            }
        }
    }
    Ok(())
}

/// `(kind, id)` rows as object references.
pub(crate) fn object_refs(rows: Vec<(String, uuid::Uuid)>) -> Vec<ObjectRef> {
    rows.into_iter()
        .map(|(kind, id)| ObjectRef::new(kind, ObjectId(id)))
        .collect()
}

/// The refusal of a cascade that would delete `member` while `referrer` (outside the
/// cascade) references it.
pub(crate) fn still_referenced(
    kind: &str,
    id: ObjectId,
    member: &ObjectRef,
    referrer: &ObjectRef,
) -> Error {
    let whose = if member.id == id {
        String::new()
    } else {
        format!(" (its dependent {member})")
    };
    Error::conflict(format!(
        "{kind} {id}{whose} is still referenced, e.g. by {referrer}; delete those first"
    ))
}

/// What scheduling the deletion of `kind`/`id` deletes: the object and, in the foreground,
/// everything it owns, transitively (breadth first). Refused, naming the first, if an object
/// outside it references one of them. Both SQL stores run it in their deletion transaction,
/// each reading owners and references from its own tables through `conn`.
pub(crate) async fn deletion_cascade<C>(
    conn: &mut C,
    kind: &str,
    id: ObjectId,
    propagation: threeport_core::Propagation,
    dependents_of: impl AsyncFn(&mut C, ObjectId) -> OpResult<Vec<ObjectRef>>,
    referrers: impl AsyncFn(&mut C, ObjectId) -> OpResult<Vec<ObjectRef>>,
) -> OpResult<Vec<ObjectRef>> {
    let mut cascade = vec![ObjectRef::new(kind, id)];
    if propagation == threeport_core::Propagation::Foreground {
        let mut next = 0;
        while next < cascade.len() {
            let owner = cascade[next].id;
            next += 1;
            for dependent in dependents_of(conn, owner).await? {
                if !cascade.contains(&dependent) {
                    cascade.push(dependent);
                }
            }
        }
    }
    for member in &cascade {
        let outside = referrers(conn, member.id)
            .await?
            .into_iter()
            .find(|r| !cascade.iter().any(|m| m.id == r.id));
        if let Some(referrer) = outside {
            return Err(still_referenced(kind, id, member, &referrer).into());
        }
    }
    Ok(cascade)
}

/// The refusal to remove an object that still owns `dependent`.
pub(crate) fn still_owns(kind: &str, id: ObjectId, dependent: &ObjectRef) -> Error {
    Error::conflict(format!(
        "{kind} {id} still owns objects, e.g. {dependent}: they go first"
    ))
}

/// An object row as both backends store it; `sqlx` decodes it from a PostgreSQL or SQLite row.
#[derive(Debug, sqlx::FromRow)]
pub(crate) struct ObjectRow {
    id: uuid::Uuid,
    kind: String,
    name: String,
    version: i64,
    generation: i64,
    created_at: Timestamp,
    updated_at: Timestamp,
    deletion_scheduled_at: Option<Timestamp>,
    labels: Json<Labels>,
    refs: Json<Vec<Reference>>,
    owners: Json<Vec<ObjectRef>>,
    spec: Json<Value>,
    status: Json<Status<Value>>,
}

impl From<ObjectRow> for RawObject {
    fn from(row: ObjectRow) -> Self {
        RawObject {
            meta: ObjectMeta {
                id: ObjectId(row.id),
                kind: row.kind,
                name: row.name,
                version: as_u64(row.version),
                generation: as_u64(row.generation),
                created_at: row.created_at,
                updated_at: row.updated_at,
                deletion_scheduled_at: row.deletion_scheduled_at,
                labels: row.labels.0,
                references: row.refs.0,
                owners: row.owners.0,
            },
            spec: row.spec.0,
            status: row.status.0,
        }
    }
}

/// An outbox row: `seq, kind, object_id, operation, version`.
pub(crate) type OutboxRow = (i64, String, uuid::Uuid, String, i64);

/// Decodes claimed outbox rows, oldest first.
pub(crate) fn outbox_entries(rows: Vec<OutboxRow>) -> Result<Vec<OutboxEntry>, Error> {
    let mut entries = rows
        .into_iter()
        .map(|(seq, kind, id, operation, version)| {
            Ok(OutboxEntry {
                seq: as_u64(seq),
                notification: Notification {
                    kind,
                    id: ObjectId(id),
                    operation: parse_operation(&operation)?,
                    version: as_u64(version),
                    secret: None,
                },
            })
        })
        .collect::<Result<Vec<_>, Error>>()?;
    entries.sort_by_key(|e| e.seq);
    Ok(entries)
}

#[cfg(test)]
mod tests {
    #[test]
    fn connection_failures_are_told_apart() {
        for code in ["57P01", "57P02", "57P03", "08006", "08001"] {
            assert!(super::is_connection_failure(Some(code)), "{code}");
        }
        for code in ["23505", "40001", "XX000"] {
            assert!(!super::is_connection_failure(Some(code)), "{code}");
        }
    }
}
