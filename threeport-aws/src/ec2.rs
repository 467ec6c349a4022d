//! [`Ec2Networks`]: [`Networks`] on Amazon EC2.

use async_trait::async_trait;
use aws_sdk_ec2::error::ProvideErrorMetadata;
use aws_sdk_ec2::types::{
    AttributeBooleanValue, Filter, InternetGateway, IpPermission, IpRange, ResourceType,
    RouteTable, SecurityGroup, Subnet, Tag, TagSpecification, Vpc,
};
use threeport_core::{Error, Result};

use crate::error::sdk_error;
use crate::{Network, Networks, OWNER_TAG};

/// Tag key on subnets: their zone's position, so they come back in order.
const ZONE_TAG: &str = "threeport:zone";

/// EC2 networks of one account and region.
#[derive(Debug, Clone)]
pub struct Ec2Networks {
    client: aws_sdk_ec2::Client,
}

impl Ec2Networks {
    /// A client for the account and region of `config` (from [`AwsConnection::sdk_config`]).
    ///
    /// [`AwsConnection::sdk_config`]: crate::AwsConnection::sdk_config
    ///
    /// The SDK's own retries are off: EC2 creations are not idempotent, and a create retried
    /// blindly after a lost answer makes a second VPC or subnet. Errors go back to the caller
    /// (throttling and 5xx as `Unavailable`), whose next attempt looks up what exists by tag
    /// before making anything.
    pub fn new(config: &aws_config::SdkConfig) -> Self {
        let config = aws_sdk_ec2::config::Builder::from(config)
            .retry_config(aws_config::retry::RetryConfig::disabled())
            .build();
        Ec2Networks {
            client: aws_sdk_ec2::Client::from_conf(config),
        }
    }
}

fn owned_by(owner: &str) -> Filter {
    Filter::builder()
        .name(format!("tag:{OWNER_TAG}"))
        .values(owner)
        .build()
}

fn tags(resource: ResourceType, owner: &str, extra: Option<(&str, String)>) -> TagSpecification {
    let mut spec = TagSpecification::builder()
        .resource_type(resource)
        .tags(Tag::builder().key(OWNER_TAG).value(owner).build())
        .tags(Tag::builder().key("Name").value(owner).build());
    if let Some((key, value)) = extra {
        spec = spec.tags(Tag::builder().key(key).value(value).build());
    }
    spec.build()
}

fn zone_of(subnet: &Subnet) -> Option<u32> {
    subnet
        .tags()
        .iter()
        .find(|t| t.key() == Some(ZONE_TAG))
        .and_then(|t| t.value()?.parse().ok())
}

fn missing_id(what: &str) -> Error {
    Error::backend(format!("EC2 answered a {what} creation without an id"))
}

/// `true` for the "no such …" codes EC2 answers when a piece is already gone.
fn gone(code: Option<&str>) -> bool {
    code.is_some_and(|c| c.ends_with(".NotFound") || c == "Gateway.NotAttached")
}

impl Ec2Networks {
    async fn vpc(&self, owner: &str) -> Result<String> {
        if let Some(id) = self.vpcs(owner).await?.iter().find_map(|v| v.vpc_id()) {
            return Ok(id.to_owned());
        }
        let created = self
            .client
            .create_vpc()
            .cidr_block(crate::NETWORK_CIDR)
            .tag_specifications(tags(ResourceType::Vpc, owner, None))
            .send()
            .await
            .map_err(|e| sdk_error("network", e))?;
        let id = created
            .vpc()
            .and_then(|v| v.vpc_id())
            .ok_or_else(|| missing_id("VPC"))?
            .to_owned();
        // EKS nodes need DNS host names to join.
        self.client
            .modify_vpc_attribute()
            .vpc_id(&id)
            .enable_dns_hostnames(AttributeBooleanValue::builder().value(true).build())
            .send()
            .await
            .map_err(|e| sdk_error("network", e))?;
        Ok(id)
    }

    async fn internet_gateway(&self, owner: &str, vpc: &str) -> Result<String> {
        let (id, attached) = match self.internet_gateways(owner).await?.first() {
            Some(gateway) => (
                gateway
                    .internet_gateway_id()
                    .ok_or_else(|| missing_id("internet gateway"))?
                    .to_owned(),
                gateway
                    .attachments()
                    .iter()
                    .any(|a| a.vpc_id() == Some(vpc)),
            ),
            None => {
                let created = self
                    .client
                    .create_internet_gateway()
                    .tag_specifications(tags(ResourceType::InternetGateway, owner, None))
                    .send()
                    .await
                    .map_err(|e| sdk_error("network", e))?;
                let id = created
                    .internet_gateway()
                    .and_then(|g| g.internet_gateway_id())
                    .ok_or_else(|| missing_id("internet gateway"))?
                    .to_owned();
                (id, false)
            }
        };
        if !attached {
            self.client
                .attach_internet_gateway()
                .internet_gateway_id(&id)
                .vpc_id(vpc)
                .send()
                .await
                .map_err(|e| sdk_error("network", e))?;
        }
        Ok(id)
    }

    async fn route_table(&self, owner: &str, vpc: &str, gateway: &str) -> Result<String> {
        let (id, routed) = match self.route_tables(owner).await?.first() {
            Some(table) => (
                table
                    .route_table_id()
                    .ok_or_else(|| missing_id("route table"))?
                    .to_owned(),
                table.routes().iter().any(|r| {
                    r.destination_cidr_block() == Some("0.0.0.0/0")
                        && r.gateway_id() == Some(gateway)
                }),
            ),
            None => {
                let created = self
                    .client
                    .create_route_table()
                    .vpc_id(vpc)
                    .tag_specifications(tags(ResourceType::RouteTable, owner, None))
                    .send()
                    .await
                    .map_err(|e| sdk_error("network", e))?;
                let id = created
                    .route_table()
                    .and_then(|t| t.route_table_id())
                    .ok_or_else(|| missing_id("route table"))?
                    .to_owned();
                (id, false)
            }
        };
        if !routed {
            let routed = self
                .client
                .create_route()
                .route_table_id(&id)
                .destination_cidr_block("0.0.0.0/0")
                .gateway_id(gateway)
                .send()
                .await;
            match routed {
                Ok(_) => {}
                Err(err) if err.code() == Some("RouteAlreadyExists") => {}
                Err(err) => return Err(sdk_error("network", err)),
            }
        }
        Ok(id)
    }

    async fn vpcs(&self, owner: &str) -> Result<Vec<Vpc>> {
        let found = self
            .client
            .describe_vpcs()
            .filters(owned_by(owner))
            .send()
            .await
            .map_err(|e| sdk_error("network", e))?;
        Ok(found.vpcs().to_vec())
    }

    async fn internet_gateways(&self, owner: &str) -> Result<Vec<InternetGateway>> {
        let found = self
            .client
            .describe_internet_gateways()
            .filters(owned_by(owner))
            .send()
            .await
            .map_err(|e| sdk_error("network", e))?;
        Ok(found.internet_gateways().to_vec())
    }

    async fn route_tables(&self, owner: &str) -> Result<Vec<RouteTable>> {
        let found = self
            .client
            .describe_route_tables()
            .filters(owned_by(owner))
            .send()
            .await
            .map_err(|e| sdk_error("network", e))?;
        Ok(found.route_tables().to_vec())
    }

    async fn subnets(&self, owner: &str) -> Result<Vec<Subnet>> {
        let found = self
            .client
            .describe_subnets()
            .filters(owned_by(owner))
            .send()
            .await
            .map_err(|e| sdk_error("network", e))?;
        Ok(found.subnets().to_vec())
    }

    async fn zone_names(&self, zones: u32) -> Result<Vec<String>> {
        let found = self
            .client
            .describe_availability_zones()
            .filters(Filter::builder().name("state").values("available").build())
            .send()
            .await
            .map_err(|e| sdk_error("network", e))?;
        let mut names: Vec<String> = found
            .availability_zones()
            .iter()
            .filter_map(|z| z.zone_name().map(str::to_owned))
            .collect();
        names.sort();
        if names.len() < zones as usize {
            return Err(Error::invalid(
                "zone_count",
                format!(
                    "{zones} availability zones asked for; the region has {}",
                    names.len()
                ),
            ));
        }
        names.truncate(zones as usize);
        Ok(names)
    }

    async fn subnet(&self, owner: &str, vpc: &str, zone: &str, index: u32) -> Result<String> {
        let created = self
            .client
            .create_subnet()
            .vpc_id(vpc)
            .availability_zone(zone)
            .cidr_block(format!("10.0.{}.0/20", index * 16))
            .tag_specifications(tags(
                ResourceType::Subnet,
                owner,
                Some((ZONE_TAG, index.to_string())),
            ))
            .send()
            .await
            .map_err(|e| sdk_error("network", e))?;
        let id = created
            .subnet()
            .and_then(|s| s.subnet_id())
            .ok_or_else(|| missing_id("subnet"))?
            .to_owned();
        Ok(id)
    }

    /// Makes a subnet public: associated with the route table, public addresses on launch.
    async fn publish_subnet(&self, subnet: &Subnet, route_table: &str) -> Result<()> {
        let id = subnet.subnet_id().ok_or_else(|| missing_id("subnet"))?;
        if subnet.map_public_ip_on_launch() != Some(true) {
            self.client
                .modify_subnet_attribute()
                .subnet_id(id)
                .map_public_ip_on_launch(AttributeBooleanValue::builder().value(true).build())
                .send()
                .await
                .map_err(|e| sdk_error("network", e))?;
        }
        let tables = self
            .client
            .describe_route_tables()
            .filters(
                Filter::builder()
                    .name("association.subnet-id")
                    .values(id)
                    .build(),
            )
            .send()
            .await
            .map_err(|e| sdk_error("network", e))?;
        let associated = tables
            .route_tables()
            .iter()
            .any(|t| t.route_table_id() == Some(route_table));
        if !associated {
            self.client
                .associate_route_table()
                .route_table_id(route_table)
                .subnet_id(id)
                .send()
                .await
                .map_err(|e| sdk_error("network", e))?;
        }
        Ok(())
    }
}

#[async_trait]
impl Networks for Ec2Networks {
    async fn ensure_network(&self, owner: &str, zones: u32) -> Result<Network> {
        let vpc_id = self.vpc(owner).await?;
        let internet_gateway_id = self.internet_gateway(owner, &vpc_id).await?;
        let route_table_id = self
            .route_table(owner, &vpc_id, &internet_gateway_id)
            .await?;
        let zone_names = self.zone_names(zones).await?;
        let mut existing = self.subnets(owner).await?;
        for (index, zone) in zone_names.iter().enumerate() {
            let index = index as u32;
            if !existing.iter().any(|s| zone_of(s) == Some(index)) {
                self.subnet(owner, &vpc_id, zone, index).await?;
            }
        }
        if existing.len() < zone_names.len() {
            existing = self.subnets(owner).await?;
        }
        existing.sort_by_key(zone_of);
        for subnet in &existing {
            self.publish_subnet(subnet, &route_table_id).await?;
        }
        Ok(Network {
            vpc_id,
            internet_gateway_id,
            route_table_id,
            subnet_ids: existing
                .iter()
                .filter_map(|s| s.subnet_id().map(str::to_owned))
                .collect(),
        })
    }

    async fn delete_network(&self, owner: &str) -> Result<bool> {
        let mut found = false;
        let ok_if_gone = |result: std::result::Result<(), (Option<String>, Error)>| match result {
            Ok(()) => Ok(()),
            Err((code, _)) if gone(code.as_deref()) => Ok(()),
            Err((_, err)) => Err(err),
        };
        macro_rules! call {
            ($request:expr) => {
                ok_if_gone(
                    $request
                        .send()
                        .await
                        .map(|_| ())
                        .map_err(|e| (e.code().map(str::to_owned), sdk_error("network", e))),
                )
            };
        }
        for subnet in self.subnets(owner).await? {
            found = true;
            call!(
                self.client
                    .delete_subnet()
                    .set_subnet_id(subnet.subnet_id().map(str::to_owned))
            )?;
        }
        for table in self.route_tables(owner).await? {
            found = true;
            for association in table.associations() {
                if association.main() != Some(true) {
                    call!(self.client.disassociate_route_table().set_association_id(
                        association.route_table_association_id().map(str::to_owned)
                    ))?;
                }
            }
            call!(
                self.client
                    .delete_route_table()
                    .set_route_table_id(table.route_table_id().map(str::to_owned))
            )?;
        }
        for gateway in self.internet_gateways(owner).await? {
            found = true;
            let id = gateway.internet_gateway_id().map(str::to_owned);
            for attachment in gateway.attachments() {
                call!(
                    self.client
                        .detach_internet_gateway()
                        .set_internet_gateway_id(id.clone())
                        .set_vpc_id(attachment.vpc_id().map(str::to_owned))
                )?;
            }
            call!(
                self.client
                    .delete_internet_gateway()
                    .set_internet_gateway_id(id)
            )?;
        }
        for vpc in self.vpcs(owner).await? {
            found = true;
            call!(
                self.client
                    .delete_vpc()
                    .set_vpc_id(vpc.vpc_id().map(str::to_owned))
            )?;
        }
        Ok(found)
    }

    async fn ensure_security_group(
        &self,
        owner: &str,
        vpc_id: &str,
        port: u16,
        source_cidr: &str,
    ) -> Result<String> {
        let found = self
            .security_groups(owner)
            .await?
            .into_iter()
            .find(|g| g.vpc_id() == Some(vpc_id))
            .and_then(|g| g.group_id().map(str::to_owned));
        let id = match found {
            Some(id) => id,
            None => self
                .client
                .create_security_group()
                .group_name(owner)
                .description(format!("threeport: {owner}"))
                .vpc_id(vpc_id)
                .tag_specifications(tags(ResourceType::SecurityGroup, owner, None))
                .send()
                .await
                .map_err(|e| sdk_error("security_group", e))?
                .group_id()
                .map(str::to_owned)
                .ok_or_else(|| missing_id("security group"))?,
        };
        let rule = IpPermission::builder()
            .ip_protocol("tcp")
            .from_port(i32::from(port))
            .to_port(i32::from(port))
            .ip_ranges(IpRange::builder().cidr_ip(source_cidr).build())
            .build();
        let authorized = self
            .client
            .authorize_security_group_ingress()
            .group_id(&id)
            .ip_permissions(rule)
            .send()
            .await;
        match authorized {
            Ok(_) => Ok(id),
            // Admitted by an earlier attempt.
            Err(err) if err.code() == Some("InvalidPermission.Duplicate") => Ok(id),
            Err(err) => Err(sdk_error("security_group", err)),
        }
    }

    async fn delete_security_group(&self, owner: &str) -> Result<bool> {
        let mut found = false;
        for group in self.security_groups(owner).await? {
            found = true;
            let deleted = self
                .client
                .delete_security_group()
                .set_group_id(group.group_id().map(str::to_owned))
                .send()
                .await;
            match deleted {
                Ok(_) => {}
                Err(err) if gone(err.code()) => {}
                Err(err) if err.code() == Some("DependencyViolation") => {
                    return Err(Error::unavailable(format!(
                        "security group of {owner} still in use: {}",
                        err.message().unwrap_or("DependencyViolation")
                    )));
                }
                Err(err) => return Err(sdk_error("security_group", err)),
            }
        }
        Ok(found)
    }
}

impl Ec2Networks {
    async fn security_groups(&self, owner: &str) -> Result<Vec<SecurityGroup>> {
        Ok(self
            .client
            .describe_security_groups()
            .filters(owned_by(owner))
            .send()
            .await
            .map_err(|e| sdk_error("security_group", e))?
            .security_groups()
            .to_vec())
    }
}
