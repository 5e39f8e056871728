//! A server process of the embedded infrastructure: started, waited for
//! until it listens, killed as a crash would.

use std::io;
use std::net::TcpStream;
use std::process::Child;
use std::time::{Duration, Instant};

/// Waits until the server just started in `child` accepts connections on
/// loopback `port`, for at most `within`. One that exits first (it could
/// not bind its port, taken meanwhile) is an error naming it, and `child`
/// is cleared.
pub(crate) fn listening(child: &mut Option<Child>, port: u16, name: &str, within: Duration) -> io::Result<()> {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(());
        }
        if let Some(status) = child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
            *child = None;
            return Err(io::Error::other(format!("{name} on port {port} exited: {status}")));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Err(io::Error::new(io::ErrorKind::TimedOut, format!("{name} did not start within {within:?}")))
}

/// Kills the server (as a crash would) and reaps it.
pub(crate) fn kill(child: &mut Option<Child>) {
    if let Some(mut child) = child.take() {
        let _ = child.kill();
        let _ = child.wait();
    }
}
