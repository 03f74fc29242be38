//! `skiff hollow-nodes`: simulated nodes that register, heartbeat and run their pods without
//! containers, for scale benchmarks and scheduling rehearsals.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use crate::Error;

/// Flags of `skiff hollow-nodes`.
#[derive(Debug, Args)]
pub struct HollowArgs {
    /// Kubeconfig of the cluster to join.
    #[arg(long)]
    pub kubeconfig: PathBuf,
    /// How many nodes to simulate.
    #[arg(long, default_value_t = 1)]
    pub count: usize,
    /// Node names are `<prefix>-<index>`.
    #[arg(long, default_value = "hollow-node")]
    pub name_prefix: String,
    /// CPU capacity of each node.
    #[arg(long, default_value = "32")]
    pub cpu: String,
    /// Memory capacity of each node.
    #[arg(long, default_value = "256Gi")]
    pub memory: String,
    /// Pod capacity of each node.
    #[arg(long, default_value = "110")]
    pub pods: String,
    /// Ephemeral-storage capacity of each node.
    #[arg(long, default_value = "1Ti")]
    pub ephemeral_storage: String,
    /// Extended resources, `name=quantity` (e.g. `example.com/gpu=4`); repeatable.
    #[arg(long = "extended-resource")]
    pub extended_resources: Vec<String>,
    /// Labels of every node, `key=value`; repeatable.
    #[arg(long = "label")]
    pub labels: Vec<String>,
    /// Taints of every node, `key[=value]:Effect`; repeatable.
    #[arg(long = "taint")]
    pub taints: Vec<String>,
    /// Seconds between Lease renewals.
    #[arg(long, default_value_t = 10)]
    pub lease_interval: u64,
    /// Concurrent pod status writers.
    #[arg(long, default_value_t = 16)]
    pub workers: usize,
}

impl HollowArgs {
    fn config(self) -> Result<skiff_hollow::Config, Error> {
        let mut problems = Vec::new();
        let mut capacity = skiff_hollow::default_capacity();
        capacity.insert("cpu".into(), self.cpu);
        capacity.insert("memory".into(), self.memory);
        capacity.insert("pods".into(), self.pods);
        capacity.insert("ephemeral-storage".into(), self.ephemeral_storage);
        for spec in &self.extended_resources {
            match skiff_hollow::parse_label(spec) {
                Ok((name, quantity)) => {
                    capacity.insert(name, quantity);
                }
                Err(_) => problems.push(format!(
                    "--extended-resource {spec:?}: expected name=quantity"
                )),
            }
        }
        let mut labels = std::collections::BTreeMap::new();
        for spec in &self.labels {
            match skiff_hollow::parse_label(spec) {
                Ok((k, v)) => {
                    labels.insert(k, v);
                }
                Err(e) => problems.push(format!("--label: {e}")),
            }
        }
        for spec in &self.taints {
            if let Err(e) = skiff_hollow::parse_taint(spec) {
                problems.push(format!("--taint: {e}"));
            }
        }
        if self.count == 0 {
            problems.push("--count: must be at least 1".into());
        }
        if !problems.is_empty() {
            return Err(Error::Config(problems));
        }
        Ok(skiff_hollow::Config {
            count: self.count,
            name_prefix: self.name_prefix,
            capacity,
            labels,
            taints: self.taints,
            lease_interval: Duration::from_secs(self.lease_interval.max(1)),
            status_interval: Duration::from_secs(60),
            workers: self.workers.max(1),
        })
    }
}

/// Run hollow nodes until SIGTERM/SIGINT.
pub async fn run(args: HollowArgs) -> Result<(), Error> {
    let kubeconfig = args.kubeconfig.clone();
    let config = args.config()?;
    let client = skiff_runtime::client::from_kubeconfig(&kubeconfig)
        .await
        .map_err(Error::Client)?;
    let shutdown = skiff_runtime::CancellationToken::new();
    let stop = shutdown.clone();
    tokio::spawn(async move {
        crate::server::shutdown_signal().await;
        stop.cancel();
    });
    skiff_hollow::run(client, config, shutdown)
        .await
        .map_err(Error::Hollow)
}
