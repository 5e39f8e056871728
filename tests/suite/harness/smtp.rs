//! A real SMTP server in the test process (RFC 5321 over loopback TCP). It
//! records every message it accepts, and can be told to refuse recipients or
//! to stall before answering a message, as a slow or dying relay would.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

#[derive(Debug, Clone)]
pub struct Received {
    pub rcpt: Vec<String>,
    pub data: String,
}

impl Received {
    pub fn header(&self, name: &str) -> Option<String> {
        let prefix = format!("{}:", name.to_ascii_lowercase());
        self.data
            .lines()
            .take_while(|l| !l.is_empty())
            .find(|l| l.to_ascii_lowercase().starts_with(&prefix))
            .map(|l| l[prefix.len()..].trim().to_string())
    }
}

#[derive(Default)]
pub struct Shared {
    pub received: Mutex<Vec<Received>>,
    /// Messages accepted before the server stops answering DATA (usize::MAX: never).
    pub stall_after: AtomicUsize,
    /// Reply to every RCPT with this line instead of 250 (e.g. "550 5.1.1 no such user").
    pub rcpt_reply: Mutex<Option<String>>,
    /// Reply to every MAIL FROM with this line instead of 250.
    pub mail_reply: Mutex<Option<String>>,
    /// Every MAIL FROM line, as sent.
    pub mail_from: Mutex<Vec<String>>,
}

pub struct SmtpServer {
    pub port: u16,
    pub shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl SmtpServer {
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let shared = Arc::new(Shared { stall_after: AtomicUsize::new(usize::MAX), ..Default::default() });
        let s = shared.clone();
        let task = tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                tokio::spawn(session(socket, s.clone()));
            }
        });
        SmtpServer { port, shared, task }
    }

    pub fn received(&self) -> Vec<Received> {
        self.shared.received.lock().unwrap().clone()
    }
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn session(socket: tokio::net::TcpStream, shared: Arc<Shared>) {
    let (read, mut write) = socket.into_split();
    let mut lines = BufReader::new(read).lines();
    if write.write_all(b"220 test ESMTP\r\n").await.is_err() {
        return;
    }
    let mut rcpt = Vec::new();
    while let Ok(Some(line)) = lines.next_line().await {
        let upper = line.to_ascii_uppercase();
        let reply: String = if upper.starts_with("EHLO") || upper.starts_with("HELO") {
            "250-test\r\n250 8BITMIME\r\n".into()
        } else if upper.starts_with("MAIL FROM") {
            rcpt.clear();
            shared.mail_from.lock().unwrap().push(line.clone());
            match shared.mail_reply.lock().unwrap().clone() {
                Some(r) => format!("{r}\r\n"),
                None => "250 2.1.0 Ok\r\n".into(),
            }
        } else if upper.starts_with("RCPT TO") {
            match shared.rcpt_reply.lock().unwrap().clone() {
                Some(r) => format!("{r}\r\n"),
                None => {
                    rcpt.push(line[8..].trim().trim_start_matches(':').trim().to_string());
                    "250 2.1.5 Ok\r\n".into()
                }
            }
        } else if upper == "DATA" {
            if write.write_all(b"354 End data with <CR><LF>.<CR><LF>\r\n").await.is_err() {
                return;
            }
            let mut data = String::new();
            while let Ok(Some(l)) = lines.next_line().await {
                if l == "." {
                    break;
                }
                data.push_str(l.strip_prefix('.').filter(|_| l.starts_with("..")).unwrap_or(&l));
                data.push('\n');
            }
            let n = {
                let mut received = shared.received.lock().unwrap();
                received.push(Received { rcpt: rcpt.clone(), data });
                received.len()
            };
            if n > shared.stall_after.load(Ordering::SeqCst) {
                // A stalled relay: the message is taken but never answered.
                std::future::pending::<()>().await;
            }
            format!("250 2.0.0 Ok: queued as m{n}\r\n")
        } else if upper == "QUIT" {
            let _ = write.write_all(b"221 2.0.0 Bye\r\n").await;
            return;
        } else {
            "250 2.0.0 Ok\r\n".into()
        };
        if write.write_all(reply.as_bytes()).await.is_err() {
            return;
        }
    }
}
