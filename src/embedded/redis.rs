//! A private `redis-server` on a free loopback port, stopped when dropped.
//! It can be stopped and started again on the same port (with AOF, keeping
//! its data) to show what survives a Redis restart. [`RedisCluster`] is
//! three of them joined into a Redis Cluster.

use std::io;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct RedisServer {
    port: u16,
    dir: PathBuf,
    child: Option<Child>,
    /// Extra `redis-server` arguments (a cluster node's).
    args: Vec<String>,
}

impl RedisServer {
    /// Whether `redis-server` can be run here.
    pub fn available() -> bool {
        Command::new("redis-server").arg("--version").stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok()
    }

    pub fn start() -> io::Result<Self> {
        Self::start_with(Vec::new())
    }

    /// On a free port. A port found free may be taken again before the
    /// server binds it (by another process choosing ports the same way):
    /// the server then exits, or another listener answers in its place, and
    /// a new port is tried.
    fn start_with(args: Vec<String>) -> io::Result<Self> {
        let mut tries = 0;
        loop {
            let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
            let started = Self::start_on(port, args.clone()).and_then(|mut server| server.answers().map(|()| server));
            match started {
                Ok(server) => return Ok(server),
                Err(e) if tries >= 4 => return Err(e),
                // Dropped: stopped, its folder removed.
                Err(_) => tries += 1,
            }
        }
    }

    /// Whether the server on its port is this one, up, answering `PING`.
    fn answers(&mut self) -> io::Result<()> {
        use std::io::{Read, Write};
        let mut stream = std::net::TcpStream::connect(("127.0.0.1", self.port))?;
        stream.set_read_timeout(Some(Duration::from_secs(5)))?;
        stream.write_all(b"PING\r\n")?;
        let mut answer = [0u8; 7];
        stream.read_exact(&mut answer)?;
        let alive = self.child.as_mut().is_some_and(|c| matches!(c.try_wait(), Ok(None)));
        if &answer == b"+PONG\r\n" && alive {
            Ok(())
        } else {
            Err(io::Error::other(format!("port {} is not our redis-server", self.port)))
        }
    }

    fn start_on(port: u16, args: Vec<String>) -> io::Result<Self> {
        let dir = std::env::temp_dir().join(format!("tidings-redis-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let mut server = RedisServer { port, dir, child: None, args };
        server.restart()?;
        Ok(server)
    }

    /// A replica of `primary`, on a port of its own.
    pub fn replica_of(primary: &RedisServer) -> io::Result<Self> {
        Self::start_with(vec!["--replicaof".into(), "127.0.0.1".into(), primary.port.to_string()])
    }

    /// Stops the server where it stands (`SIGSTOP`), as a replica that
    /// stalls or a network that drops its traffic would, or lets it go on.
    pub fn freeze(&self, frozen: bool) -> io::Result<()> {
        let pid = self.child.as_ref().ok_or_else(|| io::Error::other("redis-server is not running"))?.id();
        let signal = if frozen { "-STOP" } else { "-CONT" };
        let status = Command::new("kill").args([signal, &pid.to_string()]).status()?;
        status.success().then_some(()).ok_or_else(|| io::Error::other(format!("kill {signal} {pid}: {status}")))
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The server's process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Kills the server (as a crash would).
    pub fn stop(&mut self) {
        super::process::kill(&mut self.child);
    }

    /// Starts (again) on the same port and data folder; waits until it answers.
    pub fn restart(&mut self) -> io::Result<()> {
        self.stop();
        let child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &self.port.to_string(), "--save", ""])
            .args(["--appendonly", "yes", "--appendfsync", "everysec"])
            .args(&self.args)
            .arg("--dir")
            .arg(&self.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        self.child = Some(child);
        super::process::listening(&mut self.child, self.port, "redis-server", Duration::from_secs(10))
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Three `redis-server` nodes joined into one Redis Cluster (primaries
/// only, the 16,384 slots split between them by `redis-cli --cluster
/// create`), stopped when dropped.
pub struct RedisCluster {
    nodes: Vec<RedisServer>,
}

impl RedisCluster {
    pub fn start() -> io::Result<Self> {
        let nodes = vec![Self::node()?, Self::node()?, Self::node()?];
        let out = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(nodes.iter().map(|n| format!("127.0.0.1:{}", n.port)))
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .stdin(Stdio::null())
            .output()?;
        if !out.status.success() {
            let why = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
            return Err(io::Error::other(format!("redis-cli --cluster create failed: {why}")));
        }
        let cluster = RedisCluster { nodes };
        cluster.wait_until_ok()?;
        Ok(cluster)
    }

    /// A cluster node on a free port whose bus port (the port + 10,000) is
    /// free too; another pair is tried when either is taken before the
    /// server binds it.
    fn node() -> io::Result<RedisServer> {
        let args =
            ["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf", "--cluster-node-timeout", "5000"];
        let mut last = None;
        for _ in 0..20 {
            let Some(port) = free_pair() else { continue };
            match RedisServer::start_on(port, args.iter().map(|a| a.to_string()).collect()) {
                Ok(node) => return Ok(node),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| io::Error::other("no free pair of ports for a cluster node")))
    }

    /// Every node's URL, comma-separated: what `redis.url` names a cluster with.
    pub fn url(&self) -> String {
        self.nodes.iter().map(RedisServer::url).collect::<Vec<_>>().join(",")
    }

    /// Kills node `i` (as a crash would).
    pub fn stop_node(&mut self, i: usize) {
        self.nodes[i].stop();
    }

    /// Waits until every node sees every slot served (`cluster_state:ok`).
    fn wait_until_ok(&self) -> io::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            let ok = self.nodes.iter().all(|n| {
                Command::new("redis-cli")
                    .args(["-p", &n.port.to_string(), "cluster", "info"])
                    .output()
                    .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("cluster_state:ok"))
            });
            if ok {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Err(io::Error::new(io::ErrorKind::TimedOut, "the Redis Cluster did not reach cluster_state:ok within 20 s"))
    }
}

/// A port below 55,536 that is free, and whose cluster bus port (+10,000) is free too.
fn free_pair() -> Option<u16> {
    let port = std::net::TcpListener::bind("127.0.0.1:0").ok()?.local_addr().ok()?.port();
    let bus = port.checked_add(10_000).filter(|b| *b < 65_535)?;
    std::net::TcpListener::bind(("127.0.0.1", bus)).ok()?;
    Some(port)
}
