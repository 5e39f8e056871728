//! `tidings bench callbacks`: the callbacks role as a process of its own,
//! on the mock cluster and a private `redis-server`, while clients hold it:
//! `--slow` connections send headers and never finish them, `--bodies`
//! announce a form body just under the limit and trickle it, each
//! reconnecting as soon as it is cut. Meanwhile a provider sends genuine
//! signed callbacks (Twilio inbound STOPs) at `--rate` a second.
//!
//! Figures: the role's RSS before the flood, its peak during it and after
//! it; the genuine callbacks sent, answered 200, and their p50/p99; the
//! flood's connections opened (each one cut and opened again counts).

use super::bench_cluster::BenchCluster;
use crate::cli::CallbacksBenchArgs;
use crate::embedded::RedisServer;
use std::process::{ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

const TOKEN: &str = "5f0e8c2b9a7d4e1f3c6b8a0d2e4f6a8c";
const INBOUND: &str = "/callbacks/twilio/inbound";

pub async fn run(args: CallbacksBenchArgs) -> anyhow::Result<ExitCode> {
    let redis = RedisServer::start()?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let base = format!("[kafka]\nbootstrap_servers = \"-\"\n[callbacks]\nlisten = \"127.0.0.1:{port}\"\n");
    let config = tidings_core::Config::from_toml(&base)?;
    let kafka = BenchCluster::start(None, &super::topics::topics(&config), 3, 1).await?;
    let file = std::env::temp_dir().join(format!("tidings-bench-callbacks-{}.toml", std::process::id()));
    std::fs::write(
        &file,
        format!(
            "{base}public_url = \"http://127.0.0.1:{port}\"\n\n[providers.twilio]\nkind = \"twilio\"\n\
             account_sid = \"AC1\"\nauth_token = \"{TOKEN}\"\nfrom = \"+15550001111\"\n"
        ),
    )?;
    let mut role = std::process::Command::new(std::env::current_exe()?)
        .arg("callbacks")
        .env("TIDINGS_CONFIG", &file)
        .env("TIDINGS_KAFKA__BOOTSTRAP_SERVERS", kafka.bootstrap_servers())
        .env("TIDINGS_REDIS__URL", redis.url())
        .env("TIDINGS_LOG", "error")
        .stdout(Stdio::null())
        .spawn()?;
    let pid = role.id();
    let measured = measure(&args, port, pid).await;
    let _ = role.kill();
    let _ = role.wait();
    let _ = std::fs::remove_file(&file);
    let figures = measured?;
    println!(
        "callbacks role under {} slow-header and {} slow-body connections for {} s, mock cluster:",
        args.slow, args.bodies, args.seconds
    );
    println!(
        "  RSS before {:.1} MB, peak during {:.1} MB, after {:.1} MB",
        figures.before, figures.peak, figures.after
    );
    println!(
        "  genuine callbacks: {} sent, {} answered 200, p50 {:.0} ms, p99 {:.0} ms",
        figures.sent, figures.answered, figures.p50, figures.p99
    );
    println!("  flood connections opened: {}", figures.opened);
    Ok(if figures.answered == figures.sent { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

struct Figures {
    before: f64,
    peak: f64,
    after: f64,
    sent: usize,
    answered: usize,
    p50: f64,
    p99: f64,
    opened: usize,
}

async fn measure(args: &CallbacksBenchArgs, port: u16, pid: u32) -> anyhow::Result<Figures> {
    // Up once it answers a genuine callback.
    let deadline = Instant::now() + Duration::from_secs(30);
    while genuine(port, 0).await != Some(200) {
        anyhow::ensure!(Instant::now() < deadline, "the callbacks role did not answer within 30 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = rss_mb(pid);

    let flooding = Arc::new(AtomicBool::new(true));
    let opened = Arc::new(AtomicUsize::new(0));
    let mut flood = tokio::task::JoinSet::new();
    for i in 0..args.slow + args.bodies {
        let (flooding, opened) = (flooding.clone(), opened.clone());
        let body = i >= args.slow;
        flood.spawn(async move {
            while flooding.load(Ordering::Relaxed) {
                opened.fetch_add(1, Ordering::Relaxed);
                let _ = hold(port, body, &flooding).await;
            }
        });
    }
    let peak = Arc::new(std::sync::Mutex::new(before));
    let sampler = {
        let (peak, flooding) = (peak.clone(), flooding.clone());
        tokio::spawn(async move {
            while flooding.load(Ordering::Relaxed) {
                let now = rss_mb(pid);
                {
                    let mut p = peak.lock().unwrap_or_else(|p| p.into_inner());
                    *p = p.max(now);
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
    };
    let mut genuine_calls = tokio::task::JoinSet::new();
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / args.rate.max(0.1)));
    let end = Instant::now() + Duration::from_secs(args.seconds);
    let mut seq = 1;
    while Instant::now() < end {
        tick.tick().await;
        let sent_at = Instant::now();
        genuine_calls.spawn(async move { (genuine(port, seq).await, sent_at.elapsed()) });
        seq += 1;
    }
    let answers = genuine_calls.join_all().await;
    flooding.store(false, Ordering::Relaxed);
    flood.abort_all();
    while flood.join_next().await.is_some() {}
    let _ = sampler.await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after = rss_mb(pid);
    let mut latencies: Vec<f64> =
        answers.iter().filter(|(code, _)| *code == Some(200)).map(|(_, d)| d.as_secs_f64() * 1000.0).collect();
    latencies.sort_by(f64::total_cmp);
    let at = |q: f64| latencies.get(((latencies.len() as f64 - 1.0) * q).round() as usize).copied().unwrap_or(0.0);
    let peak = *peak.lock().unwrap_or_else(|p| p.into_inner());
    Ok(Figures {
        before,
        peak,
        after,
        sent: answers.len(),
        answered: latencies.len(),
        p50: at(0.5),
        p99: at(0.99),
        opened: opened.load(Ordering::Relaxed),
    })
}

/// One flood connection, held until the role cuts it: headers that never
/// end, or a body announced just under the form limit and sent a byte a
/// second.
async fn hold(port: u16, body: bool, flooding: &AtomicBool) -> std::io::Result<()> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).await?;
    if body {
        let head = format!(
            "POST {INBOUND} HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n",
            60 * 1024
        );
        stream.write_all(head.as_bytes()).await?;
    } else {
        stream.write_all(format!("POST {INBOUND} HTTP/1.1\r\nHost: x\r\n").as_bytes()).await?;
    }
    let mut scratch = [0u8; 1024];
    while flooding.load(Ordering::Relaxed) {
        let more: &[u8] = if body { b"a" } else { b"X-Slow: 1\r\n" };
        stream.write_all(more).await?;
        // Anything back (an answer, or the end) means the role cut it.
        match tokio::time::timeout(Duration::from_secs(1), stream.read(&mut scratch)).await {
            Ok(_) => return Ok(()),
            Err(_) => continue,
        }
    }
    Ok(())
}

/// A genuine signed Twilio inbound STOP from number `seq`: the status it
/// was answered with, if any within 30 s.
async fn genuine(port: u16, seq: usize) -> Option<u16> {
    let from = format!("+1555{seq:07}");
    let params: Vec<(String, String)> = [("From", from.as_str()), ("To", "+15550001111"), ("Body", "STOP")]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let url = format!("http://127.0.0.1:{port}{INBOUND}");
    let signature = tidings_providers::twilio::callback::signature(TOKEN, &url, &params);
    let body: String =
        params.iter().map(|(k, v)| format!("{k}={}", v.replace('+', "%2B"))).collect::<Vec<_>>().join("&");
    let request = format!(
        "POST {INBOUND} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/x-www-form-urlencoded\r\n\
         X-Twilio-Signature: {signature}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let answered = async {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).await.ok()?;
        stream.write_all(request.as_bytes()).await.ok()?;
        let mut head = vec![0u8; 64];
        let n = stream.read(&mut head).await.ok()?;
        let line = String::from_utf8_lossy(&head[..n]).into_owned();
        line.split_whitespace().nth(1)?.parse().ok()
    };
    tokio::time::timeout(Duration::from_secs(30), answered).await.ok().flatten()
}

/// The process's resident memory now, in MB.
fn rss_mb(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kb: f64 = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    kb / 1024.0
}
