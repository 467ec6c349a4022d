//! PgStore against the real PostgreSQL on loopback: the core conformance suites, concurrency,
//! migrations and configuration errors.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::fresh_postgres;
use threeport_core::conformance::{self, Timing};
use threeport_core::{
    ErrorKind, Labels, NewObject, Operation, Outbox, Reference, Relation, SpecUpdate, Status,
    StatusWrite, Store, Via,
};
use threeport_store::{ConnectOptions, PgStore, batched_writes, connect, transaction_retries};

async fn store() -> Arc<PgStore> {
    Arc::new(
        PgStore::connect(&fresh_postgres().await, &ConnectOptions::default())
            .await
            .unwrap(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_passes_the_store_suite() {
    conformance::store::run(store().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_passes_the_outbox_suite() {
    let store = store().await;
    conformance::outbox::run(store.clone(), store, Timing::default()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_passes_the_relations_suite() {
    let store = store().await;
    conformance::relations::run(store.clone(), store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_passes_the_locker_suite() {
    conformance::locker::run(store().await, Timing::default()).await;
}

fn new(kind: &str, name: &str) -> NewObject {
    NewObject {
        kind: kind.into(),
        name: name.into(),
        labels: Labels::new(),
        references: vec![],
        owners: Vec::new(),
        spec: serde_json::json!({}),
    }
}

/// Transactions that touch the same rows at once (each update locks the referenced
/// definition and writes the one instance) all commit, and nothing is lost or doubled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conflicting_concurrent_transactions_all_complete() {
    let store = store().await;
    let def = store.create(new("Definition", "shared")).await.unwrap();
    let target = store.create(new("Instance", "contested")).await.unwrap();
    let writers = 16;
    let tasks: Vec<_> = (0..writers)
        .map(|i| {
            let store = store.clone();
            let reference = Reference::new("definition", "Definition", def.meta.id);
            tokio::spawn(async move {
                let update = SpecUpdate {
                    expected_version: None,
                    labels: Labels::new(),
                    references: vec![reference],
                    spec: serde_json::json!({"writer": i}),
                };
                store.update("Instance", target.meta.id, update).await
            })
        })
        .collect();
    for task in tasks {
        task.await
            .unwrap()
            .expect("every conflicting update commits after retries");
    }
    let end = store.get("Instance", target.meta.id).await.unwrap();
    assert_eq!(
        end.meta.version,
        1 + writers,
        "each update applied exactly once"
    );
    let entries = store
        .claim("check", 1000, Duration::from_secs(1))
        .await
        .unwrap();
    let updates = entries
        .iter()
        .filter(|e| e.notification.id == target.meta.id)
        .count();
    assert_eq!(
        updates as u64,
        1 + writers,
        "one outbox row per committed write (created + updates)"
    );
}

fn referencing(name: &str, target: &threeport_core::RawObject) -> NewObject {
    NewObject {
        references: vec![Reference::new("definition", "Definition", target.meta.id)],
        ..new("Instance", name)
    }
}

/// Many creates that reference one object at once (16 clients creating workload instances of
/// one definition) all succeed: under serializable isolation they failed each other, since
/// time-ordered ids put their reads and writes on the same last index pages, until the store
/// gave up (a 503 for the client).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_creates_referencing_one_object_all_succeed() {
    let store = store().await;
    let def = store.create(new("Definition", "shared")).await.unwrap();
    let before = transaction_retries();
    let tasks: Vec<_> = (0..64)
        .map(|i| {
            let store = store.clone();
            let new = referencing(&format!("instance-{i}"), &def);
            tokio::spawn(async move { store.create(new).await })
        })
        .collect();
    for task in tasks {
        task.await.unwrap().expect("every create commits");
    }
    assert_eq!(
        store
            .dependents("Definition", def.meta.id)
            .await
            .unwrap()
            .len(),
        0,
        "references are not ownership"
    );
    let listed = store
        .list(
            "Instance",
            &threeport_core::store::ListQuery::default().limit(100),
        )
        .await
        .unwrap();
    assert_eq!(listed.items.len(), 64);
    assert!(
        transaction_retries() - before < 64,
        "creates linking to one object do not fail each other as a rule"
    );
}

/// A deletion racing creates that reference its object: either the deletion is refused
/// (a create committed first and references it) or every create after it is refused (the
/// object is being deleted) — never a deletion scheduled while a new referrer exists.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deletion_racing_referencing_creates_never_leaves_a_referrer() {
    let store = store().await;
    for round in 0..20 {
        let def = store
            .create(new("Definition", &format!("raced-{round}")))
            .await
            .unwrap();
        let creates: Vec<_> = (0..4)
            .map(|i| {
                let store = store.clone();
                let new = referencing(&format!("raced-{round}-{i}"), &def);
                tokio::spawn(async move { store.create(new).await })
            })
            .collect();
        let deletion = {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .schedule_deletion("Definition", def.meta.id, None)
                    .await
            })
        };
        let deleted = deletion.await.unwrap();
        let mut referrers = 0;
        for create in creates {
            match create.await.unwrap() {
                Ok(_) => referrers += 1,
                Err(err) => assert_eq!(err.kind(), ErrorKind::Invalid, "{err}"),
            }
        }
        match deleted {
            Ok(_) => assert_eq!(referrers, 0, "round {round}: deleted with a referrer"),
            Err(err) => {
                assert_eq!(err.kind(), ErrorKind::Conflict, "{err}");
                assert!(referrers > 0, "round {round}: refused without a referrer");
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrations_are_idempotent_and_safe_to_run_concurrently() {
    let url = fresh_postgres().await;
    let starts: Vec<_> = (0..4)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move { PgStore::connect(&url, &ConnectOptions::default()).await })
        })
        .collect();
    for start in starts {
        start
            .await
            .unwrap()
            .expect("concurrent start migrates once, the others wait");
    }
    let again = PgStore::connect(&url, &ConnectOptions::default())
        .await
        .expect("restart");
    again.create(new("Widget", "w")).await.unwrap();
    let applied: i64 = sqlx::query_scalar("SELECT count(*) FROM _sqlx_migrations")
        .fetch_one(again.pool())
        .await
        .unwrap();
    let migrations = sqlx::migrate!("migrations/postgres").iter().count();
    assert_eq!(
        applied,
        i64::try_from(migrations).unwrap(),
        "each migration once"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schema_newer_than_the_binary_is_refused_clearly() {
    let url = fresh_postgres().await;
    let store = PgStore::connect(&url, &ConnectOptions::default())
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
         VALUES (9999, 'from the future', true, '\\x00', 0)",
    )
    .execute(store.pool())
    .await
    .unwrap();
    let err = PgStore::connect(&url, &ConnectOptions::default())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Invalid);
    assert!(
        err.to_string()
            .contains("migration 9999, newer than this binary knows"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_configuration_names_the_problem() {
    let options = ConnectOptions {
        connect_timeout: Duration::from_secs(2),
        ..ConnectOptions::default()
    };
    let err = connect("mysql://localhost/x", &options).await.unwrap_err();
    assert!(
        matches!(&err, threeport_core::Error::Invalid { field, .. } if field == "database_url"),
        "{err}"
    );
    assert!(
        err.to_string().contains("unsupported scheme \"mysql\""),
        "{err}"
    );

    let err = connect("postgres://user@127.0.0.1:notaport/db", &options)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, threeport_core::Error::Invalid { field, .. } if field == "database_url"),
        "{err}"
    );

    // Port 1 on loopback: nothing listens, the connection is refused at once.
    let err = connect("postgres://postgres:secret@127.0.0.1:1/threeport", &options)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
    assert!(
        err.to_string()
            .contains("cannot connect to PostgreSQL at 127.0.0.1:1/threeport"),
        "{err}"
    );
    assert!(
        !err.to_string().contains("secret"),
        "the password must not appear: {err}"
    );
}

/// `sslmode` in the URL switches on TLS (rustls); the session really is encrypted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_is_configured_through_the_url() {
    let url = format!("{}?sslmode=require", fresh_postgres().await);
    let store = PgStore::connect(&url, &ConnectOptions::default())
        .await
        .expect("TLS connection");
    let (ssl, version): (bool, String) =
        sqlx::query_as("SELECT ssl, version FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
            .fetch_one(store.pool())
            .await
            .unwrap();
    assert!(ssl, "the connection must be encrypted");
    assert!(version.starts_with("TLS"), "{version}");

    // Verification against CAs that did not sign the server's certificate (the public roots)
    // fails, and says why.
    let public_roots = "/etc/ssl/certs/ca-certificates.crt";
    let strict = format!(
        "{}?sslmode=verify-full&sslrootcert={public_roots}",
        fresh_postgres().await
    );
    let options = ConnectOptions {
        connect_timeout: Duration::from_secs(3),
        ..ConnectOptions::default()
    };
    let err = PgStore::connect(&strict, &options).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
    assert!(
        err.to_string().contains("cannot connect to PostgreSQL"),
        "{err}"
    );
    assert!(
        err.to_string().contains("certificate"),
        "the TLS failure must be named: {err}"
    );
}

/// Label, reference and owner filters (`@>`, in the form the store writes them) are served
/// by the partial `jsonb_path_ops` indexes, not table scans, and the portable indexes the
/// migrations made are gone (every insert paid for them).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn label_reference_and_owner_filters_use_the_path_indexes() {
    let store = store().await;
    let mut conn = store.pool().acquire().await.unwrap();
    sqlx::query("SET enable_seqscan = off")
        .execute(&mut *conn)
        .await
        .unwrap();
    let indexes: Vec<String> = sqlx::query_scalar(
        "SELECT indexname::TEXT FROM pg_indexes WHERE tablename = 'threeport_objects' ORDER BY 1",
    )
    .fetch_all(&mut *conn)
    .await
    .unwrap();
    for gone in [
        "threeport_objects_labels",
        "threeport_objects_refs",
        "threeport_objects_owners",
    ] {
        assert!(
            !indexes.iter().any(|i| i == gone),
            "{gone} is still there: {indexes:?}"
        );
    }
    for (filter, index) in [
        (
            r#"labels <> '{}'::JSONB AND labels @> '{"tier": "gold"}'"#,
            "threeport_objects_labels_paths",
        ),
        (
            r#"refs <> '[]'::JSONB AND refs @> '[{"field": "definition", "id": "01a2032d-0000-7000-8000-000000000000"}]'"#,
            "threeport_objects_refs_paths",
        ),
        (
            r#"owners @> '[{"id": "01a2032d-0000-7000-8000-000000000000"}]' AND owners <> '[]'::JSONB"#,
            "threeport_objects_owners_paths",
        ),
    ] {
        let plan: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "EXPLAIN SELECT id FROM threeport_objects WHERE {filter}"
        )))
        .fetch_all(&mut *conn)
        .await
        .unwrap();
        let plan = plan.join("\n");
        assert!(plan.contains(index), "{filter} must use {index}:\n{plan}");
    }
}

/// Creates and status writes made at once go to the database in batches (group commit), and
/// every caller still gets its own answer: its object, or its own error (a name taken by an
/// earlier object or by another create of the same batch, a stale version, an older fencing
/// token), with one notification per object written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writes_are_batched_and_each_gets_its_own_answer() {
    let store = store().await;
    let batched_before = batched_writes();
    store.create(new("Widget", "taken")).await.unwrap();
    let mut names: Vec<String> = (0..120).map(|n| format!("w-{n}")).collect();
    names.extend(["taken".to_owned(), "twice".to_owned(), "twice".to_owned()]);
    let creates: Vec<_> = names
        .iter()
        .map(|name| {
            let (store, name) = (store.clone(), name.clone());
            tokio::spawn(async move { (name.clone(), store.create(new("Widget", &name)).await) })
        })
        .collect();
    let mut created = Vec::new();
    let mut twice = 0;
    for create in creates {
        match create.await.unwrap() {
            (name, Ok(object)) => {
                assert_eq!(object.meta.name, name);
                assert_eq!(object.meta.version, 1);
                twice += usize::from(name == "twice");
                created.push(object);
            }
            (name, Err(err)) => {
                assert_eq!(err.kind(), ErrorKind::AlreadyExists, "{name}: {err}");
                assert!(name == "taken" || name == "twice", "{name}: {err}");
            }
        }
    }
    assert_eq!(twice, 1, "one of the two creates named twice wins");
    assert_eq!(created.len(), 121);
    let notified = store
        .claim("test", 1000, Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(notified.len(), 122, "one creation notification per object");

    // Status writes: each at its object's version, a second one at the same version for one
    // object, and one with an older fencing token than the object's own earlier write.
    let fenced = created[0].meta.id;
    let write = |expected, fence, state: &str| StatusWrite {
        expected_version: expected,
        fence,
        status: Status {
            details: serde_json::json!({"state": state}),
            ..Status::default()
        },
    };
    store
        .update_status("Widget", fenced, write(None, Some(9), "fenced"))
        .await
        .unwrap();
    let writes: Vec<_> = created[1..]
        .iter()
        .map(|object| (object.meta.id, write(Some(1), Some(3), &object.meta.name)))
        .chain([
            // Same version as the write above for this object: one of the two loses.
            (
                created[1].meta.id,
                write(Some(1), None, &created[1].meta.name),
            ),
            (fenced, write(None, Some(5), "older token")),
        ])
        .map(|(id, write)| {
            let store = store.clone();
            tokio::spawn(async move { (id, store.update_status("Widget", id, write).await) })
        })
        .collect();
    let (mut written, mut refused) = (0, 0);
    for write in writes {
        match write.await.unwrap() {
            (id, Ok(object)) => {
                assert_eq!(object.meta.id, id);
                assert_eq!(object.meta.version, 2);
                assert_eq!(object.status.details["state"], object.meta.name.as_str());
                written += 1;
            }
            (_, Err(err)) => {
                assert_eq!(err.kind(), ErrorKind::Conflict, "{err}");
                refused += 1;
            }
        }
    }
    assert_eq!((written, refused), (120, 2));
    let stored = store.get("Widget", created[7].meta.id).await.unwrap();
    assert_eq!(stored.status.details["state"], "w-7");
    let fenced = store.get("Widget", fenced).await.unwrap();
    assert_eq!(fenced.status.details["state"], "fenced");
    assert!(
        batched_writes() > batched_before,
        "243 concurrent writes all went one at a time"
    );
}

/// Creates and status writes of a kind no relation follows leave the followers' part out
/// of their statement; a relation another process registers afterwards is honoured by the
/// very next writes all the same (the statement keeps rows of a followed kind out, and they
/// are written again with their followers notified), not once this process looks again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kind_followed_since_this_process_looked_still_notifies_its_followers() {
    let url = fresh_postgres().await;
    let writer = Arc::new(
        PgStore::connect(&url, &ConnectOptions::default())
            .await
            .unwrap(),
    );
    let elsewhere = PgStore::connect(&url, &ConnectOptions::default())
        .await
        .unwrap();
    // Half of them owned by `owner` (a create with links to check is a statement of its own).
    let create_all = |names: Vec<String>, owner: Option<threeport_core::ObjectRef>| {
        let writer = writer.clone();
        async move {
            let creates: Vec<_> = names
                .into_iter()
                .enumerate()
                .map(|(n, name)| {
                    let writer = writer.clone();
                    let owners = owner.iter().filter(|_| n % 2 == 0).cloned().collect();
                    let gadget = NewObject {
                        owners,
                        ..new("Gadget", &name)
                    };
                    tokio::spawn(async move { writer.create(gadget).await })
                })
                .collect();
            let mut created = Vec::new();
            for create in creates {
                created.push(create.await.unwrap().unwrap());
            }
            created
        }
    };
    // Nobody follows gadgets yet: the writer writes them without the followers' part.
    let owner = writer.create(new("Gadget", "owner")).await.unwrap();
    let owner = Some(threeport_core::ObjectRef::new("Gadget", owner.meta.id));
    let before = create_all(
        (0..20).map(|n| format!("before-{n}")).collect(),
        owner.clone(),
    )
    .await;
    let notified = writer
        .claim("test", 1000, Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(notified.len(), 21, "one creation notification each");
    writer
        .complete(&notified.iter().map(|e| e.seq).collect::<Vec<_>>())
        .await
        .unwrap();

    elsewhere
        .register_relations(&[Relation::new("Watcher", "Gadget", Via::Mapped)])
        .await
        .unwrap();
    let after = create_all((0..20).map(|n| format!("after-{n}")).collect(), owner).await;
    let writes: Vec<_> = before
        .iter()
        .map(|gadget| {
            let (writer, id) = (writer.clone(), gadget.meta.id);
            tokio::spawn(async move {
                let status = Status {
                    details: serde_json::json!({"ready": true}),
                    ..Status::default()
                };
                let write = StatusWrite {
                    expected_version: None,
                    fence: None,
                    status,
                };
                writer.update_status("Gadget", id, write).await
            })
        })
        .collect();
    for write in writes {
        assert_eq!(write.await.unwrap().unwrap().meta.version, 2);
    }
    let notified = writer
        .claim("test", 1000, Duration::from_secs(30))
        .await
        .unwrap();
    let followed: std::collections::HashSet<_> = notified
        .iter()
        .filter(|e| e.notification.kind == "Watcher")
        .map(|e| {
            assert_eq!(e.notification.operation, Operation::Followed);
            e.notification.id
        })
        .collect();
    let created = notified.iter().filter(|e| e.notification.kind == "Gadget");
    assert_eq!(
        created.count(),
        20,
        "one creation notification per new gadget"
    );
    for gadget in before.iter().chain(&after) {
        assert!(
            followed.contains(&gadget.meta.id),
            "{}: the watcher was not told of its write",
            gadget.meta.name
        );
    }
}

/// Creates with owners made at once go in batches too: each is written only if its owner
/// exists with the kind named and is not being deleted, and each caller gets its own answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_owned_creates_are_batched_and_checked_one_by_one() {
    let store = store().await;
    let batched_before = batched_writes();
    let owner = store.create(new("Definition", "owner")).await.unwrap();
    let leaving = store.create(new("Definition", "leaving")).await.unwrap();
    store
        .schedule_deletion("Definition", leaving.meta.id, None)
        .await
        .unwrap();
    let owned_by = |name: &str, kind: &str, id| NewObject {
        owners: vec![threeport_core::ObjectRef::new(kind, id)],
        ..new("Record", name)
    };
    let mut requests: Vec<(&str, NewObject)> = (0..80)
        .map(|n| {
            (
                "ok",
                owned_by(&format!("r-{n}"), "Definition", owner.meta.id),
            )
        })
        .collect();
    requests.extend([
        (
            "leaving",
            owned_by("r-leaving", "Definition", leaving.meta.id),
        ),
        (
            "missing",
            owned_by("r-missing", "Definition", threeport_core::ObjectId::new()),
        ),
        ("wrong kind", owned_by("r-kind", "Instance", owner.meta.id)),
        ("taken", owned_by("r-3", "Definition", owner.meta.id)),
    ]);
    let creates: Vec<_> = requests
        .into_iter()
        .map(|(case, object)| {
            let store = store.clone();
            tokio::spawn(async move { (case, store.create(object).await) })
        })
        .collect();
    let mut created = 0;
    for create in creates {
        match create.await.unwrap() {
            ("ok", Ok(object)) => {
                assert_eq!(object.meta.owners[0].id, owner.meta.id);
                created += 1;
            }
            // Either of the two creates named r-3 may win; the other is refused.
            ("ok" | "taken", Err(err)) => {
                assert_eq!(err.kind(), ErrorKind::AlreadyExists, "{err}");
            }
            ("taken", Ok(_)) => created += 1,
            (case, Err(err)) => assert_eq!(err.kind(), ErrorKind::Invalid, "{case}: {err}"),
            (case, Ok(object)) => panic!("{case}: created {object:?}"),
        }
    }
    assert_eq!(created, 80);
    assert!(
        batched_writes() > batched_before,
        "84 concurrent creates all went one at a time"
    );
    let dependents = store.dependents("Definition", owner.meta.id).await.unwrap();
    assert_eq!(dependents.len(), 80);
    assert!(
        store
            .dependents("Definition", leaving.meta.id)
            .await
            .unwrap()
            .is_empty()
    );
}
