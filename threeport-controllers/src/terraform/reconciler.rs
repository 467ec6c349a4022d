//! The `terraform-instance` controller.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::Value;
use threeport_api::model::{
    AwsAccount, TerraformApproval, TerraformDefinition, TerraformInstance, TerraformOutput,
    TerraformPlan,
};
use threeport_core::object::ConditionStatus;
use threeport_core::{Action, Context, Object, ObjectId, ReconcileError, Reconciler};

use super::backend::StateBackend;
use super::cli::{
    BACKEND_OVERRIDE, PLAN_FILE, TerraformCli, VARIABLES_FILE, WorkDir, plan_changes,
};
use super::{inputs_digest, output_field};
use crate::AwsProvider;
use crate::seal::Sealer;

/// Condition of a Terraform instance: whether its configuration is applied.
pub const APPLIED: &str = "Applied";

/// How the controller runs Terraform.
#[derive(Debug, Clone)]
pub struct TerraformConfig {
    /// The binary (`terraform`, found on `PATH`, by default).
    pub bin: PathBuf,
    /// Where runs' private working directories are made (removed after each run).
    pub work_root: PathBuf,
    /// How long a state lock outlives a run that stopped renewing it.
    pub lock_lease: Duration,
}

impl Default for TerraformConfig {
    fn default() -> Self {
        TerraformConfig {
            bin: PathBuf::from("terraform"),
            work_root: std::env::temp_dir().join("threeport-terraform"),
            lock_lease: Duration::from_secs(60),
        }
    }
}

/// Reconciles `TerraformInstance`.
#[derive(Debug, Clone)]
pub struct TerraformReconciler {
    aws: Arc<dyn AwsProvider>,
    backend: StateBackend,
    sealer: Arc<Sealer>,
    cli: TerraformCli,
    work_root: PathBuf,
}

/// One run: its working directory (with the configuration, variables and backend written)
/// and the environment Terraform gets.
struct Run {
    id: String,
    instance: ObjectId,
    dir: WorkDir,
    env: Vec<(String, String)>,
}

impl TerraformReconciler {
    /// A controller running Terraform as `config` says, acting in AWS accounts through `aws`,
    /// keeping states in `backend`, sealing sensitive outputs with `sealer`.
    pub fn new(
        aws: Arc<dyn AwsProvider>,
        backend: StateBackend,
        sealer: Arc<Sealer>,
        config: &TerraformConfig,
    ) -> Self {
        TerraformReconciler {
            aws,
            backend,
            sealer,
            cli: TerraformCli::new(&config.bin),
            work_root: config.work_root.clone(),
        }
    }

    /// The command line it runs.
    pub fn cli(&self) -> &TerraformCli {
        &self.cli
    }

    /// Prepares a run of `instance`: a private directory with the configuration, the
    /// variables and the backend override; the account's credentials and the backend's
    /// address as environment; `terraform init` done.
    async fn prepare(
        &self,
        instance: &Object<TerraformInstance>,
        definition: &TerraformDefinition,
        ctx: &Context,
    ) -> Result<Run, ReconcileError> {
        let account = ctx
            .api::<AwsAccount>()
            .get(instance.spec.account(definition))
            .await?;
        let mut env = self
            .aws
            .environment(&account, &account.spec.default_region)
            .await
            .map_err(|e| ReconcileError::retryable(format!("aws_account: {e}")))?;
        self.sweep(instance.id()).await;
        let id = super::backend::random_hex()?;
        env.extend(self.backend.environment(instance.id(), &id));
        let io = |e: std::io::Error| ReconcileError::retryable(format!("working directory: {e}"));
        let dir =
            WorkDir::create(&self.work_root, &format!("{}-{id}", instance.id())).map_err(io)?;
        for (name, content) in &definition.configuration_files {
            std::fs::write(dir.path().join(name), content).map_err(io)?;
        }
        std::fs::write(
            dir.path().join(BACKEND_OVERRIDE),
            "terraform {\n  backend \"http\" {}\n}\n",
        )
        .map_err(io)?;
        let variables = serde_json::to_vec_pretty(&instance.spec.variables)
            .map_err(|e| ReconcileError::terminal(format!("variables: {e}")))?;
        std::fs::write(dir.path().join(VARIABLES_FILE), variables).map_err(io)?;
        let run = Run {
            id,
            instance: instance.id(),
            dir,
            env,
        };
        self.terraform(&run, &["init", "-input=false", "-no-color"])
            .await?;
        Ok(run)
    }

    /// Removes the working directories earlier runs of `instance` left behind (their
    /// controller was killed): those whose run no longer holds the state's lock.
    async fn sweep(&self, instance: ObjectId) {
        let prefix = format!("{instance}-");
        let Ok(entries) = std::fs::read_dir(&self.work_root) else {
            return;
        };
        let holder = match self.backend.states().live_lock(instance).await {
            Ok(lock) => lock.map(|lock| lock.holder),
            Err(_) => return,
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(run) = name.strip_prefix(&prefix) else {
                continue;
            };
            if holder.as_deref() != Some(run) {
                tracing::info!(%instance, run, "removing the working directory of a dead run");
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
    }

    /// Runs `terraform <args>` for `run`, renewing the run's state lock while it works.
    async fn terraform(&self, run: &Run, args: &[&str]) -> Result<Vec<u8>, ReconcileError> {
        let states = self.backend.states().clone();
        let (instance, holder) = (run.instance, run.id.clone());
        let every = states.lease() / 3;
        let renewal = tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                if let Err(err) = states.renew(instance, &holder).await {
                    tracing::warn!(%instance, error = %err, "renewing the Terraform state lock");
                }
            }
        });
        tracing::debug!(instance = %run.instance, command = args[0], "terraform");
        let result = self.cli.run(run.dir.path(), args, &run.env).await;
        renewal.abort();
        result
    }

    /// Plans `run` into its plan file; returns the plan's summary (`inputs` recorded in it).
    async fn plan(
        &self,
        run: &Run,
        inputs: &str,
        destroy: bool,
    ) -> Result<(TerraformPlan, Vec<u8>), ReconcileError> {
        let out = format!("-out={PLAN_FILE}");
        let mut args = vec![
            "plan",
            "-input=false",
            "-no-color",
            "-lock-timeout=0s",
            &out,
        ];
        if destroy {
            args.push("-destroy");
        }
        self.terraform(run, &args).await?;
        let file = std::fs::read(run.dir.path().join(PLAN_FILE))
            .map_err(|e| ReconcileError::retryable(format!("reading the plan: {e}")))?;
        self.summarize(run, inputs, file).await
    }

    async fn summarize(
        &self,
        run: &Run,
        inputs: &str,
        file: Vec<u8>,
    ) -> Result<(TerraformPlan, Vec<u8>), ReconcileError> {
        let shown = self
            .terraform(run, &["show", "-json", "-no-color", PLAN_FILE])
            .await?;
        let shown: Value = serde_json::from_slice(&shown)
            .map_err(|e| ReconcileError::retryable(format!("terraform show -json: {e}")))?;
        let (changes, output_changes) = plan_changes(&shown);
        let count = |actions: &[&str]| {
            changes
                .iter()
                .filter(|c| actions.contains(&c.action.as_str()))
                .count() as u32
        };
        let digest = ring::digest::digest(&ring::digest::SHA256, &file);
        let plan = TerraformPlan {
            id: hex::encode(&digest.as_ref()[..12]),
            inputs: inputs.to_owned(),
            add: count(&["create", "replace"]),
            change: count(&["update"]),
            destroy: count(&["delete", "replace"]),
            changes,
            output_changes,
            awaiting_approval: false,
            applied: false,
        };
        Ok((plan, file))
    }

    /// Applies `run`'s plan file and reads the outputs (sensitive ones sealed).
    async fn apply(
        &self,
        run: &Run,
    ) -> Result<std::collections::BTreeMap<String, TerraformOutput>, ReconcileError> {
        self.terraform(
            run,
            &[
                "apply",
                "-input=false",
                "-no-color",
                "-lock-timeout=0s",
                PLAN_FILE,
            ],
        )
        .await?;
        let shown = self
            .terraform(run, &["output", "-json", "-no-color"])
            .await?;
        let shown: serde_json::Map<String, Value> = serde_json::from_slice(&shown)
            .map_err(|e| ReconcileError::retryable(format!("terraform output -json: {e}")))?;
        let mut outputs = std::collections::BTreeMap::new();
        for (name, output) in shown {
            let sensitive = output["sensitive"].as_bool().unwrap_or(false);
            let value = output.get("value").cloned().unwrap_or(Value::Null);
            let output = if sensitive {
                TerraformOutput {
                    sensitive,
                    value: None,
                    sealed: Some(self.sealer.seal(&output_field(&name), &value.to_string())?),
                }
            } else {
                TerraformOutput {
                    sensitive,
                    value: Some(value),
                    sealed: None,
                }
            };
            outputs.insert(name, output);
        }
        Ok(outputs)
    }
}

#[async_trait]
impl Reconciler for TerraformReconciler {
    type Object = TerraformInstance;

    async fn reconcile(
        &self,
        instance: &mut Object<TerraformInstance>,
        ctx: &Context,
    ) -> Result<Action, ReconcileError> {
        let definition = ctx
            .api::<TerraformDefinition>()
            .get(instance.spec.definition)
            .await?
            .spec;
        let inputs = inputs_digest(&definition, &instance.spec);
        let manual = instance.spec.approval(&definition) == TerraformApproval::Manual;
        let states = self.backend.states();
        let status = &instance.status.details;
        if status.applied_inputs.as_deref() == Some(inputs.as_str())
            && status.plan.as_ref().is_none_or(|plan| plan.applied)
        {
            return Ok(Action::Done);
        }
        // A plan waiting for approval: apply it once approved, wait otherwise.
        let pending = status
            .plan
            .clone()
            .filter(|plan| plan.awaiting_approval && plan.inputs == inputs);
        if manual && let Some(plan) = &pending {
            if instance.spec.approved_plan.as_deref() != Some(plan.id.as_str()) {
                return Ok(Action::Done);
            }
            if let Some(file) = states.saved_plan(instance.id(), &plan.id).await? {
                let run = self.prepare(instance, &definition, ctx).await?;
                std::fs::write(run.dir.path().join(PLAN_FILE), file)
                    .map_err(|e| ReconcileError::retryable(format!("writing the plan: {e}")))?;
                match self.apply(&run).await {
                    Ok(outputs) => {
                        states.drop_plan(instance.id()).await?;
                        return Ok(applied(instance, plan.clone(), outputs, inputs));
                    }
                    Err(ReconcileError::Terminal(message)) if message.contains("stale") => {
                        instance.status.record_event(
                            threeport_core::object::EventType::Warning,
                            "PlanStale",
                            format!(
                                "plan {} is stale (the state changed since): planning again",
                                plan.id
                            ),
                        );
                    }
                    Err(err) => return Err(err),
                }
            }
        }
        let run = self.prepare(instance, &definition, ctx).await?;
        let (mut plan, file) = self.plan(&run, &inputs, false).await?;
        let changes = !plan.changes.is_empty() || !plan.output_changes.is_empty();
        if manual && changes {
            states.save_plan(instance.id(), &plan.id, &file).await?;
            plan.awaiting_approval = true;
            let summary = format!(
                "plan {}: {} to add, {} to change, {} to destroy; approve it with POST \
                 /v0/terraform-instances/{}/approve",
                plan.id,
                plan.add,
                plan.change,
                plan.destroy,
                instance.id()
            );
            instance.status.details.plan = Some(plan);
            instance.status.set_condition(
                APPLIED,
                ConditionStatus::False,
                "AwaitingApproval",
                summary,
            );
            return Ok(Action::Done);
        }
        let outputs = self.apply(&run).await?;
        Ok(applied(instance, plan, outputs, inputs))
    }

    async fn cleanup(
        &self,
        instance: &mut Object<TerraformInstance>,
        ctx: &Context,
    ) -> Result<Action, ReconcileError> {
        let states = self.backend.states();
        if states.has_state(instance.id()).await? {
            let definition = ctx
                .api::<TerraformDefinition>()
                .get(instance.spec.definition)
                .await?
                .spec;
            let run = self.prepare(instance, &definition, ctx).await?;
            self.terraform(
                &run,
                &[
                    "destroy",
                    "-auto-approve",
                    "-input=false",
                    "-no-color",
                    "-lock-timeout=0s",
                ],
            )
            .await?;
        }
        states.remove(instance.id()).await?;
        Ok(Action::Done)
    }
}

/// Records an applied plan and its outputs.
fn applied(
    instance: &mut Object<TerraformInstance>,
    mut plan: TerraformPlan,
    outputs: std::collections::BTreeMap<String, TerraformOutput>,
    inputs: String,
) -> Action {
    plan.applied = true;
    plan.awaiting_approval = false;
    let message = format!(
        "plan {} applied: {} added, {} changed, {} destroyed",
        plan.id, plan.add, plan.change, plan.destroy
    );
    let details = &mut instance.status.details;
    details.plan = Some(plan);
    details.outputs = outputs;
    details.applied_inputs = Some(inputs);
    instance
        .status
        .set_condition(APPLIED, ConditionStatus::True, "Applied", message);
    Action::Done
}
