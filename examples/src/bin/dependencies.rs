//! An application waits for its database: the app's reconciler requeues until the database it
//! references is ready. Controllers never call each other; they only read API objects.
//!
//! Run: `cargo run -p threeport-examples --bin dependencies`

use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use threeport_core::{
    Action, Api, ApiObject, Context, Controller, LifecycleState, MemoryBackends, Object, ObjectId,
    ReconcileError, Reconciler, Reference,
};
use tokio_util::sync::CancellationToken;

/// A database that takes a while to provision.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Database {
    engine: String,
}

impl ApiObject for Database {
    const KIND: &'static str = "Database";
    /// Connection string once provisioned.
    type Status = Option<String>;
}

/// An application that needs a database.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct App {
    database: ObjectId,
}

impl ApiObject for App {
    const KIND: &'static str = "App";
    /// The connection string the app was configured with.
    type Status = Option<String>;

    fn references(&self) -> Vec<Reference> {
        vec![Reference::new("database", Database::KIND, self.database)]
    }
}

/// Provisioning takes three polls, as a cloud database would.
struct DatabaseReconciler;

#[async_trait]
impl Reconciler for DatabaseReconciler {
    type Object = Database;

    async fn reconcile(
        &self,
        db: &mut Object<Database>,
        _ctx: &Context,
    ) -> Result<Action, ReconcileError> {
        let polls = db.status.events.len();
        if polls < 3 {
            db.status.record_event(
                threeport_core::EventType::Normal,
                "Provisioning",
                format!("waiting for {} (poll {})", db.spec.engine, polls + 1),
            );
            println!("database: provisioning (poll {})", polls + 1);
            return Ok(Action::RequeueAfter(Duration::from_millis(300)));
        }
        db.status.details = Some(format!("{}://{}.internal:5432", db.spec.engine, db.name()));
        println!("database: ready");
        Ok(Action::Done)
    }
}

/// Configures the app once its database is ready; until then, checks back later.
struct AppReconciler;

#[async_trait]
impl Reconciler for AppReconciler {
    type Object = App;

    async fn reconcile(
        &self,
        app: &mut Object<App>,
        ctx: &Context,
    ) -> Result<Action, ReconcileError> {
        let db = ctx.api::<Database>().get(app.spec.database).await?;
        match (&db.status.details, db.is_reconciled()) {
            (Some(url), true) => {
                println!("app: database ready, configuring with {url}");
                app.status.details = Some(url.clone());
                Ok(Action::Done)
            }
            _ => {
                println!("app: database {:?}, requeueing", db.status.state);
                Ok(Action::RequeueAfter(Duration::from_millis(200)))
            }
        }
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let memory = MemoryBackends::new();
    let shutdown = CancellationToken::new();
    memory.spawn_relay(shutdown.clone());
    let db_controller = Controller::new(DatabaseReconciler, memory.backends());
    let app_controller = Controller::new(AppReconciler, memory.backends());
    let tasks = [
        tokio::spawn(db_controller.run(shutdown.clone())),
        tokio::spawn(app_controller.run(shutdown.clone())),
    ];

    let databases = Api::<Database>::new(memory.store.clone());
    let apps = Api::<App>::new(memory.store.clone());
    let db = databases
        .create(
            "orders-db",
            Database {
                engine: "postgres".into(),
            },
        )
        .await?;
    let app = apps.create("orders", App { database: db.id() }).await?;

    let ready = tokio::time::timeout(
        Duration::from_secs(10),
        apps.wait_until(app.id(), |a| a.is_reconciled()),
    )
    .await??;
    assert_eq!(ready.status.state, LifecycleState::Reconciled);
    println!("app reconciled with {:?}", ready.status.details);

    // The database cannot go while the app references it.
    let refused = databases
        .delete(db.id())
        .await
        .expect_err("still referenced");
    println!("deleting the database first is refused: {refused}");

    shutdown.cancel();
    for task in tasks {
        task.await??;
    }
    Ok(())
}
