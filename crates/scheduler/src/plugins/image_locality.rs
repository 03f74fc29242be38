//! ImageLocality (PreScore, Score): prefer nodes that already have the pod's images, weighted
//! by image size and by how widely the image is spread (so one node with a popular image does
//! not attract every pod).

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::Value;

use crate::cache::Snapshot;
use crate::extension_points;
use crate::framework::{
    CycleState, Handle, MAX_NODE_SCORE, Plugin, PreScorePlugin, ScorePlugin, Status,
};
use crate::nodeinfo::{NodeInfo, PodInfo, normalized_image_name};

/// The plugin name.
pub const NAME: &str = "ImageLocality";

const MB: i64 = 1024 * 1024;
const MIN_THRESHOLD: i64 = 23 * MB;
const MAX_CONTAINER_THRESHOLD: i64 = 1000 * MB;

/// The plugin.
pub struct ImageLocality;

/// Factory.
pub fn new(_args: Option<&Value>, _handle: &Handle) -> Result<Arc<dyn Plugin>, String> {
    Ok(Arc::new(ImageLocality))
}

#[derive(Clone)]
struct State {
    /// Each image of the pod (once per container) with its spread over the cluster.
    images: Vec<(String, f64)>,
    containers: usize,
}

impl Plugin for ImageLocality {
    fn name(&self) -> &'static str {
        NAME
    }
    extension_points!(as_pre_score => PreScorePlugin, as_score => ScorePlugin);
}

impl PreScorePlugin for ImageLocality {
    fn pre_score(
        &self,
        state: &mut CycleState,
        pod: &PodInfo,
        _nodes: &[Arc<NodeInfo>],
        snapshot: &Snapshot,
    ) -> Status {
        let Some(spec) = pod.pod.spec.as_ref() else {
            return Status::skip();
        };
        let total = snapshot.len().max(1) as f64;
        let mut spread_of: HashMap<String, f64> = HashMap::new();
        let mut images = Vec::new();
        let all = spec
            .init_containers
            .iter()
            .flatten()
            .chain(spec.containers.iter());
        let mut containers = 0;
        for c in all {
            containers += 1;
            let name = normalized_image_name(c.image.as_deref().unwrap_or(""));
            let spread = *spread_of
                .entry(name.clone())
                .or_insert_with(|| snapshot.image_node_count(&name) as f64 / total);
            images.push((name, spread));
        }
        state.write(NAME, State { images, containers });
        Status::success()
    }
}

impl ScorePlugin for ImageLocality {
    fn score(&self, state: &CycleState, _pod: &PodInfo, node: &NodeInfo) -> Result<i64, Status> {
        let Some(s) = state.read::<State>(NAME) else {
            return Ok(0);
        };
        let sum: i64 = s
            .images
            .iter()
            .filter_map(|(name, spread)| {
                node.images
                    .get(name)
                    .map(|size| (*size as f64 * spread) as i64)
            })
            .sum();
        let max = MAX_CONTAINER_THRESHOLD * s.containers as i64;
        if max <= MIN_THRESHOLD {
            return Ok(0);
        }
        let clamped = sum.clamp(MIN_THRESHOLD, max);
        Ok(MAX_NODE_SCORE * (clamped - MIN_THRESHOLD) / (max - MIN_THRESHOLD))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugins::testing::{node, pod, snapshot};

    #[test]
    fn nodes_with_big_widely_spread_images_score_higher() {
        let nodes = vec![
            node("has-both")
                .image("gcr.io/40", 40 * MB)
                .image("gcr.io/300", 300 * MB)
                .info(),
            node("has-40").image("gcr.io/40", 40 * MB).info(),
            node("none").info(),
        ];
        let snap = snapshot(nodes.clone());
        let p = pod("p")
            .image("gcr.io/40")
            .container("gcr.io/300", &[])
            .info();
        let mut state = CycleState::new();
        ImageLocality.pre_score(&mut state, &p, &nodes, &snap);
        let scores: Vec<i64> = nodes
            .iter()
            .map(|n| ImageLocality.score(&state, &p, n).unwrap())
            .collect();
        // has-both: 40MB*(2/3) + 300MB*(1/3) ≈ 126.7MB over [23MB, 2000MB] → 5.
        // has-40: 26.7MB → 0 (barely above the 23MB floor); none: 0.
        assert_eq!(scores, [5, 0, 0]);
        assert!(scores[0] > scores[1]);
    }
}
