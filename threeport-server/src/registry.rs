//! [`KindRegistry`]: the object kinds an API serves, and how each one's spec is checked.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use serde_json::Value;
use threeport_core::object::Reference;
use threeport_core::{ApiObject, Error, Store};
use utoipa::ToSchema;
use utoipa::openapi::{RefOr, Schema};

pub use threeport_api::plural_path;

/// Decodes and validates a spec of one kind; returns it with defaults filled in, and the
/// references it holds.
type CheckSpec = fn(&Value) -> Result<CheckedSpec, Error>;

/// How a kind's specs are checked: by their Rust type, or by a kind definition's schema.
#[derive(Clone)]
enum Checker {
    Typed(CheckSpec),
    Schema(Arc<crate::custom::SchemaCheck>),
}

impl std::fmt::Debug for Checker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Checker::Typed(_) => f.write_str("Typed"),
            Checker::Schema(check) => write!(f, "Schema({})", check.definition),
        }
    }
}

/// A spec that passed its kind's checks.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckedSpec {
    /// The spec as the kind's type writes it: defaults filled in, fields in order.
    pub spec: Value,
    /// The objects it references.
    pub references: Vec<Reference>,
}

/// One served kind.
#[derive(Debug, Clone)]
pub struct KindEntry {
    /// Kind name (`WorkloadDefinition`).
    pub kind: &'static str,
    /// URL segment under `/v0/` (`workload-definitions`).
    pub plural: String,
    /// A spec field holding secret values (string to string), accepted on create, handed to
    /// the bus in memory and never stored.
    pub secret_field: Option<&'static str>,
    /// Dotted spec paths of values kept encrypted at rest (see [`crate::seal`]).
    pub sealed_fields: Vec<String>,
    /// The spec fields that may hold a reference to another object, for finding what
    /// references an object: a kind of one's own declares them; a built-in kind's are the
    /// top-level fields its schema documents as UUIDs (all references are ids). Derived once,
    /// when the kind is registered or documented.
    pub reference_fields: Vec<String>,
    check: Checker,
    schema: Option<SpecSchema>,
    defaults: Option<Defaulter>,
}

/// Fills in a spec's server-side defaults that need the store (a mutating admission step,
/// run before the spec is checked), e.g. the default runtime of a workload instance.
pub type Defaulter =
    fn(Arc<dyn Store>, Value) -> Pin<Box<dyn Future<Output = Result<Value, Error>> + Send>>;

/// Adds a kind's spec schema (and the schemas it refers to) to a list; returns its name.
type SpecSchema = fn(&mut Vec<(String, RefOr<Schema>)>) -> String;

/// The top-level properties of `T`'s schema documented as UUIDs.
fn uuid_fields<T: ToSchema>() -> Vec<String> {
    let schema = serde_json::to_value(T::schema()).unwrap_or_default();
    let Some(properties) = schema["properties"].as_object() else {
        return Vec::new();
    };
    properties
        .iter()
        .filter(|(_, property)| property.to_string().contains(r#""format":"uuid""#))
        .map(|(field, _)| field.clone())
        .collect()
}

fn spec_schema<T: ToSchema>(schemas: &mut Vec<(String, RefOr<Schema>)>) -> String {
    let name = T::name().into_owned();
    schemas.push((name.clone(), T::schema()));
    T::schemas(schemas);
    name
}

impl KindEntry {
    /// Decodes `spec` as this kind (unknown fields, wrong types and bad enum values are
    /// refused naming the field), validates it, and returns it normalized with its references.
    pub fn check(&self, spec: &Value) -> Result<CheckedSpec, Error> {
        match &self.check {
            Checker::Typed(check) => check(spec),
            Checker::Schema(check) => check.check(spec),
        }
    }

    /// The entry of a kind of one's own (a `KindDefinition`).
    pub(crate) fn custom(
        kind: &'static str,
        plural: String,
        secret_field: Option<&'static str>,
        sealed_fields: Vec<String>,
        check: crate::custom::SchemaCheck,
    ) -> KindEntry {
        KindEntry {
            kind,
            plural,
            secret_field,
            sealed_fields,
            reference_fields: check.reference_fields().map(str::to_owned).collect(),
            check: Checker::Schema(Arc::new(check)),
            schema: None,
            defaults: None,
        }
    }

    /// The JSON Schema of a kind of one's own, if this is one.
    pub fn custom_schema(&self) -> Option<&Value> {
        match &self.check {
            Checker::Schema(check) => Some(&check.schema),
            Checker::Typed(_) => None,
        }
    }

    /// Fills in the kind's store-dependent defaults ([`KindRegistry::defaulted`]), if any.
    pub async fn fill_defaults(&self, store: &Arc<dyn Store>, spec: Value) -> Result<Value, Error> {
        match self.defaults {
            Some(defaults) => defaults(store.clone(), spec).await,
            None => Ok(spec),
        }
    }

    /// Adds the spec's OpenAPI schema and those it refers to; returns its name, or `None` if
    /// the kind was registered without one (its spec is then documented as any object).
    pub fn spec_schema(&self, schemas: &mut Vec<(String, RefOr<Schema>)>) -> Option<String> {
        self.schema.map(|add| add(schemas))
    }
}

/// The kinds an API serves, by URL segment. One generic handler set serves them all.
///
/// ```
/// use serde::{Deserialize, Serialize};
/// use threeport_core::ApiObject;
/// use threeport_server::KindRegistry;
///
/// #[derive(Debug, Clone, Serialize, Deserialize)]
/// #[serde(deny_unknown_fields)]
/// struct WorkloadDefinition { yaml: String }
/// impl ApiObject for WorkloadDefinition {
///     const KIND: &'static str = "WorkloadDefinition";
///     type Status = ();
/// }
///
/// let kinds = KindRegistry::new().with::<WorkloadDefinition>();
/// assert_eq!(kinds.by_plural("workload-definitions").unwrap().kind, "WorkloadDefinition");
/// ```
#[derive(Debug, Clone, Default)]
pub struct KindRegistry {
    by_plural: BTreeMap<String, Arc<KindEntry>>,
    custom: Arc<crate::custom::CustomKinds>,
}

impl KindRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Serves kind `T` at `/v0/<plural of T::KIND in kebab case>`, with what its type
    /// declares: a secret field ([`ApiObject::SECRET_FIELD`], taken out of a creation and
    /// handed to the controller in memory only) and sealed fields
    /// ([`ApiObject::SEALED_FIELDS`], encrypted at rest).
    pub fn with<T: ApiObject>(mut self) -> Self {
        let plural = plural_path(T::KIND);
        self.by_plural.insert(
            plural.clone(),
            Arc::new(KindEntry {
                kind: T::KIND,
                plural,
                secret_field: T::SECRET_FIELD,
                sealed_fields: T::SEALED_FIELDS.iter().map(|f| f.to_string()).collect(),
                reference_fields: Vec::new(),
                check: Checker::Typed(check_spec::<T>),
                schema: None,
                defaults: None,
            }),
        );
        self
    }

    /// [`with`](KindRegistry::with), documented in the OpenAPI document with its schema (from
    /// `#[derive(utoipa::ToSchema)]`): one line per served kind.
    pub fn serve<T: ApiObject + ToSchema>(self) -> Self {
        self.with::<T>().documented::<T>()
    }

    /// Documents the already registered kind `T` with its OpenAPI schema (from
    /// `#[derive(utoipa::ToSchema)]`).
    ///
    /// # Panics
    /// If `T` is not registered: a programming error in how the registry is built.
    pub fn documented<T: ApiObject + ToSchema>(mut self) -> Self {
        let entry = self
            .by_plural
            .get_mut(&plural_path(T::KIND))
            .unwrap_or_else(|| panic!("register {} before documenting it", T::KIND));
        let entry = Arc::make_mut(entry);
        entry.schema = Some(spec_schema::<T>);
        entry.reference_fields = uuid_fields::<T>();
        self
    }

    /// Fills in the already registered kind `T`'s store-dependent defaults with `defaults`
    /// on every create and spec write, before the spec is checked.
    ///
    /// # Panics
    /// If `T` is not registered: a programming error in how the registry is built.
    pub fn defaulted<T: ApiObject>(mut self, defaults: Defaulter) -> Self {
        let entry = self
            .by_plural
            .get_mut(&plural_path(T::KIND))
            .unwrap_or_else(|| panic!("register {} before defaulting it", T::KIND));
        Arc::make_mut(entry).defaults = Some(defaults);
        self
    }

    /// The built-in kind served at `plural`.
    pub fn by_plural(&self, plural: &str) -> Option<&KindEntry> {
        self.by_plural.get(plural).map(|entry| &**entry)
    }

    /// Every built-in kind.
    pub fn entries(&self) -> impl Iterator<Item = &KindEntry> {
        self.by_plural.values().map(|entry| &**entry)
    }

    /// The kind served at `plural`: built in, or registered by a `KindDefinition` in `store`
    /// (as it is now: a changed definition is seen by the next request).
    pub async fn lookup(
        &self,
        store: &Arc<dyn Store>,
        plural: &str,
    ) -> Result<Option<Arc<KindEntry>>, Error> {
        if let Some(entry) = self.by_plural.get(plural) {
            return Ok(Some(entry.clone()));
        }
        self.custom.by_plural(store, plural).await
    }

    /// The kind named `kind`: built in, or registered by a `KindDefinition` in `store`.
    pub async fn lookup_kind(
        &self,
        store: &Arc<dyn Store>,
        kind: &str,
    ) -> Result<Option<Arc<KindEntry>>, Error> {
        if let Some(entry) = self.by_plural.values().find(|e| e.kind == kind) {
            return Ok(Some(entry.clone()));
        }
        self.custom.by_kind(store, kind).await
    }

    /// Every kind served: the built-in ones by kind name, then those registered by a
    /// `KindDefinition` in `store`.
    pub async fn served(&self, store: &Arc<dyn Store>) -> Result<Vec<Arc<KindEntry>>, Error> {
        let mut kinds: Vec<Arc<KindEntry>> = self.by_plural.values().cloned().collect();
        kinds.sort_by_key(|entry| entry.kind);
        kinds.extend(self.custom_entries(store).await?);
        Ok(kinds)
    }

    /// Every kind registered by a `KindDefinition` in `store`.
    pub async fn custom_entries(
        &self,
        store: &Arc<dyn Store>,
    ) -> Result<Vec<Arc<KindEntry>>, Error> {
        self.custom.all(store).await
    }
}

fn check_spec<T: ApiObject>(spec: &Value) -> Result<CheckedSpec, Error> {
    let typed: T = serde_path_to_error::deserialize(spec).map_err(|err| {
        let path = err.path().to_string();
        let message = err.into_inner().to_string();
        let field = if path == "." {
            // A missing field is reported at its parent: name it from the message.
            match message
                .strip_prefix("missing field `")
                .and_then(|m| m.split('`').next())
            {
                Some(missing) => format!("spec.{missing}"),
                None => "spec".to_owned(),
            }
        } else {
            format!("spec.{path}")
        };
        Error::invalid(field, message)
    })?;
    typed.validate()?;
    Ok(CheckedSpec {
        spec: serde_json::to_value(&typed)?,
        references: typed.references(),
    })
}
