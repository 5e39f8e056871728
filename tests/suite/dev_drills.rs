//! `tidings dev --drill <name>`: each built-in drill, run as a newcomer runs
//! it, ends with nothing lost and nothing sent twice, and shows the fault it
//! drills (a breaker opening, the secondary provider or SMS taking over).

use std::process::Command;

/// What a drill's closing summary says.
#[derive(Debug)]
struct Summary {
    notifications: usize,
    secondary: usize,
    failed_over: usize,
    lost: usize,
    twice: usize,
    /// Every progress line.
    progress: String,
}

fn drill(name: &str) -> Summary {
    let outbox = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_tidings"))
        .args(["dev", "--drill", name, "--outbox"])
        .arg(outbox.path())
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env_remove("TIDINGS_CONFIG")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).replace('\r', "\n");
    assert!(out.status.success(), "drill {name} failed:\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let closing: Vec<&str> =
        stdout.lines().filter(|l| l.contains(" notifications: sent ") || l.starts_with("lost ")).collect();
    let closing = closing.join(" ");
    Summary {
        notifications: number_after(&closing, ""),
        secondary: number_after(&closing, "("),
        failed_over: number_after(&closing, "failed over to SMS"),
        lost: number_after(&closing, "lost"),
        twice: number_after(&closing, "sent twice"),
        progress: stdout.clone(),
    }
}

/// The number after the first `words` in `text`.
fn number_after(text: &str, words: &str) -> usize {
    let at = text.find(words).unwrap_or_else(|| panic!("`{words}` in:\n{text}")) + words.len();
    text[at..].trim_start().split(|c: char| !c.is_ascii_digit()).next().unwrap().parse().unwrap()
}

impl Summary {
    fn held(&self) {
        assert!(self.notifications >= 900, "{self:?}");
        assert_eq!((self.lost, self.twice), (0, 0), "lost, sent twice: {}", self.progress);
    }
}

#[test]
fn primary_down_fails_over_to_the_secondary_and_back() {
    let s = drill("primary-down");
    s.held();
    assert!(s.secondary > 0 && s.progress.contains("primary open"), "{}", s.progress);
}

#[test]
fn all_down_holds_email_and_sends_password_resets_by_sms() {
    let s = drill("all-down");
    s.held();
    assert!(s.failed_over > 0 && s.progress.contains("secondary open"), "{}", s.progress);
}

#[test]
fn flapping_opens_the_breaker_and_loses_nothing() {
    let s = drill("flapping");
    s.held();
    assert!(s.secondary > 0 && s.progress.contains("primary open"), "{}", s.progress);
}

#[test]
fn slow_calls_open_the_breaker() {
    let s = drill("slow");
    s.held();
    assert!(s.secondary > 0 && s.progress.contains("primary open"), "{}", s.progress);
}

#[test]
fn rate_limited_answers_slow_the_fleet_and_lose_nothing() {
    let s = drill("rate-limited");
    s.held();
    assert!(s.secondary > 0, "{}", s.progress);
}

/// The digest drill: 500 tracking updates of 20 orders collapse into far
/// fewer emails, the busy orders' closed full at 8 and the quiet ones' at
/// the end of their 5 s window, every update listed in exactly one email.
#[test]
fn chatty_shipments_collapse_into_digests_each_update_in_exactly_one() {
    let s = drill("chatty-shipments");
    assert_eq!((s.lost, s.twice), (0, 0), "lost, sent twice: {}", s.progress);
    let closing: Vec<&str> = s.progress.lines().skip_while(|l| !l.contains(" tracking updates in ")).collect();
    let closing = &closing.join(" ");
    let updates = number_after(closing, "");
    let emails = number_after(closing, "tracking updates in");
    let full = number_after(closing, "digest emails (");
    assert_eq!(updates, 500, "{}", s.progress);
    assert_eq!(number_after(closing, "in exactly one digest"), updates, "{}", s.progress);
    assert_eq!((number_after(closing, "in several"), number_after(closing, "in none")), (0, 0), "{}", s.progress);
    // One email per digest notification, both ways of closing seen, and far fewer emails than updates.
    assert_eq!(s.notifications, emails, "{}", s.progress);
    assert!(full > 0 && emails > full && emails < updates / 2, "{}", s.progress);
    assert!(s.progress.contains("digest windows opened"), "{}", s.progress);
}
