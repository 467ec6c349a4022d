//! Kinds of one's own: what a `KindDefinition` registers is served at `/v0/<plural>` by the
//! generic handlers, each spec checked against the definition's JSON Schema (draft 2020-12),
//! its declared reference fields made references. Every API replica reads the definitions from
//! the store (a cached, compiled schema is used while the definition's version is unchanged),
//! so a kind is served everywhere as soon as it is created, and a changed schema applies to
//! the next request.
//!
//! Every object of a custom kind references its `KindDefinition` (field `$kind`), so a kind
//! with objects cannot be deleted (409 naming one). A schema change is refused (409) when an
//! existing object would not satisfy it.

use std::collections::{BTreeMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use serde_json::Value;
use threeport_api::model::KindDefinition;
use threeport_core::object::Reference;
use threeport_core::store::ListQuery;
use threeport_core::{Api, ApiObject, Error, ErrorKind, Object, ObjectId, Store};

use crate::registry::{CheckedSpec, KindEntry};

/// The reference field every object of a custom kind has to its `KindDefinition`.
pub const KIND_REFERENCE: &str = "$kind";

/// A compiled kind definition: checks specs of its kind.
pub struct SchemaCheck {
    /// The `KindDefinition` it was compiled from.
    pub definition: ObjectId,
    /// The schema, as given.
    pub schema: Value,
    validator: jsonschema::Validator,
    references: BTreeMap<String, String>,
}

impl SchemaCheck {
    /// Compiles `definition`'s schema. `Invalid` (field `spec.schema`) if it is not a valid
    /// JSON Schema.
    pub fn compile(id: ObjectId, definition: &KindDefinition) -> Result<SchemaCheck, Error> {
        let validator = jsonschema::draft202012::new(&definition.schema).map_err(|e| {
            Error::invalid(
                "spec.schema",
                format!("not a valid JSON Schema (2020-12): {e}"),
            )
        })?;
        Ok(SchemaCheck {
            definition: id,
            schema: definition.schema.clone(),
            validator,
            references: definition.references.clone(),
        })
    }

    /// The spec fields that reference other objects.
    pub fn reference_fields(&self) -> impl Iterator<Item = &str> {
        self.references.keys().map(String::as_str)
    }

    /// Checks `spec`: the schema's first violation is refused naming its field; each
    /// reference field must hold an object id.
    pub fn check(&self, spec: &Value) -> Result<CheckedSpec, Error> {
        if let Err(err) = self.validator.validate(spec) {
            let path = err.instance_path().to_string();
            let field = if path.is_empty() {
                "spec".to_owned()
            } else {
                format!("spec{}", path.replace('/', "."))
            };
            return Err(Error::invalid(field, err.to_string()));
        }
        let mut references = vec![Reference::new(
            KIND_REFERENCE,
            KindDefinition::KIND,
            self.definition,
        )];
        for (field, kind) in &self.references {
            match &spec[field] {
                Value::Null => {}
                Value::String(text) => {
                    let id: ObjectId = text.parse().map_err(|_| {
                        Error::invalid(format!("spec.{field}"), "must be an object id (UUID)")
                    })?;
                    references.push(Reference::new(field.clone(), kind.clone(), id));
                }
                _ => {
                    return Err(Error::invalid(
                        format!("spec.{field}"),
                        "must be an object id (UUID)",
                    ));
                }
            }
        }
        Ok(CheckedSpec {
            spec: spec.clone(),
            references,
        })
    }
}

/// Kind and field names live as long as the process (a registry's entries name them with a
/// `&'static str`): each distinct name is kept once.
fn intern(name: &str) -> &'static str {
    static NAMES: Mutex<Option<HashSet<&'static str>>> = Mutex::new(None);
    let mut names = NAMES.lock().unwrap();
    let names = names.get_or_insert_with(HashSet::new);
    if let Some(known) = names.get(name) {
        return known;
    }
    let leaked: &'static str = Box::leak(name.to_owned().into_boxed_str());
    names.insert(leaked);
    leaked
}

/// A compiled definition and the version it was compiled from.
#[derive(Clone)]
struct Cached {
    version: u64,
    entry: Arc<KindEntry>,
}

/// The custom kinds of a store, compiled once per definition version.
#[derive(Default)]
pub struct CustomKinds {
    cache: Mutex<BTreeMap<ObjectId, Cached>>,
}

impl std::fmt::Debug for CustomKinds {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CustomKinds").finish_non_exhaustive()
    }
}

impl CustomKinds {
    /// Every kind the store's `KindDefinition`s register (those being deleted included: their
    /// objects are still served until they go).
    pub async fn all(&self, store: &Arc<dyn Store>) -> Result<Vec<Arc<KindEntry>>, Error> {
        let definitions = Api::<KindDefinition>::new(store.clone())
            .list_all(&ListQuery::default())
            .await?;
        let mut entries = Vec::with_capacity(definitions.len());
        for definition in &definitions {
            entries.push(self.entry(definition)?);
        }
        let live: HashSet<ObjectId> = definitions.iter().map(Object::id).collect();
        self.cache.lock().unwrap().retain(|id, _| live.contains(id));
        Ok(entries)
    }

    /// The kind served at `plural`, if a definition registers it.
    pub async fn by_plural(
        &self,
        store: &Arc<dyn Store>,
        plural: &str,
    ) -> Result<Option<Arc<KindEntry>>, Error> {
        self.find(store, |entry| entry.plural == plural).await
    }

    /// The kind named `kind`, if a definition registers it.
    pub async fn by_kind(
        &self,
        store: &Arc<dyn Store>,
        kind: &str,
    ) -> Result<Option<Arc<KindEntry>>, Error> {
        self.find(store, |entry| entry.kind == kind).await
    }

    async fn find(
        &self,
        store: &Arc<dyn Store>,
        wanted: impl Fn(&KindEntry) -> bool,
    ) -> Result<Option<Arc<KindEntry>>, Error> {
        Ok(self
            .all(store)
            .await?
            .into_iter()
            .find(|entry| wanted(entry)))
    }

    fn entry(&self, definition: &Object<KindDefinition>) -> Result<Arc<KindEntry>, Error> {
        let id = definition.id();
        if let Some(cached) = self.cache.lock().unwrap().get(&id)
            && cached.version == definition.meta.version
        {
            return Ok(cached.entry.clone());
        }
        let spec = &definition.spec;
        let entry = Arc::new(KindEntry::custom(
            intern(&spec.kind),
            spec.plural(),
            spec.secret_field.as_deref().map(intern),
            spec.sealed_fields.clone(),
            SchemaCheck::compile(id, spec)?,
        ));
        self.cache.lock().unwrap().insert(
            id,
            Cached {
                version: definition.meta.version,
                entry: entry.clone(),
            },
        );
        Ok(entry)
    }
}

/// The admission check of a `KindDefinition` write (run before it is stored): the schema
/// compiles, the kind is not built in, no other definition has its kind or plural, and every
/// existing object of the kind satisfies the (new) schema.
pub fn admit_kind_definition(
    store: Arc<dyn Store>,
    spec: Value,
) -> Pin<Box<dyn Future<Output = Result<Value, Error>> + Send>> {
    Box::pin(async move {
        let Ok(definition) = serde_json::from_value::<KindDefinition>(spec.clone()) else {
            // The kind's own decoding names the field.
            return Ok(spec);
        };
        definition.validate()?;
        let plural = definition.plural();
        let builtin = crate::model::registry();
        if builtin
            .entries()
            .any(|e| e.kind == definition.kind || e.plural == plural)
        {
            return Err(Error::invalid(
                "spec.kind",
                format!("{} is a built-in kind", definition.kind),
            ));
        }
        let check = SchemaCheck::compile(ObjectId::new(), &definition)?;
        let others = Api::<KindDefinition>::new(store.clone())
            .list_all(&ListQuery::default())
            .await?;
        for other in &others {
            let same_kind = other.spec.kind == definition.kind;
            let same_plural = other.spec.plural() == plural;
            if same_kind != same_plural {
                return Err(Error::conflict(format!(
                    "KindDefinition {} already serves {} at /v0/{}",
                    other.meta.name,
                    other.spec.kind,
                    other.spec.plural()
                )));
            }
        }
        // Existing objects must still be valid.
        let mut query = ListQuery::default();
        loop {
            let page = match store.list(&definition.kind, &query).await {
                Ok(page) => page,
                Err(err) if err.kind() == ErrorKind::Invalid => break,
                Err(err) => return Err(err),
            };
            for object in &page.items {
                if let Err(err) = check.check(&object.spec) {
                    return Err(Error::conflict(format!(
                        "the schema change would break {} {} ({}): {err}",
                        definition.kind, object.meta.name, object.meta.id
                    )));
                }
            }
            match page.next {
                Some(next) => query.after = Some(next),
                None => break,
            }
        }
        Ok(spec)
    })
}
