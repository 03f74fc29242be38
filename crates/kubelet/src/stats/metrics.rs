//! `/metrics/resource`: the series metrics-server scrapes, rendered from a [`Summary`] in
//! the Prometheus text format the way upstream's resource metrics collector
//! (`pkg/kubelet/metrics/collectors/resource_metrics.go`) and Go's client library write them:
//! families sorted by name, samples by label values, labels by name, CPU in core-seconds,
//! each sample stamped with its measurement time in milliseconds.

use std::fmt::Write;

use super::summary::{ContainerStats, CpuStats, MemoryStats, PodStats, Summary};

/// A float as Go's `strconv.FormatFloat(f, 'g', -1, 64)` writes it (Prometheus' text
/// encoder): the shortest digits, with an exponent from 1e6 up and below 1e-4.
pub fn go_float(f: f64) -> String {
    if f == 0.0 {
        return "0".into();
    }
    if f.is_nan() {
        return "NaN".into();
    }
    if f.is_infinite() {
        return if f > 0.0 { "+Inf" } else { "-Inf" }.into();
    }
    let sci = format!("{f:e}");
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    if !(-4..6).contains(&exp) {
        let sign = if exp < 0 { '-' } else { '+' };
        format!("{mantissa}e{sign}{:02}", exp.abs())
    } else {
        format!("{f}")
    }
}

fn millis(time: &str) -> Option<i64> {
    time.parse::<jiff::Timestamp>()
        .ok()
        .map(|t| t.as_millisecond())
}

/// Label pairs, sorted by name.
type Labels = Vec<(&'static str, String)>;

struct Family {
    name: &'static str,
    help: &'static str,
    kind: &'static str,
    /// (labels, value, timestamp in ms).
    samples: Vec<(Labels, f64, Option<i64>)>,
}

impl Family {
    fn new(name: &'static str, help: &'static str, kind: &'static str) -> Family {
        Family {
            name,
            help,
            kind,
            samples: Vec::new(),
        }
    }
}

fn cpu_seconds(cpu: Option<&CpuStats>) -> Option<(f64, Option<i64>)> {
    let cpu = cpu?;
    Some((cpu.usage_core_nano_seconds? as f64 / 1e9, millis(&cpu.time)))
}

fn working_set(memory: Option<&MemoryStats>) -> Option<(f64, Option<i64>)> {
    let m = memory?;
    Some((m.working_set_bytes? as f64, millis(&m.time)))
}

fn container_labels(pod: &PodStats, c: &ContainerStats) -> Labels {
    vec![
        ("container", c.name.clone()),
        ("namespace", pod.pod_ref.namespace.clone()),
        ("pod", pod.pod_ref.name.clone()),
    ]
}

fn pod_labels(pod: &PodStats) -> Labels {
    vec![
        ("namespace", pod.pod_ref.namespace.clone()),
        ("pod", pod.pod_ref.name.clone()),
    ]
}

fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The exposition of `summary`; `Err` (the summary could not be read) yields only the
/// scrape-error gauges set to 1.
pub fn render(summary: Result<&Summary, ()>) -> String {
    let mut families = vec![
        Family::new(
            "container_cpu_usage_seconds_total",
            "[STABLE] Cumulative cpu time consumed by the container in core-seconds",
            "counter",
        ),
        Family::new(
            "container_memory_working_set_bytes",
            "[STABLE] Current working set of the container in bytes",
            "gauge",
        ),
        Family::new(
            "container_start_time_seconds",
            "[STABLE] Start time of the container since unix epoch in seconds",
            "gauge",
        ),
        Family::new(
            "node_cpu_usage_seconds_total",
            "[STABLE] Cumulative cpu time consumed by the node in core-seconds",
            "counter",
        ),
        Family::new(
            "node_memory_working_set_bytes",
            "[STABLE] Current working set of the node in bytes",
            "gauge",
        ),
        Family::new(
            "pod_cpu_usage_seconds_total",
            "[STABLE] Cumulative cpu time consumed by the pod in core-seconds",
            "counter",
        ),
        Family::new(
            "pod_memory_working_set_bytes",
            "[STABLE] Current working set of the pod in bytes",
            "gauge",
        ),
        Family::new(
            "resource_scrape_error",
            "[STABLE] 1 if there was an error while getting container metrics, 0 otherwise",
            "gauge",
        ),
        Family::new(
            "scrape_error",
            "[ALPHA] (Deprecated since 1.29.0) 1 if there was an error while getting container metrics, 0 otherwise",
            "gauge",
        ),
    ];
    let error = if summary.is_ok() { 0.0 } else { 1.0 };
    families[7].samples.push((Vec::new(), error, None));
    families[8].samples.push((Vec::new(), error, None));
    if let Ok(summary) = summary {
        if let Some((v, t)) = cpu_seconds(summary.node.cpu.as_ref()) {
            families[3].samples.push((Vec::new(), v, t));
        }
        if let Some((v, t)) = working_set(summary.node.memory.as_ref()) {
            families[4].samples.push((Vec::new(), v, t));
        }
        for pod in &summary.pods {
            for c in &pod.containers {
                if let Some((v, t)) = cpu_seconds(c.cpu.as_ref()) {
                    families[0].samples.push((container_labels(pod, c), v, t));
                }
                if let Some((v, t)) = working_set(c.memory.as_ref()) {
                    families[1].samples.push((container_labels(pod, c), v, t));
                }
                if let Some(ms) = millis(&c.start_time).filter(|ms| *ms > 0) {
                    families[2]
                        .samples
                        .push((container_labels(pod, c), ms as f64 / 1000.0, None));
                }
            }
            if let Some((v, t)) = cpu_seconds(pod.cpu.as_ref()) {
                families[5].samples.push((pod_labels(pod), v, t));
            }
            if let Some((v, t)) = working_set(pod.memory.as_ref()) {
                families[6].samples.push((pod_labels(pod), v, t));
            }
        }
    }
    let mut out = String::new();
    for family in &mut families {
        if family.samples.is_empty() {
            continue;
        }
        family.samples.sort_by(|a, b| a.0.cmp(&b.0));
        let _ = writeln!(out, "# HELP {} {}", family.name, family.help);
        let _ = writeln!(out, "# TYPE {} {}", family.name, family.kind);
        for (labels, value, at) in &family.samples {
            out.push_str(family.name);
            if !labels.is_empty() {
                let rendered: Vec<String> = labels
                    .iter()
                    .map(|(k, v)| format!("{k}=\"{}\"", escape(v)))
                    .collect();
                let _ = write!(out, "{{{}}}", rendered.join(","));
            }
            let _ = write!(out, " {}", go_float(*value));
            if let Some(at) = at {
                let _ = write!(out, " {at}");
            }
            out.push('\n');
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::summary::*;
    use super::*;

    #[test]
    fn floats_print_like_go() {
        assert_eq!(go_float(0.0), "0");
        assert_eq!(go_float(1.0), "1");
        assert_eq!(go_float(123456.0), "123456");
        assert_eq!(go_float(1234567.0), "1.234567e+06");
        assert_eq!(go_float(16777216.0), "1.6777216e+07");
        assert_eq!(go_float(0.5), "0.5");
        assert_eq!(go_float(0.00001), "1e-05");
        assert_eq!(go_float(12.345678), "12.345678");
    }

    #[test]
    fn the_exposition_matches_upstream_series() {
        let t = "2024-01-01T00:00:00Z".to_owned();
        let summary = Summary {
            node: NodeStats {
                node_name: "n".into(),
                cpu: Some(CpuStats {
                    time: t.clone(),
                    usage_core_nano_seconds: Some(2_500_000_000),
                    usage_nano_cores: None,
                }),
                memory: Some(MemoryStats {
                    time: t.clone(),
                    working_set_bytes: Some(1024),
                    ..Default::default()
                }),
                ..Default::default()
            },
            pods: vec![PodStats {
                pod_ref: PodReference {
                    name: "web".into(),
                    namespace: "default".into(),
                    uid: "u".into(),
                },
                containers: vec![ContainerStats {
                    name: "main".into(),
                    start_time: t.clone(),
                    cpu: Some(CpuStats {
                        time: t.clone(),
                        usage_core_nano_seconds: Some(500_000_000),
                        usage_nano_cores: Some(1),
                    }),
                    memory: Some(MemoryStats {
                        time: t.clone(),
                        working_set_bytes: Some(4096),
                        ..Default::default()
                    }),
                    ..Default::default()
                }],
                cpu: Some(CpuStats {
                    time: t.clone(),
                    usage_core_nano_seconds: Some(600_000_000),
                    usage_nano_cores: None,
                }),
                memory: None,
                ..Default::default()
            }],
        };
        let text = render(Ok(&summary));
        let expected = "\
# HELP container_cpu_usage_seconds_total [STABLE] Cumulative cpu time consumed by the container in core-seconds
# TYPE container_cpu_usage_seconds_total counter
container_cpu_usage_seconds_total{container=\"main\",namespace=\"default\",pod=\"web\"} 0.5 1704067200000
# HELP container_memory_working_set_bytes [STABLE] Current working set of the container in bytes
# TYPE container_memory_working_set_bytes gauge
container_memory_working_set_bytes{container=\"main\",namespace=\"default\",pod=\"web\"} 4096 1704067200000
# HELP container_start_time_seconds [STABLE] Start time of the container since unix epoch in seconds
# TYPE container_start_time_seconds gauge
container_start_time_seconds{container=\"main\",namespace=\"default\",pod=\"web\"} 1.7040672e+09
# HELP node_cpu_usage_seconds_total [STABLE] Cumulative cpu time consumed by the node in core-seconds
# TYPE node_cpu_usage_seconds_total counter
node_cpu_usage_seconds_total 2.5 1704067200000
# HELP node_memory_working_set_bytes [STABLE] Current working set of the node in bytes
# TYPE node_memory_working_set_bytes gauge
node_memory_working_set_bytes 1024 1704067200000
# HELP pod_cpu_usage_seconds_total [STABLE] Cumulative cpu time consumed by the pod in core-seconds
# TYPE pod_cpu_usage_seconds_total counter
pod_cpu_usage_seconds_total{namespace=\"default\",pod=\"web\"} 0.6 1704067200000
# HELP resource_scrape_error [STABLE] 1 if there was an error while getting container metrics, 0 otherwise
# TYPE resource_scrape_error gauge
resource_scrape_error 0
# HELP scrape_error [ALPHA] (Deprecated since 1.29.0) 1 if there was an error while getting container metrics, 0 otherwise
# TYPE scrape_error gauge
scrape_error 0
";
        assert_eq!(text, expected);
    }

    #[test]
    fn a_failed_read_reports_the_error_only() {
        let text = render(Err(()));
        assert!(text.contains("\nresource_scrape_error 1\n"), "{text}");
        assert!(!text.contains("node_cpu"), "{text}");
    }
}
