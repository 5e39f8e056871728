//! A progress line that suits where stdout goes: on a terminal it is
//! rewritten in place as often as it changes; into a file or a pipe (a CI
//! log, `tidings dev > run.log`) it is a plain line every few seconds, so
//! five minutes of output is sixty lines, not one ever-growing line of
//! carriage returns.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

/// How often a line is written when stdout is not a terminal.
const EVERY: Duration = Duration::from_secs(5);

pub struct LiveLine {
    terminal: bool,
    every: Duration,
    /// When the last line was written off a terminal (at first, when the
    /// line was made: a run shorter than `every` writes none), and what it said.
    last: (Instant, String),
    /// A line is on the terminal without its newline.
    open: bool,
}

impl LiveLine {
    /// Written in place when stdout is a terminal, else every few seconds.
    pub fn stdout() -> Self {
        Self::new(std::io::stdout().is_terminal(), EVERY)
    }

    fn new(terminal: bool, every: Duration) -> Self {
        LiveLine { terminal, every, last: (Instant::now(), String::new()), open: false }
    }

    /// Shows `line` now (a terminal), or if the last was written long enough ago.
    pub fn show(&mut self, line: &str) {
        let mut out = std::io::stdout().lock();
        if let Some(text) = self.render(line, Instant::now()) {
            let _ = out.write_all(text.as_bytes());
            let _ = out.flush();
        }
    }

    /// Ends an open line on the terminal, before other output.
    pub fn finish(&mut self) {
        if std::mem::take(&mut self.open) {
            println!();
        }
    }

    /// What to write for `line` at `now`, if anything.
    fn render(&mut self, line: &str, now: Instant) -> Option<String> {
        if self.terminal {
            self.open = true;
            return Some(format!("\r{line}"));
        }
        let line = line.trim_end();
        // An idle fleet says so once, not every few seconds.
        let (at, said) = &self.last;
        if now.saturating_duration_since(*at) < self.every || said == line {
            return None;
        }
        self.last = (now, line.to_string());
        Some(format!("{line}\n"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn off_a_terminal_a_plain_line_every_few_seconds() {
        let mut live = LiveLine::new(false, Duration::from_secs(5));
        let t = Instant::now() + Duration::from_secs(5);
        assert_eq!(live.render("events 0/10", t - Duration::from_secs(4)), None, "a short run writes no line");
        assert_eq!(live.render("events 1/10   ", t).as_deref(), Some("events 1/10\n"));
        assert_eq!(live.render("events 2/10", t + Duration::from_secs(1)), None);
        assert_eq!(live.render("events 5/10", t + Duration::from_secs(5)).as_deref(), Some("events 5/10\n"));
        assert_eq!(live.render("events 5/10", t + Duration::from_secs(11)), None, "nothing new, nothing written");
    }

    #[test]
    fn on_a_terminal_the_line_is_rewritten_in_place() {
        let mut live = LiveLine::new(true, Duration::from_secs(5));
        let t = Instant::now();
        assert_eq!(live.render("a", t).as_deref(), Some("\ra"));
        assert_eq!(live.render("b", t).as_deref(), Some("\rb"));
        assert!(live.open);
    }
}
