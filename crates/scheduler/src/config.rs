//! The scheduler's configuration file: upstream's `KubeSchedulerConfiguration`
//! (`kubescheduler.config.k8s.io/v1`): profiles with plugin sets per extension point (and
//! `multiPoint`), plugin arguments, score weights, `percentageOfNodesToScore`, pod backoff and
//! leader election. Decoding is strict (unknown fields are errors, as upstream); every problem
//! found is reported at once.

use std::path::Path;
use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;

use crate::Error;

/// The API version accepted.
pub const API_VERSION: &str = "kubescheduler.config.k8s.io/v1";
/// The kind accepted.
pub const KIND: &str = "KubeSchedulerConfiguration";
/// The profile every pod without `spec.schedulerName` uses.
pub const DEFAULT_SCHEDULER_NAME: &str = "default-scheduler";

/// A plugin named in a plugin set, with its score weight.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PluginRef {
    /// The plugin name (`*` in `disabled` means every default plugin).
    pub name: String,
    /// Score weight (Score and multiPoint only).
    #[serde(default)]
    pub weight: Option<i32>,
}

/// Plugins enabled and disabled at one extension point.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PluginSet {
    /// Plugins to run (after the defaults that are not disabled).
    #[serde(default)]
    pub enabled: Vec<PluginRef>,
    /// Default plugins not to run.
    #[serde(default)]
    pub disabled: Vec<PluginRef>,
}

/// Plugin sets by extension point.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Plugins {
    /// PreEnqueue.
    #[serde(default)]
    pub pre_enqueue: PluginSet,
    /// QueueSort.
    #[serde(default)]
    pub queue_sort: PluginSet,
    /// PreFilter.
    #[serde(default)]
    pub pre_filter: PluginSet,
    /// Filter.
    #[serde(default)]
    pub filter: PluginSet,
    /// PostFilter.
    #[serde(default)]
    pub post_filter: PluginSet,
    /// PreScore.
    #[serde(default)]
    pub pre_score: PluginSet,
    /// Score.
    #[serde(default)]
    pub score: PluginSet,
    /// Reserve.
    #[serde(default)]
    pub reserve: PluginSet,
    /// Permit.
    #[serde(default)]
    pub permit: PluginSet,
    /// PreBind.
    #[serde(default)]
    pub pre_bind: PluginSet,
    /// Bind.
    #[serde(default)]
    pub bind: PluginSet,
    /// PostBind (accepted for compatibility; Skiff has no PostBind plugins).
    #[serde(default)]
    pub post_bind: PluginSet,
    /// Every extension point a plugin implements.
    #[serde(default)]
    pub multi_point: PluginSet,
}

/// Arguments of one plugin.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PluginConfig {
    /// The plugin.
    pub name: String,
    /// Its arguments (the plugin decodes them).
    #[serde(default)]
    pub args: Value,
}

/// One scheduling profile.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Profile {
    /// The name pods select it by (`spec.schedulerName`).
    #[serde(default)]
    pub scheduler_name: Option<String>,
    /// Overrides the global setting for this profile.
    #[serde(default)]
    pub percentage_of_nodes_to_score: Option<i32>,
    /// Plugin sets, merged with the defaults.
    #[serde(default)]
    pub plugins: Option<Plugins>,
    /// Plugin arguments.
    #[serde(default)]
    pub plugin_config: Vec<PluginConfig>,
}

impl Profile {
    /// The scheduler name, defaulted.
    pub fn name(&self) -> &str {
        self.scheduler_name
            .as_deref()
            .filter(|n| !n.is_empty())
            .unwrap_or(DEFAULT_SCHEDULER_NAME)
    }

    /// The arguments given for `plugin`.
    pub fn args(&self, plugin: &str) -> Option<&Value> {
        self.plugin_config
            .iter()
            .find(|c| c.name == plugin)
            .map(|c| &c.args)
            .filter(|a| !a.is_null())
    }
}

/// Leader election settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LeaderElectionConfig {
    /// Whether to elect a leader (true by default).
    #[serde(default = "yes")]
    pub leader_elect: bool,
    /// e.g. `15s`.
    #[serde(default)]
    pub lease_duration: Option<String>,
    /// e.g. `10s`.
    #[serde(default)]
    pub renew_deadline: Option<String>,
    /// e.g. `2s`.
    #[serde(default)]
    pub retry_period: Option<String>,
    /// Only `leases` is supported.
    #[serde(default)]
    pub resource_lock: Option<String>,
    /// Lease name (default `kube-scheduler`).
    #[serde(default)]
    pub resource_name: Option<String>,
    /// Lease namespace (default `kube-system`).
    #[serde(default)]
    pub resource_namespace: Option<String>,
}

fn yes() -> bool {
    true
}

impl Default for LeaderElectionConfig {
    fn default() -> Self {
        LeaderElectionConfig {
            leader_elect: true,
            lease_duration: None,
            renew_deadline: None,
            retry_period: None,
            resource_lock: None,
            resource_name: None,
            resource_namespace: None,
        }
    }
}

/// Client connection settings (only the kubeconfig path is used).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClientConnection {
    /// Path of a kubeconfig file.
    #[serde(default)]
    pub kubeconfig: Option<String>,
}

/// A `KubeSchedulerConfiguration`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SchedulerConfiguration {
    /// `kubescheduler.config.k8s.io/v1`.
    #[serde(default)]
    pub api_version: Option<String>,
    /// `KubeSchedulerConfiguration`.
    #[serde(default)]
    pub kind: Option<String>,
    /// Profiles (one `default-scheduler` profile when empty).
    #[serde(default)]
    pub profiles: Vec<Profile>,
    /// Share of nodes to find feasible before scoring (0: adaptive, as upstream).
    #[serde(default)]
    pub percentage_of_nodes_to_score: Option<i32>,
    /// First backoff of an unschedulable pod (default 1 s).
    #[serde(default)]
    pub pod_initial_backoff_seconds: Option<i64>,
    /// Longest backoff (default 10 s).
    #[serde(default)]
    pub pod_max_backoff_seconds: Option<i64>,
    /// Leader election.
    #[serde(default)]
    pub leader_election: Option<LeaderElectionConfig>,
    /// Client connection.
    #[serde(default)]
    pub client_connection: Option<ClientConnection>,
    /// Accepted for compatibility; Skiff schedules on one thread.
    #[serde(default)]
    pub parallelism: Option<i32>,
    /// Scheduler extenders (not supported; must be empty).
    #[serde(default)]
    pub extenders: Vec<Value>,
    /// Accepted for compatibility.
    #[serde(default)]
    pub delay_cache_until_active: Option<bool>,
    /// Accepted for compatibility.
    #[serde(default)]
    pub enable_profiling: Option<bool>,
    /// Accepted for compatibility.
    #[serde(default)]
    pub enable_contention_profiling: Option<bool>,
}

impl SchedulerConfiguration {
    /// Read and validate a configuration file.
    pub fn load(path: &Path) -> Result<SchedulerConfiguration, Error> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::ReadConfig {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text).map_err(|problems| Error::Config {
            path: path.display().to_string(),
            problems,
        })
    }

    /// Parse and validate configuration text.
    pub fn parse(text: &str) -> Result<SchedulerConfiguration, Vec<String>> {
        let config: SchedulerConfiguration =
            serde_yaml::from_str(text).map_err(|e| vec![format!("decoding failed: {e}")])?;
        config.validate()?;
        Ok(config)
    }

    /// Check the settings that do not depend on the plugin registry.
    pub fn validate(&self) -> Result<(), Vec<String>> {
        let mut problems = Vec::new();
        match self.api_version.as_deref() {
            Some(API_VERSION) | None => {}
            Some(other) => problems.push(format!(
                "apiVersion: unsupported value {other:?}, expected {API_VERSION:?}"
            )),
        }
        match self.kind.as_deref() {
            Some(KIND) | None => {}
            Some(other) => problems.push(format!(
                "kind: unsupported value {other:?}, expected {KIND:?}"
            )),
        }
        let check_percentage = |p: Option<i32>, field: &str, problems: &mut Vec<String>| {
            if let Some(p) = p
                && !(0..=100).contains(&p)
            {
                problems.push(format!(
                    "{field}: Invalid value: {p}: not in valid range [0-100]"
                ));
            }
        };
        check_percentage(
            self.percentage_of_nodes_to_score,
            "percentageOfNodesToScore",
            &mut problems,
        );
        let mut names = std::collections::HashSet::new();
        for (i, p) in self.profiles.iter().enumerate() {
            let field = format!("profiles[{i}]");
            if !names.insert(p.name().to_owned()) {
                problems.push(format!(
                    "{field}.schedulerName: Duplicate value: {:?}",
                    p.name()
                ));
            }
            check_percentage(
                p.percentage_of_nodes_to_score,
                &format!("{field}.percentageOfNodesToScore"),
                &mut problems,
            );
            let mut configured = std::collections::HashSet::new();
            for (j, c) in p.plugin_config.iter().enumerate() {
                if !configured.insert(c.name.clone()) {
                    problems.push(format!(
                        "{field}.pluginConfig[{j}]: Duplicate value: {:?}",
                        c.name
                    ));
                }
            }
        }
        if let Some(b) = self.pod_initial_backoff_seconds
            && b <= 0
        {
            problems.push(format!(
                "podInitialBackoffSeconds: Invalid value: {b}: must be greater than 0"
            ));
        }
        if let Some(m) = self.pod_max_backoff_seconds
            && m < self.initial_backoff().as_secs() as i64
        {
            problems.push(format!(
                "podMaxBackoffSeconds: Invalid value: {m}: must be greater than or equal to PodInitialBackoffSeconds"
            ));
        }
        if !self.extenders.is_empty() {
            problems.push("extenders: Forbidden: scheduler extenders are not supported".into());
        }
        if let Some(le) = &self.leader_election {
            if let Some(lock) = le.resource_lock.as_deref()
                && lock != "leases"
            {
                problems.push(format!(
                    "leaderElection.resourceLock: Unsupported value: {lock:?}: supported values: \"leases\""
                ));
            }
            for (field, value) in [
                ("leaseDuration", &le.lease_duration),
                ("renewDeadline", &le.renew_deadline),
                ("retryPeriod", &le.retry_period),
            ] {
                if let Some(v) = value
                    && skiff_api::duration::parse_go(v).is_err()
                {
                    problems.push(format!(
                        "leaderElection.{field}: Invalid value: {v:?}: not a duration"
                    ));
                }
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems)
        }
    }

    /// The profiles, with the default one when none is configured.
    pub fn profiles(&self) -> Vec<Profile> {
        if self.profiles.is_empty() {
            vec![Profile::default()]
        } else {
            self.profiles.clone()
        }
    }

    /// The first backoff of an unschedulable pod.
    pub fn initial_backoff(&self) -> Duration {
        Duration::from_secs(self.pod_initial_backoff_seconds.unwrap_or(1).max(1) as u64)
    }

    /// The longest backoff.
    pub fn max_backoff(&self) -> Duration {
        Duration::from_secs(self.pod_max_backoff_seconds.unwrap_or(10).max(1) as u64)
            .max(self.initial_backoff())
    }

    /// The leader election settings, defaulted.
    pub fn leader_election(&self) -> LeaderElectionConfig {
        self.leader_election.clone().unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_upstream_style_file_parses() {
        let text = r#"
apiVersion: kubescheduler.config.k8s.io/v1
kind: KubeSchedulerConfiguration
percentageOfNodesToScore: 50
podInitialBackoffSeconds: 2
podMaxBackoffSeconds: 20
leaderElection:
  leaderElect: true
  leaseDuration: 15s
  resourceNamespace: kube-system
  resourceName: kube-scheduler
profiles:
- schedulerName: default-scheduler
  plugins:
    score:
      disabled:
      - name: ImageLocality
      enabled:
      - name: NodeResourcesFit
        weight: 5
- schedulerName: bin-packer
  pluginConfig:
  - name: NodeResourcesFit
    args:
      scoringStrategy:
        type: MostAllocated
"#;
        let c = SchedulerConfiguration::parse(text).unwrap();
        assert_eq!(c.profiles.len(), 2);
        assert_eq!(c.profiles[1].name(), "bin-packer");
        assert_eq!(c.initial_backoff(), Duration::from_secs(2));
        assert_eq!(c.max_backoff(), Duration::from_secs(20));
        assert!(c.profiles[1].args("NodeResourcesFit").is_some());
    }

    #[test]
    fn every_problem_is_reported() {
        let text = r#"
apiVersion: kubescheduler.config.k8s.io/v1beta9
percentageOfNodesToScore: 150
profiles:
- schedulerName: a
- schedulerName: a
"#;
        let problems = SchedulerConfiguration::parse(text).unwrap_err();
        assert_eq!(problems.len(), 3, "{problems:?}");
        assert!(problems[0].contains("apiVersion"));
        assert!(SchedulerConfiguration::parse("bogusField: 1").is_err());
    }
}
