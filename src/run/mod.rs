//! Running salespulse outside Kafka, and what every run shares: [`local`]
//! is the file / standard input / demo loop (source task → engine →
//! sinks, with live updates, the terminal summary and checkpoints); a
//! [`RunReport`] says what a run did; [`shutdown_signal`] is Ctrl-C or
//! SIGTERM. The Kafka loop is [`crate::kafka::run`].

pub mod local;

/// What a run did, for the caller.
#[derive(Debug, Default, Clone)]
pub struct RunReport {
    pub accepted: u64,
    pub duplicates: u64,
    pub rejected: u64,
    pub records: u64,
}

/// Resolves on Ctrl-C or SIGTERM. The signal handlers are registered
/// when this is called, not when the future is first polled: a signal
/// that comes before (during a restore, while waiting for a topic) is
/// not lost. Each caller gets its own future, and every one of them
/// resolves on one signal.
pub fn shutdown_signal() -> impl std::future::Future<Output = ()> + Send + 'static {
    #[cfg(unix)]
    let (int, term) = {
        use tokio::signal::unix::{signal, SignalKind};
        (
            signal(SignalKind::interrupt()).ok(),
            signal(SignalKind::terminate()).ok(),
        )
    };
    async move {
        #[cfg(unix)]
        {
            let wait = |s: Option<tokio::signal::unix::Signal>| async move {
                match s {
                    Some(mut s) => {
                        s.recv().await;
                    }
                    None => std::future::pending().await,
                }
            };
            tokio::select! { _ = wait(int) => {}, _ = wait(term) => {} }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// A replay's progress on the terminal: one line, rewritten at most once
/// a second, with events read, the event-time position, the rate, and —
/// when the input's size is known — the share done and the time left.
/// Off unless stderr is a terminal (see `run`).
pub struct Progress {
    enabled: bool,
    started: std::time::Instant,
    last: Option<std::time::Instant>,
}

impl Progress {
    pub fn new(enabled: bool) -> Progress {
        Progress {
            enabled,
            started: std::time::Instant::now(),
            last: None,
        }
    }

    /// Shows the line when a second has passed since the last one.
    /// `done`: (position, total) in the input's own unit (bytes, offsets).
    pub fn show(&mut self, events: u64, clock_ms: i64, done: Option<(u64, u64)>) {
        if !self.enabled
            || self
                .last
                .is_some_and(|t| t.elapsed() < std::time::Duration::from_secs(1))
        {
            return;
        }
        self.last = Some(std::time::Instant::now());
        let line = progress_line(events, clock_ms, done, self.started.elapsed());
        eprint!("\r\x1b[K{line}");
    }

    /// Ends the line (once something was shown).
    pub fn finish(&mut self) {
        if self.enabled && self.last.take().is_some() {
            eprintln!();
        }
    }
}

/// `1,234,567 events · event time 2026-03-14T10:00:00Z · 812,345 ev/s · 45.0 % · 12 s left`
pub fn progress_line(
    events: u64,
    clock_ms: i64,
    done: Option<(u64, u64)>,
    elapsed: std::time::Duration,
) -> String {
    let secs = elapsed.as_secs_f64().max(1e-3);
    let mut line = format!("{} events", thousands(events));
    if clock_ms != i64::MIN {
        line += &format!(" · event time {}", crate::window::format_time(clock_ms));
    }
    line += &format!(" · {} ev/s", thousands((events as f64 / secs) as u64));
    if let Some((pos, total)) = done.filter(|(_, t)| *t > 0) {
        let share = (pos as f64 / total as f64).min(1.0);
        line += &format!(" · {:.1} %", share * 100.0);
        if share > 0.0 {
            let left = secs * (1.0 - share) / share;
            line += &format!(" · {left:.0} s left");
        }
    }
    line
}

fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn the_progress_line_says_events_time_rate_share_and_time_left() {
        let l = progress_line(
            1_234_567,
            1_773_482_400_000,
            Some((450, 1000)),
            Duration::from_secs(9),
        );
        assert_eq!(
            l,
            "1,234,567 events · event time 2026-03-14T10:00:00Z · 137,174 ev/s · 45.0 % · 11 s left"
        );
        let l = progress_line(999, i64::MIN, None, Duration::from_secs(1));
        assert_eq!(l, "999 events · 999 ev/s");
    }
}
