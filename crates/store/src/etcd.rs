//! The etcd backend: the [`Store`] trait over etcd's v3 gRPC API (the `etcd-client` crate),
//! for control planes that need high availability.
//!
//! Revisions are etcd's own, one to one, so `resourceVersion`s mean the same thing whichever
//! API server answers. Every key is stored under a configurable prefix. Writes are single
//! transactions: create compares the key's mod revision with 0, update and delete compare it
//! with the expected revision (and require the key to exist), and the failure branch reads the
//! key so a failed precondition reports what it found, without a second round trip and without
//! consuming a revision (upstream: k8s.io/apiserver/pkg/storage/etcd3/store.go).
//!
//! A watch after revision `r` first reads at `r`: that answers "compacted" (when `r` is below
//! the compaction point — the trait's rule, stricter than etcd's, which would still accept a
//! watch from the compaction point plus one whose first event lost its previous value) and
//! "future revision" synchronously. The etcd watch then starts at `r + 1`. A watcher that
//! must replay history is cancelled by etcd if a compaction overtakes it; that closes the
//! channel, and the client's re-watch gets the compacted answer and re-lists.
//!
//! History is compacted like kube-apiserver does: every interval each server tries to bump
//! the version of the shared `compact_rev_key` with a compare-and-swap, and only the winner
//! compacts, to the revision it saw one interval earlier; the key's value records the last
//! compaction point (upstream: k8s.io/apiserver/pkg/storage/etcd3/compact.go).
//!
//! Requests and watches share one gRPC channel, which a request that gets no answer at all
//! within the request timeout replaces (see [`Connection`]).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, DeleteOptions, EventType, GetOptions, TxnOp,
    TxnOpResponse, WatchOptions,
};
use tokio::sync::mpsc;

use crate::{Error, Event, EventKind, KeyValue, RangeRequest, RangeResponse, Result, Revision};
use crate::{SnapshotFormat, Store, Watch};

/// The key kube-apiservers coordinate compaction through (upstream's name and layout: at the
/// root of the keyspace, shared by every cluster on the etcd, as compaction is global).
const COMPACT_REV_KEY: &str = "compact_rev_key";

/// TLS files for talking to etcd (PEM).
#[derive(Debug, Clone, Default)]
pub struct EtcdTls {
    /// CA bundle that signed etcd's serving certificate.
    pub ca_file: Option<PathBuf>,
    /// Client certificate, for etcd's `--client-cert-auth`.
    pub cert_file: Option<PathBuf>,
    /// The client certificate's private key.
    pub key_file: Option<PathBuf>,
}

impl EtcdTls {
    /// Whether any TLS file is configured.
    pub fn is_set(&self) -> bool {
        self.ca_file.is_some() || self.cert_file.is_some() || self.key_file.is_some()
    }
}

/// How to reach etcd and how to use it.
#[derive(Debug, Clone)]
pub struct EtcdOptions {
    /// Client URLs (`http://host:2379` or `https://host:2379`).
    pub endpoints: Vec<String>,
    /// Prepended to every key, so several clusters can share one etcd.
    pub prefix: String,
    /// TLS settings; required when any endpoint is `https://`.
    pub tls: EtcdTls,
    /// Every request (except watch streams) must finish within this long.
    pub request_timeout: Duration,
    /// How often history is compacted (zero disables automatic compaction).
    pub compaction_interval: Duration,
    /// Events a watcher may have queued before it is dropped as too slow.
    pub watcher_buffer: usize,
}

impl Default for EtcdOptions {
    fn default() -> Self {
        EtcdOptions {
            endpoints: vec!["http://127.0.0.1:2379".into()],
            prefix: String::new(),
            tls: EtcdTls::default(),
            request_timeout: Duration::from_secs(10),
            // upstream: kube-apiserver's --etcd-compaction-interval default.
            compaction_interval: Duration::from_secs(300),
            watcher_buffer: 4096,
        }
    }
}

impl EtcdOptions {
    /// Options for a `--store` URL: `etcd://host1:2379,host2:2379` (plain `http://` and
    /// `https://` lists are accepted too). Hosts become `https://` endpoints when `tls` is set.
    pub fn from_url(url: &str, tls: EtcdTls) -> std::result::Result<EtcdOptions, String> {
        let (scheme, rest) = match url.split_once("://") {
            Some(("etcd", rest)) => (if tls.is_set() { "https" } else { "http" }, rest),
            Some(("http", rest)) => ("http", rest),
            Some(("https", rest)) => ("https", rest),
            _ => {
                return Err(format!(
                    "{url:?} is not an etcd URL: expected etcd://host:port[,host:port...]"
                ));
            }
        };
        let mut endpoints = Vec::new();
        for host in rest.split(',') {
            let host = host.trim().trim_end_matches('/');
            let host = host
                .strip_prefix("http://")
                .or_else(|| host.strip_prefix("https://"))
                .unwrap_or(host);
            let valid = host.rsplit_once(':').is_some_and(|(name, port)| {
                !name.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0)
            });
            if !valid {
                return Err(format!("{url:?}: {host:?} is not host:port"));
            }
            endpoints.push(format!("{scheme}://{host}"));
        }
        if scheme == "http" && tls.is_set() {
            return Err(format!(
                "{url:?}: TLS files were given but the endpoints are http://"
            ));
        }
        Ok(EtcdOptions {
            endpoints,
            tls,
            ..EtcdOptions::default()
        })
    }
}

/// The gRPC channel to etcd, dialled afresh when it stops answering.
///
/// A request that waits out the whole request timeout without any answer — no response and
/// no error — is on a channel that has stopped working without failing (seen on loaded
/// machines, where HTTP/2 keep-alive takes a further 15 s to notice, if it does). Such a
/// timeout redials in the background: later requests use the new channel, and watches on the
/// old one end, so their clients re-watch through the new one (upstream relies on gRPC-Go's
/// own reconnects and etcd's client health checks for the same recovery). At most one redial
/// runs per request timeout, so an etcd that is merely slow is not hammered with new
/// connections.
struct Connection {
    endpoints: Vec<String>,
    options: ConnectOptions,
    timeout: Duration,
    client: parking_lot::RwLock<Client>,
    redialing: std::sync::atomic::AtomicBool,
    /// Bumped by every redial; watches end when it changes.
    generation: tokio::sync::watch::Sender<u64>,
}

impl Connection {
    async fn dial(
        endpoints: &[String],
        options: &ConnectOptions,
        timeout: Duration,
    ) -> Result<Client> {
        tokio::time::timeout(timeout, Client::connect(endpoints, Some(options.clone())))
            .await
            .map_err(|_| unavailable("connecting", "timed out"))?
            .map_err(|e| unavailable("connecting", e))
    }

    /// Borrow the current client (cloning a whole `Client` would clone one channel handle
    /// per service, on every request).
    fn with_client<T>(&self, f: impl FnOnce(&Client) -> T) -> T {
        f(&self.client.read())
    }

    /// Start a redial in the background unless one ran within the last request timeout.
    fn redial(self: &Arc<Self>, action: &'static str) {
        use std::sync::atomic::Ordering;
        if self.redialing.swap(true, Ordering::AcqRel) {
            return;
        }
        let connection = Arc::clone(self);
        tokio::spawn(async move {
            let started = tokio::time::Instant::now();
            tracing::warn!(
                action,
                endpoints = ?connection.endpoints,
                "etcd gave no answer within the request timeout; dialling it again"
            );
            match Connection::dial(
                &connection.endpoints,
                &connection.options,
                connection.timeout,
            )
            .await
            {
                Ok(client) => {
                    *connection.client.write() = client;
                    connection
                        .generation
                        .send_modify(|generation| *generation += 1);
                }
                Err(e) => tracing::warn!(error = %e, "dialling etcd again failed"),
            }
            tokio::time::sleep_until(started + connection.timeout).await;
            connection.redialing.store(false, Ordering::Release);
        });
    }
}

/// A [`Store`] backed by an etcd cluster.
pub struct EtcdStore {
    connection: Arc<Connection>,
    prefix: String,
    options: EtcdOptions,
    compactor: parking_lot::Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl std::fmt::Debug for EtcdStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdStore")
            .field("endpoints", &self.options.endpoints)
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

fn unavailable(action: &str, e: impl std::fmt::Display) -> Error {
    Error::Unavailable {
        reason: format!("etcd {action} failed: {e}"),
    }
}

fn read_pem(path: &std::path::Path, what: &'static str) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|source| Error::Io {
        action: what,
        source,
    })
}

/// The end of the key range that holds exactly the keys starting with `prefix` (etcd's
/// `range_end`); `"\0"` means "to the end of the keyspace".
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

/// The largest response accepted from etcd.
const MAX_MESSAGE: usize = 1 << 30;

/// Pause between attempts while etcd fails over.
const RETRY_PAUSE: Duration = Duration::from_millis(50);

/// gRPC's status code for "try again" (a fixed number of the gRPC protocol).
const GRPC_UNAVAILABLE: i32 = 14;

/// Whether a request may be sent again after a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Safety {
    /// Reads: repeating them changes nothing.
    Read,
    /// Writes: only retried when the failure shows they were not executed.
    Write,
}

fn retryable(e: &etcd_client::Error, safety: Safety) -> bool {
    match e {
        etcd_client::Error::TransportError(_) => true,
        etcd_client::Error::GRpcStatus(status) => {
            let message = status.message();
            let unsent = message.contains("connect error") || message.contains("no leader");
            match i32::from(status.code()) {
                GRPC_UNAVAILABLE => safety == Safety::Read || unsent,
                _ => {
                    safety == Safety::Read
                        && (message.contains("leader changed") || message.contains("timed out"))
                }
            }
        }
        _ => false,
    }
}

/// What an etcd error says about revisions, if anything.
enum RevisionError {
    Compacted,
    Future,
}

fn revision_error(e: &etcd_client::Error) -> Option<RevisionError> {
    let etcd_client::Error::GRpcStatus(status) = e else {
        return None;
    };
    let message = status.message();
    if message.contains("required revision has been compacted") {
        Some(RevisionError::Compacted)
    } else if message.contains("required revision is a future revision") {
        Some(RevisionError::Future)
    } else {
        None
    }
}

impl EtcdStore {
    /// Connect to etcd and start the compactor. Fails if etcd does not answer within the
    /// request timeout.
    pub async fn connect(options: EtcdOptions) -> Result<Arc<EtcdStore>> {
        if options.endpoints.is_empty() {
            return Err(unavailable("connecting", "no endpoints given"));
        }
        let mut connect = ConnectOptions::new()
            .with_connect_timeout(options.request_timeout)
            .with_keep_alive(Duration::from_secs(10), Duration::from_secs(5))
            .with_keep_alive_while_idle(true)
            // Refuse requests (and end watches) on a member cut off from the leader, so they
            // go to one that can serve them (upstream: clientv3.WithRequireLeader).
            .with_require_leader(true);
        if options.endpoints.iter().any(|e| e.starts_with("https://")) {
            let mut tls = etcd_client::TlsOptions::new();
            if let Some(ca) = &options.tls.ca_file {
                tls = tls.ca_certificate(etcd_client::Certificate::from_pem(read_pem(
                    ca,
                    "reading the etcd CA file",
                )?));
            }
            match (&options.tls.cert_file, &options.tls.key_file) {
                (Some(cert), Some(key)) => {
                    tls = tls.identity(etcd_client::Identity::from_pem(
                        read_pem(cert, "reading the etcd client certificate")?,
                        read_pem(key, "reading the etcd client key")?,
                    ));
                }
                (None, None) => {}
                _ => {
                    return Err(unavailable(
                        "connecting",
                        "a client certificate needs both a certificate and a key file",
                    ));
                }
            }
            connect = connect.with_tls(tls);
        }
        let client =
            Connection::dial(&options.endpoints, &connect, options.request_timeout).await?;
        let store = Arc::new(EtcdStore {
            connection: Arc::new(Connection {
                endpoints: options.endpoints.clone(),
                options: connect,
                timeout: options.request_timeout,
                client: parking_lot::RwLock::new(client),
                redialing: Default::default(),
                generation: tokio::sync::watch::Sender::new(0),
            }),
            prefix: options.prefix.clone(),
            options,
            compactor: parking_lot::Mutex::new(None),
        });
        // One round trip proves the endpoints answer, so a wrong address fails at start-up.
        store.current_revision().await?;
        if !store.options.compaction_interval.is_zero() {
            let weak = Arc::downgrade(&store);
            let interval = store.options.compaction_interval;
            *store.compactor.lock() = Some(tokio::spawn(compaction_loop(weak, interval)));
        }
        tracing::info!(
            endpoints = ?store.options.endpoints,
            prefix = %store.prefix,
            "connected to etcd"
        );
        Ok(store)
    }

    /// A KV client that accepts responses of any size (a range of 10k objects is tens of
    /// MiB; gRPC's default limit is 4 MiB).
    fn kv(&self) -> etcd_client::KvClient {
        self.connection
            .with_client(Client::kv_client)
            .max_decoding_message_size(MAX_MESSAGE)
    }

    fn watcher(&self) -> etcd_client::WatchClient {
        self.connection
            .with_client(Client::watch_client)
            .max_decoding_message_size(MAX_MESSAGE)
    }

    fn full_key(&self, key: &str) -> Vec<u8> {
        let mut full = Vec::with_capacity(self.prefix.len() + key.len());
        full.extend_from_slice(self.prefix.as_bytes());
        full.extend_from_slice(key.as_bytes());
        full
    }

    /// A stored key as the caller knows it (prefix removed); `None` for keys outside the
    /// prefix or for the compaction coordination key.
    fn user_key(&self, full: &[u8]) -> Option<String> {
        let key = full.strip_prefix(self.prefix.as_bytes())?;
        if full == COMPACT_REV_KEY.as_bytes() {
            return None;
        }
        String::from_utf8(key.to_vec()).ok()
    }

    fn to_kv(&self, kv: &etcd_client::KeyValue) -> Option<KeyValue> {
        Some(KeyValue {
            key: self.user_key(kv.key())?,
            value: Bytes::copy_from_slice(kv.value()),
            create_revision: kv.create_revision(),
            mod_revision: kv.mod_revision(),
            stale: false,
        })
    }

    /// The error for a request that got no answer at all, which also redials (see
    /// [`Connection`]).
    fn timed_out(&self, action: &'static str) -> Error {
        self.connection.redial(action);
        unavailable(action, "timed out")
    }

    async fn timed<T>(
        &self,
        action: &'static str,
        call: impl std::future::Future<Output = std::result::Result<T, etcd_client::Error>>,
    ) -> Result<std::result::Result<T, etcd_client::Error>> {
        tokio::time::timeout(self.options.request_timeout, call)
            .await
            .map_err(|_| self.timed_out(action))
    }

    /// Run a request, retrying within the request timeout while etcd is failing over: any
    /// unavailability for reads, and for writes only failures that prove the request was
    /// never executed (no connection, no leader), so a write is never applied twice.
    async fn retrying<T, F, Fut>(
        &self,
        action: &'static str,
        safety: Safety,
        mut attempt: F,
    ) -> Result<std::result::Result<T, etcd_client::Error>>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = std::result::Result<T, etcd_client::Error>>,
    {
        let deadline = tokio::time::Instant::now() + self.options.request_timeout;
        // The failure that caused the last retry, so a timeout says what went wrong.
        let mut last_failure: Option<etcd_client::Error> = None;
        loop {
            let Ok(result) = tokio::time::timeout_at(deadline, attempt()).await else {
                // The last attempt got no answer at all, whatever the earlier ones got.
                let timed_out = self.timed_out(action);
                return Err(match last_failure {
                    Some(e) => unavailable(action, format!("timed out; last failure: {e}")),
                    None => timed_out,
                });
            };
            match result {
                Err(e)
                    if retryable(&e, safety)
                        && tokio::time::Instant::now() + RETRY_PAUSE < deadline =>
                {
                    tracing::debug!(action, error = %e, "etcd request failed; retrying");
                    last_failure = Some(e);
                    tokio::time::sleep(RETRY_PAUSE).await;
                }
                other => return Ok(other),
            }
        }
    }

    /// Run a compare-and-swap transaction on one key: `then` when every compare holds, else
    /// read the key. Returns the response and the current revision.
    async fn txn(
        &self,
        action: &'static str,
        compares: Vec<Compare>,
        then: TxnOp,
        key: &[u8],
    ) -> Result<etcd_client::TxnResponse> {
        let txn = etcd_client::Txn::new()
            .when(compares)
            .and_then(vec![then])
            .or_else(vec![TxnOp::get(key.to_vec(), None)]);
        self.retrying(action, Safety::Write, || {
            let mut kv = self.kv();
            let txn = txn.clone();
            async move { kv.txn(txn).await }
        })
        .await?
        .map_err(|e| unavailable(action, e))
    }

    /// What a failed precondition found at the key: its mod revision, or `None` if absent.
    fn found(&self, response: &etcd_client::TxnResponse) -> Option<Revision> {
        response.op_responses().into_iter().find_map(|op| match op {
            TxnOpResponse::Get(get) => get.kvs().first().map(|kv| kv.mod_revision()),
            _ => None,
        })
    }

    /// Turn a read error into the trait's revision errors where it is one.
    async fn read_error(&self, e: etcd_client::Error, requested: Revision) -> Error {
        match revision_error(&e) {
            Some(RevisionError::Compacted) => match self.compacted_revision().await {
                Ok(compacted) => Error::Compacted {
                    requested,
                    compacted,
                },
                Err(e) => e,
            },
            Some(RevisionError::Future) => match self.current_revision().await {
                Ok(current) => Error::FutureRevision { requested, current },
                Err(e) => e,
            },
            None => unavailable("read", e),
        }
    }

    /// The last compaction point recorded in `compact_rev_key` (0 if none).
    async fn recorded_compaction(&self) -> Result<(Revision, i64)> {
        let response = self
            .retrying("reading the compaction key", Safety::Read, || {
                let mut kv = self.kv();
                async move { kv.get(COMPACT_REV_KEY, None).await }
            })
            .await?
            .map_err(|e| unavailable("reading the compaction key", e))?;
        Ok(response
            .kvs()
            .first()
            .map(|kv| {
                let revision = std::str::from_utf8(kv.value())
                    .ok()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0);
                (revision, kv.version())
            })
            .unwrap_or((0, 0)))
    }

    /// Whether a read at `revision` is still possible.
    async fn readable_at(&self, revision: Revision) -> Result<bool> {
        let mut kv = self.kv();
        let options = GetOptions::new().with_revision(revision).with_count_only();
        match self
            .timed("probing a revision", kv.get(COMPACT_REV_KEY, Some(options)))
            .await?
        {
            Ok(_) => Ok(true),
            Err(e) if matches!(revision_error(&e), Some(RevisionError::Compacted)) => Ok(false),
            Err(e) => Err(unavailable("probing a revision", e)),
        }
    }

    /// Ask etcd itself for the compaction point: a watch from revision 1 is cancelled with
    /// the compacted revision (used only when the compaction key is behind, e.g. after an
    /// `etcdctl compact`).
    async fn probe_compaction(&self) -> Result<Revision> {
        let mut watch_client = self.watcher();
        let options = WatchOptions::new().with_start_revision(1);
        let probe = async {
            let mut stream = watch_client
                .watch(COMPACT_REV_KEY, Some(options))
                .await
                .map_err(|e| unavailable("probing the compaction point", e))?;
            while let Some(response) = stream
                .message()
                .await
                .map_err(|e| unavailable("probing the compaction point", e))?
            {
                if response.compact_revision() > 0 {
                    return Ok(response.compact_revision());
                }
            }
            Err(unavailable(
                "probing the compaction point",
                "the watch ended without an answer",
            ))
        };
        tokio::time::timeout(self.options.request_timeout, probe)
            .await
            .map_err(|_| self.timed_out("probing the compaction point"))?
    }

    /// Stop the background compactor (dropping the store does the same).
    pub fn close(&self) {
        if let Some(task) = self.compactor.lock().take() {
            task.abort();
        }
    }

    /// One round of upstream's compaction protocol. `version` is the compaction key's version
    /// this server last saw and `target` the revision it saw one interval ago; returns the
    /// new (version, target).
    async fn compaction_round(&self, version: i64, target: Revision) -> Result<(i64, Revision)> {
        let key = COMPACT_REV_KEY.as_bytes();
        let response = self
            .txn(
                "compacting",
                vec![Compare::version(key.to_vec(), CompareOp::Equal, version)],
                TxnOp::put(key.to_vec(), target.to_string(), None),
                key,
            )
            .await?;
        let current = response.header().map_or(0, |h| h.revision());
        if !response.succeeded() {
            // Another server compacted (or will): follow its version.
            let seen = response
                .op_responses()
                .into_iter()
                .find_map(|op| match op {
                    TxnOpResponse::Get(get) => get.kvs().first().map(|kv| kv.version()),
                    _ => None,
                })
                .unwrap_or(0);
            return Ok((seen, current));
        }
        if target > 0 {
            let compacted = self
                .retrying("compacting", Safety::Read, || {
                    let mut kv = self.kv();
                    async move { kv.compact(target, None).await }
                })
                .await?;
            match compacted {
                Ok(_) => tracing::debug!(revision = target, "etcd history compacted"),
                Err(e) if matches!(revision_error(&e), Some(RevisionError::Compacted)) => {}
                Err(e) => return Err(unavailable("compacting", e)),
            }
        }
        Ok((version + 1, current))
    }
}

impl Drop for EtcdStore {
    fn drop(&mut self) {
        self.close();
    }
}

async fn compaction_loop(store: std::sync::Weak<EtcdStore>, interval: Duration) {
    let mut version = 0;
    let mut target = 0;
    let mut ticker = tokio::time::interval(interval);
    ticker.tick().await;
    loop {
        ticker.tick().await;
        let Some(store) = store.upgrade() else {
            return;
        };
        match store.compaction_round(version, target).await {
            Ok((v, t)) => (version, target) = (v, t),
            Err(e) => tracing::warn!(error = %e, "etcd compaction failed; will retry"),
        }
    }
}

#[async_trait]
impl Store for EtcdStore {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        let full = self.full_key(key);
        let response = self
            .retrying("get", Safety::Read, || {
                let mut kv = self.kv();
                let full = full.clone();
                async move { kv.get(full, None).await }
            })
            .await?
            .map_err(|e| unavailable("get", e))?;
        Ok(response.kvs().first().and_then(|kv| self.to_kv(kv)))
    }

    async fn range(&self, request: RangeRequest) -> Result<RangeResponse> {
        let prefix = self.full_key(&request.prefix);
        let end = prefix_end(&prefix);
        let start = match &request.start_after {
            Some(after) if after.as_str() >= request.prefix.as_str() => {
                let mut start = self.full_key(after);
                start.push(0);
                start
            }
            _ => prefix.clone(),
        };
        let start = if start.is_empty() { vec![0] } else { start };
        let mut options = GetOptions::new().with_range(end);
        if request.limit > 0 {
            options = options.with_limit(request.limit as i64);
        }
        if request.revision > 0 {
            options = options.with_revision(request.revision);
        }
        let response = match self
            .retrying("range", Safety::Read, || {
                let mut kv = self.kv();
                let (start, options) = (start.clone(), options.clone());
                async move { kv.get(start, Some(options)).await }
            })
            .await?
        {
            Ok(response) => response,
            Err(e) => return Err(self.read_error(e, request.revision).await),
        };
        let mut items: Vec<KeyValue> = response
            .kvs()
            .iter()
            .filter_map(|kv| self.to_kv(kv))
            .collect();
        // The coordination key is filtered out of results; it can only show up (and be
        // counted) when the prefix is empty.
        let hidden = response.kvs().len() - items.len();
        let total = (response.count() as usize).saturating_sub(hidden);
        if request.limit > 0 && items.len() > request.limit {
            items.truncate(request.limit);
        }
        let remaining = total.saturating_sub(items.len());
        let revision = if request.revision > 0 {
            request.revision
        } else {
            response.header().map_or(0, |h| h.revision())
        };
        Ok(RangeResponse {
            more: remaining > 0,
            remaining,
            items,
            revision,
        })
    }

    async fn create(&self, key: &str, value: Bytes) -> Result<Revision> {
        let full = self.full_key(key);
        let response = self
            .txn(
                "create",
                vec![Compare::mod_revision(full.clone(), CompareOp::Equal, 0)],
                TxnOp::put(full.clone(), value.to_vec(), None),
                &full,
            )
            .await?;
        if !response.succeeded() {
            return Err(Error::AlreadyExists {
                key: key.to_owned(),
            });
        }
        Ok(response.header().map_or(0, |h| h.revision()))
    }

    async fn update(
        &self,
        key: &str,
        value: Bytes,
        expected_revision: Revision,
    ) -> Result<Revision> {
        let full = self.full_key(key);
        let response = self
            .txn(
                "update",
                vec![
                    Compare::version(full.clone(), CompareOp::Greater, 0),
                    Compare::mod_revision(full.clone(), CompareOp::Equal, expected_revision),
                ],
                TxnOp::put(full.clone(), value.to_vec(), None),
                &full,
            )
            .await?;
        if !response.succeeded() {
            return Err(match self.found(&response) {
                None => Error::NotFound {
                    key: key.to_owned(),
                },
                Some(actual) => Error::Conflict {
                    key: key.to_owned(),
                    expected: expected_revision,
                    actual,
                },
            });
        }
        Ok(response.header().map_or(0, |h| h.revision()))
    }

    async fn delete(
        &self,
        key: &str,
        expected_revision: Option<Revision>,
    ) -> Result<(KeyValue, Revision)> {
        let full = self.full_key(key);
        let mut compares = vec![Compare::version(full.clone(), CompareOp::Greater, 0)];
        if let Some(expected) = expected_revision {
            compares.push(Compare::mod_revision(
                full.clone(),
                CompareOp::Equal,
                expected,
            ));
        }
        let response = self
            .txn(
                "delete",
                compares,
                TxnOp::delete(full.clone(), Some(DeleteOptions::new().with_prev_key())),
                &full,
            )
            .await?;
        if !response.succeeded() {
            return Err(match (self.found(&response), expected_revision) {
                (Some(actual), Some(expected)) => Error::Conflict {
                    key: key.to_owned(),
                    expected,
                    actual,
                },
                _ => Error::NotFound {
                    key: key.to_owned(),
                },
            });
        }
        let revision = response.header().map_or(0, |h| h.revision());
        let prev = response.op_responses().into_iter().find_map(|op| match op {
            TxnOpResponse::Delete(delete) => {
                delete.prev_kvs().first().and_then(|kv| self.to_kv(kv))
            }
            _ => None,
        });
        let prev = prev.ok_or_else(|| Error::NotFound {
            key: key.to_owned(),
        })?;
        Ok((prev, revision))
    }

    async fn watch(&self, prefix: &str, after_revision: Revision) -> Result<Watch> {
        // Before the stream exists, so a redial while it starts still ends it.
        let redialed = self.connection.generation.subscribe();
        let full = self.full_key(prefix);
        if after_revision > 0 {
            // Answer "compacted" and "future" now rather than through a cancelled stream.
            let mut kv = self.kv();
            let options = GetOptions::new()
                .with_range(prefix_end(&full))
                .with_revision(after_revision)
                .with_count_only();
            let start = if full.is_empty() {
                vec![0]
            } else {
                full.clone()
            };
            if let Err(e) = self.timed("watch", kv.get(start, Some(options))).await? {
                return Err(self.read_error(e, after_revision).await);
            }
        }
        let mut options = WatchOptions::new()
            .with_range(prefix_end(&full))
            .with_prev_key();
        if after_revision > 0 {
            // From the next revision: a watcher starting above the current revision is
            // "synced" at once in etcd, so compactions that follow never cancel it.
            options = options.with_start_revision(after_revision + 1);
        }
        let key = if full.is_empty() { vec![0] } else { full };
        let mut stream = self
            .retrying("watch", Safety::Read, || {
                let mut watch_client = self.watcher();
                let (key, options) = (key.clone(), options.clone());
                async move { watch_client.watch(key, Some(options)).await }
            })
            .await?
            .map_err(|e| unavailable("watch", e))?;
        // Wait for etcd to confirm the watcher, so every later write reaches it.
        let first = self
            .timed("watch", stream.message())
            .await?
            .map_err(|e| unavailable("watch", e))?;
        let Some(first) = first else {
            return Err(unavailable("watch", "the stream ended before it started"));
        };
        if first.canceled() {
            if first.compact_revision() > 0 {
                return Err(Error::Compacted {
                    requested: after_revision,
                    compacted: first.compact_revision(),
                });
            }
            return Err(unavailable("watch", first.cancel_reason().to_owned()));
        }
        let (tx, rx) = mpsc::channel(self.options.watcher_buffer.max(1));
        let forwarder = Forwarder {
            prefix: self.prefix.clone(),
            after: after_revision,
            tx,
            redialed,
        };
        tokio::spawn(forwarder.run(stream, first));
        Ok(Watch { events: rx })
    }

    async fn current_revision(&self) -> Result<Revision> {
        let response = self
            .retrying("reading the revision", Safety::Read, || {
                let mut kv = self.kv();
                async move {
                    kv.get(COMPACT_REV_KEY, Some(GetOptions::new().with_count_only()))
                        .await
                }
            })
            .await?
            .map_err(|e| unavailable("reading the revision", e))?;
        Ok(response.header().map_or(0, |h| h.revision()))
    }

    async fn compacted_revision(&self) -> Result<Revision> {
        let (recorded, _) = self.recorded_compaction().await?;
        if self.readable_at(recorded.max(1)).await? {
            // Compaction reached `recorded` and no further: reads at it still work.
            return Ok(recorded);
        }
        self.probe_compaction().await
    }

    fn snapshot_format(&self) -> SnapshotFormat {
        SnapshotFormat::Etcd
    }

    /// etcd's snapshot API: the whole database (every cluster sharing the etcd) as one
    /// consistent bbolt file, with etcd's SHA-256 appended (restorable with
    /// `etcdctl snapshot restore`).
    async fn snapshot(&self, out: mpsc::Sender<Bytes>) -> Result<()> {
        let mut maintenance = self.connection.with_client(Client::maintenance_client);
        let mut stream = maintenance
            .snapshot()
            .await
            .map_err(|e| unavailable("starting a snapshot", e))?;
        while let Some(chunk) = stream
            .message()
            .await
            .map_err(|e| unavailable("streaming a snapshot", e))?
        {
            if out
                .send(Bytes::copy_from_slice(chunk.blob()))
                .await
                .is_err()
            {
                return Err(unavailable(
                    "streaming a snapshot",
                    "the receiver went away",
                ));
            }
        }
        Ok(())
    }

    async fn compact(&self, revision: Revision) -> Result<()> {
        let current = self.current_revision().await?;
        if revision > current {
            return Err(Error::FutureRevision {
                requested: revision,
                current,
            });
        }
        let (recorded, version) = self.recorded_compaction().await?;
        if revision <= recorded {
            return Ok(());
        }
        // Record the point first, bumping the key's version like a compactor round does, so
        // `compacted_revision` and the other servers' compactors see it.
        let key = COMPACT_REV_KEY.as_bytes();
        self.txn(
            "compacting",
            vec![Compare::version(key.to_vec(), CompareOp::Equal, version)],
            TxnOp::put(key.to_vec(), revision.to_string(), None),
            key,
        )
        .await?;
        let compacted = self
            .retrying("compacting", Safety::Read, || {
                let mut kv = self.kv();
                async move { kv.compact(revision, None).await }
            })
            .await?;
        match compacted {
            Ok(_) => Ok(()),
            Err(e) if matches!(revision_error(&e), Some(RevisionError::Compacted)) => Ok(()),
            Err(e) => Err(unavailable("compacting", e)),
        }
    }
}

/// Moves one etcd watch's events into the trait's channel.
struct Forwarder {
    prefix: String,
    after: Revision,
    tx: mpsc::Sender<Event>,
    /// Changes when the store redials: this watch's channel was given up.
    redialed: tokio::sync::watch::Receiver<u64>,
}

impl Forwarder {
    async fn run(
        mut self,
        mut stream: etcd_client::WatchStream,
        first: etcd_client::WatchResponse,
    ) {
        if !self.forward(&first) {
            return;
        }
        loop {
            let message = tokio::select! {
                _ = self.tx.closed() => return,
                // Ending makes the client re-watch through the new channel.
                _ = self.redialed.changed() => return,
                message = stream.message() => message,
            };
            match message {
                Ok(Some(response)) => {
                    if response.canceled() || !self.forward(&response) {
                        // Compacted under a slow watcher, or the member lost its leader:
                        // closing makes the client re-watch (and re-list if need be).
                        return;
                    }
                }
                Ok(None) | Err(_) => return,
            }
        }
    }

    /// Forward a response's events; false when the watch must end.
    fn forward(&self, response: &etcd_client::WatchResponse) -> bool {
        for event in response.events() {
            let Some(kv) = event.kv() else { continue };
            if kv.mod_revision() <= self.after {
                continue;
            }
            let Some(event) = self.convert(event) else {
                // A delete whose previous value is gone cannot be reported faithfully.
                return false;
            };
            match self.tx.try_send(event) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(_)) => {
                    tracing::debug!("dropping an etcd watcher that fell behind");
                    return false;
                }
                Err(mpsc::error::TrySendError::Closed(_)) => return false,
            }
        }
        true
    }

    fn to_kv(&self, kv: &etcd_client::KeyValue) -> Option<KeyValue> {
        let key = kv.key().strip_prefix(self.prefix.as_bytes())?;
        if kv.key() == COMPACT_REV_KEY.as_bytes() {
            return None;
        }
        Some(KeyValue {
            key: String::from_utf8(key.to_vec()).ok()?,
            value: Bytes::copy_from_slice(kv.value()),
            create_revision: kv.create_revision(),
            mod_revision: kv.mod_revision(),
            stale: false,
        })
    }

    fn convert(&self, event: &etcd_client::Event) -> Option<Event> {
        let kv = event.kv()?;
        let prev = event.prev_kv().and_then(|p| self.to_kv(p));
        match event.event_type() {
            EventType::Put => {
                let kv = self.to_kv(kv)?;
                // A create (or re-create after a delete) has no previous value.
                let prev = prev.filter(|_| kv.create_revision != kv.mod_revision);
                Some(Event {
                    kind: EventKind::Put,
                    kv,
                    prev,
                })
            }
            EventType::Delete => {
                let prev = prev?;
                let mut last = prev.clone();
                last.mod_revision = kv.mod_revision();
                Some(Event {
                    kind: EventKind::Delete,
                    kv: last,
                    prev: Some(prev),
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_ends_cover_exactly_the_prefix() {
        assert_eq!(prefix_end(b"/a/"), b"/a0");
        assert_eq!(prefix_end(b"a\xff"), b"b");
        assert_eq!(prefix_end(b"\xff\xff"), b"\0");
        assert_eq!(prefix_end(b""), b"\0");
    }

    #[test]
    fn store_urls_become_endpoints() {
        let options = EtcdOptions::from_url("etcd://a:2379,b:2380", EtcdTls::default()).unwrap();
        assert_eq!(options.endpoints, ["http://a:2379", "http://b:2380"]);
        let tls = EtcdTls {
            ca_file: Some("/ca.pem".into()),
            ..EtcdTls::default()
        };
        let options = EtcdOptions::from_url("etcd://10.0.0.1:2379", tls.clone()).unwrap();
        assert_eq!(options.endpoints, ["https://10.0.0.1:2379"]);
        assert!(EtcdOptions::from_url("http://a:2379", tls).is_err());
        assert!(EtcdOptions::from_url("etcd://a", EtcdTls::default()).is_err());
        assert!(EtcdOptions::from_url("etcd://a:0", EtcdTls::default()).is_err());
        assert!(EtcdOptions::from_url("mysql://a:1", EtcdTls::default()).is_err());
        assert!(EtcdOptions::from_url("etcd://", EtcdTls::default()).is_err());
    }
}
