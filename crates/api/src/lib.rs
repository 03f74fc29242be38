//! Skiff's API machinery that needs no IO: shared by the API server, the controllers and tools.
//!
//! - [`field`]: field paths and field errors, the building blocks of `422 Invalid` answers.
//! - [`table`]: the column/cell types of `meta.k8s.io/v1` Table output.
//! - [`selector`]: label and field selectors (parsing with upstream's grammar, and matching).
//! - [`patch`]: JSON patch, JSON merge patch and strategic merge patch.
//! - [`registry`]: the description of a kind (names, scope, subresources, behaviour).
//! - [`listmeta`]: which lists merge by key or as sets (the upstream `x-kubernetes-list-*` and
//!   `patchMergeKey` metadata), shared by strategic merge patch, server-side apply and OpenAPI.
//! - [`managedfields`]: field ownership (`managedFields`) and server-side apply.
//! - [`quantity`]: resource quantities (`100m`, `1Gi`) read at a scale, rounding up.
//! - [`cloud`]: the taints, annotations and route table the cloud controllers and the kubelet
//!   share.

pub use k8s_openapi;

pub mod cloud;
pub mod duration;
pub mod field;
pub mod listmeta;
pub mod managedfields;
pub mod patch;
pub mod protobuf;
pub mod quantity;
pub mod registry;
pub mod scheduling;
pub mod selector;
pub mod table;
