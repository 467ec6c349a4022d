//! Running the `terraform` command line in a private working directory: the configuration,
//! the variables and the backend override written there, a clean environment (no
//! credentials of the controller's own), Terraform killed with the controller.

use std::path::{Path, PathBuf};

use serde_json::Value;
use threeport_core::ReconcileError;
use tokio::process::Command;

/// The file that points the configuration at threeport's state backend (an override file,
/// so it replaces whatever backend the configuration names).
pub const BACKEND_OVERRIDE: &str = "zz_threeport_backend_override.tf";
/// The variables, as Terraform reads them.
pub const VARIABLES_FILE: &str = "zz_threeport.auto.tfvars.json";
/// The saved plan.
pub const PLAN_FILE: &str = "threeport.tfplan";

/// The `terraform` command line.
#[derive(Debug, Clone)]
pub struct TerraformCli {
    bin: PathBuf,
}

/// A working directory of one run, removed when dropped.
#[derive(Debug)]
pub struct WorkDir {
    path: PathBuf,
}

impl WorkDir {
    /// A fresh private directory (mode 0700) under `root`.
    pub fn create(root: &Path, name: &str) -> std::io::Result<WorkDir> {
        std::fs::create_dir_all(root)?;
        let path = root.join(name);
        if path.exists() {
            std::fs::remove_dir_all(&path)?;
        }
        let mut builder = std::fs::DirBuilder::new();
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
        builder.create(&path)?;
        Ok(WorkDir { path })
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

impl TerraformCli {
    /// The binary at `bin` (a name is looked up on `PATH`).
    pub fn new(bin: impl Into<PathBuf>) -> Self {
        TerraformCli { bin: bin.into() }
    }

    /// `terraform version`'s first line.
    pub async fn version(&self) -> Result<String, ReconcileError> {
        let dir = std::env::temp_dir();
        let out = self.run(&dir, &["version"], &[]).await?;
        Ok(String::from_utf8_lossy(&out)
            .lines()
            .next()
            .unwrap_or_default()
            .to_owned())
    }

    /// Runs `terraform <args>` in `dir` with only `env` (and `PATH`) as its environment;
    /// returns its standard output. A failure is terminal with the end of Terraform's
    /// diagnostics, except a lock held by another run (retried).
    pub async fn run(
        &self,
        dir: &Path,
        args: &[&str],
        env: &[(String, String)],
    ) -> Result<Vec<u8>, ReconcileError> {
        let mut command = Command::new(&self.bin);
        command
            .args(args)
            .current_dir(dir)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", dir)
            .env("TF_IN_AUTOMATION", "1")
            .env("TF_INPUT", "0")
            // No call home for version checks: nothing leaves the machine but what the
            // configuration itself does.
            .env("CHECKPOINT_DISABLE", "1")
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true);
        die_with_parent(&mut command);
        let output = command.output().await.map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                ReconcileError::terminal(format!(
                    "terraform: {} not found (install Terraform, or give --terraform-bin)",
                    self.bin.display()
                ))
            } else {
                ReconcileError::retryable(format!("terraform {}: {e}", args[0]))
            }
        })?;
        if output.status.success() {
            return Ok(output.stdout);
        }
        let text = format!(
            "{}\n{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        let message = diagnostics(&text);
        if text.contains("Error acquiring the state lock") {
            return Err(ReconcileError::retryable(format!(
                "terraform {}: the state is locked by another run: {message}",
                args[0]
            )));
        }
        Err(ReconcileError::terminal(format!(
            "terraform {}: {message}",
            args[0]
        )))
    }
}

/// Terraform's diagnostics, boxes and blank lines removed, the last 20 lines kept.
pub fn diagnostics(text: &str) -> String {
    let lines: Vec<&str> = text
        .lines()
        .map(|line| line.trim_start_matches(['│', '╷', '╵']).trim())
        .filter(|line| !line.is_empty())
        .collect();
    let start = lines
        .iter()
        .position(|line| line.starts_with("Error:"))
        .unwrap_or(0)
        .max(lines.len().saturating_sub(20));
    lines[start..].join("\n")
}

/// Terraform dies with the controller (Linux): a killed controller leaves no apply running
/// that no one watches while another replica takes the instance over.
#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
fn die_with_parent(command: &mut Command) {
    // SAFETY: prctl is async-signal-safe and touches only the child being set up.
    unsafe {
        command.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

#[cfg(not(target_os = "linux"))]
fn die_with_parent(_: &mut Command) {}

/// A plan's changes, from `terraform show -json`: per resource, and outputs.
pub fn plan_changes(plan: &Value) -> (Vec<threeport_api::model::TerraformChange>, Vec<String>) {
    let mut changes = Vec::new();
    for change in plan["resource_changes"].as_array().into_iter().flatten() {
        let actions: Vec<&str> = change["change"]["actions"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        let action = match actions.as_slice() {
            ["no-op"] | [] => continue,
            [single] => *single,
            _ => "replace",
        };
        changes.push(threeport_api::model::TerraformChange {
            address: change["address"].as_str().unwrap_or_default().to_owned(),
            action: action.to_owned(),
        });
    }
    let outputs = plan["output_changes"]
        .as_object()
        .into_iter()
        .flatten()
        .filter(|(_, change)| change["actions"] != serde_json::json!(["no-op"]))
        .map(|(name, _)| name.clone())
        .collect();
    (changes, outputs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diagnostics_keep_the_error_without_boxes() {
        let text = "Initializing...\n╷\n│ Error: Unclosed configuration block\n│ \n│   on main.tf line 1, in resource \"terraform_data\" \"a\":\n│    1: resource \"terraform_data\" \"a\" {\n╵\n";
        assert_eq!(
            diagnostics(text),
            "Error: Unclosed configuration block\non main.tf line 1, in resource \"terraform_data\" \"a\":\n1: resource \"terraform_data\" \"a\" {"
        );
    }

    #[test]
    fn plan_changes_name_each_resource_and_output() {
        let plan = serde_json::json!({
            "resource_changes": [
                {"address": "terraform_data.a", "change": {"actions": ["create"]}},
                {"address": "terraform_data.b", "change": {"actions": ["no-op"]}},
                {"address": "terraform_data.c", "change": {"actions": ["delete", "create"]}},
            ],
            "output_changes": {"x": {"actions": ["update"]}, "y": {"actions": ["no-op"]}},
        });
        let (changes, outputs) = plan_changes(&plan);
        let actions: Vec<(&str, &str)> = changes
            .iter()
            .map(|c| (c.address.as_str(), c.action.as_str()))
            .collect();
        assert_eq!(
            actions,
            [
                ("terraform_data.a", "create"),
                ("terraform_data.c", "replace")
            ]
        );
        assert_eq!(outputs, ["x"]);
    }
}
