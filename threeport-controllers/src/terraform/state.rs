//! Where a Terraform instance's state, lock and saved plan live: a `TerraformState` record in
//! threeport's store (named by the instance's id, never served by the REST API), the state and
//! plan sealed with the server's key. Every change is a conditional write of the record, so
//! two controller replicas can never both hold the lock.

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use threeport_core::{Api, ApiObject, Error, ErrorKind, Object, ObjectId, Result, Store};

use crate::seal::Sealer;

/// The record of one instance's state (kind `TerraformState`).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct TerraformState {
    /// Terraform's state document, sealed.
    #[serde(default)]
    pub state: Option<String>,
    /// The lock, while a run holds it.
    #[serde(default)]
    pub lock: Option<StateLock>,
    /// A saved plan awaiting approval: its id and the plan file (base64), sealed.
    #[serde(default)]
    pub plan: Option<SavedPlan>,
}

impl ApiObject for TerraformState {
    const KIND: &'static str = "TerraformState";
    type Status = ();
}

/// A held lock: Terraform's lock information and the run holding it until `expires_at`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StateLock {
    /// Terraform's lock id.
    pub id: String,
    /// Terraform's lock information (`ID`, `Operation`, `Who`, …), shown to a refused locker.
    pub info: Value,
    /// The controller run that holds it.
    pub holder: String,
    /// Unix milliseconds after which the lock is free: the holder renews it while it runs,
    /// so a dead run's lock lapses with its lease.
    pub expires_at: i64,
}

/// A saved plan.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SavedPlan {
    /// The plan's id (digest of the file).
    pub id: String,
    /// The plan file, base64, sealed.
    pub file: String,
}

/// Sealed-field names (the sealing key is bound to them).
const STATE_FIELD: &str = "spec.state";
const PLAN_FIELD: &str = "spec.plan.file";

/// Milliseconds since the Unix epoch.
pub(crate) fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// Why a state operation was refused.
#[derive(Debug)]
pub enum StateRefusal {
    /// Another run holds the lock (its information).
    Locked(Value),
    /// Something else failed.
    Failed(Error),
}

impl From<Error> for StateRefusal {
    fn from(err: Error) -> Self {
        StateRefusal::Failed(err)
    }
}

/// The states of every instance, over the store.
#[derive(Debug, Clone)]
pub struct StateStore {
    store: Arc<dyn Store>,
    sealer: Arc<Sealer>,
    lease: Duration,
}

impl StateStore {
    /// States kept in `store`, sealed by `sealer`; locks lapse `lease` after their last renewal.
    pub fn new(store: Arc<dyn Store>, sealer: Arc<Sealer>, lease: Duration) -> Self {
        StateStore {
            store,
            sealer,
            lease,
        }
    }

    /// How long a lock lives without renewal.
    pub fn lease(&self) -> Duration {
        self.lease
    }

    fn api(&self) -> Api<TerraformState> {
        Api::new(self.store.clone())
    }

    /// The record of `instance`, if any.
    pub async fn get(&self, instance: ObjectId) -> Result<Option<Object<TerraformState>>> {
        match self.api().get_by_name(&instance.to_string()).await {
            Ok(record) => Ok(Some(record)),
            Err(err) if err.kind() == ErrorKind::NotFound => Ok(None),
            Err(err) => Err(err),
        }
    }

    /// Changes the record of `instance` (made if missing) by `change`, retrying on a
    /// concurrent write; returns what `change` returned.
    pub async fn modify<R>(
        &self,
        instance: ObjectId,
        mut change: impl FnMut(&mut TerraformState) -> std::result::Result<R, StateRefusal>,
    ) -> std::result::Result<R, StateRefusal> {
        loop {
            let mut record = match self.get(instance).await? {
                Some(record) => record,
                None => {
                    match self
                        .api()
                        .create(instance.to_string(), TerraformState::default())
                        .await
                    {
                        Ok(record) => record,
                        Err(err) if err.kind() == ErrorKind::AlreadyExists => continue,
                        Err(err) => return Err(err.into()),
                    }
                }
            };
            let result = change(&mut record.spec)?;
            match self.api().update(&record).await {
                Ok(_) => return Ok(result),
                Err(err) if err.kind() == ErrorKind::Conflict => continue,
                Err(err) => return Err(err.into()),
            }
        }
    }

    /// Terraform's state document of `instance`, opened; `None` before the first apply.
    pub async fn read(&self, instance: ObjectId) -> Result<Option<String>> {
        let Some(record) = self.get(instance).await? else {
            return Ok(None);
        };
        record
            .spec
            .state
            .map(|sealed| self.sealer.open(STATE_FIELD, &sealed))
            .transpose()
    }

    /// Stores `state` for `instance`; refused while another lock than `lock_id` is live.
    pub async fn write(
        &self,
        instance: ObjectId,
        lock_id: Option<&str>,
        state: &str,
    ) -> std::result::Result<(), StateRefusal> {
        let sealed = self.sealer.seal(STATE_FIELD, state)?;
        self.replace_state(instance, lock_id, Some(sealed)).await
    }

    /// Forgets the state of `instance` (Terraform's `DELETE`), under the same lock rule.
    pub async fn clear(
        &self,
        instance: ObjectId,
        lock_id: Option<&str>,
    ) -> std::result::Result<(), StateRefusal> {
        self.replace_state(instance, lock_id, None).await
    }

    /// Whether `instance` has a state (without opening it).
    pub async fn has_state(&self, instance: ObjectId) -> Result<bool> {
        Ok(self
            .get(instance)
            .await?
            .is_some_and(|record| record.spec.state.is_some()))
    }

    /// Sets the sealed state of `instance` unless another lock than `lock_id` is live.
    async fn replace_state(
        &self,
        instance: ObjectId,
        lock_id: Option<&str>,
        sealed: Option<String>,
    ) -> std::result::Result<(), StateRefusal> {
        self.modify(instance, |record| {
            if let Some(lock) = live_lock(record)
                && Some(lock.id.as_str()) != lock_id
            {
                return Err(StateRefusal::Locked(lock.info.clone()));
            }
            record.state = sealed.clone();
            Ok(())
        })
        .await
    }

    /// Takes the lock for run `holder` (Terraform's `LOCK`): refused with the holder's
    /// information while another live lock is held; a lapsed one is taken over.
    pub async fn lock(
        &self,
        instance: ObjectId,
        holder: &str,
        info: Value,
    ) -> std::result::Result<(), StateRefusal> {
        let id = info
            .get("ID")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        let expires_at = now_ms() + self.lease.as_millis() as i64;
        self.modify(instance, |record| {
            if let Some(lock) = live_lock(record)
                && lock.id != id
            {
                return Err(StateRefusal::Locked(lock.info.clone()));
            }
            if let Some(stale) = &record.lock
                && stale.id != id
            {
                tracing::warn!(%instance, holder = %stale.holder, "taking over a lapsed Terraform state lock");
            }
            record.lock = Some(StateLock {
                id: id.clone(),
                info: info.clone(),
                holder: holder.to_owned(),
                expires_at,
            });
            Ok(())
        })
        .await
    }

    /// Releases the lock `id` (Terraform's `UNLOCK`); refused if another holds it.
    pub async fn unlock(
        &self,
        instance: ObjectId,
        id: &str,
    ) -> std::result::Result<(), StateRefusal> {
        self.modify(instance, |record| match &record.lock {
            Some(lock) if lock.id != id && lock.expires_at > now_ms() => {
                Err(StateRefusal::Locked(lock.info.clone()))
            }
            _ => {
                record.lock = None;
                Ok(())
            }
        })
        .await
    }

    /// Extends the lock of `instance` held by run `holder` by a lease; `false` if that run
    /// holds none.
    pub async fn renew(&self, instance: ObjectId, holder: &str) -> Result<bool> {
        let expires_at = now_ms() + self.lease.as_millis() as i64;
        let renewed = self
            .modify(instance, |record| match &mut record.lock {
                Some(lock) if lock.holder == holder => {
                    lock.expires_at = expires_at;
                    Ok(true)
                }
                _ => Ok(false),
            })
            .await;
        match renewed {
            Ok(renewed) => Ok(renewed),
            Err(StateRefusal::Failed(err)) => Err(err),
            Err(StateRefusal::Locked(_)) => Ok(false),
        }
    }

    /// The live lock of `instance`, if any.
    pub async fn live_lock(&self, instance: ObjectId) -> Result<Option<StateLock>> {
        Ok(self
            .get(instance)
            .await?
            .and_then(|record| live_lock(&record.spec).cloned()))
    }

    /// Keeps `plan` (Terraform's plan file) as `instance`'s plan awaiting approval.
    pub async fn save_plan(&self, instance: ObjectId, id: &str, plan: &[u8]) -> Result<()> {
        use base64::Engine;
        let encoded = base64::engine::general_purpose::STANDARD.encode(plan);
        let file = self.sealer.seal(PLAN_FIELD, &encoded)?;
        self.modify(instance, |record| {
            record.plan = Some(SavedPlan {
                id: id.to_owned(),
                file: file.clone(),
            });
            Ok(())
        })
        .await
        .map_err(refusal_error)
    }

    /// The saved plan `id` of `instance`, if it is the one kept.
    pub async fn saved_plan(&self, instance: ObjectId, id: &str) -> Result<Option<Vec<u8>>> {
        use base64::Engine;
        let Some(record) = self.get(instance).await? else {
            return Ok(None);
        };
        let Some(plan) = record.spec.plan.filter(|plan| plan.id == id) else {
            return Ok(None);
        };
        let encoded = self.sealer.open(PLAN_FIELD, &plan.file)?;
        base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .map(Some)
            .map_err(|e| Error::backend(format!("saved plan: {e}")))
    }

    /// Forgets the saved plan of `instance`.
    pub async fn drop_plan(&self, instance: ObjectId) -> Result<()> {
        self.modify(instance, |record| {
            record.plan = None;
            Ok(())
        })
        .await
        .map_err(refusal_error)
    }

    /// Removes the record of `instance` (after `destroy`).
    pub async fn remove(&self, instance: ObjectId) -> Result<()> {
        if let Some(record) = self.get(instance).await? {
            match self
                .store
                .remove(TerraformState::KIND, record.id(), None)
                .await
            {
                Err(err) if err.kind() != ErrorKind::NotFound => return Err(err),
                _ => {}
            }
        }
        Ok(())
    }
}

fn live_lock(record: &TerraformState) -> Option<&StateLock> {
    record
        .lock
        .as_ref()
        .filter(|lock| lock.expires_at > now_ms())
}

fn refusal_error(refusal: StateRefusal) -> Error {
    match refusal {
        StateRefusal::Failed(err) => err,
        StateRefusal::Locked(info) => Error::conflict(format!("the state is locked: {info}")),
    }
}
