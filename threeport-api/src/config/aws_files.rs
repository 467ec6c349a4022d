//! The user's AWS files (`~/.aws/config`, `~/.aws/credentials`): a profile's region, keys or
//! role, for `AwsAccount` configs that point at them (`LocalConfig`, `LocalCredentials`,
//! `LocalProfile`).

use std::collections::BTreeMap;
use std::path::Path;

use crate::config::resolve_path;

/// What a profile of the AWS files says.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Profile {
    /// `region`.
    pub region: Option<String>,
    /// `aws_access_key_id`.
    pub access_key_id: Option<String>,
    /// `aws_secret_access_key`.
    pub secret_access_key: Option<String>,
    /// `role_arn`.
    pub role_arn: Option<String>,
    /// `external_id`.
    pub external_id: Option<String>,
}

/// The `[section]`s of an INI file: section → key → value.
fn sections(text: &str) -> BTreeMap<String, BTreeMap<String, String>> {
    let mut all: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    let mut current = String::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            current = name.trim().to_owned();
            all.entry(current.clone()).or_default();
        } else if let Some((key, value)) = line.split_once('=') {
            all.entry(current.clone())
                .or_default()
                .insert(key.trim().to_owned(), value.trim().to_owned());
        }
    }
    all
}

impl Profile {
    /// The profile named `profile` (default `default`) of the files given (relative to
    /// `dir`); `None` when neither file is given.
    pub fn read(
        dir: &Path,
        config: Option<&str>,
        credentials: Option<&str>,
        profile: Option<&str>,
    ) -> Result<Option<Profile>, String> {
        if config.is_none() && credentials.is_none() {
            if profile.is_some() {
                return Err("LocalProfile needs LocalConfig or LocalCredentials".to_owned());
            }
            return Ok(None);
        }
        let name = profile.unwrap_or("default");
        let read = |field: &str, path: &str| {
            let full = resolve_path(dir, path);
            std::fs::read_to_string(&full)
                .map(|text| sections(&text))
                .map_err(|e| format!("{field}: cannot read {}: {e}", full.display()))
        };
        let mut found = Profile::default();
        let mut seen = false;
        if let Some(path) = config {
            let all = read("LocalConfig", path)?;
            // The config file names profiles `[profile x]`, except `[default]`.
            if let Some(section) = all
                .get(&format!("profile {name}"))
                .or_else(|| all.get(name))
            {
                seen = true;
                found.region = section.get("region").cloned();
                found.role_arn = section.get("role_arn").cloned();
                found.external_id = section.get("external_id").cloned();
                found.access_key_id = section.get("aws_access_key_id").cloned();
                found.secret_access_key = section.get("aws_secret_access_key").cloned();
            }
        }
        if let Some(path) = credentials {
            let all = read("LocalCredentials", path)?;
            if let Some(section) = all.get(name) {
                seen = true;
                if let Some(id) = section.get("aws_access_key_id") {
                    found.access_key_id = Some(id.clone());
                }
                if let Some(secret) = section.get("aws_secret_access_key") {
                    found.secret_access_key = Some(secret.clone());
                }
            }
        }
        if !seen {
            return Err(format!(
                "LocalProfile: no profile {name:?} in the AWS files given"
            ));
        }
        Ok(Some(found))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_named_profile_takes_its_region_from_config_and_keys_from_credentials() {
        let dir =
            std::env::temp_dir().join(format!("tptctl-aws-{}", uuid::Uuid::now_v7().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("config"),
            "[default]\nregion = us-east-1\n\n[profile work]\nregion = eu-west-1\n",
        )
        .unwrap();
        std::fs::write(
            dir.join("credentials"),
            "[work]\naws_access_key_id = AKIAWORK\naws_secret_access_key = s3cr3t\n",
        )
        .unwrap();
        let profile = Profile::read(&dir, Some("config"), Some("credentials"), Some("work"))
            .unwrap()
            .unwrap();
        assert_eq!(profile.region.as_deref(), Some("eu-west-1"));
        assert_eq!(profile.access_key_id.as_deref(), Some("AKIAWORK"));
        assert_eq!(profile.secret_access_key.as_deref(), Some("s3cr3t"));
        let err = Profile::read(&dir, Some("config"), None, Some("nope")).unwrap_err();
        assert!(err.contains("\"nope\""), "{err}");
    }
}
