//! A TCP load balancer on loopback in front of the API servers a node knows (k3s's agent
//! design): every component of an agent talks to `https://127.0.0.1:<port>`, and the balancer
//! relays each connection to one live server.
//!
//! Why TCP and not HTTP: the relayed bytes are TLS end to end between the client and the API
//! server (whose certificate covers 127.0.0.1), so the balancer needs no keys and sees nothing.
//!
//! Choice of server: connections stick to one server (the *current* one) as long as it
//! answers, so an agent's watches and writes go to one place; a dial that fails moves on to
//! the next healthy server, then to servers last seen failing (a health check may be stale).
//! A health check dials every server every [`BalancerConfig::health_interval`]; a server that
//! stops answering has every connection relayed to it closed at once, because a server that
//! vanished without a reset (a dead machine, a partition) would otherwise leave long-running
//! watches hanging forever. The clients (kube-rs/hyper) then reconnect, through the balancer,
//! to a live server.
//!
//! The server list is the configured addresses plus what [`Balancer::set_servers`] learns
//! (an agent feeds it the `kubernetes` Endpoints, so servers added later are found); the
//! configured ones stay as a fallback because an advertised address may not be reachable.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

/// How the balancer dials and checks servers.
#[derive(Debug, Clone)]
pub struct BalancerConfig {
    /// Time allowed to connect to a server.
    pub dial_timeout: Duration,
    /// Time between health checks of every server.
    pub health_interval: Duration,
}

impl Default for BalancerConfig {
    fn default() -> Self {
        BalancerConfig {
            dial_timeout: Duration::from_secs(5),
            health_interval: Duration::from_secs(2),
        }
    }
}

/// What the balancer knows about one server.
#[derive(Debug)]
struct Server {
    /// Whether the last dial (health check or relay) succeeded.
    healthy: bool,
    /// Cancelled when the server is found dead: closes every connection relayed to it.
    connections: CancellationToken,
}

impl Server {
    fn new() -> Server {
        Server {
            healthy: true,
            connections: CancellationToken::new(),
        }
    }
}

#[derive(Debug, Default)]
struct State {
    /// Servers by `host:port`, with the order to try them in `order`.
    servers: BTreeMap<String, Server>,
    /// Learned servers first (in the order given), then configured ones.
    order: Vec<String>,
    /// The server new connections go to while it answers.
    current: Option<String>,
    /// The servers last given to [`Balancer::set_servers`].
    learned: Vec<String>,
    /// The servers given at start, in their order.
    configured: Vec<String>,
}

impl State {
    /// The servers to try for a new connection: the current one, the other healthy ones in
    /// order, then the unhealthy ones.
    fn candidates(&self) -> Vec<String> {
        let mut healthy = Vec::new();
        let mut failing = Vec::new();
        for address in &self.order {
            if self.current.as_deref() == Some(address) {
                continue;
            }
            match self.servers.get(address) {
                Some(s) if s.healthy => healthy.push(address.clone()),
                Some(_) => failing.push(address.clone()),
                None => {}
            }
        }
        let current = self
            .current
            .iter()
            .filter(|c| self.servers.get(*c).is_some_and(|s| s.healthy))
            .cloned();
        current.chain(healthy).chain(failing).collect()
    }

    /// Record a dial's outcome; a server turning unhealthy loses its relayed connections.
    fn observe(&mut self, address: &str, ok: bool) {
        let Some(server) = self.servers.get_mut(address) else {
            return;
        };
        if ok {
            if !server.healthy {
                tracing::info!(server = %address, "API server reachable again");
            }
            server.healthy = true;
            if self
                .current
                .as_ref()
                .is_none_or(|c| !self.servers.get(c).is_some_and(|s| s.healthy))
            {
                self.current = Some(address.to_owned());
            }
        } else if server.healthy {
            tracing::warn!(server = %address, "API server unreachable; closing its connections");
            server.healthy = false;
            server.connections.cancel();
            server.connections = CancellationToken::new();
            if self.current.as_deref() == Some(address) {
                self.current = None;
            }
        }
    }

    fn set_learned(&mut self, learned: Vec<String>) {
        let mut order: Vec<String> = Vec::new();
        for address in learned.iter().cloned() {
            if !order.contains(&address) {
                order.push(address);
            }
        }
        for address in &self.configured {
            if !order.contains(address) {
                order.push(address.clone());
            }
        }
        self.servers.retain(|address, server| {
            let keep = order.contains(address);
            if !keep {
                // A server that left the cluster: its connections go too.
                server.connections.cancel();
            }
            keep
        });
        for address in &order {
            self.servers
                .entry(address.clone())
                .or_insert_with(Server::new);
        }
        if self
            .current
            .as_ref()
            .is_some_and(|c| !self.servers.contains_key(c))
        {
            self.current = None;
        }
        self.order = order;
        self.learned = learned;
    }
}

/// A running balancer; dropping it does not stop it (cancel the shutdown token).
#[derive(Clone)]
pub struct Balancer {
    state: Arc<Mutex<State>>,
    local: SocketAddr,
}

impl std::fmt::Debug for Balancer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Balancer")
            .field("local", &self.local)
            .finish_non_exhaustive()
    }
}

impl Balancer {
    /// Listen on `listen` and relay to `servers` (`host:port`) until `shutdown`.
    pub async fn start(
        listen: SocketAddr,
        servers: Vec<String>,
        config: BalancerConfig,
        shutdown: CancellationToken,
    ) -> std::io::Result<Balancer> {
        let listener = TcpListener::bind(listen).await?;
        let local = listener.local_addr()?;
        let mut state = State {
            configured: servers.clone(),
            ..State::default()
        };
        state.set_learned(Vec::new());
        let balancer = Balancer {
            state: Arc::new(Mutex::new(state)),
            local,
        };
        tokio::spawn(
            balancer
                .clone()
                .accept(listener, config.clone(), shutdown.clone()),
        );
        tokio::spawn(balancer.clone().check_health(config, shutdown));
        tracing::info!(%local, ?servers, "API server load balancer listening");
        Ok(balancer)
    }

    /// The address clients connect to.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// The URL clients use (`https://127.0.0.1:<port>`).
    pub fn url(&self) -> String {
        format!("https://{}", self.local)
    }

    /// Replace the learned servers (`host:port`, preferred order); configured ones stay as a
    /// fallback.
    pub fn set_servers(&self, servers: Vec<String>) {
        let mut state = self.state.lock();
        if state.learned == servers {
            return;
        }
        state.set_learned(servers);
        tracing::info!(servers = ?state.order, "API server list updated");
    }

    /// The servers known now, in the order they are tried.
    pub fn servers(&self) -> Vec<String> {
        self.state.lock().order.clone()
    }

    /// The server new connections go to, if one is known to answer.
    pub fn current(&self) -> Option<String> {
        self.state.lock().current.clone()
    }

    async fn accept(
        self,
        listener: TcpListener,
        config: BalancerConfig,
        shutdown: CancellationToken,
    ) {
        loop {
            let accepted = tokio::select! {
                _ = shutdown.cancelled() => return,
                accepted = listener.accept() => accepted,
            };
            match accepted {
                Ok((client, _)) => {
                    let _ = client.set_nodelay(true);
                    tokio::spawn(
                        self.clone()
                            .relay(client, config.dial_timeout, shutdown.clone()),
                    );
                }
                Err(error) => {
                    tracing::warn!(%error, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }

    /// Dial the first server that answers and splice the two connections.
    async fn relay(
        self,
        mut client: TcpStream,
        dial_timeout: Duration,
        shutdown: CancellationToken,
    ) {
        let candidates = self.state.lock().candidates();
        for address in candidates {
            let Some(mut upstream) = dial(&address, dial_timeout).await else {
                self.state.lock().observe(&address, false);
                continue;
            };
            let closed = {
                let mut state = self.state.lock();
                state.observe(&address, true);
                match state.servers.get(&address) {
                    Some(server) => server.connections.clone(),
                    None => return,
                }
            };
            tokio::select! {
                _ = shutdown.cancelled() => {}
                _ = closed.cancelled() => {}
                _ = tokio::io::copy_bidirectional(&mut client, &mut upstream) => {}
            }
            return;
        }
        tracing::warn!("no API server answered; dropping the connection");
    }

    async fn check_health(self, config: BalancerConfig, shutdown: CancellationToken) {
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(config.health_interval) => {}
            }
            let addresses = self.servers();
            let timeout = config.dial_timeout;
            let results =
                futures::future::join_all(addresses.iter().map(|address| async move {
                    (address, dial(address, timeout).await.is_some())
                }))
                .await;
            let mut state = self.state.lock();
            for (address, ok) in results {
                state.observe(address, ok);
            }
        }
    }
}

async fn dial(address: &str, timeout: Duration) -> Option<TcpStream> {
    match tokio::time::timeout(timeout, TcpStream::connect(address)).await {
        Ok(Ok(stream)) => {
            let _ = stream.set_nodelay(true);
            Some(stream)
        }
        Ok(Err(error)) => {
            tracing::debug!(server = %address, %error, "dialing API server failed");
            None
        }
        Err(_) => {
            tracing::debug!(server = %address, "dialing API server timed out");
            None
        }
    }
}

/// `host:port` of an `https://host:port[/…]` URL (port 443 when absent).
pub fn url_address(url: &str) -> Option<String> {
    let rest = url.strip_prefix("https://")?;
    let authority = rest.split('/').next()?;
    if authority.is_empty() {
        return None;
    }
    let has_port = match authority.rsplit_once(':') {
        // `[::1]` alone has colons but no port.
        Some((host, port)) => {
            !port.is_empty()
                && port.bytes().all(|b| b.is_ascii_digit())
                && (!host.starts_with('[') || host.ends_with(']'))
        }
        None => false,
    };
    Some(if has_port {
        authority.to_owned()
    } else {
        format!("{authority}:443")
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A server that answers every connection with its name, then echoes.
    async fn named_server(name: &'static str) -> (String, tokio::task::JoinHandle<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let task = tokio::spawn(async move {
            loop {
                let (mut s, _) = listener.accept().await.unwrap();
                tokio::spawn(async move {
                    if s.write_all(name.as_bytes()).await.is_err() {
                        return;
                    }
                    let mut buf = [0u8; 64];
                    while let Ok(n) = s.read(&mut buf).await {
                        if n == 0 || s.write_all(&buf[..n]).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        (address, task)
    }

    async fn greeting(balancer: &Balancer) -> (TcpStream, String) {
        let mut s = tokio::time::timeout(
            Duration::from_secs(5),
            TcpStream::connect(balancer.local_addr()),
        )
        .await
        .unwrap()
        .unwrap();
        let mut buf = [0u8; 1];
        tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut buf))
            .await
            .expect("a server answered in time")
            .unwrap();
        (s, String::from_utf8_lossy(&buf).into_owned())
    }

    /// A balancer on a free loopback port with fast health checks.
    async fn balancer_over(servers: Vec<String>) -> (Balancer, CancellationToken) {
        let shutdown = CancellationToken::new();
        let config = BalancerConfig {
            dial_timeout: Duration::from_secs(1),
            health_interval: Duration::from_millis(100),
        };
        let balancer = Balancer::start(
            "127.0.0.1:0".parse().unwrap(),
            servers,
            config,
            shutdown.clone(),
        )
        .await
        .unwrap();
        (balancer, shutdown)
    }

    #[tokio::test]
    async fn connections_stick_to_one_server_and_fail_over_when_it_dies() {
        let (a, task_a) = named_server("a").await;
        let (b, _task_b) = named_server("b").await;
        let (balancer, shutdown) = balancer_over(vec![a.clone(), b.clone()]).await;
        for _ in 0..5 {
            assert_eq!(greeting(&balancer).await.1, "a");
        }
        let (mut held, _) = greeting(&balancer).await;

        // Server a goes away (its listener closes, nothing answers): new connections reach b,
        // and the connection relayed to a is closed by the health check.
        task_a.abort();
        let _ = task_a.await;
        let (_, name) = greeting(&balancer).await;
        assert_eq!(name, "b");
        let mut buf = [0u8; 8];
        let read = tokio::time::timeout(Duration::from_secs(5), async {
            // The echo task of a may still hold the socket; the balancer's close ends it.
            loop {
                match held.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
            }
        })
        .await;
        assert!(read.is_ok(), "the connection to the dead server was closed");
        assert_eq!(balancer.current().as_deref(), Some(b.as_str()));
        shutdown.cancel();
    }

    #[tokio::test]
    async fn learned_servers_come_first_and_configured_ones_stay_as_fallback() {
        let (a, _ta) = named_server("a").await;
        let (b, _tb) = named_server("b").await;
        let (balancer, shutdown) = balancer_over(vec![a.clone()]).await;
        assert_eq!(greeting(&balancer).await.1, "a");
        balancer.set_servers(vec![b.clone()]);
        assert_eq!(balancer.servers(), vec![b.clone(), a.clone()]);
        // The current server (a, still healthy) keeps new connections: no needless switch.
        assert_eq!(greeting(&balancer).await.1, "a");
        // A learned list naming a dead address only: the configured server still answers.
        let dead = {
            let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
            l.local_addr().unwrap().to_string()
        };
        balancer.set_servers(vec![dead.clone()]);
        assert_eq!(balancer.servers(), vec![dead, a.clone()]);
        assert_eq!(greeting(&balancer).await.1, "a");
        shutdown.cancel();
    }

    #[tokio::test]
    async fn a_server_that_comes_back_is_used_again() {
        let (a, task_a) = named_server("a").await;
        let (balancer, shutdown) = balancer_over(vec![a.clone()]).await;
        assert_eq!(greeting(&balancer).await.1, "a");
        task_a.abort();
        let _ = task_a.await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(balancer.current(), None);
        // Same address again: the health check finds it and it becomes current.
        let listener = TcpListener::bind(&a).await.unwrap();
        tokio::spawn(async move {
            loop {
                let (mut s, _) = listener.accept().await.unwrap();
                tokio::spawn(async move {
                    let _ = s.write_all(b"A").await;
                    tokio::time::sleep(Duration::from_secs(5)).await;
                });
            }
        });
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while balancer.current().is_none() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "server never found healthy"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(greeting(&balancer).await.1, "A");
        shutdown.cancel();
    }

    #[test]
    fn addresses_of_urls() {
        assert_eq!(
            url_address("https://10.0.0.1:6443").as_deref(),
            Some("10.0.0.1:6443")
        );
        assert_eq!(
            url_address("https://server.example/").as_deref(),
            Some("server.example:443")
        );
        assert_eq!(
            url_address("https://[fd00::1]:6443/x").as_deref(),
            Some("[fd00::1]:6443")
        );
        assert_eq!(
            url_address("https://[fd00::1]").as_deref(),
            Some("[fd00::1]:443")
        );
        assert_eq!(url_address("http://x:1"), None);
        assert_eq!(url_address("https://"), None);
    }
}
