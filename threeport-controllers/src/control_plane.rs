//! Control planes made by control planes: a `ControlPlaneInstance` installs threeport's own
//! chart (`deploy/helm/threeport`) onto its runtime as a Helm workload it owns, with the
//! definition's controllers, image and authentication, the database and sealing key from a
//! Secret the instance names (never through threeport's store), and an API token minted for
//! the parent: its hash goes to the child, the token itself sealed into the instance's status
//! with the child's endpoint. Deleting the instance uninstalls the child.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::json;
use threeport_api::model::{
    ControlPlaneDefinition, ControlPlaneInstance, HelmWorkloadDefinition, KubernetesRuntimeInstance,
};
use threeport_core::object::ConditionStatus;
use threeport_core::{Action, ApiObject, Context, Object, ObjectRef, ReconcileError, Reconciler};

use crate::deploy::{OwnedRelease, dns_name, get_by_name, release_owned};
use crate::seal::Sealer;

/// Condition of a control-plane instance: whether its chart is released.
pub const INSTALLED: &str = "Installed";

/// The field the parent's token for a child is sealed under.
pub const TOKEN_FIELD: &str = "status.details.token";

/// Where threeport's chart comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControlPlaneChart {
    /// Chart repository (`https://…`) or OCI registry path (`oci://…`).
    pub repo: String,
    /// Chart name.
    pub chart: String,
    /// Chart version.
    pub version: String,
}

impl Default for ControlPlaneChart {
    fn default() -> Self {
        ControlPlaneChart {
            repo: "oci://ghcr.io/threeport/charts".to_owned(),
            chart: "threeport".to_owned(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
        }
    }
}

/// Reconciles `ControlPlaneInstance`.
#[derive(Debug, Clone)]
pub struct ControlPlaneReconciler {
    sealer: Arc<Sealer>,
    chart: ControlPlaneChart,
    public_url: Option<String>,
}

impl ControlPlaneReconciler {
    /// A controller minting tokens with `sealer`, installing `chart`.
    pub fn new(sealer: Arc<Sealer>, chart: ControlPlaneChart) -> Self {
        ControlPlaneReconciler {
            sealer,
            chart,
            public_url: None,
        }
    }

    /// This control plane's API as its children reach it (`threeport-server --public-url`):
    /// each child is told it with the instance that made it (its `/version` shows both).
    pub fn with_public_url(mut self, url: Option<String>) -> Self {
        self.public_url = url;
        self
    }
}

/// The parent's API token for child `instance`: derived from the server's key, so a reconcile
/// that resumes mints the same one.
fn child_token(sealer: &Sealer, instance: &Object<ControlPlaneInstance>) -> String {
    let id = instance.id();
    format!(
        "tp_{}{}",
        sealer.derive(&format!("control-plane-token:{id}:0")),
        sealer.derive(&format!("control-plane-token:{id}:1"))
    )
}

/// SHA-256 of `token`, hex: what an API's token file holds.
pub fn token_hash(token: &str) -> String {
    hex::encode(ring::digest::digest(
        &ring::digest::SHA256,
        token.as_bytes(),
    ))
}

/// The chart's controller groups for `definition`: each controller with an image of its own
/// alone in a group running that image, the rest together (all of them when the definition
/// lists none).
fn controller_groups(definition: &ControlPlaneDefinition) -> Vec<serde_json::Value> {
    let listed: Vec<String> = if definition.controllers.is_empty() {
        crate::available().map(str::to_owned).collect()
    } else {
        definition.controllers.clone()
    };
    let mut groups = Vec::new();
    let shared: Vec<&String> = listed
        .iter()
        .filter(|c| !definition.controller_images.contains_key(*c))
        .collect();
    if !shared.is_empty() {
        groups.push(json!({"name": "all", "controllers": shared}));
    }
    for (controller, image) in &definition.controller_images {
        groups.push(json!({"name": controller, "controllers": [controller], "image": image}));
    }
    groups
}

/// `registry/name:tag` → (`registry/name`, `tag`); no tag: `latest`.
fn split_image(image: &str) -> (String, String) {
    match image.rsplit_once(':') {
        Some((repository, tag)) if !tag.contains('/') => (repository.to_owned(), tag.to_owned()),
        _ => (image.to_owned(), "latest".to_owned()),
    }
}

#[async_trait]
impl Reconciler for ControlPlaneReconciler {
    type Object = ControlPlaneInstance;

    async fn reconcile(
        &self,
        instance: &mut Object<ControlPlaneInstance>,
        ctx: &Context,
    ) -> Result<Action, ReconcileError> {
        let definition = ctx
            .api::<ControlPlaneDefinition>()
            .get(instance.spec.definition)
            .await?
            .spec;
        let runtime = ctx
            .api::<KubernetesRuntimeInstance>()
            .get(instance.spec.runtime)
            .await?;
        let namespace = instance.spec.namespace.clone();
        let Some(secret) = instance.spec.secret.clone() else {
            return Err(ReconcileError::terminal(format!(
                "secret: a control plane needs a Secret in namespace {namespace} with its \
                 database URL (key `url`) and sealing key (key `key`), named in `secret`"
            )));
        };
        let fullname = dns_name(&instance.meta.name, 36);
        let token = child_token(&self.sealer, instance);
        let mut values = json!({
            "fullnameOverride": fullname,
            "auth": {"enabled": definition.auth_enabled,
                     "tokenHashes": [token_hash(&token)]},
            "database": {"existingSecret": secret},
            "encryption": {"existingSecret": secret},
            // The child's side of the link: who made it.
            "parent": {"apiUrl": self.public_url.clone().unwrap_or_default(),
                       "controlPlaneInstance": instance.id().to_string()},
        });
        if let Some(tls_secret) = &instance.spec.tls_secret {
            values["tls"] = json!({"enabled": true, "existingSecret": tls_secret});
        } else if let Some(issuer) = &instance.spec.tls_issuer {
            let service = format!("{fullname}-api");
            values["tls"] = json!({"enabled": true, "certManager": {
                "enabled": true,
                "issuerRef": {"kind": "ClusterIssuer", "name": issuer},
                // The chart adds `<service>.<namespace>.svc`.
                "dnsNames": [service.clone(), format!("{service}.{namespace}.svc.cluster.local")],
            }});
        }
        if let Some(image) = &definition.image {
            let (repository, tag) = split_image(image);
            values["image"] = json!({"repository": repository, "tag": tag});
        }
        if !definition.controllers.is_empty() || !definition.controller_images.is_empty() {
            values["controllers"] = json!({"groups": controller_groups(&definition)});
        }
        let name = format!("control-plane-{}", instance.meta.name);
        let owner = ObjectRef::new(ControlPlaneInstance::KIND, instance.id());
        let release = OwnedRelease {
            name: &name,
            repo: &self.chart.repo,
            chart: &self.chart.chart,
            version: &self.chart.version,
            values: &values,
            additional: &[],
            runtime: runtime.id(),
            namespace: &namespace,
            owner,
        };
        let before = get_by_name::<HelmWorkloadDefinition>(ctx, &name).await?;
        let release = release_owned(ctx, release, before).await?;
        let details = &mut instance.status.details;
        details.release = Some(name.clone());
        let scheme = if instance.spec.tls() { "https" } else { "http" };
        details.endpoint = Some(format!("{scheme}://{fullname}-api.{namespace}.svc:443"));
        if details.token.is_none() {
            details.token = Some(self.sealer.seal(TOKEN_FIELD, &token)?);
        }
        if release.is_reconciled() {
            instance.status.set_condition(
                INSTALLED,
                ConditionStatus::True,
                "Released",
                format!("released on runtime {}", runtime.meta.name),
            );
            Ok(Action::Done)
        } else {
            // It follows the release it owns; the requeue is a fallback.
            instance.status.set_condition(
                INSTALLED,
                ConditionStatus::False,
                "Releasing",
                format!("waiting for {name}"),
            );
            Ok(Action::RequeueAfter(Duration::from_secs(30)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn images_split_into_repository_and_tag() {
        assert_eq!(
            split_image("registry.example.com:5000/threeport-server:1.2.3"),
            (
                "registry.example.com:5000/threeport-server".to_owned(),
                "1.2.3".to_owned()
            )
        );
        assert_eq!(
            split_image("registry.example.com:5000/threeport-server"),
            (
                "registry.example.com:5000/threeport-server".to_owned(),
                "latest".to_owned()
            )
        );
    }
}
