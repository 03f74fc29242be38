//! A client of the Container Runtime Interface (CRI v1): the gRPC RuntimeService and
//! ImageService a container runtime such as containerd or CRI-O serves on a unix socket.
//!
//! The generated message types come from the maintained `k8s-cri` crate and are re-exported as
//! [`api`]. [`Cri`] wraps both services with one method per RPC, each taking the request
//! message and returning the response message, and maps gRPC failures to [`Error`] with the
//! RPC's name so a kubelet log says which call failed.

use std::path::{Path, PathBuf};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use tonic::transport::{Channel, Endpoint, Uri};

pub use k8s_cri::v1 as api;
use k8s_cri::v1::image_service_client::ImageServiceClient;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
pub use tonic::Code;

/// Why a CRI call failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The runtime answered an RPC with an error.
    #[error("CRI {rpc} failed: {code:?}: {message}")]
    Call {
        /// The RPC (e.g. `RunPodSandbox`).
        rpc: &'static str,
        /// The gRPC status code.
        code: Code,
        /// The runtime's message.
        message: String,
    },
}

impl Error {
    /// The gRPC code of a failed call (`Unavailable` when the runtime is not reachable).
    pub fn code(&self) -> Code {
        match self {
            Error::Call { code, .. } => *code,
        }
    }

    /// Whether the runtime said the object does not exist.
    pub fn is_not_found(&self) -> bool {
        self.code() == Code::NotFound
    }

    /// The runtime's message.
    pub fn message(&self) -> String {
        match self {
            Error::Call { message, .. } => message.clone(),
        }
    }
}

/// Result alias of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A connection to one CRI runtime. Cloning is cheap and clones share the connection.
#[derive(Clone)]
pub struct Cri {
    runtime: RuntimeServiceClient<Channel>,
    images: ImageServiceClient<Channel>,
    socket: PathBuf,
}

/// The socket path of an endpoint written as `unix:///path` or a plain path.
pub fn socket_path(endpoint: &str) -> PathBuf {
    PathBuf::from(endpoint.strip_prefix("unix://").unwrap_or(endpoint))
}

impl Cri {
    /// A client of the runtime at `endpoint` (`unix:///run/containerd/containerd.sock` or a
    /// path). Nothing is dialled until the first call; calls made while the runtime is down
    /// fail with `Unavailable`, and the channel reconnects once it is back.
    pub fn lazy(endpoint: &str) -> Cri {
        let socket = socket_path(endpoint);
        let path = socket.clone();
        let channel = Endpoint::from_static("http://cri.invalid")
            .connect_timeout(Duration::from_secs(5))
            .connect_with_connector_lazy(tower::service_fn(move |_: Uri| {
                let path = path.clone();
                async move {
                    Ok::<_, std::io::Error>(TokioIo::new(
                        tokio::net::UnixStream::connect(path).await?,
                    ))
                }
            }));
        Cri {
            runtime: RuntimeServiceClient::new(channel.clone()).max_decoding_message_size(64 << 20),
            images: ImageServiceClient::new(channel).max_decoding_message_size(64 << 20),
            socket,
        }
    }

    /// Connect and check the runtime answers (its `Version`).
    pub async fn connect(endpoint: &str) -> Result<Cri> {
        let cri = Cri::lazy(endpoint);
        cri.version(api::VersionRequest::default()).await?;
        Ok(cri)
    }

    /// The socket this client talks to.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Every sandbox in state `SANDBOX_READY`.
    pub async fn ready_sandboxes(&self) -> Result<Vec<api::PodSandbox>> {
        let filter = api::PodSandboxFilter {
            state: Some(api::PodSandboxStateValue {
                state: api::PodSandboxState::SandboxReady as i32,
            }),
            ..Default::default()
        };
        let request = api::ListPodSandboxRequest {
            filter: Some(filter),
        };
        Ok(self.list_pod_sandbox(request).await?.items)
    }

    /// Every container in state `CONTAINER_RUNNING`.
    pub async fn running_containers(&self) -> Result<Vec<api::Container>> {
        let filter = api::ContainerFilter {
            state: Some(api::ContainerStateValue {
                state: api::ContainerState::ContainerRunning as i32,
            }),
            ..Default::default()
        };
        let request = api::ListContainersRequest {
            filter: Some(filter),
        };
        Ok(self.list_containers(request).await?.containers)
    }
}

fn call_error(rpc: &'static str, status: tonic::Status) -> Error {
    Error::Call {
        rpc,
        code: status.code(),
        message: status.message().to_owned(),
    }
}

/// One method per RPC: `name(request) -> response`.
macro_rules! rpcs {
    ($service:ident: $( $(#[$doc:meta])* $method:ident($request:ident) -> $response:ident = $rpc:literal; )*) => {
        impl Cri {
            $(
                $(#[$doc])*
                pub async fn $method(&self, request: api::$request) -> Result<api::$response> {
                    let mut client = self.$service.clone();
                    client
                        .$method(request)
                        .await
                        .map(tonic::Response::into_inner)
                        .map_err(|status| call_error($rpc, status))
                }
            )*
        }
    };
}

rpcs! { runtime:
    /// The runtime's name and version.
    version(VersionRequest) -> VersionResponse = "Version";
    /// Create and start a pod sandbox.
    run_pod_sandbox(RunPodSandboxRequest) -> RunPodSandboxResponse = "RunPodSandbox";
    /// Stop a sandbox and its containers.
    stop_pod_sandbox(StopPodSandboxRequest) -> StopPodSandboxResponse = "StopPodSandbox";
    /// Remove a sandbox.
    remove_pod_sandbox(RemovePodSandboxRequest) -> RemovePodSandboxResponse = "RemovePodSandbox";
    /// A sandbox's status.
    pod_sandbox_status(PodSandboxStatusRequest) -> PodSandboxStatusResponse = "PodSandboxStatus";
    /// Sandboxes matching a filter.
    list_pod_sandbox(ListPodSandboxRequest) -> ListPodSandboxResponse = "ListPodSandbox";
    /// Create a container in a sandbox.
    create_container(CreateContainerRequest) -> CreateContainerResponse = "CreateContainer";
    /// Start a created container.
    start_container(StartContainerRequest) -> StartContainerResponse = "StartContainer";
    /// Stop a container, killing it after a timeout.
    stop_container(StopContainerRequest) -> StopContainerResponse = "StopContainer";
    /// Remove a container.
    remove_container(RemoveContainerRequest) -> RemoveContainerResponse = "RemoveContainer";
    /// Containers matching a filter.
    list_containers(ListContainersRequest) -> ListContainersResponse = "ListContainers";
    /// A container's status.
    container_status(ContainerStatusRequest) -> ContainerStatusResponse = "ContainerStatus";
    /// Change a running container's resources.
    update_container_resources(UpdateContainerResourcesRequest) -> UpdateContainerResourcesResponse = "UpdateContainerResources";
    /// Reopen a container's log file (after rotation).
    reopen_container_log(ReopenContainerLogRequest) -> ReopenContainerLogResponse = "ReopenContainerLog";
    /// Run a command in a container and collect its output.
    exec_sync(ExecSyncRequest) -> ExecSyncResponse = "ExecSync";
    /// A streaming URL for an exec session.
    exec(ExecRequest) -> ExecResponse = "Exec";
    /// A streaming URL for attaching to a container.
    attach(AttachRequest) -> AttachResponse = "Attach";
    /// A streaming URL for forwarding ports of a sandbox.
    port_forward(PortForwardRequest) -> PortForwardResponse = "PortForward";
    /// One container's resource usage.
    container_stats(ContainerStatsRequest) -> ContainerStatsResponse = "ContainerStats";
    /// Resource usage of containers matching a filter.
    list_container_stats(ListContainerStatsRequest) -> ListContainerStatsResponse = "ListContainerStats";
    /// One pod sandbox's resource usage (cpu, memory, network, processes, its containers).
    pod_sandbox_stats(PodSandboxStatsRequest) -> PodSandboxStatsResponse = "PodSandboxStats";
    /// Resource usage of pod sandboxes matching a filter. Runtimes that predate the call
    /// answer `Unimplemented`.
    list_pod_sandbox_stats(ListPodSandboxStatsRequest) -> ListPodSandboxStatsResponse = "ListPodSandboxStats";
    /// The runtime's conditions (RuntimeReady, NetworkReady).
    status(StatusRequest) -> StatusResponse = "Status";
    /// Update the runtime's configuration (the pod CIDR).
    update_runtime_config(UpdateRuntimeConfigRequest) -> UpdateRuntimeConfigResponse = "UpdateRuntimeConfig";
}

rpcs! { images:
    /// Images matching a filter.
    list_images(ListImagesRequest) -> ListImagesResponse = "ListImages";
    /// One image's status (`image` is `None` when absent).
    image_status(ImageStatusRequest) -> ImageStatusResponse = "ImageStatus";
    /// Pull an image, with credentials if given.
    pull_image(PullImageRequest) -> PullImageResponse = "PullImage";
    /// Remove an image.
    remove_image(RemoveImageRequest) -> RemoveImageResponse = "RemoveImage";
    /// Usage of the image filesystem.
    image_fs_info(ImageFsInfoRequest) -> ImageFsInfoResponse = "ImageFsInfo";
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_name_sockets_with_or_without_scheme() {
        assert_eq!(
            socket_path("unix:///run/containerd/containerd.sock"),
            PathBuf::from("/run/containerd/containerd.sock")
        );
        assert_eq!(socket_path("/tmp/c.sock"), PathBuf::from("/tmp/c.sock"));
    }

    #[tokio::test]
    async fn a_missing_socket_is_a_connect_error() {
        let err = match Cri::connect("/nonexistent/containerd.sock").await {
            Err(e) => e,
            Ok(_) => panic!("connected to nothing"),
        };
        assert_eq!(err.code(), Code::Unavailable, "{err}");
    }
}
