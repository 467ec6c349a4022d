//! Network support services: gateways and domain names.

use serde::{Deserialize, Serialize};
use threeport_core::object::Reference;
use threeport_core::{ApiObject, ObjectId, ValidationError};
use utoipa::ToSchema;

use super::{AwsAccount, WorkloadInstance, dns_label, domain, maybe_reference, reference};

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
    /// The service's port traffic goes to; `None`: the same number as `port`.
    #[serde(default)]
    pub service_port: Option<u16>,
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
    /// The service's port traffic goes to; `None`: the same number as `port`.
    #[serde(default)]
    pub service_port: Option<u16>,
}

/// The ACME server certificates for TLS ports come from (by cert-manager, DNS01 on the
/// domain's Route 53 zone).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum CertificateIssuer {
    /// Let's Encrypt's staging server: untrusted certificates, generous rate limits; for
    /// trying things out.
    #[default]
    LetsencryptStaging,
    /// Let's Encrypt's production server: trusted certificates.
    LetsencryptProduction,
}

impl CertificateIssuer {
    /// Its short name (`staging`, `production`), used in the ClusterIssuer's name.
    pub fn short_name(self) -> &'static str {
        match self {
            CertificateIssuer::LetsencryptStaging => "staging",
            CertificateIssuer::LetsencryptProduction => "production",
        }
    }

    /// The ACME directory URL.
    pub fn server(self) -> &'static str {
        match self {
            CertificateIssuer::LetsencryptStaging => {
                "https://acme-staging-v02.api.letsencrypt.org/directory"
            }
            CertificateIssuer::LetsencryptProduction => {
                "https://acme-v02.api.letsencrypt.org/directory"
            }
        }
    }
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
    /// Where the certificates of TLS ports come from.
    #[serde(default)]
    pub certificate_issuer: CertificateIssuer,
    /// An existing GatewayClass to use; `None`: threeport's `threeport` class, served by Envoy
    /// Gateway, which threeport installs on the runtime when first needed.
    #[serde(default)]
    pub gateway_class: Option<String>,
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
            if port.tls_enabled && self.domain_name.is_none() {
                return Err(ValidationError::new(
                    format!("http_ports[{i}].tls_enabled"),
                    "TLS needs a domain_name to issue the certificate for",
                ));
            }
            if port.service_port == Some(0) {
                return Err(ValidationError::new(
                    format!("http_ports[{i}].service_port"),
                    "must not be 0",
                ));
            }
            if self.http_ports[..i].iter().any(|p| p.port == port.port) {
                return Err(ValidationError::new(
                    format!("http_ports[{i}].port"),
                    format!("port {} is listed twice", port.port),
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
            if port.service_port == Some(0) {
                return Err(ValidationError::new(
                    format!("tcp_ports[{i}].service_port"),
                    "must not be 0",
                ));
            }
            if port.tls_enabled && self.domain_name.is_none() {
                return Err(ValidationError::new(
                    format!("tcp_ports[{i}].tls_enabled"),
                    "TLS needs a domain_name to issue the certificate for",
                ));
            }
            let taken = self.http_ports.iter().any(|p| p.port == port.port)
                || self.tcp_ports[..i].iter().any(|p| p.port == port.port);
            if taken {
                return Err(ValidationError::new(
                    format!("tcp_ports[{i}].port"),
                    format!("port {} is listed twice", port.port),
                ));
            }
        }
        if let Some(subdomain) = &self.subdomain {
            if self.domain_name.is_none() {
                return Err(ValidationError::new("subdomain", "needs a domain_name"));
            }
            dns_label("subdomain", subdomain)?;
        }
        if let Some(class) = &self.gateway_class {
            dns_label("gateway_class", class)?;
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

/// What the gateway controller put on the workload's runtime.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, ToSchema)]
pub struct GatewayInstanceStatus {
    /// The runtime it is on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, format = Uuid)]
    pub runtime: Option<ObjectId>,
    /// The host name it answers for (`shop.example.com`), if it has a domain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// The GatewayClass serving it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway_class: Option<String>,
    /// The Kubernetes objects it applied (Gateway, routes, Certificate), in the workload's
    /// namespace; removed with it.
    #[serde(default)]
    pub resources: Vec<super::AppliedResource>,
}

impl ApiObject for GatewayInstance {
    const KIND: &'static str = "GatewayInstance";
    type Status = GatewayInstanceStatus;
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
    /// The AWS account whose Route 53 holds the zone; `None`: the default account.
    #[serde(default)]
    #[schema(value_type = Option<String>, format = Uuid)]
    pub aws_account: Option<ObjectId>,
    /// Create the hosted zone if there is none (its name servers must then be delegated to by
    /// hand); otherwise a missing zone is an error naming it.
    #[serde(default)]
    pub create_zone: bool,
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
        if self.zone == Zone::Private && self.create_zone {
            return Err(ValidationError::new(
                "create_zone",
                "threeport creates public zones only: make the private zone and name it",
            ));
        }
        Ok(())
    }
    fn references(&self) -> Vec<Reference> {
        maybe_reference::<AwsAccount>("aws_account", self.aws_account)
            .into_iter()
            .collect()
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

/// The zone a domain-name instance publishes into.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, ToSchema)]
pub struct DomainNameInstanceStatus {
    /// The runtime its workload runs on (where external-dns publishes from).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, format = Uuid)]
    pub runtime: Option<ObjectId>,
    /// The domain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    /// The Route 53 hosted zone's id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hosted_zone_id: Option<String>,
    /// The region the zone's clients (external-dns, cert-manager) sign requests for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// Whether threeport created the zone (it still never deletes one: records of other
    /// tools may live in it).
    #[serde(default)]
    pub zone_created: bool,
}

impl ApiObject for DomainNameInstance {
    const KIND: &'static str = "DomainNameInstance";
    type Status = DomainNameInstanceStatus;
    fn references(&self) -> Vec<Reference> {
        vec![
            reference::<DomainNameDefinition>("definition", self.definition),
            reference::<WorkloadInstance>("workload_instance", self.workload_instance),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gateway(http: serde_json::Value, tcp: serde_json::Value, domain: bool) -> GatewayDefinition {
        let mut spec = serde_json::json!({"http_ports": http, "tcp_ports": tcp,
                                          "service_name": "web"});
        if domain {
            spec["domain_name"] = serde_json::json!(ObjectId::new());
        }
        serde_json::from_value(spec).unwrap()
    }

    fn field_of(spec: &GatewayDefinition) -> Option<String> {
        spec.validate().err().map(|e| e.field.clone())
    }

    #[test]
    fn gateway_ports_are_checked_field_by_field() {
        let ok = gateway(
            serde_json::json!([{"port": 80, "https_redirect": true},
                               {"port": 443, "tls_enabled": true, "service_port": 8080}]),
            serde_json::json!([{"port": 5432}]),
            true,
        );
        assert_eq!(field_of(&ok), None);
        assert_eq!(ok.certificate_issuer, CertificateIssuer::LetsencryptStaging);
        let cases = [
            // TLS needs a domain to issue the certificate for.
            (
                gateway(
                    serde_json::json!([{"port": 443, "tls_enabled": true}]),
                    serde_json::json!([]),
                    false,
                ),
                "http_ports[0].tls_enabled",
            ),
            (
                gateway(
                    serde_json::json!([]),
                    serde_json::json!([{"port": 6443, "tls_enabled": true}]),
                    false,
                ),
                "tcp_ports[0].tls_enabled",
            ),
            (
                gateway(
                    serde_json::json!([{"port": 80}, {"port": 80}]),
                    serde_json::json!([]),
                    false,
                ),
                "http_ports[1].port",
            ),
            (
                gateway(
                    serde_json::json!([{"port": 80}]),
                    serde_json::json!([{"port": 80}]),
                    false,
                ),
                "tcp_ports[0].port",
            ),
            (
                gateway(
                    serde_json::json!([{"port": 80, "service_port": 0}]),
                    serde_json::json!([]),
                    false,
                ),
                "http_ports[0].service_port",
            ),
        ];
        for (spec, field) in cases {
            assert_eq!(field_of(&spec).as_deref(), Some(field), "{spec:?}");
        }
        let mut classed = ok.clone();
        classed.gateway_class = Some("Not A Class".into());
        assert_eq!(field_of(&classed).as_deref(), Some("gateway_class"));
    }

    #[test]
    fn issuers_name_their_acme_servers() {
        assert_eq!(
            CertificateIssuer::LetsencryptProduction.short_name(),
            "production"
        );
        assert!(
            CertificateIssuer::LetsencryptStaging
                .server()
                .contains("staging")
        );
        let parsed: CertificateIssuer = serde_json::from_str("\"letsencrypt_production\"").unwrap();
        assert_eq!(parsed, CertificateIssuer::LetsencryptProduction);
    }

    #[test]
    fn only_public_zones_are_created() {
        let domain = DomainNameDefinition {
            domain: "example.com".into(),
            zone: Zone::Private,
            admin_email: "ops@example.com".into(),
            aws_account: None,
            create_zone: true,
        };
        assert_eq!(domain.validate().unwrap_err().field, "create_zone");
    }
}
