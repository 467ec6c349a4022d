//! Terraform with the real `terraform` binary (on PATH, or `THREEPORT_TERRAFORM_BIN`) and
//! only its built-in provider (`tests/terraform/main.tf`): through a `threeport-server serve`
//! process, create → applied with outputs (sensitive ones sealed, opened on request), a
//! variable change → a plan of one change, applied; manual approval stops at the plan, a
//! wrong or stale approval is refused, the right one applies; delete → destroyed; no AWS
//! secret in the working directory or (unsealed) in the database; syntax errors name the file
//! and line. Kill the server mid-apply and the restarted one resumes from the stored state.
//! In process: two replicas reconciling one instance at once never both apply (the state
//! lock), a dead run's lock lapses, and delete removes the state.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use reqwest::StatusCode;
use serde_json::{Value, json};
use threeport_api::model::{AwsAccount, AwsCredentials, TerraformDefinition, TerraformInstance};
use threeport_core::{Action, Api, Context, MemoryBackends, Object, ReconcileError, Reconciler};
use threeport_server::Sealer;
use threeport_server::controllers::terraform::backend::StateBackend;
use threeport_server::controllers::terraform::state::StateStore;
use threeport_server::controllers::terraform::{TerraformConfig, TerraformReconciler};
use threeport_server::controllers::{AwsProvider, AwsServices};
use tokio_util::sync::CancellationToken;

use common::process::{Server, create, send, serve, temp_dir, wait_for};

const CONFIG: &str = include_str!("terraform/main.tf");
const ACCESS_KEY_ID: &str = "AKIATERRAFORMTEST";

fn terraform_bin() -> String {
    std::env::var("THREEPORT_TERRAFORM_BIN").unwrap_or_else(|_| "terraform".into())
}

/// Every file under `dir` that contains `needle`.
fn files_containing(dir: &Path, needle: &str) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return found;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            found.extend(files_containing(&path, needle));
        } else if let Ok(bytes) = std::fs::read(&path)
            && bytes.windows(needle.len()).any(|w| w == needle.as_bytes())
        {
            found.push(path);
        }
    }
    found
}

struct Plane {
    http: reqwest::Client,
    server: Server,
    token: String,
    data: PathBuf,
    account: String,
    secret: String,
}

impl Plane {
    async fn start(extra: &[&str]) -> Plane {
        let data = temp_dir();
        let mut args = vec!["--terraform-bin".to_owned(), terraform_bin()];
        args.extend(extra.iter().map(|a| a.to_string()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let server = serve(&data, &args).await;
        let token = server.token.clone().unwrap();
        let http = common::http_client();
        let secret = format!("SECRET{}", uuid::Uuid::now_v7().simple());
        let account = create(
            &http,
            format!("{}/v0/aws-accounts", server.base),
            &token,
            json!({"name": "tf", "spec": {"account_id": "123456789012",
                "default_region": "us-east-1",
                "credentials": {"access_keys": {"access_key_id": ACCESS_KEY_ID,
                                                "secret_access_key": secret}}}}),
        )
        .await;
        Plane {
            http,
            server,
            token,
            data,
            account,
            secret,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}/v0/{path}", self.server.base)
    }

    async fn definition(&self, name: &str, files: Value) -> (StatusCode, Value) {
        send(
            self.http
                .post(self.url("terraform-definitions"))
                .bearer_auth(&self.token)
                .json(&json!({"name": name, "spec": {"configuration_files": files,
                                                      "aws_account": self.account}})),
        )
        .await
    }

    async fn instance(&self, name: &str, definition: &str, variables: Value) -> String {
        create(
            &self.http,
            self.url("terraform-instances"),
            &self.token,
            json!({"name": name, "spec": {"definition": definition, "variables": variables}}),
        )
        .await
    }

    async fn patch(&self, id: &str, spec: Value) {
        let (status, body) = send(
            self.http
                .patch(self.url(&format!("terraform-instances/{id}")))
                .bearer_auth(&self.token)
                .json(&json!({"spec": spec})),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }

    /// Waits until `done` holds for the instance.
    async fn until(&self, id: &str, done: impl Fn(&Value) -> bool) -> Value {
        wait_for(
            &self.http,
            &self.url(&format!("terraform-instances/{id}")),
            &self.token,
            done,
        )
        .await
    }

    async fn approve(&self, id: &str, plan: &str) -> (StatusCode, Value) {
        send(
            self.http
                .post(self.url(&format!("terraform-instances/{id}/approve")))
                .bearer_auth(&self.token)
                .json(&json!({"plan": plan})),
        )
        .await
    }
}

fn greeting(instance: &Value) -> &Value {
    &instance["status"]["details"]["outputs"]["greeting"]["value"]
}

fn applied_with(greeting_text: &'static str) -> impl Fn(&Value) -> bool {
    move |instance| {
        greeting(instance) == greeting_text && instance["status"]["state"] == "reconciled"
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_apply_plan_changes_wait_for_approval_and_destroy() {
    let plane = Plane::start(&[]).await;
    let snapshot = temp_dir();
    let (status, definition) = plane
        .definition("greeter", json!({"main.tf": CONFIG}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{definition}");
    let definition = definition["id"].as_str().unwrap().to_owned();
    let id = plane
        .instance(
            "greeter",
            &definition,
            json!({"name": "world", "snapshot": snapshot}),
        )
        .await;

    // Created → applied, outputs in status; the sensitive one sealed.
    let applied = plane.until(&id, applied_with("hello world")).await;
    let details = &applied["status"]["details"];
    let token = &details["outputs"]["token"];
    assert_eq!(token["sensitive"], true);
    assert!(token.get("value").is_none(), "{token}");
    assert!(token["sealed"].as_str().unwrap().starts_with("sealed:v1:"));
    assert_eq!(details["plan"]["add"], 2, "{details}");
    assert_eq!(details["plan"]["applied"], true);
    let outputs = plane.url(&format!("terraform-instances/{id}/outputs"));
    let (_, shown) = send(plane.http.get(&outputs).bearer_auth(&plane.token)).await;
    assert_eq!(shown["token"], json!({"sensitive": true, "value": null}));
    assert_eq!(shown["greeting"]["value"], "hello world");
    let (_, opened) = send(
        plane
            .http
            .get(format!("{outputs}?sensitive=true"))
            .bearer_auth(&plane.token),
    )
    .await;
    assert_eq!(opened["token"]["value"], "token-world");

    // The account reached Terraform as environment; its secret is nowhere on disk: not in
    // the working directory, and neither it nor the sensitive output (in the state) in the
    // database unsealed.
    assert_eq!(
        std::fs::read_to_string(snapshot.join("key-id")).unwrap(),
        ACCESS_KEY_ID
    );
    assert!(snapshot.join("workdir/main.tf").exists());
    assert_eq!(
        files_containing(&snapshot, &plane.secret),
        Vec::<PathBuf>::new()
    );
    assert_eq!(
        files_containing(&plane.data, &plane.secret),
        Vec::<PathBuf>::new()
    );
    assert_eq!(
        files_containing(&plane.data, "token-world"),
        Vec::<PathBuf>::new()
    );
    // The working directories are gone after their runs.
    let leftovers: Vec<_> = std::fs::read_dir(plane.data.join("terraform"))
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    assert_eq!(leftovers, Vec::<PathBuf>::new());

    // A variable change: a plan of one change, applied.
    plane
        .patch(&id, json!({"variables": {"name": "moon"}}))
        .await;
    let changed = plane.until(&id, applied_with("hello moon")).await;
    let plan = &changed["status"]["details"]["plan"];
    assert_eq!(
        plan["changes"],
        json!([{"address": "terraform_data.greeting", "action": "replace"}]),
        "{plan}"
    );

    // Manual approval: the run stops at the plan.
    plane
        .patch(
            &id,
            json!({"approval": "manual", "variables": {"name": "mars"}}),
        )
        .await;
    let waiting = plane
        .until(&id, |i| {
            i["status"]["details"]["plan"]["awaiting_approval"] == true
                && i["status"]["state"] == "reconciled"
        })
        .await;
    assert_eq!(greeting(&waiting), "hello moon", "not applied yet");
    let plan = waiting["status"]["details"]["plan"].clone();
    assert_eq!(plan["changes"][0]["address"], "terraform_data.greeting");
    let applied_condition = waiting["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "Applied")
        .unwrap()
        .clone();
    assert_eq!(applied_condition["reason"], "AwaitingApproval");
    let (status, refused) = plane.approve(&id, "not-the-plan").await;
    assert_eq!(status, StatusCode::CONFLICT, "{refused}");
    assert!(refused["message"].as_str().unwrap().contains("replaced"));
    // A change after the plan makes it stale: approving it is refused.
    plane
        .patch(&id, json!({"variables": {"name": "venus"}}))
        .await;
    let stale_id = plan["id"].as_str().unwrap();
    let (status, refused) = plane.approve(&id, stale_id).await;
    assert_eq!(status, StatusCode::CONFLICT, "{refused}");
    let message = refused["message"].as_str().unwrap();
    assert!(
        message.contains("stale") || message.contains("replaced"),
        "{message}"
    );
    // The new plan, approved, is applied.
    let replanned = plane
        .until(&id, |i| {
            let plan = &i["status"]["details"]["plan"];
            plan["awaiting_approval"] == true && plan["id"] != stale_id
        })
        .await;
    let new_plan = replanned["status"]["details"]["plan"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (status, approved) = plane.approve(&id, &new_plan).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{approved}");
    let done = plane.until(&id, applied_with("hello venus")).await;
    assert_eq!(done["status"]["details"]["plan"]["id"], new_plan.as_str());
    assert_eq!(done["status"]["details"]["plan"]["applied"], true);
    let (status, _) = plane.approve(&id, &new_plan).await;
    assert_eq!(
        status,
        StatusCode::CONFLICT,
        "nothing awaits approval any more"
    );

    // Delete → destroyed (the destroy-time provisioner ran), the instance gone.
    let (status, _) = send(
        plane
            .http
            .delete(plane.url(&format!("terraform-instances/{id}")))
            .bearer_auth(&plane.token),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let (status, _) = send(
            plane
                .http
                .get(plane.url(&format!("terraform-instances/{id}")))
                .bearer_auth(&plane.token),
        )
        .await;
        if status == StatusCode::NOT_FOUND {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "never deleted");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(snapshot.join("destroyed").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_name_the_file_and_line() {
    let plane = Plane::start(&[]).await;
    // A syntax error: refused at the door, naming the file and line.
    let broken = "variable \"name\" {\n  type = string\n\nresource \"terraform_data\" \"a\" {\n  input = \"x\n}\n";
    let (status, body) = plane
        .definition(
            "broken",
            json!({"main.tf": "# fine\n", "broken.tf": broken}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["field"], "spec.configuration_files.broken.tf");
    assert!(
        body["message"].as_str().unwrap().contains("broken.tf:5:"),
        "{body}"
    );
    let (status, body) = plane
        .definition("json", json!({"main.tf.json": "{\"output\": {\n\"x\": }}"}))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("main.tf.json:2:"),
        "{body}"
    );
    // What only Terraform can tell (a block without its label): terminal with Terraform's
    // message, file and line.
    let (status, body) = plane
        .definition(
            "unlabelled",
            json!({"main.tf": "resource \"terraform_data\" {\n  input = 1\n}\n"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let id = plane
        .instance("unlabelled", body["id"].as_str().unwrap(), json!({}))
        .await;
    let failed = plane
        .until(&id, |i| i["status"]["state"] == "creation_failed")
        .await;
    let reason = failed["status"]["reason"].as_str().unwrap();
    assert!(reason.contains("main.tf line 1"), "{reason}");
}

/// Pids of `terraform` processes whose working directory is under `dir`.
fn terraform_processes_in(dir: &Path) -> Vec<u32> {
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let comm = std::fs::read_to_string(entry.path().join("comm")).unwrap_or_default();
        let cwd = std::fs::read_link(entry.path().join("cwd")).unwrap_or_default();
        if comm.trim() == "terraform" && cwd.starts_with(dir) {
            pids.push(pid);
        }
    }
    pids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_apply_resumes_from_the_stored_state() {
    let lease = ["--terraform-lock-lease", "2"];
    let plane = Plane::start(&lease).await;
    let snapshot = temp_dir();
    let (_, definition) = plane
        .definition("resumed", json!({"main.tf": CONFIG}))
        .await;
    let definition = definition["id"].as_str().unwrap().to_owned();
    let id = plane
        .instance(
            "resumed",
            &definition,
            json!({"name": "a", "snapshot": snapshot}),
        )
        .await;
    let first = plane.until(&id, applied_with("hello a")).await;
    let base_id = first["status"]["details"]["outputs"]["base_id"]["value"].clone();

    // A change whose apply takes a while; the server is killed in the middle of it.
    plane
        .patch(&id, json!({"variables": {"name": "b", "delay": 6}}))
        .await;
    let applies = snapshot.join("applies");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while std::fs::read_to_string(&applies)
        .unwrap_or_default()
        .lines()
        .count()
        < 3
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the apply never started"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let work = plane.data.join("terraform");
    assert!(!terraform_processes_in(&work).is_empty(), "terraform runs");
    let Plane {
        server,
        data,
        http,
        token,
        ..
    } = plane;
    server.kill().await;
    // Terraform dies with its controller: no apply goes on unwatched.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(terraform_processes_in(&work), Vec::<u32>::new());

    // Restarted on the same data: the dead run's lock lapses, the change is planned from the
    // stored state (the first resource kept, not made again) and applied.
    let server = serve(
        &data,
        &["--terraform-bin", &terraform_bin(), lease[0], lease[1]],
    )
    .await;
    let url = format!("{}/v0/terraform-instances/{id}", server.base);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    let resumed = loop {
        let (status, got) = send(http.get(&url).bearer_auth(&token)).await;
        assert_eq!(status, StatusCode::OK, "{got}");
        if greeting(&got) == "hello b" {
            break got;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never resumed: {got}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let details = &resumed["status"]["details"];
    assert_eq!(details["outputs"]["base_id"]["value"], base_id, "{details}");
    assert_eq!(
        details["plan"]["changes"],
        json!([{"address": "terraform_data.greeting", "action": "replace"}])
    );
    // The killed run's working directory went with the run that took over.
    let leftovers: Vec<_> = std::fs::read_dir(data.join("terraform"))
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    assert_eq!(leftovers, Vec::<PathBuf>::new());
}

/// Credentials for Terraform without AWS: fixed environment.
#[derive(Debug)]
struct FixedEnvironment;

#[async_trait]
impl AwsProvider for FixedEnvironment {
    async fn services(
        &self,
        _: &Object<AwsAccount>,
        _: &str,
    ) -> threeport_core::Result<AwsServices> {
        Err(threeport_core::Error::unavailable("no AWS services here"))
    }

    async fn environment(
        &self,
        _: &Object<AwsAccount>,
        region: &str,
    ) -> threeport_core::Result<Vec<(String, String)>> {
        Ok(vec![
            ("AWS_REGION".into(), region.into()),
            ("AWS_ACCESS_KEY_ID".into(), ACCESS_KEY_ID.into()),
        ])
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_never_apply_one_instance_at_once() {
    let memory = MemoryBackends::new();
    let shutdown = CancellationToken::new();
    let store: Arc<dyn threeport_core::Store> = memory.store.clone();
    let sealer = Arc::new(Sealer::ephemeral().unwrap());
    let work = temp_dir();
    let config = TerraformConfig {
        bin: terraform_bin().into(),
        work_root: work.clone(),
        lock_lease: Duration::from_secs(30),
    };
    // Two replicas: each its own backend server, one store.
    let mut replicas = Vec::new();
    for _ in 0..2 {
        let states = StateStore::new(store.clone(), sealer.clone(), config.lock_lease);
        let backend = StateBackend::start(states, shutdown.clone()).await.unwrap();
        replicas.push(Arc::new(TerraformReconciler::new(
            Arc::new(FixedEnvironment),
            backend,
            sealer.clone(),
            &config,
        )));
    }
    let account = Api::<AwsAccount>::new(store.clone())
        .create(
            "tf",
            AwsAccount {
                account_id: "123456789012".into(),
                default_region: "us-east-1".into(),
                default_account: true,
                credentials: AwsCredentials::Role {
                    role_arn: "arn:aws:iam::123456789012:role/terraform".into(),
                    external_id: None,
                },
            },
        )
        .await
        .unwrap();
    let definition = Api::<TerraformDefinition>::new(store.clone())
        .create(
            "greeter",
            TerraformDefinition {
                configuration_files: [("main.tf".to_owned(), CONFIG.to_owned())].into(),
                aws_account: account.id(),
                approval: Default::default(),
            },
        )
        .await
        .unwrap();
    let snapshot = temp_dir();
    let instance = Api::<TerraformInstance>::new(store.clone())
        .create(
            "greeter",
            TerraformInstance {
                definition: definition.id(),
                variables: [
                    ("name".to_owned(), json!("twice")),
                    ("snapshot".to_owned(), json!(snapshot)),
                    ("delay".to_owned(), json!(4)),
                ]
                .into(),
                aws_account: None,
                approval: None,
                approved_plan: None,
            },
        )
        .await
        .unwrap();

    // Both reconcile the same instance at once (as two replicas would if the runtime's lease
    // were lost): the one that comes second finds the state locked and backs off.
    let first = {
        let (replica, mut object, store) = (replicas[0].clone(), instance.clone(), store.clone());
        tokio::spawn(async move {
            let result = replica.reconcile(&mut object, &Context::new(store)).await;
            (result, object)
        })
    };
    let applies = snapshot.join("applies");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while !applies.exists() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the apply never started"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut second_object = instance.clone();
    let second = replicas[1]
        .reconcile(&mut second_object, &Context::new(store.clone()))
        .await;
    match second {
        Err(ReconcileError::Retryable(message)) => {
            assert!(message.contains("locked by another run"), "{message}")
        }
        other => panic!("the second replica was not refused: {other:?}"),
    }
    let (result, mut applied) = first.await.unwrap();
    assert!(matches!(result, Ok(Action::Done)), "{result:?}");
    assert_eq!(
        std::fs::read_to_string(&applies).unwrap(),
        "started\nfinished\n",
        "applied once"
    );
    assert_eq!(
        applied.status.details.outputs["greeting"].value,
        Some(json!("hello twice"))
    );

    // A lock whose run died lapses with its lease.
    let states = StateStore::new(store.clone(), sealer.clone(), Duration::from_millis(300));
    let other = threeport_core::ObjectId::new();
    states
        .lock(other, "dead-run", json!({"ID": "a"}))
        .await
        .unwrap();
    assert!(
        states
            .lock(other, "next-run", json!({"ID": "b"}))
            .await
            .is_err()
    );
    tokio::time::sleep(Duration::from_millis(400)).await;
    states
        .lock(other, "next-run", json!({"ID": "b"}))
        .await
        .unwrap();
    assert_eq!(
        states.live_lock(other).await.unwrap().unwrap().holder,
        "next-run"
    );

    // Delete: destroyed, and the state forgotten.
    let states = replicas[0].clone();
    assert!(
        StateStore::new(store.clone(), sealer.clone(), config.lock_lease)
            .read(instance.id())
            .await
            .unwrap()
            .is_some()
    );
    let done = states
        .cleanup(&mut applied, &Context::new(store.clone()))
        .await;
    assert!(matches!(done, Ok(Action::Done)), "{done:?}");
    assert!(snapshot.join("destroyed").exists());
    assert!(
        StateStore::new(store.clone(), sealer.clone(), config.lock_lease)
            .get(instance.id())
            .await
            .unwrap()
            .is_none()
    );
    shutdown.cancel();
}
