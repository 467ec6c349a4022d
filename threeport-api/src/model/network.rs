//! Network support services: gateways and domain names.

use serde::{Deserialize, Serialize};
use threeport_core::object::Reference;
use threeport_core::{ApiObject, ObjectId, ValidationError};
use utoipa::ToSchema;

use super::{WorkloadInstance, dns_label, domain, maybe_reference, reference};

fn default_path() -> String {
    "/".to_owned()
}

/// An HTTP(S) port of a gateway.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GatewayHttpPort {
    /// Port number.
    pub port: u16,
    /// Path prefix routed to the service.
    #[serde(default = "default_path")]
    pub path: String,
    /// Terminate TLS (with a certificate for the domain).
    #[serde(default)]
    pub tls_enabled: bool,
    /// Redirect plain HTTP to HTTPS.
    #[serde(default)]
    pub https_redirect: bool,
}

/// A TCP port of a gateway.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GatewayTcpPort {
    /// Port number.
    pub port: u16,
    /// Terminate TLS.
    #[serde(default)]
    pub tls_enabled: bool,
}

/// Ingress to a workload's service.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GatewayDefinition {
    /// HTTP ports.
    #[serde(default)]
    pub http_ports: Vec<GatewayHttpPort>,
    /// TCP ports.
    #[serde(default)]
    pub tcp_ports: Vec<GatewayTcpPort>,
    /// The domain it answers for.
    #[serde(default)]
    #[schema(value_type = Option<String>, format = Uuid)]
    pub domain_name: Option<ObjectId>,
    /// Subdomain under that domain.
    #[serde(default)]
    pub subdomain: Option<String>,
    /// The Kubernetes service traffic goes to.
    pub service_name: String,
}

impl ApiObject for GatewayDefinition {
    const KIND: &'static str = "GatewayDefinition";
    type Status = ();
    fn validate(&self) -> Result<(), ValidationError> {
        if self.http_ports.is_empty() && self.tcp_ports.is_empty() {
            return Err(ValidationError::new(
                "http_ports",
                "a gateway needs at least one port",
            ));
        }
        for (i, port) in self.http_ports.iter().enumerate() {
            if port.port == 0 {
                return Err(ValidationError::new(
                    format!("http_ports[{i}].port"),
                    "must not be 0",
                ));
            }
            if !port.path.starts_with('/') {
                return Err(ValidationError::new(
                    format!("http_ports[{i}].path"),
                    "must start with /",
                ));
            }
            if port.https_redirect && port.tls_enabled {
                return Err(ValidationError::new(
                    format!("http_ports[{i}].https_redirect"),
                    "a TLS port cannot also redirect to HTTPS",
                ));
            }
        }
        for (i, port) in self.tcp_ports.iter().enumerate() {
            if port.port == 0 {
                return Err(ValidationError::new(
                    format!("tcp_ports[{i}].port"),
                    "must not be 0",
                ));
            }
        }
        if let Some(subdomain) = &self.subdomain {
            if self.domain_name.is_none() {
                return Err(ValidationError::new("subdomain", "needs a domain_name"));
            }
            dns_label("subdomain", subdomain)?;
        }
        dns_label("service_name", &self.service_name)
    }
    fn references(&self) -> Vec<Reference> {
        maybe_reference::<DomainNameDefinition>("domain_name", self.domain_name)
            .into_iter()
            .collect()
    }
}

/// A gateway in front of one workload instance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GatewayInstance {
    /// Its definition.
    #[schema(value_type = String, format = Uuid)]
    pub definition: ObjectId,
    /// The workload it serves.
    #[schema(value_type = String, format = Uuid)]
    pub workload_instance: ObjectId,
}

impl ApiObject for GatewayInstance {
    const KIND: &'static str = "GatewayInstance";
    type Status = ();
    fn references(&self) -> Vec<Reference> {
        vec![
            reference::<GatewayDefinition>("definition", self.definition),
            reference::<WorkloadInstance>("workload_instance", self.workload_instance),
        ]
    }
}

/// Visibility of a DNS zone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Zone {
    /// Resolvable on the internet.
    #[default]
    Public,
    /// Resolvable inside the network only.
    Private,
}

/// A DNS domain whose records threeport manages.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DomainNameDefinition {
    /// The domain (`example.com`).
    pub domain: String,
    /// Zone visibility.
    #[serde(default)]
    pub zone: Zone,
    /// Contact for certificate issuance.
    pub admin_email: String,
}

impl ApiObject for DomainNameDefinition {
    const KIND: &'static str = "DomainNameDefinition";
    type Status = ();
    fn validate(&self) -> Result<(), ValidationError> {
        domain("domain", &self.domain)?;
        let email_ok = self
            .admin_email
            .split_once('@')
            .is_some_and(|(user, host)| !user.is_empty() && host.contains('.'));
        if !email_ok {
            return Err(ValidationError::new(
                "admin_email",
                "must be an email address",
            ));
        }
        Ok(())
    }
}

/// DNS records for one workload instance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DomainNameInstance {
    /// Its definition.
    #[schema(value_type = String, format = Uuid)]
    pub definition: ObjectId,
    /// The workload it points at.
    #[schema(value_type = String, format = Uuid)]
    pub workload_instance: ObjectId,
}

impl ApiObject for DomainNameInstance {
    const KIND: &'static str = "DomainNameInstance";
    type Status = ();
    fn references(&self) -> Vec<Reference> {
        vec![
            reference::<DomainNameDefinition>("definition", self.definition),
            reference::<WorkloadInstance>("workload_instance", self.workload_instance),
        ]
    }
}
