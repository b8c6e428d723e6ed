//! The hosts file of `embtune launch`, parsed without I/O: one worker a line, and the sizes
//! (`64G`, `512M`) its `memory=` takes, which other commands' size flags share.

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;

use embtune_worker::machine::parse_cpu_list;

/// The worker's QUIC port when a line gives no `port=`.
pub const DEFAULT_PORT: u16 = 7701;

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
pub(super) fn split_host_port(s: &str) -> Result<(String, Option<u16>), String> {
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
}
