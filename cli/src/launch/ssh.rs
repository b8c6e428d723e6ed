//! Running ssh for `embtune launch`, and the facts about this machine's binary and the hosts'
//! addresses that deciding what to run needs.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::Path;
use std::process::{Command, Output, Stdio};

use anyhow::{Context, Result, anyhow, bail};

use super::hosts::HostLine;
use super::shell::{shell_quote, split_words};

pub(super) struct Ssh {
    argv: Vec<String>,
}

impl Ssh {
    pub(super) fn new(cmd: &str) -> Result<Ssh> {
        let argv = split_words(cmd).map_err(|e| anyhow!("--ssh: {e}"))?;
        if argv.is_empty() {
            bail!("--ssh is empty: give the ssh command, e.g. --ssh ssh");
        }
        Ok(Ssh { argv })
    }

    pub(super) fn args(&self, h: &HostLine) -> Vec<String> {
        let mut v: Vec<String> = self.argv[1..].to_vec();
        v.extend(["-o", "BatchMode=yes", "-o", "ConnectTimeout=10"].map(String::from));
        if let Some(p) = h.ssh_port {
            v.extend(["-p".into(), p.to_string()]);
        }
        v.push(h.destination());
        v
    }

    /// Runs `script` with `sh` on the host of `h`, stdin from `stdin` (or nothing).
    pub(super) fn run(&self, h: &HostLine, script: &str, stdin: Option<&Path>) -> Result<Output> {
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
    pub(super) fn show(&self, h: &HostLine, stdin: Option<&Path>) -> String {
        let mut words: Vec<String> =
            std::iter::once(self.argv[0].clone()).chain(self.args(h)).map(|w| shell_quote(&w)).collect();
        words.push("'sh -c SCRIPT'".into());
        if let Some(p) = stdin {
            words.push(format!("< {}", shell_quote(&p.display().to_string())));
        }
        words.join(" ")
    }

    /// The ssh invocation a person can paste to check the connection.
    pub(super) fn try_line(&self, h: &HostLine) -> String {
        let mut words: Vec<String> =
            std::iter::once(self.argv[0].clone()).chain(self.args(h)).map(|w| shell_quote(&w)).collect();
        words.push("true".into());
        words.join(" ")
    }

    /// Turns a failed run into an error that says what to do.
    pub(super) fn check(&self, h: &HostLine, what: &str, out: Output) -> Result<String> {
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

pub(super) fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

pub(super) fn indent(s: &str) -> String {
    s.lines().map(|l| format!("    {l}\n")).collect()
}

// ---------------------------------------------------------------------------------------------
// Local facts.

/// The CPU architecture of an ELF binary, in `uname -m` terms.
pub(super) fn elf_arch(path: &Path) -> Option<&'static str> {
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

pub(super) fn sha256(path: &Path) -> Option<String> {
    let out = Command::new("sha256sum").arg(path).stderr(Stdio::null()).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).split_whitespace().next().unwrap_or("").to_string())
}

pub(super) fn resolve(host: &str, port: u16) -> Option<SocketAddr> {
    let all: Vec<SocketAddr> = (host, port).to_socket_addrs().ok()?.collect();
    all.iter().find(|a| a.is_ipv4()).or(all.first()).copied()
}

/// The address the coordinator should dial for `h`: `advertise=`, else the host resolved here,
/// else the host name ssh would use (`ssh -G`) resolved here.
pub(super) fn advertise_addr(ssh: &Ssh, h: &HostLine) -> Option<SocketAddr> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn elf_headers_name_the_architecture() {
        let exe = std::env::current_exe().unwrap();
        assert_eq!(elf_arch(&exe), Some(std::env::consts::ARCH));
        assert_eq!(elf_arch(Path::new("/nonexistent")), None);
    }
}
