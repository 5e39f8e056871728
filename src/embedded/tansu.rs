//! A tansu broker (an independent Kafka-protocol broker, written in Rust) as
//! a process of its own on a free loopback port, killed when dropped: the
//! real broker of the real-broker tier. `scripts/test` installs it
//! (`cargo install tansu --features dynostore,libsql`); `TIDINGS_TANSU`
//! names another binary.
//!
//! Storage is in memory, or a SQLite file ([`TansuBroker::start_durable`])
//! that outlives the process, so the broker can be killed and started again
//! on the same port with its topics and offsets, as a broker outage.
//!
//! tansu 0.6's memory storage keeps each produced batch whole and serves a
//! fetch only from batches that *start* at or after the fetch offset: a
//! consumer that resumes inside a batch (from a committed offset after a
//! restart or a rebalance, or after a pause, which drops what was fetched
//! ahead) is answered with nothing, for ever. Kafka, librdkafka's mock
//! cluster and tansu's SQLite storage return the batch that holds the offset.
//! Drills that restart or pause consumers run on SQLite storage.

use std::io;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub struct TansuBroker {
    port: u16,
    storage: String,
    /// A durable broker's folder, removed when dropped.
    dir: Option<PathBuf>,
    child: Option<Child>,
}

impl TansuBroker {
    /// The tansu binary: `TIDINGS_TANSU`, or `tansu` on the `PATH`.
    pub fn binary() -> String {
        std::env::var("TIDINGS_TANSU").unwrap_or_else(|_| "tansu".to_string())
    }

    /// Whether the tansu binary can be run here.
    pub fn available() -> bool {
        Command::new(Self::binary()).arg("--help").stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok()
    }

    /// A broker keeping everything in memory.
    pub fn start() -> io::Result<Self> {
        Self::start_with("memory://tansu/".to_string(), None)
    }

    /// A broker keeping its log in a SQLite file, which survives [`Self::stop`].
    pub fn start_durable() -> io::Result<Self> {
        let dir = std::env::temp_dir().join(format!("tidings-tansu-{}-{}", std::process::id(), rand::random::<u32>()));
        std::fs::create_dir_all(&dir)?;
        // tansu reads the URL's host as a file name in its working folder.
        Self::start_with("sqlite://tansu.db".to_string(), Some(dir))
    }

    fn start_with(storage: String, dir: Option<PathBuf>) -> io::Result<Self> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let mut broker = TansuBroker { port, storage, dir, child: None };
        broker.restart()?;
        Ok(broker)
    }

    pub fn bootstrap_servers(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Kills the broker (as a crash would); a durable one keeps its data.
    pub fn stop(&mut self) {
        super::process::kill(&mut self.child);
    }

    /// Starts (again) on the same port and storage; waits until it accepts connections.
    pub fn restart(&mut self) -> io::Result<()> {
        self.stop();
        let url = format!("tcp://127.0.0.1:{}", self.port);
        let child = Command::new(Self::binary())
            .args(["broker", "--storage-engine", &self.storage, "--listener-url", &url])
            .args(["--advertised-listener-url", &url])
            .current_dir(self.dir.as_deref().unwrap_or(std::path::Path::new("/")))
            .env("RUST_LOG", "error")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!(
                        "cannot run `{}` ({e}): install it with `cargo install tansu --locked --features \
                         dynostore,libsql` (scripts/test does), or name it in TIDINGS_TANSU",
                        Self::binary()
                    ),
                )
            })?;
        self.child = Some(child);
        super::process::listening(&mut self.child, self.port, "tansu", Duration::from_secs(30))
    }

    /// The broker's process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }
}

impl Drop for TansuBroker {
    fn drop(&mut self) {
        self.stop();
        if let Some(dir) = &self.dir {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}
