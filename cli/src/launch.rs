//! `embtune launch`: workers on other machines, started over ssh.
//!
//! For every line of a hosts file: copy the embtune binary and the cluster's certificates to a
//! folder on the host (once per host, and the binary only when it differs from the one already
//! there), start `embtune worker` detached (its pid in `DIR/run/NAME.pid`, its log in
//! `DIR/logs/NAME.log`), then wait until the coordinator reports every launched worker healthy.
//! `launch --stop` ends them by their pid files.
//!
//! Only `ssh` is needed on this machine (files travel as `ssh HOST 'cat > FILE'`), only a POSIX
//! `sh` on the hosts, and the CA key never leaves this machine: hosts get `ca.crt`, `node.crt`
//! and `node.key`.

use std::collections::BTreeMap;
use std::collections::HashSet;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use clap::Args;

use embtune_client::CoordinatorClient;
use embtune_protocol::wire::WorkerInfo;
use embtune_transport::certs;
use embtune_worker::machine::parse_cpu_list;

use crate::cluster::runtime;
use crate::ui;

/// The worker's QUIC port when a line gives no `port=`.
pub const DEFAULT_PORT: u16 = 7701;

const HELP: &str = "\
Hosts file: one worker a line; `#` starts a comment.

  [user@]host[:sshport] [port=7701] [cores=LIST] [memory=SIZE] [name=NAME] [advertise=IP:PORT]

  host       the machine ssh logs in to, and the address the coordinator dials (resolved here;
             an alias of ~/.ssh/config is resolved with `ssh -G`); IPv6 as [addr]:sshport
  sshport    ssh's port (default: ssh's own, usually 22)
  port       the worker's QUIC port, UDP (default 7701; workers sharing a host need their own)
  cores      CPUs for the worker's engine threads, e.g. 0-7 or 0-3,8-11 (default: all)
  memory     bytes of tables it may hold: 64G, 512M, 1.5T (powers of 1024) or plain bytes
             (default: 85% of the host's available memory)
  name       its name in reports and of its log and pid files (default: HOST-PORT)
  advertise  the address the coordinator should dial, when not host:port (NAT, several NICs)

  # two workers on gpu1, one per socket; one on gpu2 with ssh on port 2222
  ubuntu@gpu1  port=7701 cores=0-15  memory=100G name=gpu1-a
  ubuntu@gpu1  port=7702 cores=16-31 memory=100G name=gpu1-b
  gpu2:2222    cores=0-7 memory=32G

On each host, launch uses DIR (--remote-dir): DIR/bin/embtune, DIR/cluster/ (ca.crt, node.crt,
node.key; never the CA key), DIR/logs/NAME.log (the previous run's in NAME.log.1) and
DIR/run/NAME.pid. Workers listen on 0.0.0.0:PORT; the coordinator and the workers must reach
each other over UDP. A worker already running under the same name is restarted.

ssh runs with -o BatchMode=yes -o ConnectTimeout=10: no password prompts, so use a key,
ssh-agent or ~/.ssh/config. Options given in --ssh come first and take precedence.

Examples:
  embtune cluster init --out cluster
  embtune coordinator --listen 0.0.0.0:7700 --cluster cluster --data-dir state
  embtune launch --hosts hosts.txt --coordinator 10.0.0.1:7700 --cluster cluster
  embtune launch --hosts hosts.txt --coordinator 10.0.0.1:7700 --cluster cluster --dry-run
  embtune launch --hosts hosts.txt --coordinator 10.0.0.1:7700 --cluster cluster \\
      --ssh \"ssh -i ~/.ssh/lab -o StrictHostKeyChecking=accept-new\" --remote-dir /opt/embtune
  embtune launch --stop --hosts hosts.txt";

#[derive(Args, Debug)]
#[command(after_help = HELP)]
pub struct LaunchArgs {
    /// The hosts file: one worker a line (format below).
    #[arg(long, value_name = "FILE")]
    pub hosts: PathBuf,
    /// The coordinator's QUIC address, as the workers reach it.
    #[arg(long, value_name = "HOST:PORT", required_unless_present = "stop")]
    pub coordinator: Option<String>,
    /// The cluster's certificate folder (`embtune cluster init --out DIR`).
    #[arg(long, value_name = "DIR", required_unless_present = "stop")]
    pub cluster: Option<PathBuf>,
    /// The embtune binary to install (default: this one). It must run on the hosts: same CPU
    /// architecture, and a C library no older than the one it was built against.
    #[arg(long, value_name = "PATH")]
    pub binary: Option<PathBuf>,
    /// The folder on each host for the binary, certificates, logs and pid files; a relative
    /// path or ~/ is in the remote user's home.
    #[arg(long, value_name = "DIR", default_value = "~/embtune")]
    pub remote_dir: String,
    /// The ssh command and its options, e.g. "ssh -i ~/.ssh/lab -o StrictHostKeyChecking=accept-new".
    #[arg(long, value_name = "CMD", default_value = "ssh")]
    pub ssh: String,
    /// Seconds to wait for the launched workers to be healthy.
    #[arg(long, value_name = "SECS", default_value_t = 120.0)]
    pub timeout: f64,
    /// Stop the workers of the hosts file (by their pid files) instead of starting them.
    #[arg(long)]
    pub stop: bool,
    /// Print what would run on each host, and run nothing.
    #[arg(long)]
    pub dry_run: bool,
}

// ---------------------------------------------------------------------------------------------
// The hosts file (pure).

/// One line of a hosts file: one worker.
#[derive(Clone, Debug, PartialEq)]
pub struct HostLine {
    /// 1-based line number, for messages.
    pub line: usize,
    pub user: Option<String>,
    pub host: String,
    pub ssh_port: Option<u16>,
    /// The worker's QUIC port.
    pub port: u16,
    pub cores: Option<String>,
    pub memory: Option<u64>,
    pub name: String,
    pub advertise: Option<SocketAddr>,
}

impl HostLine {
    /// What ssh is given: `user@host` or `host`.
    pub fn destination(&self) -> String {
        match &self.user {
            Some(u) => format!("{u}@{}", self.host),
            None => self.host.clone(),
        }
    }

    /// The ssh login as written, for messages and grouping: `user@host:2222`.
    pub fn login(&self) -> String {
        let host = if self.host.contains(':') { format!("[{}]", self.host) } else { self.host.clone() };
        let dest = match &self.user {
            Some(u) => format!("{u}@{host}"),
            None => host,
        };
        match self.ssh_port {
            Some(p) => format!("{dest}:{p}"),
            None => dest,
        }
    }
}

/// Parses a hosts file (format in `embtune launch --help`). Errors name the line.
pub fn parse_hosts(text: &str) -> Result<Vec<HostLine>, String> {
    let mut out: Vec<HostLine> = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let n = i + 1;
        let line = raw.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let err = |m: String| format!("line {n}: {m}");
        let mut words = line.split_whitespace();
        let target = words.next().unwrap_or_default();
        let (user, hostport) = match target.rsplit_once('@') {
            Some((u, h)) => (Some(u.to_string()), h),
            None => (None, target),
        };
        if user.as_deref() == Some("") {
            return Err(err(format!("`{target}` has an empty user name before @")));
        }
        let (host, ssh_port) = split_host_port(hostport).map_err(err)?;
        let mut h = HostLine {
            line: n,
            user,
            host,
            ssh_port,
            port: DEFAULT_PORT,
            cores: None,
            memory: None,
            name: String::new(),
            advertise: None,
        };
        let mut seen = HashSet::new();
        let mut name = None;
        for kv in words {
            let Some((k, v)) = kv.split_once('=') else {
                return Err(err(format!(
                    "`{kv}` is not KEY=VALUE (keys: port, cores, memory, name, advertise; the host comes first)"
                )));
            };
            if !seen.insert(k) {
                return Err(err(format!("`{k}=` is given twice")));
            }
            match k {
                "port" => {
                    h.port = v
                        .parse::<u16>()
                        .ok()
                        .filter(|p| *p != 0)
                        .ok_or_else(|| err(format!("port `{v}` is not a port number (1-65535)")))?
                }
                "cores" => {
                    parse_cpu_list(v).map_err(err)?;
                    h.cores = Some(v.to_string());
                }
                "memory" => h.memory = Some(parse_size(v).map_err(err)?),
                "name" => {
                    if v.is_empty() || !v.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c)) {
                        return Err(err(format!(
                            "name `{v}`: use letters, digits, `.`, `_` and `-` (it names the log and pid files)"
                        )));
                    }
                    name = Some(v.to_string());
                }
                "advertise" => {
                    h.advertise = Some(v.parse().map_err(|_| {
                        err(format!("advertise `{v}` is not IP:PORT (e.g. 203.0.113.7:7701 or [2001:db8::7]:7701)"))
                    })?)
                }
                other => {
                    return Err(err(format!("unknown key `{other}` (keys: port, cores, memory, name, advertise)")));
                }
            }
        }
        h.name = name.unwrap_or_else(|| format!("{}-{}", h.host.replace(':', "_"), h.port));
        out.push(h);
    }
    let mut names: BTreeMap<&str, usize> = BTreeMap::new();
    let mut ports: BTreeMap<(&str, u16), usize> = BTreeMap::new();
    for h in &out {
        if let Some(first) = ports.insert((&h.host, h.port), h.line) {
            return Err(format!(
                "line {}: line {first} already runs a worker on {} port {}: give each worker of a host its own port=",
                h.line, h.host, h.port
            ));
        }
        if let Some(first) = names.insert(&h.name, h.line) {
            return Err(format!(
                "line {}: the name `{}` is already used on line {first}: names must be unique (give name=)",
                h.line, h.name
            ));
        }
    }
    Ok(out)
}

/// `host`, `host:22`, `[v6]`, `[v6]:22`, or a bare IPv6 address.
fn split_host_port(s: &str) -> Result<(String, Option<u16>), String> {
    let port = |p: &str| {
        p.parse::<u16>().ok().filter(|p| *p != 0).ok_or_else(|| format!("ssh port `{p}` in `{s}` is not a port number"))
    };
    if let Some(rest) = s.strip_prefix('[') {
        let (host, after) = rest.split_once(']').ok_or_else(|| format!("`{s}`: missing `]`"))?;
        return match after {
            "" => Ok((host.to_string(), None)),
            a => match a.strip_prefix(':') {
                Some(p) => Ok((host.to_string(), Some(port(p)?))),
                None => Err(format!("`{s}`: expected `:PORT` after `]`")),
            },
        };
    }
    let host_ok = |h: &str| !h.is_empty();
    match s.matches(':').count() {
        0 if host_ok(s) => Ok((s.to_string(), None)),
        1 => {
            let (h, p) = s.split_once(':').unwrap();
            if !host_ok(h) {
                return Err(format!("`{s}` has no host name"));
            }
            Ok((h.to_string(), Some(port(p)?)))
        }
        0 => Err("empty host".into()),
        _ => Ok((s.to_string(), None)), // a bare IPv6 address
    }
}

/// `64G`, `512M`, `1.5T`, `64GiB`, `64GB` (powers of 1024) or plain bytes.
/// [`parse_size`], where 0 is a valid answer too ("none", as for `--client-memory 0`).
pub fn parse_size_or_zero(s: &str) -> Result<u64, String> {
    if s.trim().trim_end_matches(|c: char| c.is_ascii_alphabetic()).parse::<f64>() == Ok(0.0) {
        return Ok(0);
    }
    parse_size(s)
}

pub fn parse_size(s: &str) -> Result<u64, String> {
    let bad = || format!("memory `{s}`: use bytes or a size like 64G, 512M, 1.5T");
    let t = s.trim();
    let t = t.strip_suffix(['B', 'b']).unwrap_or(t);
    let t = t.strip_suffix(['i', 'I']).unwrap_or(t);
    let (num, mult) = match t.chars().last() {
        Some(c) if c.is_ascii_alphabetic() => {
            let m: u64 = match c.to_ascii_uppercase() {
                'K' => 1 << 10,
                'M' => 1 << 20,
                'G' => 1 << 30,
                'T' => 1 << 40,
                _ => return Err(bad()),
            };
            (&t[..t.len() - 1], m)
        }
        _ => (t, 1),
    };
    let v: f64 = num.parse().map_err(|_| bad())?;
    if !v.is_finite() || v <= 0.0 || (mult == 1 && v.fract() != 0.0) {
        return Err(bad());
    }
    let b = v * mult as f64;
    if b >= u64::MAX as f64 {
        return Err(bad());
    }
    Ok(b.round() as u64)
}

// ---------------------------------------------------------------------------------------------
// Shell text (pure).

/// `s` as one word of a POSIX shell command line.
pub fn shell_quote(s: &str) -> String {
    if !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || "_./:=,@+-%".contains(c)) {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// Splits a command line like a shell does (quotes and backslashes; no expansions).
pub fn split_words(s: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            c if c.is_whitespace() => {
                if in_word {
                    out.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            '\'' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => cur.push(c),
                        None => return Err(format!("unmatched ' in `{s}`")),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(c @ ('"' | '\\' | '$' | '`')) => cur.push(c),
                            Some(c) => {
                                cur.push('\\');
                                cur.push(c);
                            }
                            None => return Err(format!("unmatched \" in `{s}`")),
                        },
                        Some(c) => cur.push(c),
                        None => return Err(format!("unmatched \" in `{s}`")),
                    }
                }
            }
            '\\' => {
                in_word = true;
                if let Some(c) = chars.next() {
                    cur.push(c);
                }
            }
            c => {
                in_word = true;
                cur.push(c);
            }
        }
    }
    if in_word {
        out.push(cur);
    }
    Ok(out)
}

/// The remote folder as a shell expression: `~` and `~/...` become `"$HOME"...`.
pub fn remote_dir_expr(dir: &str) -> Result<String, String> {
    let dir = dir.trim_end_matches('/');
    if dir.is_empty() {
        return Err("--remote-dir is empty".into());
    }
    Ok(match dir {
        "~" => "\"$HOME\"".into(),
        d => match d.strip_prefix("~/") {
            Some(rest) => format!("\"$HOME\"/{}", shell_quote(rest)),
            None if d.starts_with('~') => {
                return Err(format!("--remote-dir {d}: ~user is not supported; write the path"));
            }
            None => shell_quote(d),
        },
    })
}

/// Shell functions every remote script starts with. `ours PID` is true when PID is a live
/// embtune worker (not a recycled pid); `stop_pid PID` ends it, SIGKILL after 10 s.
const SH_FUNCS: &str = r#"ours() {
  [ -n "$1" ] && kill -0 "$1" 2>/dev/null || return 1
  cmd=$( (tr '\0' ' ' < "/proc/$1/cmdline") 2>/dev/null || ps -p "$1" -o args= 2>/dev/null )
  case "$cmd" in *embtune*worker*) return 0 ;; *) return 1 ;; esac
}
stop_pid() {
  kill "$1" 2>/dev/null
  i=0
  while kill -0 "$1" 2>/dev/null && [ "$i" -lt 100 ]; do sleep 0.1; i=$((i+1)); done
  if kill -0 "$1" 2>/dev/null; then kill -9 "$1" 2>/dev/null; echo "killed pid $1 (no exit 10 s after SIGTERM)"; else echo "stopped pid $1"; fi
}
"#;

/// Prints the remote architecture, then the SHA-256 of the installed binary (or `none`).
fn probe_script(dir: &str) -> String {
    format!(
        "D={dir}\nuname -m\nif [ -f \"$D/bin/embtune\" ]; then (sha256sum \"$D/bin/embtune\" 2>/dev/null || echo none) | cut -d' ' -f1; else echo none; fi\n"
    )
}

/// Exit status of the install script when the copy is short, and when the binary does not run.
const EXIT_SHORT_COPY: i32 = 3;
const EXIT_NO_RUN: i32 = 4;

/// Writes the certificates and, when `binary_len` is given, the binary read from stdin; then
/// checks that the binary runs there.
fn install_script(dir: &str, certs: &[(&str, String)], binary_len: Option<u64>) -> String {
    let mut s = format!(
        "set -e\numask 077\nD={dir}\nmkdir -p \"$D\"\nmkdir -p \"$D/bin\" \"$D/cluster\" \"$D/logs\" \"$D/run\"\n"
    );
    for (name, text) in certs {
        s += &format!("printf '%s' {} > \"$D/cluster/{name}\"\n", shell_quote(text));
    }
    if let Some(n) = binary_len {
        s += &format!(
            "t=\"$D/bin/.embtune.$$\"\ncat > \"$t\"\nn=$(wc -c < \"$t\" | tr -d ' ')\n\
             if [ \"$n\" != {n} ]; then rm -f \"$t\"; echo \"received $n of {n} bytes\" >&2; exit {EXIT_SHORT_COPY}; fi\n\
             chmod 755 \"$t\"\nmv -f \"$t\" \"$D/bin/embtune\"\n"
        );
    }
    s += &format!(
        "if ! out=$(\"$D/bin/embtune\" --version 2>&1); then echo \"$out\" >&2; exit {EXIT_NO_RUN}; fi\necho \"$out\"\n"
    );
    s
}

/// Starts one worker detached, restarting one already running under its name; prints its pid.
fn start_script(dir: &str, name: &str, worker_args: &[String]) -> String {
    let args: Vec<String> = worker_args.iter().map(|a| shell_quote(a)).collect();
    format!(
        "D={dir}\ncd \"$D\" || exit 1\n{SH_FUNCS}pidf=run/{name}.pid\n\
         if [ -f \"$pidf\" ]; then old=$(cat \"$pidf\"); if ours \"$old\"; then echo \"restarting: $(stop_pid \"$old\")\"; fi; rm -f \"$pidf\"; fi\n\
         if [ -f logs/{name}.log ]; then mv -f logs/{name}.log logs/{name}.log.1; fi\n\
         S=; if command -v setsid >/dev/null 2>&1; then S=setsid; fi\n\
         NO_COLOR=1 nohup $S sh -c 'echo $$ > \"$0\"; exec \"$@\"' \"$pidf\" ./bin/embtune -v worker {} > logs/{name}.log 2>&1 < /dev/null &\n\
         i=0; while [ ! -s \"$pidf\" ] && [ \"$i\" -lt 50 ]; do sleep 0.1; i=$((i+1)); done\n\
         echo \"pid $(cat \"$pidf\" 2>/dev/null)\"\n",
        args.join(" ")
    )
}

/// Prints `running` or `exited`, a `---` line, then the tail of the worker's log.
fn check_script(dir: &str, name: &str) -> String {
    format!(
        "D={dir}\ncd \"$D\" 2>/dev/null || {{ echo exited; echo ---; echo \"(no folder $D)\"; exit 0; }}\n{SH_FUNCS}\
         if ours \"$(cat run/{name}.pid 2>/dev/null)\"; then echo running; else echo exited; fi\necho ---\n\
         tail -n 30 logs/{name}.log 2>/dev/null || echo \"(no log at $D/logs/{name}.log)\"\n"
    )
}

/// Stops one worker by its pid file; prints what it did.
fn stop_script(dir: &str, name: &str) -> String {
    format!(
        "D={dir}\ncd \"$D\" 2>/dev/null || {{ echo \"not running (no folder $D)\"; exit 0; }}\n{SH_FUNCS}pidf=run/{name}.pid\n\
         if [ ! -f \"$pidf\" ]; then echo \"not running (no pid file)\"; exit 0; fi\n\
         pid=$(cat \"$pidf\")\n\
         if ours \"$pid\"; then stop_pid \"$pid\"; else echo \"not running (stale pid file)\"; fi\nrm -f \"$pidf\"\n"
    )
}

/// The `embtune worker` arguments for a line.
fn worker_args(h: &HostLine, coordinator: SocketAddr, advertise: Option<SocketAddr>) -> Vec<String> {
    let mut v: Vec<String> = vec!["--listen".into(), format!("0.0.0.0:{}", h.port)];
    if h.host.contains(':') || advertise.is_some_and(|a| a.is_ipv6()) {
        v[1] = format!("[::]:{}", h.port);
    }
    if let Some(a) = advertise {
        v.extend(["--advertise".into(), a.to_string()]);
    }
    v.extend(["--coordinator".into(), coordinator.to_string(), "--cluster".into(), "cluster".into()]);
    if let Some(c) = &h.cores {
        v.extend(["--cores".into(), c.clone()]);
    }
    if let Some(m) = h.memory {
        v.extend(["--memory-limit".into(), m.to_string()]);
    }
    v.extend(["--name".into(), h.name.clone()]);
    v
}

// ---------------------------------------------------------------------------------------------
// Running ssh.

struct Ssh {
    argv: Vec<String>,
}

impl Ssh {
    fn new(cmd: &str) -> Result<Ssh> {
        let argv = split_words(cmd).map_err(|e| anyhow!("--ssh: {e}"))?;
        if argv.is_empty() {
            bail!("--ssh is empty: give the ssh command, e.g. --ssh ssh");
        }
        Ok(Ssh { argv })
    }

    fn args(&self, h: &HostLine) -> Vec<String> {
        let mut v: Vec<String> = self.argv[1..].to_vec();
        v.extend(["-o", "BatchMode=yes", "-o", "ConnectTimeout=10"].map(String::from));
        if let Some(p) = h.ssh_port {
            v.extend(["-p".into(), p.to_string()]);
        }
        v.push(h.destination());
        v
    }

    /// Runs `script` with `sh` on the host of `h`, stdin from `stdin` (or nothing).
    fn run(&self, h: &HostLine, script: &str, stdin: Option<&Path>) -> Result<Output> {
        let input = match stdin {
            Some(p) => Stdio::from(std::fs::File::open(p).with_context(|| format!("opening {}", p.display()))?),
            None => Stdio::null(),
        };
        Command::new(&self.argv[0])
            .args(self.args(h))
            .arg(format!("sh -c {}", shell_quote(script)))
            .stdin(input)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .output()
            .map_err(|e| {
                if e.kind() == std::io::ErrorKind::NotFound {
                    anyhow!(
                        "cannot run `{}`: not found; install the OpenSSH client (Debian/Ubuntu: apt-get install openssh-client) or pass --ssh",
                        self.argv[0]
                    )
                } else {
                    anyhow!("cannot run `{}`: {e}", self.argv[0])
                }
            })
    }

    /// The command line `run` executes, with the script shown apart, for --dry-run.
    fn show(&self, h: &HostLine, stdin: Option<&Path>) -> String {
        let mut words: Vec<String> =
            std::iter::once(self.argv[0].clone()).chain(self.args(h)).map(|w| shell_quote(&w)).collect();
        words.push("'sh -c SCRIPT'".into());
        if let Some(p) = stdin {
            words.push(format!("< {}", shell_quote(&p.display().to_string())));
        }
        words.join(" ")
    }

    /// The ssh invocation a person can paste to check the connection.
    fn try_line(&self, h: &HostLine) -> String {
        let mut words: Vec<String> =
            std::iter::once(self.argv[0].clone()).chain(self.args(h)).map(|w| shell_quote(&w)).collect();
        words.push("true".into());
        words.join(" ")
    }

    /// Turns a failed run into an error that says what to do.
    fn check(&self, h: &HostLine, what: &str, out: Output) -> Result<String> {
        let stderr = tail(&String::from_utf8_lossy(&out.stderr), 15);
        match out.status.code() {
            Some(0) => Ok(String::from_utf8_lossy(&out.stdout).into_owned()),
            Some(255) => bail!(
                "{what}: cannot reach {} over ssh: {}\n  check that this works without a prompt: {}\n  \
                 (launch runs ssh with BatchMode=yes: use a key, ssh-agent or ~/.ssh/config, or pass --ssh \"ssh -i KEY\")",
                h.login(),
                stderr.trim(),
                self.try_line(h)
            ),
            code => bail!(
                "{what} on {} failed ({}): {}",
                h.login(),
                code.map_or("killed by a signal".into(), |c| format!("exit {c}")),
                stderr.trim()
            ),
        }
    }
}

fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

fn indent(s: &str) -> String {
    s.lines().map(|l| format!("    {l}\n")).collect()
}

// ---------------------------------------------------------------------------------------------
// Local facts.

/// The CPU architecture of an ELF binary, in `uname -m` terms.
fn elf_arch(path: &Path) -> Option<&'static str> {
    use std::io::Read;
    let mut head = [0u8; 20];
    std::fs::File::open(path).ok()?.read_exact(&mut head).ok()?;
    if &head[..4] != b"\x7fELF" {
        return None;
    }
    let machine =
        if head[5] == 1 { u16::from_le_bytes([head[18], head[19]]) } else { u16::from_be_bytes([head[18], head[19]]) };
    Some(match machine {
        0x3e => "x86_64",
        0xb7 => "aarch64",
        0xf3 => "riscv64",
        0x15 => "ppc64le",
        0x16 => "s390x",
        _ => return None,
    })
}

fn sha256(path: &Path) -> Option<String> {
    let out = Command::new("sha256sum").arg(path).stderr(Stdio::null()).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).split_whitespace().next().unwrap_or("").to_string())
}

fn resolve(host: &str, port: u16) -> Option<SocketAddr> {
    let all: Vec<SocketAddr> = (host, port).to_socket_addrs().ok()?.collect();
    all.iter().find(|a| a.is_ipv4()).or(all.first()).copied()
}

/// The address the coordinator should dial for `h`: `advertise=`, else the host resolved here,
/// else the host name ssh would use (`ssh -G`) resolved here.
fn advertise_addr(ssh: &Ssh, h: &HostLine) -> Option<SocketAddr> {
    if let Some(a) = h.advertise {
        return Some(a);
    }
    if let Some(a) = resolve(&h.host, h.port) {
        return Some(a);
    }
    let out = Command::new(&ssh.argv[0]).args(&ssh.argv[1..]).arg("-G").arg(h.destination()).output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let real = text.lines().find_map(|l| l.strip_prefix("hostname "))?.trim();
    resolve(real, h.port)
}

// ---------------------------------------------------------------------------------------------
// The command.

pub fn run(a: LaunchArgs) -> Result<()> {
    let text =
        std::fs::read_to_string(&a.hosts).with_context(|| format!("reading the hosts file {}", a.hosts.display()))?;
    let hosts = parse_hosts(&text).map_err(|e| anyhow!("{}: {e}", a.hosts.display()))?;
    if hosts.is_empty() {
        bail!(
            "{} lists no hosts: write one `[user@]host[:sshport] [port=7701] [cores=0-7] [memory=64G] [name=w1]` a line (see embtune launch --help)",
            a.hosts.display()
        );
    }
    let ssh = Ssh::new(&a.ssh)?;
    let dir = remote_dir_expr(&a.remote_dir).map_err(anyhow::Error::msg)?;
    if a.stop { stop(&a, &ssh, &dir, &hosts) } else { launch(&a, &ssh, &dir, &hosts) }
}

/// Lines grouped by ssh login, in file order: one install per login.
fn by_login(hosts: &[HostLine]) -> Vec<(String, Vec<&HostLine>)> {
    let mut groups: Vec<(String, Vec<&HostLine>)> = Vec::new();
    for h in hosts {
        match groups.iter_mut().find(|(l, _)| *l == h.login()) {
            Some((_, v)) => v.push(h),
            None => groups.push((h.login(), vec![h])),
        }
    }
    groups
}

struct Launched<'a> {
    h: &'a HostLine,
    advertise: Option<SocketAddr>,
    pid: String,
    started: Instant,
    /// The coordinator already listed a healthy worker at this address before the launch: a
    /// previous run's, which the coordinator takes a moment to notice gone.
    stale: bool,
}

/// Whether `w` is the coordinator's record of `l`.
fn is_slot(w: &WorkerInfo, l: &Launched) -> bool {
    l.advertise.map_or(w.name == l.h.name, |ad| w.addr == ad.to_string())
}

fn launch(a: &LaunchArgs, ssh: &Ssh, dir: &str, hosts: &[HostLine]) -> Result<()> {
    let cluster = a.cluster.as_ref().expect("clap requires --cluster without --stop");
    let coord_text = a.coordinator.as_ref().expect("clap requires --coordinator without --stop");
    // The workers take an IP:PORT: resolve a host name here (IPv4 first).
    let coordinator = coord_text
        .rsplit_once(':')
        .and_then(|(h, p)| resolve(h.trim_start_matches('[').trim_end_matches(']'), p.parse().ok()?))
        .ok_or_else(|| anyhow!("--coordinator {coord_text}: not HOST:PORT, or the host name does not resolve here"))?;
    if coordinator.ip().is_unspecified() {
        bail!("--coordinator {coordinator}: give the address the workers dial, not 0.0.0.0");
    }
    let local = |h: &HostLine| resolve(&h.host, 1).is_some_and(|x| x.ip().is_loopback());
    if coordinator.ip().is_loopback() && !hosts.iter().all(local) {
        eprintln!(
            "warning: --coordinator {coordinator} is a loopback address: workers on other machines cannot reach it; give the coordinator's network address"
        );
    }
    let mut certs_text = Vec::new();
    for f in [certs::CA_CERT, certs::NODE_CERT, certs::NODE_KEY] {
        let p = cluster.join(f);
        let t = std::fs::read_to_string(&p).with_context(|| {
            format!(
                "reading {}: is {} a cluster folder? create one with `embtune cluster init --out {}`",
                p.display(),
                cluster.display(),
                cluster.display()
            )
        })?;
        certs_text.push((f, t));
    }
    let binary = match &a.binary {
        Some(b) => b.clone(),
        None => std::env::current_exe().context("locating the embtune binary; pass --binary")?,
    };
    let binary_len =
        std::fs::metadata(&binary).with_context(|| format!("reading the binary {}", binary.display()))?.len();
    let groups = by_login(hosts);
    for (login, ws) in &groups {
        if ws.len() > 1 && ws.iter().any(|h| h.memory.is_none() || h.cores.is_none()) {
            eprintln!(
                "warning: {login} runs {} workers, not all with cores= and memory=: each may use every CPU and 85% of the memory",
                ws.len()
            );
        }
    }
    let advertise: Vec<Option<SocketAddr>> = hosts.iter().map(|h| advertise_addr(ssh, h)).collect();
    for (h, ad) in hosts.iter().zip(&advertise) {
        if ad.is_none() {
            eprintln!(
                "warning: {} (line {}) does not resolve here; the worker will advertise the address it routes to the coordinator from (give advertise=IP:PORT to choose)",
                h.host, h.line
            );
        }
    }

    if a.dry_run {
        let redacted: Vec<(&str, String)> =
            certs_text.iter().map(|(f, _)| (*f, format!("<contents of {}>", cluster.join(f).display()))).collect();
        println!(
            "# coordinator {coordinator}, binary {} ({}), remote folder {}",
            binary.display(),
            ui::bytes(binary_len),
            a.remote_dir
        );
        for (login, ws) in &groups {
            println!("\n# {login}: check the architecture and the installed binary");
            println!("{}\n  SCRIPT:\n{}", ssh.show(ws[0], None), indent(&probe_script(dir)));
            println!("# {login}: install the certificates and (when it differs) the binary");
            println!(
                "{}\n  SCRIPT:\n{}",
                ssh.show(ws[0], Some(&binary)),
                indent(&install_script(dir, &redacted, Some(binary_len)))
            );
            for h in ws {
                let i = hosts.iter().position(|x| std::ptr::eq(x, *h)).unwrap();
                println!("# {login}: start worker {}", h.name);
                let script = start_script(dir, &h.name, &worker_args(h, coordinator, advertise[i]));
                println!("{}\n  SCRIPT:\n{}", ssh.show(h, None), indent(&script));
            }
        }
        println!("# then wait until the coordinator at {coordinator} reports {} workers healthy", hosts.len());
        return Ok(());
    }

    let rt = runtime()?;
    let client = rt
        .block_on(CoordinatorClient::connect(coordinator, cluster))
        .with_context(|| format!("connecting to the coordinator at {coordinator} from here: is it running (embtune coordinator --listen 0.0.0.0:{} --cluster {} ...), and is {} its cluster folder?", coordinator.port(), cluster.display(), cluster.display()))?;

    let before = rt.block_on(client.status()).context("asking the coordinator for its workers")?;
    let local_arch = elf_arch(&binary);
    let local_sum = sha256(&binary);
    let t0 = Instant::now();
    let results: Vec<Result<Vec<Result<Launched>>>> = std::thread::scope(|s| {
        let handles: Vec<_> = groups
            .iter()
            .map(|(login, ws)| {
                let (certs_text, binary, advertise, local_sum, before) = (&certs_text, &binary, &advertise, &local_sum, &before);
                s.spawn(move || -> Result<Vec<Result<Launched>>> {
                    let first = ws[0];
                    let probe = ssh.check(first, "checking the host", ssh.run(first, &probe_script(dir), None)?)?;
                    let mut lines = probe.lines();
                    let (arch, sum) = (lines.next().unwrap_or("").trim(), lines.next().unwrap_or("none").trim());
                    if let Some(la) = local_arch
                        && !arch.is_empty()
                        && arch != la
                        && !(arch == "arm64" && la == "aarch64")
                    {
                        bail!(
                            "{login} is {arch} but {} is built for {la}: build embtune for {arch} (cargo build --release --target {arch}-unknown-linux-gnu) and pass --binary",
                            binary.display()
                        );
                    }
                    let copy = local_sum.as_deref() != Some(sum);
                    if copy {
                        eprintln!("{login}: copying {} ({}) to {}", binary.display(), ui::bytes(binary_len), a.remote_dir);
                    } else {
                        eprintln!("{login}: the binary there is already this one");
                    }
                    let script = install_script(dir, certs_text, copy.then_some(binary_len));
                    let out = ssh.run(first, &script, copy.then_some(binary.as_path()))?;
                    match out.status.code() {
                        Some(EXIT_SHORT_COPY) => bail!(
                            "copying the binary to {login}:{} failed: {}; is the disk full? (df -h there), or choose another --remote-dir",
                            a.remote_dir,
                            String::from_utf8_lossy(&out.stderr).trim()
                        ),
                        Some(EXIT_NO_RUN) => bail!(
                            "{} does not run on {login}: {}\n  build embtune on (or for) a system no newer than that host's, or statically (--target x86_64-unknown-linux-musl), and pass --binary",
                            binary.display(),
                            tail(&String::from_utf8_lossy(&out.stderr), 5).trim()
                        ),
                        _ => {
                            ssh.check(first, &format!("installing embtune and the certificates in {}", a.remote_dir), out)
                                .map_err(|e| {
                                    anyhow!("{e:#}\n  check that the folder is writable and the disk has room, or choose another --remote-dir")
                                })?;
                        }
                    }
                    // Start the host's workers side by side (a restart waits for the old process).
                    let started: Vec<Result<Launched>> = std::thread::scope(|sc| {
                        let hs: Vec<_> = ws
                            .iter()
                            .map(|h| {
                                sc.spawn(move || -> Result<Launched> {
                                    let i = hosts.iter().position(|x| std::ptr::eq(x, *h)).unwrap();
                                    let script = start_script(dir, &h.name, &worker_args(h, coordinator, advertise[i]));
                                    let out =
                                        ssh.check(h, &format!("starting worker {}", h.name), ssh.run(h, &script, None)?)?;
                                    for l in out.lines().filter(|l| l.starts_with("restarting")) {
                                        eprintln!("{login}: {}: {l}", h.name);
                                    }
                                    let pid =
                                        out.lines().find_map(|l| l.strip_prefix("pid ")).unwrap_or("").trim().to_string();
                                    eprintln!(
                                        "{login}: started {} on port {} (pid {}), log {}/logs/{}.log",
                                        h.name,
                                        h.port,
                                        if pid.is_empty() { "?" } else { &pid },
                                        a.remote_dir,
                                        h.name
                                    );
                                    let mut l =
                                        Launched { h, advertise: advertise[i], pid, started: Instant::now(), stale: false };
                                    l.stale = before.workers.iter().any(|w| w.healthy && is_slot(w, &l));
                                    Ok(l)
                                })
                            })
                            .collect();
                        hs.into_iter().map(|j| j.join().unwrap_or_else(|_| Err(anyhow!("a start thread panicked")))).collect()
                    });
                    Ok(started)
                })
            })
            .collect();
        handles.into_iter().map(|j| j.join().unwrap_or_else(|_| Err(anyhow!("a launch thread panicked")))).collect()
    });
    let mut launched = Vec::new();
    let mut errors = Vec::new();
    for ((login, _), r) in groups.iter().zip(results) {
        match r {
            Ok(v) => {
                for w in v {
                    match w {
                        Ok(l) => launched.push(l),
                        Err(e) => errors.push(format!("{login}: {e:#}")),
                    }
                }
            }
            Err(e) => errors.push(format!("{login}: {e:#}")),
        }
    }
    if !errors.is_empty() {
        let more = if launched.is_empty() {
            String::new()
        } else {
            format!(
                "\n{} workers did start and keep running; stop them with `embtune launch --stop --hosts {}`",
                launched.len(),
                a.hosts.display()
            )
        };
        bail!("launching failed:\n{}{more}", errors.join("\n"));
    }

    // Wait for the coordinator to report each of them healthy; look at the hosts now and then.
    let timeout = Duration::from_secs_f64(a.timeout.max(1.0));
    // A stale record looks healthy until the coordinator misses the old process's heartbeats.
    let healthy = |w: &WorkerInfo, l: &Launched| {
        w.healthy && is_slot(w, l) && (!l.stale || l.started.elapsed() > Duration::from_secs(3))
    };
    let mut last_check = Instant::now();
    let status = loop {
        let s = rt.block_on(client.status()).context("asking the coordinator for its workers")?;
        let pending: Vec<&Launched> = launched.iter().filter(|l| !s.workers.iter().any(|w| healthy(w, l))).collect();
        if pending.is_empty() {
            break s;
        }
        let late = t0.elapsed() > timeout;
        if late || last_check.elapsed() > Duration::from_secs(5) {
            last_check = Instant::now();
            let checks: Vec<(&Launched, Result<String>)> = std::thread::scope(|sc| {
                let hs: Vec<_> = pending
                    .iter()
                    .map(|l| {
                        (
                            *l,
                            sc.spawn(|| {
                                ssh.check(
                                    l.h,
                                    "checking the worker",
                                    ssh.run(l.h, &check_script(dir, &l.h.name), None)?,
                                )
                            }),
                        )
                    })
                    .collect();
                hs.into_iter().map(|(l, j)| (l, j.join().unwrap_or_else(|_| Err(anyhow!("panicked"))))).collect()
            });
            let mut bad = Vec::new();
            for (l, r) in checks {
                let text = match r {
                    Ok(t) => t,
                    Err(e) => format!("exited\n---\n(could not look: {e:#})"),
                };
                let (state, log) = text.split_once("---\n").unwrap_or((&text, ""));
                let exited = state.trim() == "exited";
                if !(exited || late) {
                    continue;
                }
                let registered = s.workers.iter().find(|w| is_slot(w, l));
                let why = if exited {
                    "exited".to_string()
                } else if let Some(w) = registered {
                    format!(
                        "is running and registered, but the coordinator cannot reach it at {}: open UDP port {} on {} to the coordinator, or give advertise=IP:PORT",
                        w.addr, l.h.port, l.h.host
                    )
                } else {
                    format!(
                        "is running (pid {}) but has not registered within {timeout:?}: can {} reach the coordinator at {coordinator} over UDP? (a firewall, or --coordinator given as an address only this machine uses)",
                        l.pid, l.h.host
                    )
                };
                bad.push(format!(
                    "worker {} on {} (line {}) {why}\n  last lines of {}/logs/{}.log:\n{}",
                    l.h.name,
                    l.h.login(),
                    l.h.line,
                    a.remote_dir,
                    l.h.name,
                    indent(log.trim_end())
                ));
            }
            if !bad.is_empty() {
                bail!(
                    "{} of {} launched workers are not serving:\n{}\nfix the cause and run launch again (it restarts the workers), or stop them with `embtune launch --stop --hosts {}`",
                    bad.len(),
                    launched.len(),
                    bad.join("\n"),
                    a.hosts.display()
                );
            }
        }
        std::thread::sleep(Duration::from_millis(250));
    };
    let mut t = ui::table(&["id", "name", "address", "healthy", "cores", "memory"]);
    for l in &launched {
        if let Some(w) = status.workers.iter().find(|w| healthy(w, l)) {
            t.add_row(vec![
                w.id.to_string(),
                w.name.clone(),
                w.addr.clone(),
                "yes".into(),
                w.cores.to_string(),
                ui::bytes(w.memory_bytes),
            ]);
        }
    }
    println!("{t}");
    eprintln!(
        "{} workers healthy after {:.1}s; {} healthy in all. Next:\n  embtune cluster status --coordinator {coordinator} --cluster {}\n  embtune launch --stop --hosts {}",
        launched.len(),
        t0.elapsed().as_secs_f64(),
        status.workers.iter().filter(|w| w.healthy).count(),
        cluster.display(),
        a.hosts.display()
    );
    Ok(())
}

fn stop(a: &LaunchArgs, ssh: &Ssh, dir: &str, hosts: &[HostLine]) -> Result<()> {
    if a.dry_run {
        for h in hosts {
            println!("# {}: stop worker {}", h.login(), h.name);
            println!("{}\n  SCRIPT:\n{}", ssh.show(h, None), indent(&stop_script(dir, &h.name)));
        }
        return Ok(());
    }
    let results: Vec<(&HostLine, Result<String>)> = std::thread::scope(|s| {
        let hs: Vec<_> = hosts
            .iter()
            .map(|h| {
                (
                    h,
                    s.spawn(move || {
                        ssh.check(
                            h,
                            &format!("stopping worker {}", h.name),
                            ssh.run(h, &stop_script(dir, &h.name), None)?,
                        )
                    }),
                )
            })
            .collect();
        hs.into_iter().map(|(h, j)| (h, j.join().unwrap_or_else(|_| Err(anyhow!("a stop thread panicked"))))).collect()
    });
    let mut errors = Vec::new();
    for (h, r) in results {
        match r {
            Ok(out) => println!("{} on {}: {}", h.name, h.login(), out.trim().replace('\n', "; ")),
            Err(e) => errors.push(format!("{} on {}: {e:#}", h.name, h.login())),
        }
    }
    if !errors.is_empty() {
        bail!("could not stop {} of {} workers:\n{}", errors.len(), hosts.len(), errors.join("\n"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_hosts_file_parses() {
        let text = "\
# the lab
ubuntu@gpu1 port=7701 cores=0-15 memory=100G name=gpu1-a   # first socket
ubuntu@gpu1 port=7702 cores=16-31 memory=100G name=gpu1-b

gpu2:2222 cores=0-7
root@[2001:db8::7]:22 memory=512M advertise=[2001:db8::7]:7701
fe80::1
  10.0.0.9   memory=1.5T port=9000
";
        let h = parse_hosts(text).unwrap();
        assert_eq!(h.len(), 6);
        assert_eq!(
            h[0],
            HostLine {
                line: 2,
                user: Some("ubuntu".into()),
                host: "gpu1".into(),
                ssh_port: None,
                port: 7701,
                cores: Some("0-15".into()),
                memory: Some(100 << 30),
                name: "gpu1-a".into(),
                advertise: None,
            }
        );
        assert_eq!(h[1].port, 7702);
        assert_eq!(h[1].line, 3);
        assert_eq!((h[2].host.as_str(), h[2].ssh_port, h[2].port), ("gpu2", Some(2222), DEFAULT_PORT));
        assert_eq!(h[2].name, "gpu2-7701");
        assert_eq!(h[2].user, None);
        assert_eq!(h[3].host, "2001:db8::7");
        assert_eq!(h[3].ssh_port, Some(22));
        assert_eq!(h[3].memory, Some(512 << 20));
        assert_eq!(h[3].advertise, Some("[2001:db8::7]:7701".parse().unwrap()));
        assert_eq!(h[3].name, "2001_db8__7-7701");
        assert_eq!(h[3].login(), "root@[2001:db8::7]:22");
        assert_eq!(h[3].destination(), "root@2001:db8::7");
        assert_eq!((h[4].host.as_str(), h[4].ssh_port), ("fe80::1", None));
        assert_eq!(h[5].memory, Some(((1u64 << 40) as f64 * 1.5) as u64));
        assert_eq!(h[5].port, 9000);
        assert_eq!(h[0].login(), "ubuntu@gpu1");
        assert_eq!(h[2].login(), "gpu2:2222");
    }

    #[test]
    fn empty_and_comment_only_files_list_nothing() {
        assert!(parse_hosts("").unwrap().is_empty());
        assert!(parse_hosts("# nothing\n   \n\t# here\n").unwrap().is_empty());
    }

    #[test]
    fn bad_lines_name_the_line_and_the_fix() {
        let cases = [
            ("h1 port=0", "line 1", "port number"),
            ("h1 port=x", "line 1", "port number"),
            ("h1\nh2 cores=3-1", "line 2", "CPU list"),
            ("h1 memory=12Q", "line 1", "64G"),
            ("h1 memory=-1G", "line 1", "64G"),
            ("h1 memory=1.5", "line 1", "64G"),
            ("h1 name=a/b", "line 1", "letters"),
            ("h1 colour=blue", "line 1", "unknown key `colour`"),
            ("h1 8", "line 1", "KEY=VALUE"),
            ("h1 port=1 port=2", "line 1", "twice"),
            ("@h1", "line 1", "empty user"),
            ("h1:ssh", "line 1", "ssh port"),
            ("[::1", "line 1", "missing `]`"),
            ("h1 advertise=h1:7701", "line 1", "IP:PORT"),
            ("h1 name=a\nh2 name=a", "line 2", "already used on line 1"),
            ("h1\n# c\nu@h1", "line 3", "its own port="),
        ];
        for (text, line, hint) in cases {
            let e = parse_hosts(text).unwrap_err();
            assert!(e.starts_with(line) && e.contains(hint), "{text:?}: {e}");
        }
        // Two workers on one host are fine with two ports.
        assert_eq!(parse_hosts("h1\nh1 port=7702").unwrap().len(), 2);
    }

    #[test]
    fn sizes_parse() {
        assert_eq!(parse_size("1048576"), Ok(1 << 20));
        assert_eq!(parse_size("64G"), Ok(64 << 30));
        assert_eq!(parse_size("64g"), Ok(64 << 30));
        assert_eq!(parse_size("64GiB"), Ok(64 << 30));
        assert_eq!(parse_size("64GB"), Ok(64 << 30));
        assert_eq!(parse_size("2K"), Ok(2048));
        assert_eq!(parse_size("0.5M"), Ok(512 << 10));
        assert!(parse_size("0").is_err());
        assert!(parse_size("G").is_err());
        assert!(parse_size("1e400").is_err());
        // Client memory may be none at all.
        assert_eq!(parse_size_or_zero("0"), Ok(0));
        assert_eq!(parse_size_or_zero("0M"), Ok(0));
        assert_eq!(parse_size_or_zero("256M"), Ok(256 << 20));
        assert!(parse_size_or_zero("-1").is_err());
    }

    #[test]
    fn shell_words_quote_and_split_back() {
        for s in ["plain", "with space", "it's", "", "$HOME", "a\"b", "new\nline", "-----BEGIN X-----"] {
            let q = shell_quote(s);
            assert_eq!(split_words(&q).unwrap(), vec![s.to_string()], "{s:?} -> {q}");
        }
        assert_eq!(shell_quote("0.0.0.0:7701"), "0.0.0.0:7701");
        assert_eq!(
            split_words(r#"ssh -i "/my keys/id" -o 'UserKnownHostsFile=/dev/null'  a\ b"#).unwrap(),
            ["ssh", "-i", "/my keys/id", "-o", "UserKnownHostsFile=/dev/null", "a b"]
        );
        assert!(split_words("ssh 'open").is_err());
        assert!(split_words("").unwrap().is_empty());
    }

    #[test]
    fn remote_dirs_expand_home_on_the_host() {
        assert_eq!(remote_dir_expr("~/embtune").unwrap(), "\"$HOME\"/embtune");
        assert_eq!(remote_dir_expr("~").unwrap(), "\"$HOME\"");
        assert_eq!(remote_dir_expr("/opt/emb tune/").unwrap(), "'/opt/emb tune'");
        assert_eq!(remote_dir_expr("embtune").unwrap(), "embtune");
        assert!(remote_dir_expr("~bob/x").is_err());
        assert!(remote_dir_expr("").is_err());
    }

    #[test]
    fn worker_command_lines_carry_every_setting() {
        let h = &parse_hosts("u@10.0.0.5 port=7702 cores=0-3 memory=1G name=w3").unwrap()[0];
        let c: SocketAddr = "10.0.0.1:7700".parse().unwrap();
        let v = worker_args(h, c, Some("10.0.0.5:7702".parse().unwrap()));
        assert_eq!(
            v.join(" "),
            "--listen 0.0.0.0:7702 --advertise 10.0.0.5:7702 --coordinator 10.0.0.1:7700 --cluster cluster \
             --cores 0-3 --memory-limit 1073741824 --name w3"
        );
        let h = &parse_hosts("fe80::1").unwrap()[0];
        let v = worker_args(h, c, None);
        assert_eq!(v[1], "[::]:7701");
        assert!(!v.contains(&"--advertise".to_string()));
    }

    #[test]
    fn scripts_are_valid_sh() {
        // `sh -n` parses without running.
        let dir = remote_dir_expr("~/embtune").unwrap();
        let certs = [("ca.crt", "-----BEGIN CERTIFICATE-----\nab'c\n-----END CERTIFICATE-----\n".to_string())];
        let args = worker_args(&parse_hosts("h").unwrap()[0], "10.0.0.1:7700".parse().unwrap(), None);
        for s in [
            probe_script(&dir),
            install_script(&dir, &certs, Some(10)),
            install_script(&dir, &certs, None),
            start_script(&dir, "w1", &args),
            check_script(&dir, "w1"),
            stop_script(&dir, "w1"),
        ] {
            let out = Command::new("sh").arg("-n").arg("-c").arg(&s).output().unwrap();
            assert!(out.status.success(), "{s}\n{}", String::from_utf8_lossy(&out.stderr));
        }
    }

    #[test]
    fn elf_headers_name_the_architecture() {
        let exe = std::env::current_exe().unwrap();
        assert_eq!(elf_arch(&exe), Some(std::env::consts::ARCH));
        assert_eq!(elf_arch(Path::new("/nonexistent")), None);
    }
}
