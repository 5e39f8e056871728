//! The fleet as processes of the `tidings` binary, kept up as a deployment
//! would keep them: a role the schedule stops is started again when its
//! fault ends, and one that exits without being asked to is a finding
//! (written down with the end of its log) and is started again at once.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Proc {
    args: Vec<String>,
    child: Option<Child>,
    /// Asked to stop (SIGTERM) at this instant, and not yet gone.
    stopping: Option<Instant>,
    /// What to do once a role asked to stop is gone.
    then: Then,
}

#[derive(Clone, Copy, PartialEq)]
enum Then {
    StayDown,
    Start,
    Forget,
}

pub struct Procs {
    exe: PathBuf,
    config: PathBuf,
    logs: PathBuf,
    procs: BTreeMap<String, Proc>,
    /// How long a role asked to stop may take to drain and exit.
    exit_within: Duration,
    /// Exits nobody asked for, and roles that did not exit when asked: the
    /// role, what happened and its log's end.
    pub crashes: Vec<String>,
}

impl Procs {
    pub fn new(config: &Path, logs: &Path, exit_within: Duration) -> anyhow::Result<Self> {
        Ok(Procs {
            exe: std::env::current_exe()?,
            config: config.to_path_buf(),
            logs: logs.to_path_buf(),
            procs: BTreeMap::new(),
            exit_within,
            crashes: Vec::new(),
        })
    }

    /// Adds role `name` running `tidings <args>`, and starts it.
    pub fn add(&mut self, name: &str, args: &[&str]) -> anyhow::Result<()> {
        let args = args.iter().map(|a| a.to_string()).collect();
        self.procs.insert(name.to_string(), Proc { args, child: None, stopping: None, then: Then::StayDown });
        self.start(name)
    }

    /// Starts `name` if it is not running; one still draining after
    /// SIGTERM starts again once it is gone.
    pub fn start(&mut self, name: &str) -> anyhow::Result<()> {
        let Some(proc) = self.procs.get_mut(name) else { return Ok(()) };
        if proc.child.is_some() {
            if proc.stopping.is_some() {
                proc.then = Then::Start;
            }
            return Ok(());
        }
        let stderr =
            std::fs::OpenOptions::new().create(true).append(true).open(self.logs.join(format!("{name}.log")))?;
        let child = Command::new(&self.exe)
            .args(&proc.args)
            .env("TIDINGS_CONFIG", &self.config)
            .env("TIDINGS_LOG", std::env::var("TIDINGS_SOAK_LOG").unwrap_or_else(|_| "warn".into()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()?;
        proc.child = Some(child);
        proc.stopping = None;
        proc.then = Then::StayDown;
        Ok(())
    }

    /// SIGKILL: gone at once, as a crash or an evicted pod; down until started.
    pub fn kill(&mut self, name: &str) {
        if let Some(proc) = self.procs.get_mut(name) {
            if let Some(mut child) = proc.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
            proc.stopping = None;
            proc.then = Then::StayDown;
        }
    }

    /// SIGTERM: the role drains and exits by itself; down until started.
    pub fn term(&mut self, name: &str) {
        if let Some(proc) = self.procs.get_mut(name) {
            if let Some(child) = &proc.child {
                if proc.stopping.is_none() {
                    signal(child.id(), "TERM");
                    proc.stopping = Some(Instant::now());
                }
                proc.then = Then::StayDown;
            }
        }
    }

    /// Stops role `name` (SIGTERM) and forgets it once it is gone: a worker
    /// added for a while.
    pub fn remove(&mut self, name: &str) {
        self.term(name);
        match self.procs.get_mut(name) {
            Some(proc) if proc.child.is_some() => proc.then = Then::Forget,
            _ => {
                self.procs.remove(name);
            }
        }
    }

    /// Looks at every role: one that exited unasked is a finding and starts
    /// again; one asked to stop that is gone does what was asked next; one
    /// that outlived `exit_within` after SIGTERM is a finding, and killed.
    pub fn watch(&mut self) -> anyhow::Result<()> {
        let names: Vec<String> = self.procs.keys().cloned().collect();
        for name in names {
            let proc = self.procs.get_mut(&name).expect("listed");
            let Some(child) = proc.child.as_mut() else { continue };
            let status = child.try_wait().ok().flatten();
            let overdue = proc.stopping.is_some_and(|at| at.elapsed() > self.exit_within);
            let finding = match (status, proc.stopping) {
                (None, _) if overdue => {
                    let _ = child.kill();
                    let _ = child.wait();
                    Some(format!("{name} did not exit within {:?} of SIGTERM", self.exit_within))
                }
                (None, _) => continue,
                (Some(s), Some(_)) if s.success() => None,
                (Some(s), Some(_)) => Some(format!("{name} exited ({s}) after SIGTERM")),
                (Some(s), None) => Some(format!("{name} exited ({s}) unasked")),
            };
            proc.child = None;
            let then = if proc.stopping.take().is_some() { proc.then } else { Then::Start };
            if let Some(finding) = finding {
                let tail = self.tail(&name);
                self.crashes.push(format!("{finding}{tail}"));
            }
            match then {
                Then::StayDown => {}
                Then::Start => self.start(&name)?,
                Then::Forget => {
                    self.procs.remove(&name);
                }
            }
        }
        Ok(())
    }

    /// Stops every role: SIGTERM, and what outlives `exit_within` is killed.
    pub async fn stop_all(&mut self) -> anyhow::Result<()> {
        let names: Vec<String> = self.procs.keys().cloned().collect();
        for name in &names {
            self.term(name);
        }
        while self.procs.values().any(|p| p.child.is_some()) {
            self.watch()?;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(())
    }

    /// The last lines of a role's log, to show with a finding.
    fn tail(&self, name: &str) -> String {
        let mut text = String::new();
        if let Ok(mut f) = std::fs::File::open(self.logs.join(format!("{name}.log"))) {
            let _ = f.read_to_string(&mut text);
        }
        let lines: Vec<&str> = text.lines().rev().take(5).collect();
        if lines.is_empty() {
            return String::new();
        }
        format!("; its log ends:\n    {}", lines.into_iter().rev().collect::<Vec<_>>().join("\n    "))
    }
}

impl Drop for Procs {
    fn drop(&mut self) {
        for proc in self.procs.values_mut() {
            if let Some(mut child) = proc.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

/// Sends `signal` (`TERM`, `KILL`) to process `pid`.
pub fn signal(pid: u32, signal: &str) {
    let _ = Command::new("kill").args([&format!("-{signal}"), &pid.to_string()]).status();
}
