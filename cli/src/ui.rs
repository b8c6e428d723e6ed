//! Terminal output: progress that draws bars on a terminal and prints plain lines elsewhere,
//! tables, human numbers and times, and a quiet exit when stdout is closed.

use std::io::{IsTerminal, Write};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use comfy_table::{Table, presets::UTF8_BORDERS_ONLY};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Progress on stderr: a bar on a terminal; plain lines when stderr is a file or a pipe (a CI
/// log, `2>log`), at most one every few seconds and at each change of stage; nothing with
/// `quiet` (JSON output), so that scripts see clean output.
pub struct Progress {
    bar: Option<ProgressBar>,
    plain: Option<Mutex<Plain>>,
}

struct Plain {
    len: Option<u64>,
    pos: u64,
    prefix: String,
    msg: String,
    last: Option<Instant>,
    last_line: String,
}

/// How often a plain progress line may repeat within one stage.
const PLAIN_EVERY: Duration = Duration::from_secs(3);

impl Plain {
    fn line(&self) -> String {
        let mut l = String::new();
        if !self.prefix.is_empty() {
            l.push_str(&self.prefix);
            l.push_str(": ");
        }
        if let Some(len) = self.len.filter(|&n| n > 1) {
            l.push_str(&format!("{}% ", (100 * self.pos.min(len) / len.max(1))));
        }
        l.push_str(&self.msg);
        l.trim_end().to_string()
    }

    /// Prints the current line if it says something new: at once after a change of stage,
    /// otherwise at most every [`PLAIN_EVERY`].
    fn emit(&mut self, force: bool) {
        let line = self.line();
        if line.is_empty() || line == self.last_line {
            return;
        }
        if !force && self.last.is_some_and(|t| t.elapsed() < PLAIN_EVERY) {
            return;
        }
        let _ = writeln!(std::io::stderr(), "{line}");
        self.last = Some(Instant::now());
        self.last_line = line;
    }
}

impl Progress {
    fn new(len: Option<u64>, quiet: bool, template: &str) -> Progress {
        if quiet {
            return Progress { bar: None, plain: None };
        }
        if !std::io::stderr().is_terminal() {
            let plain =
                Plain { len, pos: 0, prefix: String::new(), msg: String::new(), last: None, last_line: String::new() };
            return Progress { bar: None, plain: Some(Mutex::new(plain)) };
        }
        let pb = ProgressBar::with_draw_target(len, ProgressDrawTarget::stderr());
        pb.set_style(ProgressStyle::with_template(template).expect("a valid template").progress_chars("=> "));
        pb.enable_steady_tick(Duration::from_millis(120));
        Progress { bar: Some(pb), plain: None }
    }

    fn plain(&self, f: impl FnOnce(&mut Plain) -> bool) {
        if let Some(p) = &self.plain {
            let mut p = p.lock().unwrap_or_else(|e| e.into_inner());
            let force = f(&mut p);
            p.emit(force);
        }
    }

    pub fn set_prefix(&self, prefix: impl Into<String>) {
        let prefix = prefix.into();
        if let Some(b) = &self.bar {
            b.set_prefix(prefix.clone());
        }
        self.plain(|p| {
            let changed = p.prefix != prefix;
            p.prefix = prefix;
            changed
        });
    }

    pub fn set_message(&self, msg: impl Into<String>) {
        let msg = msg.into();
        if let Some(b) = &self.bar {
            b.set_message(msg.clone());
        }
        self.plain(|p| {
            p.msg = msg;
            false
        });
    }

    pub fn set_length(&self, len: u64) {
        if let Some(b) = &self.bar {
            b.set_length(len);
        }
        self.plain(|p| {
            p.len = Some(len);
            false
        });
    }

    pub fn set_position(&self, pos: u64) {
        if let Some(b) = &self.bar {
            b.set_position(pos);
        }
        self.plain(|p| {
            p.pos = pos;
            false
        });
    }

    pub fn inc(&self, n: u64) {
        if let Some(b) = &self.bar {
            b.inc(n);
        }
        self.plain(|p| {
            p.pos += n;
            false
        });
    }

    /// Ends the progress: the bar disappears; in plain mode the last state is printed if it was
    /// not yet.
    pub fn finish_and_clear(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
        self.plain(|_| true);
    }
}

/// A progress bar of `len` steps (see [`Progress`]).
pub fn bar(len: u64, quiet: bool) -> Progress {
    Progress::new(Some(len), quiet, "{spinner:.green} {prefix:>10} [{bar:30.cyan/blue}] {percent:>3}% {msg}")
}

/// A spinner for work of unknown length (see [`Progress`]).
pub fn spinner(msg: &str, quiet: bool) -> Progress {
    let p = Progress::new(None, quiet, "{spinner:.green} {msg}");
    p.set_message(msg.to_string());
    p.plain(|_| true);
    p
}

/// Makes a closed stdout end the process quietly: `embtune results show J | head` closes the
/// pipe after ten lines, and the output nobody reads is not an error. Rust ignores SIGPIPE, so
/// `println!` then panics with "failed printing to stdout: Broken pipe"; this hook turns that
/// panic, in any thread, into exit status 0 and leaves every other panic to the default hook.
/// (Restoring SIGPIPE's default action instead would also kill the process when a child it
/// feeds, an ssh session or a worker, goes away.)
pub fn quiet_broken_pipe() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let msg = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or("");
        if msg.starts_with("failed printing to stdout") && msg.contains("Broken pipe") {
            std::process::exit(0);
        }
        default(info);
    }));
}

/// How to run this binary again in a printed command: `embtune` when that name on the PATH is
/// this very binary, else its path (relative to the working directory when under it, as
/// `./target/release/embtune` after `cargo run --release`).
pub fn self_command() -> String {
    let Ok(exe) = std::env::current_exe() else { return "embtune".into() };
    let exe = exe.canonicalize().unwrap_or(exe);
    let on_path = std::env::var_os("PATH")
        .and_then(|paths| std::env::split_paths(&paths).map(|d| d.join("embtune")).find(|p| p.is_file()));
    if on_path.and_then(|p| p.canonicalize().ok()).is_some_and(|p| p == exe) {
        return "embtune".into();
    }
    let cwd = std::env::current_dir().ok().and_then(|d| d.canonicalize().ok());
    match cwd.as_ref().and_then(|d| exe.strip_prefix(d).ok()) {
        Some(rel) => format!("./{}", rel.display()),
        None => exe.display().to_string(),
    }
}

/// A time of day in UTC, `2026-12-03 13:08:33`, from milliseconds since the Unix epoch; `-`
/// for 0 (not recorded).
pub fn utc(ms: u64) -> String {
    if ms == 0 {
        return "-".into();
    }
    let secs = ms / 1000;
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}", rem / 3600, rem % 3600 / 60, rem % 60)
}

/// A table with a header row.
pub fn table(header: &[&str]) -> Table {
    let mut t = Table::new();
    t.load_style(UTF8_BORDERS_ONLY);
    t.set_header(header.iter().map(|h| h.to_string()).collect::<Vec<_>>());
    t
}

/// A count as an integer with thousands separators: `1,000`, `237`.
pub fn count(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::with_capacity(s.len() + s.len() / 3);
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// 1234567 as `1.23M`.
pub fn si(v: f64) -> String {
    let a = v.abs();
    if a >= 1e9 {
        format!("{:.2}G", v / 1e9)
    } else if a >= 1e6 {
        format!("{:.2}M", v / 1e6)
    } else if a >= 1e3 {
        format!("{:.1}k", v / 1e3)
    } else {
        format!("{v:.1}")
    }
}

/// Microseconds with a unit that keeps them readable.
pub fn us(v: f64) -> String {
    if v >= 10_000.0 { format!("{:.1} ms", v / 1000.0) } else { format!("{v:.0} us") }
}

pub use embtune_protocol::plan::human_bytes as bytes;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_and_counts_read_as_people_write_them() {
        assert_eq!(utc(0), "-");
        assert_eq!(utc(1_000), "1970-01-01 00:00:01");
        assert_eq!(utc(1_796_303_313_000), "2026-12-03 13:08:33");
        assert_eq!(utc(951_782_400_000), "2000-02-29 00:00:00");
        assert_eq!(count(1), "1");
        assert_eq!(count(237), "237");
        assert_eq!(count(1000), "1,000");
        assert_eq!(count(45_840_617), "45,840,617");
    }

    #[test]
    fn plain_progress_lines_say_the_stage_the_share_and_the_message() {
        let mut p = Plain {
            len: Some(8),
            pos: 2,
            prefix: "tuning".into(),
            msg: "job-1: best 512 batches/s".into(),
            last: None,
            last_line: String::new(),
        };
        assert_eq!(p.line(), "tuning: 25% job-1: best 512 batches/s");
        p.emit(false);
        assert_eq!(p.last_line, "tuning: 25% job-1: best 512 batches/s");
        // Within a few seconds only a change of stage prints again.
        p.pos = 3;
        p.emit(false);
        assert_eq!(p.last_line, "tuning: 25% job-1: best 512 batches/s");
        p.prefix = "head-to-head".into();
        p.emit(true);
        assert_eq!(p.last_line, "head-to-head: 37% job-1: best 512 batches/s");
        // A spinner has no length: no share.
        let s = Plain {
            len: None,
            pos: 0,
            prefix: String::new(),
            msg: "generating".into(),
            last: None,
            last_line: String::new(),
        };
        assert_eq!(s.line(), "generating");
    }
}
