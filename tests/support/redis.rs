//! For the Redis tests: a real `redis-server` on a free loopback port (killed on drop), a
//! TCP proxy in front of it whose link can be cut (one replica's outage while the others stay
//! connected), and polling helpers. Included with `#[path]` by the tests that need it.
#![allow(dead_code, unreachable_pub)]

use std::{
    net::{TcpListener, TcpStream},
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use tower_breaker::integrations::redis::{Client, RedisSync};

/// A `redis-server` child process on a loopback port, without persistence.
pub struct RedisServer {
    child: Child,
    pub port: u16,
}

impl RedisServer {
    pub fn start() -> Self {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        Self::start_on(port)
    }

    pub fn start_on(port: u16) -> Self {
        let child = Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start redis-server ({e}): install it (scripts/test.sh does) to run these tests"
                )
            });
        let mut server = Self { child, port };
        let started = Instant::now();
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Ok(Some(status)) = server.child.try_wait() {
                panic!("redis-server exited at start-up: {status}");
            }
            assert!(
                started.elapsed() < Duration::from_secs(5),
                "redis-server did not listen within 5 s"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        server.port = port;
        server
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

pub fn sync(server: &RedisServer, prefix: &str) -> RedisSync {
    builder(&server.url(), prefix).build().unwrap()
}

/// A sync with this origin.
pub fn sync_as(server: &RedisServer, prefix: &str, origin: &str) -> RedisSync {
    builder(&server.url(), prefix).origin(origin).build().unwrap()
}

fn builder(url: &str, prefix: &str) -> tower_breaker::integrations::redis::RedisSyncBuilder {
    RedisSync::builder(Client::open(url).unwrap())
        .prefix(prefix)
        .timeout(Duration::from_secs(1))
        .ping_interval(Duration::from_millis(200))
        .reconnect_delay(Duration::from_millis(20), Duration::from_millis(200))
}

/// A sync that reaches Redis through `proxy`.
pub fn sync_via(proxy: &Proxy, prefix: &str, origin: &str) -> RedisSync {
    builder(&proxy.url(), prefix).origin(origin).build().unwrap()
}

/// Polls `cond` every millisecond for up to 5 s; returns how long it took.
pub async fn eventually(what: &str, mut cond: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    loop {
        if cond() {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "timed out waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

pub async fn connected(syncs: &[&RedisSync]) {
    eventually("connected", || syncs.iter().all(|s| s.is_connected())).await;
}

/// A TCP proxy on a loopback port in front of a Redis server: [`cut`](Self::cut) closes every
/// connection through it and refuses new ones (an outage for the replicas behind it only),
/// [`restore`](Self::restore) listens again on the same port.
pub struct Proxy {
    pub port: u16,
    target: u16,
    tasks: Arc<Mutex<Vec<tokio::task::JoinHandle<()>>>>,
}

impl Proxy {
    pub async fn start(target: &RedisServer) -> Self {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let proxy = Self {
            port,
            target: target.port,
            tasks: Arc::default(),
        };
        proxy.restore().await;
        proxy
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    pub async fn restore(&self) {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", self.port))
            .await
            .unwrap();
        let (target, tasks) = (self.target, self.tasks.clone());
        let accept = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let link = tokio::spawn(async move {
                    if let Ok(mut outbound) = tokio::net::TcpStream::connect(("127.0.0.1", target)).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
                tasks.lock().unwrap().push(link);
            }
        });
        self.tasks.lock().unwrap().push(accept);
    }

    pub fn cut(&self) {
        for task in self.tasks.lock().unwrap().drain(..) {
            task.abort();
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.cut();
    }
}
