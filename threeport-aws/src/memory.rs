//! [`MemoryAws`]: the AWS traits in memory, for tests and embedding.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use async_trait::async_trait;
use threeport_core::{Error, Result, SecretValues};

use crate::{
    BucketState, ClusterRequest, ClusterState, DatabaseRequest, DatabaseState, DatabaseStatus,
    DnsZones, EksStatus, HostedZone, KubernetesClusters, Network, Networks, NodeGroupRequest,
    ObjectStorage, RelationalDatabases, RoleRequest, Roles, SecretStore, validate_bucket_name,
};

/// Where the clusters of a [`MemoryAws`] say their API servers are.
#[derive(Debug, Clone)]
struct ClusterEndpoint {
    url: String,
    ca_certificate: Option<String>,
    token: String,
}

/// A cluster or node group being made: its state, and how many more looks until it is active.
#[derive(Debug, Clone)]
struct Creating {
    polls_left: u32,
}

/// The AWS services of one pretend account, in memory.
///
/// Unlike moto, it can show what happens between a request and its result: clusters and node
/// groups stay `CREATING` for [`with_creation_polls`](Self::with_creation_polls) looks, and
/// [`lose_next_answer`](Self::lose_next_answer) makes an operation do its work and then fail,
/// as when a connection drops before AWS's answer arrives.
#[derive(Debug, Default)]
pub struct MemoryAws {
    buckets: Mutex<HashMap<String, BucketState>>,
    secrets: Mutex<HashMap<String, SecretValues>>,
    databases: Mutex<HashMap<String, (DatabaseRequest, DatabaseState)>>,
    networks: Mutex<HashMap<String, Network>>,
    /// Security groups by owner.
    security_groups: Mutex<HashMap<String, SecurityGroup>>,
    /// DB subnet groups by name: their subnets.
    subnet_groups: Mutex<HashMap<String, Vec<String>>>,
    roles: Mutex<HashMap<String, RoleRequest>>,
    oidc_providers: Mutex<HashSet<String>>,
    /// Hosted zones by domain and privacy.
    zones: Mutex<HashMap<(String, bool), HostedZone>>,
    clusters: Mutex<HashMap<String, (ClusterRequest, Creating)>>,
    node_groups: Mutex<HashMap<(String, String), (NodeGroupRequest, Creating)>>,
    creation_polls: u32,
    endpoint: Mutex<Option<ClusterEndpoint>>,
    lose: Mutex<HashSet<&'static str>>,
    pieces: Mutex<u32>,
}

/// A security group of the fake.
#[derive(Debug, Clone)]
struct SecurityGroup {
    id: String,
    vpc_id: String,
    /// What it admits: TCP port, source range.
    rules: Vec<(u16, String)>,
}

impl MemoryAws {
    /// An empty account.
    pub fn new() -> Self {
        Self::default()
    }

    /// Clusters and node groups report `CREATING` for `polls` looks before `ACTIVE`.
    pub fn with_creation_polls(mut self, polls: u32) -> Self {
        self.creation_polls = polls;
        self
    }

    /// Clusters report their API server at `url` (with `ca_certificate`), and
    /// [`KubernetesClusters::token`] gives `token`: point them at a test API server.
    pub fn serve_clusters_at(&self, url: &str, ca_certificate: Option<&str>, token: &str) {
        *self.endpoint.lock().unwrap() = Some(ClusterEndpoint {
            url: url.to_owned(),
            ca_certificate: ca_certificate.map(str::to_owned),
            token: token.to_owned(),
        });
    }

    /// The next call of `operation` (`create_vpc`, `create_subnet`, `create_cluster`,
    /// `create_node_group`, `create_role`, `create_database`, `ensure_bucket`) does its work
    /// and then fails as `Unavailable`.
    pub fn lose_next_answer(&self, operation: &'static str) {
        self.lose.lock().unwrap().insert(operation);
    }

    fn answer(&self, operation: &'static str) -> Result<()> {
        if self.lose.lock().unwrap().remove(operation) {
            Err(Error::unavailable(format!(
                "{operation}: connection reset before the answer (injected)"
            )))
        } else {
            Ok(())
        }
    }

    /// The values of a secret (tests only: threeport itself never reads a secret back).
    pub fn secret_values(&self, name: &str) -> Option<SecretValues> {
        self.secrets.lock().unwrap().get(name).cloned()
    }

    /// Networks, roles, OIDC providers, clusters and node groups that exist: what a test
    /// checks for leaks.
    pub fn cloud_inventory(&self) -> Vec<String> {
        let mut all: Vec<String> = Vec::new();
        all.extend(
            self.networks
                .lock()
                .unwrap()
                .keys()
                .map(|k| format!("network/{k}")),
        );
        all.extend(
            self.roles
                .lock()
                .unwrap()
                .keys()
                .map(|k| format!("role/{k}")),
        );
        all.extend(
            self.oidc_providers
                .lock()
                .unwrap()
                .iter()
                .map(|k| format!("oidc/{k}")),
        );
        all.extend(
            self.clusters
                .lock()
                .unwrap()
                .keys()
                .map(|k| format!("cluster/{k}")),
        );
        all.extend(
            self.node_groups
                .lock()
                .unwrap()
                .keys()
                .map(|(c, n)| format!("nodegroup/{c}/{n}")),
        );
        all.extend(
            self.buckets
                .lock()
                .unwrap()
                .keys()
                .map(|k| format!("bucket/{k}")),
        );
        all.extend(
            self.databases
                .lock()
                .unwrap()
                .keys()
                .map(|k| format!("database/{k}")),
        );
        all.extend(
            self.security_groups
                .lock()
                .unwrap()
                .keys()
                .map(|k| format!("security-group/{k}")),
        );
        all.extend(
            self.subnet_groups
                .lock()
                .unwrap()
                .keys()
                .map(|k| format!("db-subnet-group/{k}")),
        );
        all.sort();
        all
    }

    /// The databases asked for, as they were asked for (placement included; the password
    /// is in them, as in any request).
    pub fn database_requests(&self) -> Vec<DatabaseRequest> {
        let mut requests: Vec<DatabaseRequest> = self
            .databases
            .lock()
            .unwrap()
            .values()
            .map(|(request, _)| request.clone())
            .collect();
        requests.sort_by(|a, b| a.identifier.cmp(&b.identifier));
        requests
    }

    /// The rules security group `owner` admits: (port, source range).
    pub fn security_group_rules(&self, owner: &str) -> Vec<(u16, String)> {
        self.security_groups
            .lock()
            .unwrap()
            .get(owner)
            .map(|group| group.rules.clone())
            .unwrap_or_default()
    }

    /// The node groups asked for, as they were asked for (for tests of what a controller
    /// requests: instance type, bounds, subnets).
    pub fn node_group_requests(&self) -> Vec<NodeGroupRequest> {
        let mut requests: Vec<NodeGroupRequest> = self
            .node_groups
            .lock()
            .unwrap()
            .values()
            .map(|(request, _)| request.clone())
            .collect();
        requests.sort_by(|a, b| (&a.cluster, &a.name).cmp(&(&b.cluster, &b.name)));
        requests
    }

    /// How many network pieces (VPC, gateway, route table, subnets) were ever created: a
    /// resumed create that duplicated one would show here.
    pub fn network_pieces_created(&self) -> u32 {
        *self.pieces.lock().unwrap()
    }

    /// A public hosted zone for `domain`, as if made outside threeport (tests' set-up).
    pub fn add_zone(&self, domain: &str) -> HostedZone {
        let zone = HostedZone {
            id: format!("Z{:012}", self.zones.lock().unwrap().len() + 1),
            name: domain.trim_end_matches('.').to_ascii_lowercase(),
            private: false,
        };
        self.zones
            .lock()
            .unwrap()
            .insert((zone.name.clone(), false), zone.clone());
        zone
    }

    /// The IAM role `name`, as last ensured.
    pub fn role(&self, name: &str) -> Option<RoleRequest> {
        self.roles.lock().unwrap().get(name).cloned()
    }
}

#[async_trait]
impl ObjectStorage for MemoryAws {
    async fn ensure_bucket(&self, name: &str, public_read: bool) -> Result<()> {
        validate_bucket_name(name)?;
        self.buckets
            .lock()
            .unwrap()
            .insert(name.to_owned(), BucketState { public_read });
        self.answer("ensure_bucket")
    }

    async fn bucket(&self, name: &str) -> Result<Option<BucketState>> {
        validate_bucket_name(name)?;
        Ok(self.buckets.lock().unwrap().get(name).copied())
    }

    async fn delete_bucket(&self, name: &str) -> Result<bool> {
        validate_bucket_name(name)?;
        Ok(self.buckets.lock().unwrap().remove(name).is_some())
    }
}

#[async_trait]
impl SecretStore for MemoryAws {
    async fn put_secret(&self, name: &str, values: &SecretValues) -> Result<String> {
        self.secrets
            .lock()
            .unwrap()
            .insert(name.to_owned(), values.clone());
        Ok(format!(
            "arn:aws:secretsmanager:us-east-1:000000000000:secret:{name}"
        ))
    }

    async fn secret_arn(&self, name: &str) -> Result<Option<String>> {
        Ok(self
            .secrets
            .lock()
            .unwrap()
            .contains_key(name)
            .then(|| format!("arn:aws:secretsmanager:us-east-1:000000000000:secret:{name}")))
    }

    async fn delete_secret(&self, name: &str) -> Result<bool> {
        Ok(self.secrets.lock().unwrap().remove(name).is_some())
    }
}

#[async_trait]
impl RelationalDatabases for MemoryAws {
    async fn create_database(&self, request: &DatabaseRequest) -> Result<()> {
        request.validate()?;
        if let Some(group) = &request.subnet_group
            && !self.subnet_groups.lock().unwrap().contains_key(group)
        {
            return Err(Error::not_found("DB subnet group", group.clone()));
        }
        let known: HashSet<String> = self
            .security_groups
            .lock()
            .unwrap()
            .values()
            .map(|group| group.id.clone())
            .collect();
        if let Some(unknown) = request
            .security_group_ids
            .iter()
            .find(|id| !known.contains(*id))
        {
            return Err(Error::not_found("security group", unknown.clone()));
        }
        // Available at once, as moto makes them.
        self.databases
            .lock()
            .unwrap()
            .entry(request.identifier.clone())
            .or_insert_with(|| {
                (
                    request.clone(),
                    DatabaseState {
                        status: DatabaseStatus::Available,
                        host: Some(format!("{}.memory.rds.local", request.identifier)),
                        port: Some(request.port),
                    },
                )
            });
        self.answer("create_database")
    }

    async fn database(&self, identifier: &str) -> Result<Option<DatabaseState>> {
        Ok(self
            .databases
            .lock()
            .unwrap()
            .get(identifier)
            .map(|(_, state)| state.clone()))
    }

    async fn delete_database(&self, identifier: &str) -> Result<bool> {
        Ok(self.databases.lock().unwrap().remove(identifier).is_some())
    }

    async fn ensure_subnet_group(&self, name: &str, subnet_ids: &[String]) -> Result<()> {
        if subnet_ids.len() < 2 {
            return Err(Error::invalid(
                "subnet_ids",
                "a DB subnet group needs subnets in at least two zones",
            ));
        }
        self.subnet_groups
            .lock()
            .unwrap()
            .entry(name.to_owned())
            .or_insert_with(|| subnet_ids.to_vec());
        Ok(())
    }

    async fn delete_subnet_group(&self, name: &str) -> Result<bool> {
        let used = self
            .databases
            .lock()
            .unwrap()
            .values()
            .any(|(request, _)| request.subnet_group.as_deref() == Some(name));
        if used {
            return Err(Error::unavailable(format!(
                "DB subnet group {name} still in use"
            )));
        }
        Ok(self.subnet_groups.lock().unwrap().remove(name).is_some())
    }
}

#[async_trait]
impl Networks for MemoryAws {
    async fn ensure_network(&self, owner: &str, zones: u32) -> Result<Network> {
        if zones == 0 || zones > 6 {
            return Err(Error::invalid(
                "zone_count",
                format!("{zones} availability zones asked for; the region has 6"),
            ));
        }
        let mut networks = self.networks.lock().unwrap();
        let network = match networks.entry(owner.to_owned()) {
            std::collections::hash_map::Entry::Occupied(entry) => entry.into_mut(),
            std::collections::hash_map::Entry::Vacant(entry) => {
                *self.pieces.lock().unwrap() += 3;
                let network = entry.insert(Network {
                    vpc_id: format!("vpc-{owner}"),
                    internet_gateway_id: format!("igw-{owner}"),
                    route_table_id: format!("rtb-{owner}"),
                    subnet_ids: Vec::new(),
                });
                self.answer("create_vpc")?;
                network
            }
        };
        while network.subnet_ids.len() < zones as usize {
            let index = network.subnet_ids.len();
            network.subnet_ids.push(format!("subnet-{owner}-{index}"));
            *self.pieces.lock().unwrap() += 1;
            self.answer("create_subnet")?;
        }
        Ok(network.clone())
    }

    async fn delete_network(&self, owner: &str) -> Result<bool> {
        let Some(network) = self.networks.lock().unwrap().get(owner).cloned() else {
            return Ok(false);
        };
        let in_use = self
            .security_groups
            .lock()
            .unwrap()
            .values()
            .any(|group| group.vpc_id == network.vpc_id);
        if in_use {
            // As EC2 answers DependencyViolation for a VPC with a security group left in it.
            return Err(Error::unavailable(format!(
                "VPC {} still has security groups",
                network.vpc_id
            )));
        }
        Ok(self.networks.lock().unwrap().remove(owner).is_some())
    }

    async fn ensure_security_group(
        &self,
        owner: &str,
        vpc_id: &str,
        port: u16,
        source_cidr: &str,
    ) -> Result<String> {
        let mut groups = self.security_groups.lock().unwrap();
        let group = groups
            .entry(owner.to_owned())
            .or_insert_with(|| SecurityGroup {
                id: format!("sg-{owner}"),
                vpc_id: vpc_id.to_owned(),
                rules: Vec::new(),
            });
        let rule = (port, source_cidr.to_owned());
        if !group.rules.contains(&rule) {
            group.rules.push(rule);
        }
        Ok(group.id.clone())
    }

    async fn delete_security_group(&self, owner: &str) -> Result<bool> {
        let Some(id) = self
            .security_groups
            .lock()
            .unwrap()
            .get(owner)
            .map(|group| group.id.clone())
        else {
            return Ok(false);
        };
        let used = self
            .databases
            .lock()
            .unwrap()
            .values()
            .any(|(request, _)| request.security_group_ids.contains(&id));
        if used {
            return Err(Error::unavailable(format!(
                "security group {id} still in use"
            )));
        }
        Ok(self.security_groups.lock().unwrap().remove(owner).is_some())
    }
}

#[async_trait]
impl Roles for MemoryAws {
    async fn ensure_role(&self, request: &RoleRequest) -> Result<String> {
        crate::iam::validate_role_name(&request.name)?;
        self.roles
            .lock()
            .unwrap()
            .insert(request.name.clone(), request.clone());
        self.answer("create_role")?;
        Ok(format!("arn:aws:iam::000000000000:role/{}", request.name))
    }

    async fn delete_role(&self, name: &str) -> Result<bool> {
        crate::iam::validate_role_name(name)?;
        Ok(self.roles.lock().unwrap().remove(name).is_some())
    }

    async fn ensure_oidc_provider(&self, issuer_url: &str) -> Result<String> {
        let path = issuer_url.trim_start_matches("https://");
        self.oidc_providers.lock().unwrap().insert(path.to_owned());
        Ok(format!("arn:aws:iam::000000000000:oidc-provider/{path}"))
    }

    async fn delete_oidc_provider(&self, issuer_url: &str) -> Result<bool> {
        let path = issuer_url.trim_start_matches("https://");
        Ok(self.oidc_providers.lock().unwrap().remove(path))
    }
}

#[async_trait]
impl DnsZones for MemoryAws {
    async fn find_zone(&self, domain: &str, private: bool) -> Result<Option<HostedZone>> {
        let domain = crate::validate_domain(domain)?;
        Ok(self.zones.lock().unwrap().get(&(domain, private)).cloned())
    }

    async fn ensure_zone(
        &self,
        domain: &str,
        private_in: Option<(&str, &str)>,
    ) -> Result<HostedZone> {
        let domain = crate::validate_domain(domain)?;
        let private = private_in.is_some();
        if let Some(found) = self.find_zone(&domain, private).await? {
            return Ok(found);
        }
        let zone = HostedZone {
            id: format!("Z{:012}", self.zones.lock().unwrap().len() + 1),
            name: domain.clone(),
            private,
        };
        self.zones
            .lock()
            .unwrap()
            .insert((domain, private), zone.clone());
        self.answer("create_hosted_zone")?;
        Ok(zone)
    }

    async fn delete_zone(&self, domain: &str, private: bool) -> Result<bool> {
        let domain = crate::validate_domain(domain)?;
        Ok(self
            .zones
            .lock()
            .unwrap()
            .remove(&(domain, private))
            .is_some())
    }
}

/// One look at something being created: creating until its looks run out.
fn look(creating: &mut Creating) -> EksStatus {
    if creating.polls_left == 0 {
        EksStatus::Active
    } else {
        creating.polls_left -= 1;
        EksStatus::Creating
    }
}

#[async_trait]
impl KubernetesClusters for MemoryAws {
    async fn create_cluster(&self, request: &ClusterRequest) -> Result<()> {
        crate::eks::validate_cluster_name(&request.name)?;
        if request.subnet_ids.is_empty() {
            return Err(Error::invalid("subnet_ids", "a cluster needs subnets"));
        }
        self.clusters
            .lock()
            .unwrap()
            .entry(request.name.clone())
            .or_insert_with(|| {
                (
                    request.clone(),
                    Creating {
                        polls_left: self.creation_polls,
                    },
                )
            });
        self.answer("create_cluster")
    }

    async fn cluster(&self, name: &str) -> Result<Option<ClusterState>> {
        let endpoint = self.endpoint.lock().unwrap().clone();
        let mut clusters = self.clusters.lock().unwrap();
        Ok(clusters.get_mut(name).map(|(_, creating)| {
            let status = look(creating);
            let active = status == EksStatus::Active;
            ClusterState {
                status,
                endpoint: active.then(|| {
                    endpoint
                        .as_ref()
                        .map(|e| e.url.clone())
                        .unwrap_or_else(|| format!("https://{name}.eks.memory.local"))
                }),
                ca_certificate: endpoint.as_ref().and_then(|e| e.ca_certificate.clone()),
                oidc_issuer: Some(format!("https://oidc.eks.memory.local/id/{name}")),
            }
        }))
    }

    async fn delete_cluster(&self, name: &str) -> Result<bool> {
        if self
            .node_groups
            .lock()
            .unwrap()
            .keys()
            .any(|(c, _)| c == name)
        {
            return Err(Error::unavailable(format!(
                "cluster {name} still has node groups"
            )));
        }
        Ok(self.clusters.lock().unwrap().remove(name).is_some())
    }

    async fn create_node_group(&self, request: &NodeGroupRequest) -> Result<()> {
        if !self.clusters.lock().unwrap().contains_key(&request.cluster) {
            return Err(Error::not_found("cluster", request.cluster.clone()));
        }
        self.node_groups
            .lock()
            .unwrap()
            .entry((request.cluster.clone(), request.name.clone()))
            .or_insert_with(|| {
                (
                    request.clone(),
                    Creating {
                        polls_left: self.creation_polls,
                    },
                )
            });
        self.answer("create_node_group")
    }

    async fn node_group(&self, cluster: &str, name: &str) -> Result<Option<EksStatus>> {
        let mut groups = self.node_groups.lock().unwrap();
        Ok(groups
            .get_mut(&(cluster.to_owned(), name.to_owned()))
            .map(|(_, creating)| look(creating)))
    }

    async fn delete_node_group(&self, cluster: &str, name: &str) -> Result<bool> {
        Ok(self
            .node_groups
            .lock()
            .unwrap()
            .remove(&(cluster.to_owned(), name.to_owned()))
            .is_some())
    }

    async fn token(&self, cluster: &str) -> Result<String> {
        if !self.clusters.lock().unwrap().contains_key(cluster) {
            return Err(Error::not_found("cluster", cluster.to_owned()));
        }
        Ok(self
            .endpoint
            .lock()
            .unwrap()
            .as_ref()
            .map(|e| e.token.clone())
            .unwrap_or_else(|| format!("memory-token-{cluster}")))
    }
}
