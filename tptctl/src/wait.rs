//! `--wait`: following parts until they are reconciled (or gone), with a live display on a
//! terminal and one line per change otherwise.

use std::io::{IsTerminal, Write};
use std::time::Duration;

use threeport_api::{Client, ClientError};
use threeport_core::LifecycleState;
use threeport_core::object::RawObject;
use threeport_core::{ObjectId, ObjectRef};

use crate::error::CliError;

/// What the wait is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Goal {
    /// Every part reconciled at its current generation.
    Reconciled,
    /// Every part deleted.
    Gone,
}

/// Where one part is.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Progress {
    /// On its way: the state and the reason, if any.
    Working(String),
    /// There.
    Done,
    /// It will not get there by itself: why.
    Failed(String),
}

async fn progress(client: &Client, part: &ObjectRef, goal: Goal) -> Result<Progress, CliError> {
    let object = match client.kind(&part.kind).get::<RawObject>(part.id).await {
        Ok(object) => object,
        Err(ClientError::NotFound { .. }) => {
            return Ok(match goal {
                Goal::Gone => Progress::Done,
                Goal::Reconciled => Progress::Failed("deleted".to_owned()),
            });
        }
        Err(err) => return Err(err.into()),
    };
    let status = &object.status;
    let reason = status.reason.clone().unwrap_or_default();
    let state = crate::output::wire_name(&status.state);
    Ok(match (goal, status.state) {
        (Goal::Reconciled, LifecycleState::Reconciled)
            if status.observed_generation == object.meta.generation =>
        {
            Progress::Done
        }
        (_, LifecycleState::CreationFailed | LifecycleState::Interrupted) => {
            Progress::Failed(format!("{state}: {reason}"))
        }
        _ if reason.is_empty() => Progress::Working(state),
        _ => Progress::Working(format!("{state} ({reason})")),
    })
}

/// Follows `parts` (labelled by `names`) until every one reaches `goal`; an error when one
/// fails or `timeout` passes first.
pub async fn wait(
    client: &Client,
    parts: &[(ObjectRef, String)],
    goal: Goal,
    timeout: Duration,
) -> Result<(), CliError> {
    let terminal = std::io::stdout().is_terminal();
    let deadline = tokio::time::Instant::now() + timeout;
    let mut last: Vec<Option<Progress>> = vec![None; parts.len()];
    let mut drawn = 0;
    loop {
        let mut now = Vec::with_capacity(parts.len());
        for (part, _) in parts {
            now.push(progress(client, part, goal).await?);
        }
        let mut out = std::io::stdout().lock();
        if terminal {
            // Redraw the block of lines in place.
            if drawn > 0 {
                let _ = write!(out, "\x1b[{drawn}A");
            }
            for ((_, label), progress) in parts.iter().zip(&now) {
                let _ = writeln!(out, "\x1b[2K{}", line(label, progress, goal));
            }
            drawn = parts.len();
        } else {
            for (((_, label), progress), before) in parts.iter().zip(&now).zip(&last) {
                if before.as_ref() != Some(progress) {
                    let _ = writeln!(out, "{}", line(label, progress, goal));
                }
            }
        }
        let _ = out.flush();
        drop(out);
        if let Some(((_, label), Progress::Failed(why))) = parts
            .iter()
            .zip(&now)
            .find(|(_, p)| matches!(p, Progress::Failed(_)))
        {
            return Err(CliError::new(format!("{label} failed: {why}")));
        }
        if now.iter().all(|p| *p == Progress::Done) {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            let waiting: Vec<&str> = parts
                .iter()
                .zip(&now)
                .filter(|(_, p)| **p != Progress::Done)
                .map(|((_, label), _)| label.as_str())
                .collect();
            return Err(CliError::new(format!(
                "timed out after {}s: not {} yet: {}",
                timeout.as_secs(),
                match goal {
                    Goal::Reconciled => "reconciled",
                    Goal::Gone => "deleted",
                },
                waiting.join(", ")
            )));
        }
        last = now.into_iter().map(Some).collect();
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

fn line(label: &str, progress: &Progress, goal: Goal) -> String {
    match progress {
        Progress::Working(state) => format!("{label}: {state}"),
        Progress::Done => format!(
            "{label}: {}",
            match goal {
                Goal::Reconciled => "reconciled",
                Goal::Gone => "deleted",
            }
        ),
        Progress::Failed(why) => format!("{label}: failed: {why}"),
    }
}

/// `Kind/name` labels for `parts` whose names are known.
pub fn labelled(
    parts: impl IntoIterator<Item = (String, ObjectId, String)>,
) -> Vec<(ObjectRef, String)> {
    parts
        .into_iter()
        .map(|(kind, id, name)| {
            let label = format!("{kind}/{name}");
            (ObjectRef::new(kind, id), label)
        })
        .collect()
}
