//! Telling another object to reconcile: controllers never call each other, so a controller
//! whose work changes what another object should do sets a label on that object (a
//! desired-state change, which notifies its controller).

use threeport_core::{ApiObject, Context, ErrorKind, ObjectId, ReconcileError};

/// How often a label write that lost a race with another write (often the object's own
/// status) is tried again.
const ATTEMPTS: usize = 10;

/// Sets label `key` of object `id` to `value` (`None` removes it), unless it already is so.
/// Retries when the object changed meanwhile (a status write changes its version but does not
/// make it reconcile, so giving up would lose the news). An object gone or being deleted needs
/// no news.
pub async fn set_label<T: ApiObject>(
    ctx: &Context,
    id: ObjectId,
    key: &str,
    value: Option<&str>,
) -> Result<(), ReconcileError> {
    let api = ctx.api::<T>();
    for _ in 0..ATTEMPTS {
        let mut object = match api.get(id).await {
            Ok(object) => object,
            Err(err) if err.kind() == ErrorKind::NotFound => return Ok(()),
            Err(err) => return Err(err.into()),
        };
        if object.is_deleting() || object.meta.labels.get(key).map(String::as_str) == value {
            return Ok(());
        }
        match value {
            Some(value) => object.meta.labels.insert(key.to_owned(), value.to_owned()),
            None => object.meta.labels.remove(key),
        };
        match api.update(&object).await {
            Ok(_) => return Ok(()),
            Err(err) if err.kind() == ErrorKind::NotFound => return Ok(()),
            Err(err) if err.kind() == ErrorKind::Conflict => continue,
            Err(err) => return Err(err.into()),
        }
    }
    Err(ReconcileError::retryable(format!(
        "{} {id} kept changing while its label {key} was set",
        T::KIND
    )))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    use async_trait::async_trait;
    use threeport_core::store::{ListPage, ListQuery, SpecUpdate, StatusWrite};
    use threeport_core::{
        Api, Context, MemoryStore, NewObject, ObjectId, RawObject, Result, Store,
    };

    use super::set_label;
    use threeport_api::model::WorkloadDefinition;

    /// A store whose first spec update loses a race with a status write.
    #[derive(Debug)]
    struct Racing {
        inner: Arc<MemoryStore>,
        raced: AtomicBool,
    }

    #[async_trait]
    impl Store for Racing {
        async fn create(&self, new: NewObject) -> Result<RawObject> {
            self.inner.create(new).await
        }
        async fn create_all(&self, objects: Vec<(ObjectId, NewObject)>) -> Result<Vec<RawObject>> {
            self.inner.create_all(objects).await
        }
        async fn create_all_once(
            &self,
            key: &threeport_core::IdempotencyKey,
            objects: Vec<(ObjectId, NewObject)>,
        ) -> Result<threeport_core::Once> {
            self.inner.create_all_once(key, objects).await
        }
        async fn get(&self, kind: &str, id: ObjectId) -> Result<RawObject> {
            self.inner.get(kind, id).await
        }
        async fn list(&self, kind: &str, query: &ListQuery) -> Result<ListPage> {
            self.inner.list(kind, query).await
        }
        async fn update(&self, kind: &str, id: ObjectId, update: SpecUpdate) -> Result<RawObject> {
            if !self.raced.swap(true, Ordering::SeqCst) {
                let current = self.inner.get(kind, id).await?;
                self.inner
                    .update_status(
                        kind,
                        id,
                        StatusWrite {
                            expected_version: None,
                            fence: None,
                            status: current.status,
                        },
                    )
                    .await?;
            }
            self.inner.update(kind, id, update).await
        }
        async fn update_status(
            &self,
            kind: &str,
            id: ObjectId,
            write: StatusWrite,
        ) -> Result<RawObject> {
            self.inner.update_status(kind, id, write).await
        }
        async fn schedule_deletion(
            &self,
            kind: &str,
            id: ObjectId,
            expected_version: Option<u64>,
        ) -> Result<RawObject> {
            self.inner
                .schedule_deletion(kind, id, expected_version)
                .await
        }
        async fn remove(&self, kind: &str, id: ObjectId, fence: Option<u64>) -> Result<()> {
            self.inner.remove(kind, id, fence).await
        }
    }

    #[tokio::test]
    async fn a_label_survives_a_race_with_a_status_write() {
        let store = Arc::new(Racing {
            inner: Arc::new(MemoryStore::new()),
            raced: AtomicBool::new(false),
        });
        let api = Api::<WorkloadDefinition>::new(store.clone());
        let created = api
            .create(
                "web",
                WorkloadDefinition {
                    yaml_document: "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\n".into(),
                },
            )
            .await
            .unwrap();
        let ctx = Context::new(store.clone());
        set_label::<WorkloadDefinition>(&ctx, created.id(), "news", Some("1"))
            .await
            .unwrap();
        let after = api.get(created.id()).await.unwrap();
        assert_eq!(after.meta.labels.get("news").map(String::as_str), Some("1"));
        assert!(store.raced.load(Ordering::SeqCst), "the race happened");
    }
}
