//! What a controller author writes: a [`Reconciler`], returning an [`Action`] or a
//! [`ReconcileError`], with a [`Context`] to read other objects.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::bus::SecretValues;
use crate::error::{Error, ErrorKind};
use crate::object::{ApiObject, Object};
use crate::store::{Api, Store};

/// What to do after a successful reconcile.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// The desired state is realised; nothing more until the object changes.
    Done,
    /// Not finished (a long operation is underway) or worth a periodic re-check: reconcile again
    /// after this delay. Progress, not failure: backoff resets.
    RequeueAfter(Duration),
}

/// Why a reconcile failed, and how the runtime should react.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReconcileError {
    /// Transient: retried with per-object exponential backoff, up to the retry bound.
    #[error("{0}")]
    Retryable(String),
    /// Transient with a known delay (a rate limit's `Retry-After`, say).
    #[error("{message} (retry after {delay:?})")]
    RetryAfter {
        /// When to try again.
        delay: Duration,
        /// What went wrong.
        message: String,
    },
    /// Retrying cannot help (bad input, refused by the provider): recorded in status, not
    /// retried until the object changes.
    #[error("{0}")]
    Terminal(String),
}

impl ReconcileError {
    /// A transient failure.
    pub fn retryable(err: impl std::fmt::Display) -> Self {
        ReconcileError::Retryable(err.to_string())
    }

    /// A failure that retrying cannot fix.
    pub fn terminal(err: impl std::fmt::Display) -> Self {
        ReconcileError::Terminal(err.to_string())
    }

    /// A transient failure to retry after `delay`.
    pub fn retry_after(delay: Duration, err: impl std::fmt::Display) -> Self {
        ReconcileError::RetryAfter {
            delay,
            message: err.to_string(),
        }
    }
}

/// Store errors inside a reconciler: invalid input is terminal, everything else retryable
/// (a conflict or a missing dependency may resolve by itself).
impl From<Error> for ReconcileError {
    fn from(err: Error) -> Self {
        match err.kind() {
            ErrorKind::Invalid => ReconcileError::Terminal(err.to_string()),
            _ => ReconcileError::Retryable(err.to_string()),
        }
    }
}

/// What a reconcile call can use besides its object.
#[derive(Debug, Clone)]
pub struct Context {
    pub(crate) store: Arc<dyn Store>,
    pub(crate) fence: u64,
    pub(crate) attempt: u32,
    pub(crate) cancelled: CancellationToken,
    pub(crate) secret: Option<SecretValues>,
    /// Work the reconcile handed to other tasks or threads; the object stays locked until it
    /// has stopped, even after a timeout. Made on first use: most reconciles spawn nothing.
    pub(crate) work: Arc<OnceLock<TaskTracker>>,
}

impl Context {
    /// A context for calling a reconciler directly, e.g. in unit tests.
    pub fn new(store: Arc<dyn Store>) -> Self {
        Context {
            store,
            fence: 0,
            attempt: 1,
            cancelled: CancellationToken::new(),
            secret: None,
            work: Arc::default(),
        }
    }

    /// The same context with secret values, as a notification would bring them.
    pub fn with_secret(mut self, secret: SecretValues) -> Self {
        self.secret = Some(secret);
        self
    }

    /// Secret values the notification behind this reconcile carried, if any (see
    /// [`Notification::secret`](crate::Notification::secret)). They exist only in memory: a
    /// reconciler that needs them must use them now (hand them to a secret manager), and a
    /// reconcile without them must not assume they will come again.
    pub fn secret(&self) -> Option<&SecretValues> {
        self.secret.as_ref()
    }

    /// The store, to read (and write the desired state of) other objects.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// Typed access to objects of kind `T`.
    pub fn api<T: ApiObject>(&self) -> Api<T> {
        Api::new(self.store.clone())
    }

    /// The fencing token of the lease held for this object; pass it to fenced writes.
    pub fn fence(&self) -> u64 {
        self.fence
    }

    /// Delivery attempt of the notification being handled (1 on the first delivery).
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// Cancelled when the runtime gives up on this reconcile (timeout, lost lease, shutdown
    /// past the drain timeout). The runtime drops an `async` reconcile then, which stops it;
    /// work handed to [`spawn_blocking`](Self::spawn_blocking) or [`spawn`](Self::spawn)
    /// should watch this token to stop early.
    pub fn cancelled(&self) -> &CancellationToken {
        &self.cancelled
    }

    /// Runs blocking work (a CPU-bound step, a synchronous SDK, a call into another language)
    /// on tokio's blocking pool, as part of this reconcile: the runtime keeps the object's
    /// lease until it has returned, also when the reconcile timed out or was cancelled, so no
    /// other reconcile of the object can start while it still runs. A result it returns after
    /// the reconcile gave up is discarded. Plain `tokio::task::spawn_blocking` has no such
    /// guarantee: its thread would outlive a timed-out reconcile.
    ///
    /// ```
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// use std::sync::Arc;
    /// use threeport_core::{Context, MemoryStore};
    ///
    /// let ctx = Context::new(Arc::new(MemoryStore::new()));
    /// let digest = ctx.spawn_blocking(|| (1..=10u64).product::<u64>()).await.unwrap();
    /// assert_eq!(digest, 3_628_800);
    /// # });
    /// ```
    pub fn spawn_blocking<F, T>(&self, f: F) -> JoinHandle<T>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        self.work.get_or_init(TaskTracker::new).spawn_blocking(f)
    }

    /// Runs a future on its own task as part of this reconcile, with the guarantee of
    /// [`spawn_blocking`](Self::spawn_blocking): the object stays locked until it finished.
    pub fn spawn<F>(&self, future: F) -> JoinHandle<F::Output>
    where
        F: std::future::Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.work.get_or_init(TaskTracker::new).spawn(future)
    }
}

/// Brings an object's real state in line with its desired state.
///
/// Reconcilers are level-triggered and idempotent: they are handed the current object, never
/// the reason they were called. They may change `obj.status` (details, conditions, events);
/// the runtime writes it back with the lifecycle state. Changes to `obj.spec` are ignored.
///
/// ```
/// use async_trait::async_trait;
/// use serde::{Deserialize, Serialize};
/// use threeport_core::{Action, ApiObject, Context, Object, ReconcileError, Reconciler};
///
/// #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
/// struct Widget { size: u32 }
/// impl ApiObject for Widget {
///     const KIND: &'static str = "Widget";
///     type Status = u32; // the size we built
/// }
///
/// struct Builder;
///
/// #[async_trait]
/// impl Reconciler for Builder {
///     type Object = Widget;
///     async fn reconcile(&self, obj: &mut Object<Widget>, _ctx: &Context) -> Result<Action, ReconcileError> {
///         if obj.spec.size == 0 {
///             return Err(ReconcileError::terminal("size must be positive"));
///         }
///         obj.status.details = obj.spec.size;
///         Ok(Action::Done)
///     }
/// }
/// ```
#[async_trait]
pub trait Reconciler: Send + Sync + 'static {
    /// The kind this reconciler owns.
    type Object: ApiObject;

    /// The kind's name: `Self::Object::KIND`, unless the object type stands for kinds known
    /// only at run time ([`Dynamic`](crate::Dynamic)), whose reconciler names its kind here.
    fn kind(&self) -> &str {
        <Self::Object as ApiObject>::KIND
    }

    /// Realises `obj`'s desired state.
    async fn reconcile(
        &self,
        obj: &mut Object<Self::Object>,
        ctx: &Context,
    ) -> Result<Action, ReconcileError>;

    /// Tears down what `reconcile` built, once deletion was requested. On `Done` the runtime
    /// removes the object. The default has nothing to clean up.
    async fn cleanup(
        &self,
        obj: &mut Object<Self::Object>,
        ctx: &Context,
    ) -> Result<Action, ReconcileError> {
        let _ = (obj, ctx);
        Ok(Action::Done)
    }
}
