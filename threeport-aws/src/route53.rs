//! [`Route53Zones`]: [`DnsZones`] on Amazon Route 53.

use async_trait::async_trait;
use aws_sdk_route53::error::ProvideErrorMetadata;
use aws_sdk_route53::types::{HostedZoneConfig, Vpc, VpcRegion};
use threeport_core::Result;

use crate::error::sdk_error;
use crate::{DnsZones, HostedZone, validate_domain};

/// Route 53 of one account (global: the region only signs requests).
#[derive(Debug, Clone)]
pub struct Route53Zones {
    client: aws_sdk_route53::Client,
}

impl Route53Zones {
    /// A client for the account of `config` (from [`AwsConnection::sdk_config`]).
    ///
    /// [`AwsConnection::sdk_config`]: crate::AwsConnection::sdk_config
    pub fn new(config: &aws_config::SdkConfig) -> Self {
        Route53Zones {
            client: aws_sdk_route53::Client::new(config),
        }
    }
}

fn zone(zone: &aws_sdk_route53::types::HostedZone) -> HostedZone {
    HostedZone {
        id: zone.id().trim_start_matches("/hostedzone/").to_owned(),
        name: zone.name().trim_end_matches('.').to_owned(),
        private: zone.config().is_some_and(|c| c.private_zone()),
    }
}

#[async_trait]
impl DnsZones for Route53Zones {
    async fn find_zone(&self, domain: &str, private: bool) -> Result<Option<HostedZone>> {
        let domain = validate_domain(domain)?;
        // Zones come sorted by name from `dns_name` on: the exact ones are first.
        let listed = self
            .client
            .list_hosted_zones_by_name()
            .dns_name(format!("{domain}."))
            .max_items(20)
            .send()
            .await
            .map_err(|e| sdk_error("hosted_zone", e))?;
        Ok(listed
            .hosted_zones()
            .iter()
            .map(zone)
            .find(|z| z.name == domain && z.private == private))
    }

    async fn ensure_zone(
        &self,
        domain: &str,
        private_in: Option<(&str, &str)>,
    ) -> Result<HostedZone> {
        let domain = validate_domain(domain)?;
        let private = private_in.is_some();
        if let Some(found) = self.find_zone(&domain, private).await? {
            return Ok(found);
        }
        // A caller reference may be used once ever: a fresh one per attempt; the look-up
        // above is what keeps a retried create from making a second zone.
        let reference = format!(
            "threeport-{domain}-{}",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default()
                .as_nanos()
        );
        let mut request = self
            .client
            .create_hosted_zone()
            .name(&domain)
            .caller_reference(reference)
            .hosted_zone_config(
                HostedZoneConfig::builder()
                    .comment("made by threeport")
                    .private_zone(private)
                    .build(),
            );
        if let Some((vpc, region)) = private_in {
            request = request.vpc(
                Vpc::builder()
                    .vpc_id(vpc)
                    .vpc_region(VpcRegion::from(region))
                    .build(),
            );
        }
        match request.send().await {
            Ok(created) => Ok(created.hosted_zone().map(zone).unwrap_or(HostedZone {
                id: String::new(),
                name: domain,
                private,
            })),
            Err(err) if err.code() == Some("HostedZoneAlreadyExists") => {
                self.find_zone(&domain, private).await?.ok_or_else(|| {
                    threeport_core::Error::unavailable(format!(
                        "hosted zone {domain}: reported to exist but not found"
                    ))
                })
            }
            Err(err) => Err(sdk_error("hosted_zone", err)),
        }
    }

    async fn delete_zone(&self, domain: &str, private: bool) -> Result<bool> {
        let Some(found) = self.find_zone(domain, private).await? else {
            return Ok(false);
        };
        match self.client.delete_hosted_zone().id(&found.id).send().await {
            Ok(_) => Ok(true),
            Err(err) if err.code() == Some("NoSuchHostedZone") => Ok(false),
            Err(err) => Err(sdk_error("hosted_zone", err)),
        }
    }
}
