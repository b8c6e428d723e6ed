//! The shell text `embtune launch` runs on hosts, built without I/O: quoting and splitting
//! words, the remote folder, the scripts that probe, install, start, check and stop a worker,
//! and the worker's command line.

use std::net::SocketAddr;

use super::hosts::HostLine;

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
pub(super) const SH_FUNCS: &str = r#"ours() {
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
pub(super) fn probe_script(dir: &str) -> String {
    format!(
        "D={dir}\nuname -m\nif [ -f \"$D/bin/embtune\" ]; then (sha256sum \"$D/bin/embtune\" 2>/dev/null || echo none) | cut -d' ' -f1; else echo none; fi\n"
    )
}

/// Exit status of the install script when the copy is short, and when the binary does not run.
pub(super) const EXIT_SHORT_COPY: i32 = 3;
pub(super) const EXIT_NO_RUN: i32 = 4;

/// Writes the certificates and, when `binary_len` is given, the binary read from stdin; then
/// checks that the binary runs there.
pub(super) fn install_script(dir: &str, certs: &[(&str, String)], binary_len: Option<u64>) -> String {
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
pub(super) fn start_script(dir: &str, name: &str, worker_args: &[String]) -> String {
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
pub(super) fn check_script(dir: &str, name: &str) -> String {
    format!(
        "D={dir}\ncd \"$D\" 2>/dev/null || {{ echo exited; echo ---; echo \"(no folder $D)\"; exit 0; }}\n{SH_FUNCS}\
         if ours \"$(cat run/{name}.pid 2>/dev/null)\"; then echo running; else echo exited; fi\necho ---\n\
         tail -n 30 logs/{name}.log 2>/dev/null || echo \"(no log at $D/logs/{name}.log)\"\n"
    )
}

/// Stops one worker by its pid file; prints what it did.
pub(super) fn stop_script(dir: &str, name: &str) -> String {
    format!(
        "D={dir}\ncd \"$D\" 2>/dev/null || {{ echo \"not running (no folder $D)\"; exit 0; }}\n{SH_FUNCS}pidf=run/{name}.pid\n\
         if [ ! -f \"$pidf\" ]; then echo \"not running (no pid file)\"; exit 0; fi\n\
         pid=$(cat \"$pidf\")\n\
         if ours \"$pid\"; then stop_pid \"$pid\"; else echo \"not running (stale pid file)\"; fi\nrm -f \"$pidf\"\n"
    )
}

/// The `embtune worker` arguments for a line.
pub(super) fn worker_args(h: &HostLine, coordinator: SocketAddr, advertise: Option<SocketAddr>) -> Vec<String> {
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

#[cfg(test)]
mod tests {
    use std::process::Command;

    use super::*;
    use crate::launch::hosts::parse_hosts;

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
}
