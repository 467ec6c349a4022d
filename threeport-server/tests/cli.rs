//! `tptctl`, the real binary, against a real `threeport-server` it starts itself (`tptctl up`),
//! with a fake Kubernetes API server as the cluster and moto as AWS: a Threeport config of every
//! object kind created, described, listed, applied with a change and deleted; the errors a
//! user meets; `--wait` in non-terminal mode; `up`/`down`.

use std::path::{Path, PathBuf};
use std::process::Output;

use threeport_k8s::{FakeApiServer, MemoryCluster};

mod common;

#[path = "../../threeport-aws/tests/common/mod.rs"]
mod moto;

/// `tptctl` beside the server binary (the workspace build makes both; `./scripts/test` builds
/// every target first).
fn tptctl_binary() -> PathBuf {
    let path = Path::new(env!("CARGO_BIN_EXE_threeport-server")).with_file_name("tptctl");
    assert!(
        path.is_file(),
        "{} is missing: build it first (cargo build -p tptctl)",
        path.display()
    );
    path
}

/// A user's shell: a contexts file of its own, AWS calls to moto, files in `dir`.
struct Shell {
    dir: PathBuf,
    aws: String,
}

struct Ran {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Shell {
    fn new(aws: &str) -> Shell {
        let dir =
            std::env::temp_dir().join(format!("tptctl-e2e-{}", uuid::Uuid::now_v7().simple()));
        std::fs::create_dir_all(dir.join("manifests")).unwrap();
        Shell {
            dir,
            aws: aws.to_owned(),
        }
    }

    async fn run(&self, args: &[&str]) -> Ran {
        let Output {
            status,
            stdout,
            stderr,
        } = tokio::process::Command::new(tptctl_binary())
            .args(args)
            .current_dir(&self.dir)
            .env("TPTCTL_CONFIG", self.dir.join("config.yaml"))
            .env(
                "THREEPORT_SERVER_BIN",
                env!("CARGO_BIN_EXE_threeport-server"),
            )
            // Inherited by the server `up` starts: AWS is moto, on this machine.
            .env("THREEPORT_AWS_ENDPOINT", &self.aws)
            .env("AWS_ACCESS_KEY_ID", "testing")
            .env("AWS_SECRET_ACCESS_KEY", "testing")
            .env_remove("THREEPORT_URL")
            .env_remove("THREEPORT_TOKEN")
            .output()
            .await
            .unwrap();
        Ran {
            code: status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&stdout).into_owned(),
            stderr: String::from_utf8_lossy(&stderr).into_owned(),
        }
    }

    /// Runs and asserts success; returns stdout.
    async fn ok(&self, args: &[&str]) -> String {
        let ran = self.run(args).await;
        assert_eq!(
            ran.code, 0,
            "tptctl {args:?} failed:\n{}\n{}",
            ran.stdout, ran.stderr
        );
        ran.stdout
    }

    /// `tptctl up` on a free port with its data in `data`; its output.
    async fn up(&self, data: &Path) -> String {
        self.ok(&[
            "up",
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
            data.to_str().unwrap(),
        ])
        .await
    }

    /// `tptctl down` of the control plane with its data in `data`; its output.
    async fn down(&self, data: &Path) -> String {
        self.ok(&["down", "--data-dir", data.to_str().unwrap()])
            .await
    }

    fn write(&self, name: &str, text: &str) -> String {
        let path = self.dir.join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, text).unwrap();
        name.to_owned()
    }
}

/// One config of the round trip: the object word, its name, the file, and an edit for
/// `apply` (text replaced) that changes the first object it expands to.
struct Case {
    object: &'static str,
    name: &'static str,
    yaml: String,
    change: (&'static str, &'static str),
    /// Its objects are reconciled (and deleted) by a controller of this build; the others
    /// are only stored until their controllers exist.
    controlled: bool,
}

fn case(
    object: &'static str,
    name: &'static str,
    yaml: String,
    change: (&'static str, &'static str),
    controlled: bool,
) -> Case {
    Case {
        object,
        name,
        yaml,
        change,
        controlled,
    }
}

/// Every object kind of the issue, in an order where references resolve.
fn cases(cluster: &str) -> Vec<Case> {
    let connection = format!("  APIEndpoint: {cluster}\n  Token: cluster-token\n");
    let db = "  Engine: postgres\n  EngineVersion: \"16.4\"\n  DatabaseName: shop\n  DatabasePort: 5432\n  MachineSize: XSmall\n  StorageGb: 20\n  WorkloadSecretName: shop-db\n";
    let bucket = "  PublicReadAccess: false\n  WorkloadServiceAccountName: shop\n  WorkloadBucketEnvVar: BUCKET\n";
    vec![
        case("aws-account", "main", "AwsAccount:\n  Name: main\n  AccountID: \"123456789012\"\n  DefaultAccount: true\n  LocalConfig: aws/config\n  LocalCredentials: aws/credentials\n  LocalProfile: work\n".into(), ("DefaultAccount: true", "DefaultAccount: true\n  Labels: {team: a}"), true),
        // An account nothing uses, deleted again.
        case("aws-account", "spare", "AwsAccount:\n  Name: spare\n  AccountID: \"210987654321\"\n  DefaultRegion: eu-west-1\n  RoleArn: arn:aws:iam::210987654321:role/threeport\n".into(), ("eu-west-1", "eu-west-3"), true),
        // The default runtime the rest lands on; `local` is deleted at the end.
        case("kubernetes-runtime", "parking", format!("KubernetesRuntime:\n  Name: parking\n  InfraProvider: kind\n  Location: Europe:Paris\n  DefaultRuntime: true\n{connection}"), ("DefaultRuntime: true", "DefaultRuntime: true\n  HighAvailability: true"), true),
        case("kubernetes-runtime", "local", format!("KubernetesRuntime:\n  Name: local\n  InfraProvider: kind\n  Location: Europe:Paris\n  HighAvailability: false\n  SupportServices: [envoy-gateway]\n{connection}"), ("HighAvailability: false", "HighAvailability: true"), true),
        case("kubernetes-runtime-definition", "rd2", "KubernetesRuntimeDefinition:\n  Name: rd2\n  InfraProvider: kind\n  NodeMaximum: 10\n".into(), ("NodeMaximum: 10", "NodeMaximum: 20"), true),
        case("kubernetes-runtime-instance", "ri2", format!("KubernetesRuntimeInstance:\n  Name: ri2\n  KubernetesRuntimeDefinition:\n    Name: rd2\n  Location: NorthAmerica:NewYork\n{connection}"), ("NorthAmerica:NewYork", "NorthAmerica:Ohio"), true),
        case("aws-eks-kubernetes-runtime", "eks", "AwsEksKubernetesRuntime:\n  Name: eks\n  AwsAccountName: main\n  ZoneCount: 2\n  DefaultNodeGroupInstanceType: t3.large\n  DefaultNodeGroupInitialSize: 2\n  DefaultNodeGroupMinimumSize: 2\n  DefaultNodeGroupMaximumSize: 4\n  Location: NorthAmerica:Ohio\n".into(), ("MaximumSize: 4", "MaximumSize: 5"), false),
        case("aws-eks-kubernetes-runtime-definition", "eksd", "AwsEksKubernetesRuntimeDefinition:\n  Name: eksd\n  ZoneCount: 3\n".into(), ("ZoneCount: 3", "ZoneCount: 2"), false),
        case("aws-eks-kubernetes-runtime-instance", "eksi", "AwsEksKubernetesRuntimeInstance:\n  Name: eksi\n  AwsEksKubernetesRuntimeDefinitionName: eksd\n  KubernetesRuntimeInstance:\n    Name: ri2\n  Location: NorthAmerica:Ohio\n".into(), ("NorthAmerica:Ohio", "NorthAmerica:Oregon"), false),
        case("workload-definition", "wd", "WorkloadDefinition:\n  Name: wd\n  YAMLDocument: manifests/web.yaml\n".into(), ("web.yaml", "web2.yaml"), true),
        case("workload-instance", "wi", "WorkloadInstance:\n  Name: wi\n  WorkloadDefinition:\n    Name: wd\n  KubernetesRuntimeInstance:\n    Name: local\n".into(), ("Name: wi", "Name: wi\n  Labels: {tier: web}"), true),
        case("workload", "shop", format!("Workload:\n  Name: shop\n  YAMLDocument: manifests/shop.yaml\n  KubernetesRuntimeInstance:\n    Name: local\n  AwsRelationalDatabase:\n    Name: shop-db\n{}  AwsObjectStorageBucket:\n    Name: shop-files\n{}  Secret:\n    Name: shop-secret\n    Data:\n      password: hunter2\n  DomainName:\n    Domain: example.com\n    Zone: Public\n    AdminEmail: admin@example.com\n  Gateway:\n    ServiceName: shop\n    HttpPorts:\n      - Port: 443\n        Path: /\n        TLSEnabled: true\n", db.replace("  ", "    "), bucket.replace("  ", "    ")), ("shop.yaml", "shop2.yaml"), true),
        case("aws-relational-database", "db", format!("AwsRelationalDatabase:\n  Name: db\n{db}  WorkloadInstance:\n    Name: wi\n"), ("StorageGb: 20", "StorageGb: 30"), true),
        case("aws-relational-database-definition", "dbd", format!("AwsRelationalDatabaseDefinition:\n  Name: dbd\n{db}"), ("StorageGb: 20", "StorageGb: 40"), true),
        case("aws-relational-database-instance", "dbi", "AwsRelationalDatabaseInstance:\n  Name: dbi\n  AwsRelationalDatabaseDefinition:\n    Name: dbd\n  WorkloadInstance:\n    Name: wi\n".into(), ("Name: dbi", "Name: dbi\n  Labels: {a: b}"), true),
        case("aws-object-storage-bucket", "bucket", format!("AwsObjectStorageBucket:\n  Name: bucket\n{bucket}  WorkloadInstance:\n    Name: wi\n"), ("PublicReadAccess: false", "PublicReadAccess: true"), true),
        case("aws-object-storage-bucket-definition", "bucketd", format!("AwsObjectStorageBucketDefinition:\n  Name: bucketd\n{bucket}"), ("PublicReadAccess: false", "PublicReadAccess: true"), true),
        case("aws-object-storage-bucket-instance", "bucketi", "AwsObjectStorageBucketInstance:\n  Name: bucketi\n  AwsObjectStorageBucketDefinition:\n    Name: bucketd\n  WorkloadInstance:\n    Name: wi\n".into(), ("Name: bucketi", "Name: bucketi\n  Labels: {a: b}"), true),
        case("domain-name", "dn", "DomainName:\n  Name: dn\n  Domain: example.org\n  Zone: Public\n  AdminEmail: admin@example.org\n  AwsAccountName: main\n  WorkloadInstance:\n    Name: wi\n".into(), ("Zone: Public", "Zone: Private"), true),
        case("domain-name-definition", "dnd", "DomainNameDefinition:\n  Name: dnd\n  Domain: example.net\n  AdminEmail: admin@example.net\n  CreateZone: true\n".into(), ("admin@", "ops@"), true),
        case("domain-name-instance", "dni", "DomainNameInstance:\n  Name: dni\n  DomainNameDefinition:\n    Name: dnd\n  WorkloadInstance:\n    Name: wi\n".into(), ("Name: dni", "Name: dni\n  Labels: {a: b}"), true),
        case("gateway", "gw", "Gateway:\n  Name: gw\n  ServiceName: web\n  GatewayClass: istio\n  CertificateIssuer: LetsencryptProduction\n  HttpPorts:\n    - Port: 80\n      HTTPSRedirect: true\n      ServicePort: 8080\n  WorkloadInstance:\n    Name: wi\n".into(), ("Port: 80", "Port: 8080"), true),
        case("gateway-definition", "gwd", "GatewayDefinition:\n  Name: gwd\n  ServiceName: web\n  SubDomain: www\n  DomainNameDefinition:\n    Name: dnd\n  TcpPorts:\n    - Port: 5432\n".into(), ("Port: 5432", "Port: 5433"), true),
        case("gateway-instance", "gwi", "GatewayInstance:\n  Name: gwi\n  GatewayDefinition:\n    Name: gwd\n  WorkloadInstance:\n    Name: wi\n".into(), ("Name: gwi", "Name: gwi\n  Labels: {a: b}"), true),
        case("secret", "sec", "Secret:\n  Name: sec\n  Data:\n    token: abc\n  WorkloadInstance:\n    Name: wi\n".into(), ("Name: sec", "Name: sec\n  Labels: {a: b}"), true),
        case("secret-definition", "secd", "SecretDefinition:\n  Name: secd\n  AwsAccountName: main\n  Data:\n    key: value\n".into(), ("Name: secd", "Name: secd\n  Labels: {a: b}"), true),
        case("secret-instance", "seci", "SecretInstance:\n  Name: seci\n  SecretDefinition:\n    Name: secd\n  WorkloadInstance:\n    Name: wi\n".into(), ("Name: seci", "Name: seci\n  Labels: {a: b}"), true),
        case("helm-workload", "hw", "HelmWorkload:\n  Name: hw\n  Repo: http://127.0.0.1:9\n  Chart: web\n  ChartVersion: 1.0.0\n  DefinitionValuesDocument: values.yaml\n  InstanceValues: |\n    replicas: 2\n".into(), ("ChartVersion: 1.0.0", "ChartVersion: 1.1.0"), true),
        case("helm-workload-definition", "hwd", "HelmWorkloadDefinition:\n  Name: hwd\n  Repo: oci://127.0.0.1:9/charts\n  Chart: api\n  Values: |\n    a: 1\n".into(), ("a: 1", "a: 2"), true),
        case("helm-workload-instance", "hwi", "HelmWorkloadInstance:\n  Name: hwi\n  HelmWorkloadDefinition:\n    Name: hwd\n  ReleaseNamespace: api\n  ValuesDocument: values.yaml\n".into(), ("ReleaseNamespace: api", "ReleaseNamespace: api2"), true),
        case("terraform", "tf", "Terraform:\n  Name: tf\n  ConfigDir: terraform\n  VarsDocument: terraform/vars.tfvars\n".into(), ("vars.tfvars", "vars2.tfvars"),true),
        case("terraform-definition", "tfd", "TerraformDefinition:\n  Name: tfd\n  ConfigDir: terraform\n  AwsAccount:\n    Name: main\n".into(), ("Name: tfd", "Name: tfd\n  Labels: {a: b}"),true),
        case("terraform-instance", "tfi", "TerraformInstance:\n  Name: tfi\n  TerraformDefinition:\n    Name: tfd\n  AwsAccount:\n    Name: main\n  VarsDocument: terraform/vars.tfvars\n".into(), ("vars.tfvars", "vars2.tfvars"),true),
        case("observability-stack", "obs", "ObservabilityStack:\n  Name: obs\n  MetricsEnabled: true\n  LoggingEnabled: false\n  GrafanaHelmValuesDocument: values.yaml\n".into(), ("LoggingEnabled: false", "LoggingEnabled: true"), true),
        case("observability-stack-definition", "obsd", "ObservabilityStackDefinition:\n  Name: obsd\n  MetricsEnabled: false\n".into(), ("MetricsEnabled: false", "MetricsEnabled: true"), true),
        case("observability-stack-instance", "obsi", "ObservabilityStackInstance:\n  Name: obsi\n  ObservabilityStackDefinition:\n    Name: obsd\n  PromtailHelmValues: |\n    a: 1\n".into(), ("a: 1", "a: 2"), true),
        case("control-plane", "cp", "ControlPlane:\n  Name: cp\n  Namespace: threeport-cp\n  AuthEnabled: true\n  Controllers: [workload-definition]\n  Image: registry.example.com/threeport-server:1.0\n  ControllerImages:\n    workload-definition: registry.example.com/custom:1\n  Secret: cp-plane\n".into(), ("AuthEnabled: true", "AuthEnabled: false"), true),
        case("control-plane-definition", "cpd", "ControlPlaneDefinition:\n  Name: cpd\n  AuthEnabled: false\n".into(), ("AuthEnabled: false", "AuthEnabled: true"), true),
        case("control-plane-instance", "cpi", "ControlPlaneInstance:\n  Name: cpi\n  ControlPlaneDefinition:\n    Name: cpd\n  Namespace: second\n  Secret: second-plane\n".into(), ("Namespace: second", "Namespace: third"), true),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_object_kind_goes_through_tptctl_from_threeport_config_files() {
    let moto = moto::moto().await;
    let cluster = MemoryCluster::new();
    common::install_external_secrets_crd(&cluster).await;
    let fake = FakeApiServer::start_with_token(cluster.clone(), "cluster-token")
        .await
        .unwrap();
    let shell = Shell::new(&moto.url);
    let manifest =
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: web\ndata:\n  greeting: hello\n";
    for name in ["web", "web2", "shop", "shop2"] {
        shell.write(
            &format!("manifests/{name}.yaml"),
            &manifest.replace("name: web", &format!("name: {name}")),
        );
    }
    shell.write("values.yaml", "replicas: 1\n");
    shell.write(
        "terraform/main.tf",
        "variable \"size\" {}\nresource \"terraform_data\" \"x\" {\n  input = var.size\n}\n",
    );
    shell.write("terraform/vars.tfvars", "size = 3\n");
    shell.write("terraform/vars2.tfvars", "size = 4\n");
    shell.write("aws/config", "[profile work]\nregion = us-east-2\n");
    shell.write(
        "aws/credentials",
        "[work]\naws_access_key_id = testing\naws_secret_access_key = testing\n",
    );

    // up: a control plane of its own, its context recorded and selected.
    let data = shell.dir.join("data");
    let up = shell.up(&data).await;
    assert!(up.contains("context \"local\" selected"), "{up}");
    let version = shell.ok(&["version"]).await;
    assert!(
        version.contains("tptctl 0.1.0") && version.contains("server 0.1.0"),
        "{version}"
    );
    assert!(shell.ok(&["config", "current"]).await.contains("local"));

    let cases = cases(&fake.url);
    for case in &cases {
        let file = shell.write(&format!("{}.yaml", case.name), &case.yaml);
        let created = shell.ok(&["create", case.object, "-c", &file]).await;
        assert!(
            created.contains(&format!("/{} created", case.name)),
            "{}: {created}",
            case.object
        );
    }

    // Secret values never reach the database.
    let db = std::fs::read(data.join("threeport.db")).unwrap_or_default();
    assert!(
        !db.windows(7).any(|w| w == b"hunter2"),
        "a secret value was stored"
    );

    // Describe and list each.
    for case in &cases {
        let described = shell.ok(&["describe", case.object, "-n", case.name]).await;
        assert!(
            described.contains("Spec:") && described.contains("state:"),
            "{}: {described}",
            case.object
        );
        let listing = shell
            .ok(&["get", &format!("{}s", case.object.trim_end_matches('s'))])
            .await;
        assert!(listing.contains(case.name), "{}: {listing}", case.object);
    }
    let accounts = shell
        .ok(&["describe", "aws-account", "-n", "main", "-o", "json"])
        .await;
    assert!(
        accounts.contains("\"us-east-2\"") && accounts.contains("<sealed>"),
        "{accounts}"
    );
    let workload = shell.ok(&["describe", "workload", "-c", "shop.yaml"]).await;
    for part in [
        "WorkloadDefinition/shop",
        "WorkloadInstance/shop",
        "AwsRelationalDatabaseInstance/shop-db",
        "AwsObjectStorageBucketDefinition/shop-files",
        "SecretInstance/shop-secret",
        "DomainNameDefinition/shop",
        "GatewayInstance/shop",
    ] {
        assert!(workload.contains(part), "{part} missing from:\n{workload}");
    }
    assert!(!workload.contains("hunter2"));

    // apply with a change: the changed object is updated, the rest unchanged.
    for case in &cases {
        let path = shell.dir.join(format!("{}.yaml", case.name));
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            text.contains(case.change.0),
            "{}: {:?} not in the config",
            case.object,
            case.change.0
        );
        std::fs::write(&path, text.replacen(case.change.0, case.change.1, 1)).unwrap();
        let mut args = vec!["apply", case.object, "-c", path.to_str().unwrap()];
        if case.name == "wi" {
            // --wait in non-terminal mode: a line per change, back once reconciled.
            args.extend(["--wait", "--timeout", "60s"]);
        }
        let applied = shell.ok(&args).await;
        assert!(applied.contains(" updated"), "{}: {applied}", case.object);
        if case.name == "wi" {
            assert!(
                applied.contains("WorkloadInstance/wi: reconciled"),
                "{applied}"
            );
        }
    }
    let labelled = shell
        .ok(&["get", "workload-instances", "-l", "tier=web"])
        .await;
    assert!(
        labelled.contains("wi") && !labelled.contains("shop"),
        "{labelled}"
    );
    let db = shell
        .ok(&[
            "describe",
            "aws-relational-database-definition",
            "-n",
            "db",
            "-o",
            "yaml",
        ])
        .await;
    assert!(db.contains("storage_gb: 30"), "{db}");
    let unchanged = shell.ok(&["apply", "workload", "-c", "shop.yaml"]).await;
    assert!(
        unchanged.contains("WorkloadDefinition/shop unchanged"),
        "{unchanged}"
    );
    // A part taken out of the config is pointed out, not deleted behind the user's back.
    let shop = std::fs::read_to_string(shell.dir.join("shop.yaml")).unwrap();
    let start = shop.find("  Secret:").unwrap();
    let end = shop.find("  DomainName:").unwrap();
    shell.write(
        "shop-less.yaml",
        &format!("{}{}", &shop[..start], &shop[end..]),
    );
    let applied = shell
        .run(&["apply", "workload", "-c", "shop-less.yaml"])
        .await;
    assert_eq!(applied.code, 0, "{}", applied.stderr);
    assert!(
        applied
            .stderr
            .contains("note: SecretDefinition/shop-secret is no longer in shop's config"),
        "{}",
        applied.stderr
    );
    assert!(
        !applied.stderr.contains("WorkloadResource"),
        "{}",
        applied.stderr
    );

    // delete, newest first; what a controller of this build serves is gone afterwards. The
    // default runtime and account stay.
    let kept = ["parking", "main"];
    for case in cases.iter().rev().filter(|c| !kept.contains(&c.name)) {
        let mut args = vec!["delete", case.object, "-n", case.name];
        if case.controlled {
            args.extend(["--wait", "--timeout", "120s"]);
        }
        let deleted = shell.run(&args).await;
        if case.name == "eksd" && deleted.code == 0 {
            // Its instance's teardown (in moto) finished first: nothing referred to it any more.
            continue;
        }
        if !case.controlled && case.object.ends_with("-definition") {
            // Its instance waits for a controller to remove it: refused, naming it.
            assert_eq!(deleted.code, 1, "{}: {}", case.object, deleted.stdout);
            assert!(
                deleted.stderr.contains("still referenced"),
                "{}",
                deleted.stderr
            );
            continue;
        }
        assert_eq!(
            deleted.code, 0,
            "{} {}: {}\n{}",
            case.object, case.name, deleted.stdout, deleted.stderr
        );
        assert!(
            deleted.stdout.contains(" deleting"),
            "{}: {}",
            case.object,
            deleted.stdout
        );
    }
    for case in cases
        .iter()
        .filter(|c| c.controlled && !kept.contains(&c.name))
    {
        let gone = shell.run(&["describe", case.object, "-n", case.name]).await;
        assert_eq!(
            gone.code, 1,
            "{} {} is still there: {}",
            case.object, case.name, gone.stdout
        );
        assert!(gone.stderr.contains("no "), "{}", gone.stderr);
    }

    // down stops it; up again finds the data.
    assert!(shell.down(&data).await.contains("stopped"));
    let unreachable = shell.run(&["get", "aws-accounts"]).await;
    assert_eq!(unreachable.code, 1, "{}", unreachable.stdout);
    assert!(
        unreachable.stderr.starts_with("error: unavailable"),
        "{}",
        unreachable.stderr
    );
    shell.up(&data).await;
    assert!(shell.ok(&["get", "aws-accounts"]).await.contains("main"));
    shell.down(&data).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mistakes_get_one_line_naming_the_field_and_waiting_fails_with_the_reason() {
    let shell = Shell::new("http://127.0.0.1:9");
    let data = shell.dir.join("data");
    shell.up(&data).await;
    // Once is enough: a second `up` finds it running.
    let again = shell
        .run(&[
            "up",
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
            data.to_str().unwrap(),
        ])
        .await;
    assert_eq!(again.code, 0, "{}", again.stderr);
    assert!(again.stderr.contains("already running"), "{}", again.stderr);
    let cases: &[(&str, &str, &str, &[&str])] = &[
        // A misspelled field: its line and name.
        (
            "aws-relational-database-definition",
            "typo.yaml",
            "AwsRelationalDatabaseDefinition:\n  Name: db\n  Engine: postgres\n  StorageGB: 20\n",
            &["typo.yaml:4:", "`StorageGB`"],
        ),
        // A referenced name that does not exist.
        (
            "workload-instance",
            "missing.yaml",
            "WorkloadInstance:\n  Name: wi\n  WorkloadDefinition:\n    Name: nope\n",
            &[
                "WorkloadInstance.WorkloadDefinition",
                "no WorkloadDefinition named \"nope\"",
            ],
        ),
        // A document file that does not exist.
        (
            "workload",
            "nodoc.yaml",
            "Workload:\n  Name: w\n  YAMLDocument: gone.yaml\n",
            &["Workload.YAMLDocument", "gone.yaml"],
        ),
        // No default account to fall back on.
        (
            "aws-object-storage-bucket-definition",
            "noacct.yaml",
            "AwsObjectStorageBucketDefinition:\n  Name: b\n  WorkloadServiceAccountName: web\n  WorkloadBucketEnvVar: B\n",
            &["AwsAccountName", "no AwsAccount has default_account: true"],
        ),
        // What the server refuses, named by object and field.
        (
            "kubernetes-runtime",
            "badloc.yaml",
            "KubernetesRuntime:\n  Name: r\n  InfraProvider: kind\n  Location: nowhere\n",
            &["KubernetesRuntimeInstance/r", "location"],
        ),
    ];
    for (object, file, yaml, expected) in cases {
        shell.write(file, yaml);
        let ran = shell.run(&["create", object, "-c", file]).await;
        assert_eq!(ran.code, 1, "{file}: {}", ran.stdout);
        let line = ran.stderr.trim_end();
        assert_eq!(line.lines().count(), 1, "one line: {line}");
        for part in *expected {
            assert!(line.contains(part), "{file}: {part:?} not in {line:?}");
        }
    }
    // Nothing of a refused abstraction was created (one transaction).
    assert!(
        shell
            .ok(&["get", "kubernetes-runtime-definitions"])
            .await
            .contains("no ")
    );
    // Usage errors exit 2.
    assert_eq!(
        shell
            .run(&["create", "wokrload", "-c", "x.yaml"])
            .await
            .code,
        2
    );
    assert_eq!(
        shell
            .run(&["create", "workload-instance", "-c", "typo.yaml"])
            .await
            .code,
        2
    );
    assert_eq!(shell.run(&["frobnicate"]).await.code, 2);
    // --verbose adds the causes.
    let verbose = shell
        .run(&[
            "--verbose",
            "create",
            "workload-instance",
            "-c",
            "missing.yaml",
        ])
        .await;
    assert_eq!(verbose.code, 1);

    // --wait: a part that fails stops the wait with its reason, non-zero, with plain
    // progress lines on a non-terminal.
    shell.write(
        "broken.yaml",
        "KubernetesRuntime:\n  Name: broken\n  InfraProvider: kind\n  Location: Europe:Paris\n",
    );
    let ran = shell
        .run(&[
            "create",
            "kubernetes-runtime",
            "-c",
            "broken.yaml",
            "--wait",
            "--timeout",
            "60s",
        ])
        .await;
    assert_eq!(ran.code, 1, "{}\n{}", ran.stdout, ran.stderr);
    assert!(
        ran.stdout.contains("KubernetesRuntimeInstance/broken: "),
        "{}",
        ran.stdout
    );
    assert!(
        !ran.stdout.contains('\x1b'),
        "no terminal escapes when not a terminal"
    );
    assert!(
        ran.stderr
            .contains("KubernetesRuntimeInstance/broken failed")
            && ran.stderr.contains("connection data"),
        "{}",
        ran.stderr
    );
    // And one that does not get there in time (no controller serves Terraform yet).
    shell.write(
        "account.yaml",
        "AwsAccount:\n  Name: slow\n  AccountID: \"123456789012\"\n  DefaultRegion: us-east-1\n  RoleArn: arn:aws:iam::123456789012:role/threeport\n",
    );
    shell
        .ok(&["create", "aws-account", "-c", "account.yaml"])
        .await;
    // An apply that takes longer than the wait.
    shell.write(
        "slow/main.tf",
        "resource \"terraform_data\" \"x\" {\n  provisioner \"local-exec\" {\n    command = \"sleep 20\"\n  }\n}\n",
    );
    shell.write(
        "slow.yaml",
        "Terraform:\n  Name: slow\n  ConfigDir: slow\n  AwsAccountName: slow\n",
    );
    let ran = shell
        .run(&[
            "create",
            "terraform",
            "-c",
            "slow.yaml",
            "--wait",
            "--timeout",
            "2s",
        ])
        .await;
    assert_eq!(ran.code, 1);
    assert!(
        ran.stderr.contains("timed out after 2s") && ran.stderr.contains("TerraformInstance/slow"),
        "{}",
        ran.stderr
    );

    // Contexts: environment overrides, set-context/use/list/delete.
    let wrong = shell
        .run(&["--url", "http://127.0.0.1:9", "get", "workloads"])
        .await;
    assert_eq!(wrong.code, 1);
    shell
        .ok(&[
            "config",
            "set-context",
            "other",
            "--url",
            "http://127.0.0.1:9",
            "--token",
            "tp_x",
        ])
        .await;
    assert!(shell.ok(&["config", "list"]).await.contains("other"));
    shell.ok(&["config", "use", "other"]).await;
    assert_eq!(shell.ok(&["config", "current"]).await.trim(), "other");
    shell.ok(&["config", "use", "local"]).await;
    shell.ok(&["config", "delete", "other"]).await;
    assert!(shell.ok(&["completion", "bash"]).await.contains("tptctl"));
    shell.down(&data).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_terraform_config_stops_at_a_plan_that_tptctl_shows_and_approves() {
    let shell = Shell::new("http://127.0.0.1:9");
    let data = shell.dir.join("data");
    shell.up(&data).await;
    shell.write(
        "account.yaml",
        "AwsAccount:\n  Name: tf\n  AccountID: \"123456789012\"\n  DefaultRegion: us-east-1\n  AccessKeyID: AKIATPTCTL\n  SecretAccessKey: not-a-real-secret\n",
    );
    shell
        .ok(&["create", "aws-account", "-c", "account.yaml"])
        .await;
    // ConfigDir and VarsDocument are relative to the config file.
    shell.write(
        "infra/tf/main.tf",
        "variable \"who\" {\n  type = string\n}\nresource \"terraform_data\" \"hello\" {\n  input = \"hello ${var.who}\"\n}\noutput \"hello\" {\n  value = terraform_data.hello.output\n}\n",
    );
    shell.write("infra/tf/prod.tfvars", "who = \"tptctl\"\n");
    shell.write(
        "infra/terraform.yaml",
        "Terraform:\n  Name: greeter\n  ConfigDir: tf\n  VarsDocument: tf/prod.tfvars\n  AwsAccountName: tf\n  Approval: Manual\n",
    );
    shell
        .ok(&["create", "terraform", "-c", "infra/terraform.yaml"])
        .await;
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
    let described = loop {
        let out = shell
            .ok(&["describe", "terraform-instance", "-n", "greeter"])
            .await;
        if out.contains("awaiting approval") {
            break out;
        }
        assert!(tokio::time::Instant::now() < deadline, "no plan: {out}");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    };
    assert!(
        described.contains("1 to add, 0 to change, 0 to destroy"),
        "{described}"
    );
    assert!(described.contains("terraform_data.hello"), "{described}");
    let approved = shell
        .ok(&["approve", "terraform-instance", "-n", "greeter"])
        .await;
    assert!(approved.contains("approved plan"), "{approved}");
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let out = shell
            .ok(&["describe", "terraform-instance", "-n", "greeter"])
            .await;
        if out.contains("\"hello tptctl\"") {
            assert!(out.contains("(applied)"), "{out}");
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "not applied: {out}");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    let again = shell
        .run(&["approve", "terraform-instance", "-n", "greeter"])
        .await;
    assert_eq!(again.code, 1);
    assert!(
        again.stderr.contains("no plan awaiting approval"),
        "{}",
        again.stderr
    );
    shell.down(&data).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kind_of_ones_own_goes_through_tptctl() {
    let shell = Shell::new("http://127.0.0.1:9");
    let data = shell.dir.join("data");
    shell.up(&data).await;
    // The kind is registered from a config file, with the definition's own fields.
    shell.write(
        "kind.yaml",
        "KindDefinition:\n  Name: certificates\n  kind: Certificate\n  schema:\n    type: object\n    \
         required: [domain]\n    additionalProperties: false\n    properties:\n      \
         domain: {type: string}\n      size: {type: integer, minimum: 1}\n",
    );
    let registered = shell
        .ok(&["create", "kind-definition", "-c", "kind.yaml"])
        .await;
    assert!(
        registered.contains("KindDefinition/certificates created"),
        "{registered}"
    );
    let kinds = shell.ok(&["get", "kind-definitions"]).await;
    assert!(kinds.contains("certificates"), "{kinds}");

    shell.write(
        "cert.yaml",
        "Certificate:\n  Name: web\n  Labels: {tier: edge}\n  domain: web.example.com\n  size: 2\n",
    );
    let created = shell
        .ok(&["create", "certificate", "-c", "cert.yaml"])
        .await;
    assert!(created.contains("Certificate/web created"), "{created}");
    let listed = shell.ok(&["get", "certificates", "-l", "tier=edge"]).await;
    assert!(listed.contains("web"), "{listed}");
    let described = shell.ok(&["describe", "certificate", "-n", "web"]).await;
    assert!(
        described.contains("Certificate/web") && described.contains("domain: web.example.com"),
        "{described}"
    );
    let unchanged = shell.ok(&["apply", "certificate", "-c", "cert.yaml"]).await;
    assert!(
        unchanged.contains("Certificate/web unchanged"),
        "{unchanged}"
    );
    shell.write(
        "cert.yaml",
        "Certificate:\n  Name: web\n  Labels: {tier: edge}\n  domain: web.example.com\n  size: 3\n",
    );
    let updated = shell.ok(&["apply", "certificate", "-c", "cert.yaml"]).await;
    assert!(updated.contains("Certificate/web updated"), "{updated}");
    // The schema's refusal names the field.
    shell.write(
        "bad.yaml",
        "Certificate:\n  Name: bad\n  domain: bad.example.com\n  size: 0\n",
    );
    let refused = shell
        .run(&["create", "certificate", "-c", "bad.yaml"])
        .await;
    assert_eq!(refused.code, 1);
    assert!(refused.stderr.contains("spec.size"), "{}", refused.stderr);
    let deleted = shell.ok(&["delete", "certificate", "-n", "web"]).await;
    assert!(deleted.contains("deleting"), "{deleted}");
    shell.down(&data).await;
}
