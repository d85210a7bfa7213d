//! `npcnix config check`: every problem of a host config in one run. Each
//! top-level section is parsed on its own (the typed parse stops at its
//! first error), then the semantic checks run on what parsed, with
//! stand-ins for what did not. Pure: text in, problems out.

use serde::Deserialize;
use serde_json::Value;

use super::{
    ActivationConfig, ConfigError, FetcherConfig, HealthCheckConfig, HostConfig, LockoutConfig,
    PolicyConfig, PollConfig, RebootConfig, ReceiptsConfig, RemoteConfig, RolloutMode,
    TrustedKeyConfig, Validated,
};
use std::path::PathBuf;

fn shape<T: serde::de::DeserializeOwned>(v: &Value) -> Result<(), String> {
    serde_json::from_value::<T>(v.clone())
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// The host config's top-level fields, each parsed on its own so that one
/// malformed section does not hide the problems of the others. (The typed
/// parse stops at its first error.) `tests::config_sections_are_complete`
/// keeps the list in step with `HostConfig`.
const CONFIG_SECTIONS: &[&str] = &[
    "format",
    "remote",
    "configuration",
    "trusted_keys",
    "policy",
    "poll",
    "activation",
    "health_check",
    "metrics_path",
    "state_dir",
    "limits",
    "fetcher",
    "lockout",
    "reboot",
    "host_id",
    "rollout",
    "receipts",
    "hooks",
    "hold",
];

/// Sections a config must have; a stand-in value lets the others be
/// validated when one of these is missing or malformed.
const REQUIRED_SECTIONS: &[(&str, &str)] = &[
    ("format", "\"npcnix-host-config/v1\""),
    ("remote", "{\"url\": \"file:///nonexistent/stand-in\"}"),
    ("configuration", "\"stand-in\""),
    ("trusted_keys", "[]"),
];

/// Parses and validates a host config, returning every problem it can
/// find: JSON syntax (which stops everything), then each section's shape,
/// then the semantic checks of `HostConfig::validate` on the sections that
/// parsed.
pub fn check(text: &str) -> Result<Validated, Vec<String>> {
    let mut value: Value = match serde_json::from_str(text) {
        Ok(v) => v,
        Err(e) => return Err(vec![format!("not valid JSON: {e}")]),
    };
    let Some(obj) = value.as_object_mut() else {
        return Err(vec!["the config must be a JSON object".into()]);
    };
    let mut problems = Vec::new();
    let mut failed: Vec<String> = Vec::new();
    // Positions (in the file) of the trusted keys that parsed: malformed
    // ones are left out of validation, so its indexes are mapped back.
    let mut key_index: Vec<usize> = Vec::new();
    let unknown: Vec<String> = obj
        .keys()
        .filter(|k| !CONFIG_SECTIONS.contains(&k.as_str()))
        .cloned()
        .collect();
    for k in unknown {
        problems.push(format!(
            "{k}: unknown field (known: {})",
            CONFIG_SECTIONS.join(", ")
        ));
        obj.remove(&k);
    }
    for key in CONFIG_SECTIONS {
        let Some(v) = obj.get(*key).cloned() else {
            continue;
        };
        let v = &v;
        let res = match *key {
            "format" | "configuration" => shape::<String>(v),
            "remote" => shape::<RemoteConfig>(v),
            "trusted_keys" => match v.as_array() {
                None => Err("expected a list of keys".to_owned()),
                Some(list) => {
                    let mut good = Vec::new();
                    for (i, k) in list.iter().enumerate() {
                        match shape::<TrustedKeyConfig>(k) {
                            Ok(()) => {
                                key_index.push(i);
                                good.push(k.clone());
                            }
                            Err(e) => problems.push(format!("trusted_keys[{i}]: {e}")),
                        }
                    }
                    obj.insert("trusted_keys".into(), Value::Array(good));
                    Ok(())
                }
            },
            "policy" => shape::<PolicyConfig>(v),
            "poll" => shape::<PollConfig>(v),
            "activation" => shape::<ActivationConfig>(v),
            "health_check" => shape::<Option<HealthCheckConfig>>(v),
            "metrics_path" => shape::<Option<PathBuf>>(v),
            "state_dir" => shape::<PathBuf>(v),
            "limits" => shape::<crate::archive::limits::LimitOverrides>(v),
            "fetcher" => shape::<FetcherConfig>(v),
            "lockout" => shape::<LockoutConfig>(v),
            "reboot" => shape::<RebootConfig>(v),
            "host_id" => shape::<Option<String>>(v),
            "rollout" => shape::<RolloutMode>(v),
            "receipts" => shape::<ReceiptsConfig>(v),
            "hooks" => shape::<super::HooksConfig>(v),
            "hold" => shape::<Option<super::HoldConfig>>(v),
            _ => Ok(()),
        };
        if let Err(e) = res {
            if !e.is_empty() {
                problems.push(format!("{key}: {e}"));
            }
            failed.push((*key).to_owned());
        }
    }
    for (key, _) in REQUIRED_SECTIONS {
        if !obj.contains_key(*key) {
            problems.push(format!("{key}: missing (required)"));
            failed.push((*key).to_owned());
        }
    }
    // Stand-ins for what failed, so the rest is still validated.
    for key in &failed {
        match REQUIRED_SECTIONS.iter().find(|(k, _)| k == key) {
            Some((_, stand_in)) => {
                obj.insert(
                    key.clone(),
                    serde_json::from_str(stand_in).unwrap_or(Value::Null),
                );
            }
            None => {
                obj.remove(key);
            }
        }
    }
    validate_rest(&value, problems, &failed, &key_index)
}

/// The semantic checks of [`HostConfig::validate`] on the sections that
/// parsed (stand-ins for the rest), added to `problems`.
fn validate_rest(
    value: &Value,
    mut problems: Vec<String>,
    failed: &[String],
    key_index: &[usize],
) -> Result<Validated, Vec<String>> {
    let cfg = match HostConfig::deserialize(value) {
        Ok(c) => c,
        Err(e) => {
            problems.push(format!("{e}"));
            return Err(problems);
        }
    };
    // A stand-in remote or key list makes checks that involve it meaningless.
    let skip = |field: &str| {
        failed.iter().any(|f| {
            field == f
                || field.starts_with(&format!("{f}."))
                || field.starts_with(&format!("{f}["))
                // How many keys may sign for the remote needs its name.
                || (f == "remote" && field == "trusted_keys")
        })
    };
    match cfg.validate() {
        Ok(v) if problems.is_empty() => Ok(v),
        Ok(_) => Err(problems),
        Err(errs) => {
            for e in errs {
                match e {
                    ConfigError::Invalid { field, .. } if skip(&field) => {}
                    ConfigError::Invalid { field, message } => {
                        problems.push(format!("{}: {message}", file_index(&field, key_index)));
                    }
                    other => problems.push(other.to_string()),
                }
            }
            Err(problems)
        }
    }
}

/// `trusted_keys[j]...` as validated -> `trusted_keys[i]...` as in the file.
fn file_index(field: &str, key_index: &[usize]) -> String {
    let Some(rest) = field.strip_prefix("trusted_keys[") else {
        return field.to_owned();
    };
    match rest.split_once(']') {
        Some((j, tail)) => match j.parse::<usize>().ok().and_then(|j| key_index.get(j)) {
            Some(i) => format!("trusted_keys[{i}]{tail}"),
            None => field.to_owned(),
        },
        None => field.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"{"format": "npcnix-host-config/v1",
        "remote": {"url": "file:///srv/npcnix/prod"},
        "configuration": "web1",
        "trusted_keys": [{"public_key": "RWQsoTqmFsk3maEx4CQM6NtI0jp+NX1PXJpHxQypChQd9KsazUvjJkkm", "remotes": ["prod"]}]}"#;

    #[test]
    fn config_sections_are_complete() {
        let v = check(GOOD).expect("valid");
        let json: serde_json::Value = serde_json::from_slice(&v.config.to_json()).expect("json");
        let mut keys: Vec<&str> = json
            .as_object()
            .expect("object")
            .keys()
            .map(String::as_str)
            .collect();
        keys.sort_unstable();
        let mut known = CONFIG_SECTIONS.to_vec();
        known.sort_unstable();
        assert_eq!(
            keys, known,
            "HostConfig's fields changed: update CONFIG_SECTIONS"
        );
    }

    #[test]
    fn config_check_reports_every_problem_in_one_run() {
        let text = r#"{"format": "npcnix-host-config/v1",
            "remote": {"url": "file:///srv/npcnix/prod", "tresh": 2},
            "configuration": "web 1",
            "trusted_keys": [{"remotes": []}, {"public_key": "RWQnot-a-key", "remotes": ["prod"]}],
            "poll": {"interval_secs": "often"},
            "polcy": {},
            "state_dir": "relative"}"#;
        let problems = check(text).expect_err("invalid");
        let all = problems.join("\n");
        for expect in [
            "polcy: unknown field",
            "remote: unknown field `tresh`",
            "trusted_keys[0]: missing field `public_key`",
            "trusted_keys[1].public_key:",
            "poll: invalid type",
            "configuration: must be a nixosConfigurations attribute name",
            "state_dir: must be an absolute path",
        ] {
            assert!(all.contains(expect), "missing {expect:?} in:\n{all}");
        }
    }
}
