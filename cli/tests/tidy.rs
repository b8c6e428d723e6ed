//! Checks, by reading the sources, the promises of ARCHITECTURE.md that a text search can see.
//!
//! Each check walks the workspace from this crate's parent directory and collects every
//! violation, so one run lists all of them; each message names the file and says what to do.
//! An exception is an entry in the check's allow-list with the reason it is one, and an entry
//! that no longer matches anything fails too, so that the lists shrink when the code does.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

/// The longest a source file may grow before it needs an entry in [`LONG_FILES`]: past this, a
/// file usually holds more than one concern, and splitting it by concern is the fix.
const LINE_BUDGET: usize = 900;

/// Source files allowed past [`LINE_BUDGET`], with why each is still one file.
const LONG_FILES: &[(&str, &str)] = &[
    (
        "coordinator/src/server.rs",
        "the coordinator's request handlers share one state and its locks; membership, jobs, \
         stats and re-planning already live in their own modules",
    ),
    (
        "tuner/src/cost.rs",
        "the cost model's cache simulation and its per-core prediction are one computation; \
         a fifth of the file is its tests",
    ),
    (
        "worker/src/engine/mod.rs",
        "the executor's queues, task splitting and completion share the request's memory-ordering \
         rules, which are easier to check in one place; kernels, flows and storage are separate",
    ),
    (
        "protocol/src/tuning.rs",
        "the stored and served tuning records are one schema whose parts refer to each other; \
         a quarter of the file is its tests",
    ),
];

/// Where the QUIC endpoints are built: every one must demand or present the cluster's
/// certificate, which `transport/src/endpoint.rs` guarantees.
const ENDPOINT_HOME: &str = "transport/src/endpoint.rs";

/// Files allowed to build a QUIC endpoint of their own, with why.
const ENDPOINT_ALLOWED: &[(&str, &str)] = &[(
    "transport/tests/transport_tls.rs",
    "builds a client without a certificate on purpose, to show that servers refuse it",
)];

/// How a QUIC endpoint is built with quinn.
const ENDPOINT_BUILDERS: &[&str] = &["Endpoint::new(", "Endpoint::server(", "Endpoint::client(", "EndpointConfig"];

/// The crates that hold pure logic (ARCHITECTURE.md, "pure logic does no network I/O").
const PURE_CRATES: &[&str] = &["workloads", "protocol", "tuner"];

/// What pure logic must not touch: the clock, an async runtime, the network, threads of its own.
const IMPURE: &[&str] = &[
    "Instant::now",
    "SystemTime::now",
    "tokio",
    "std::net",
    "TcpStream",
    "TcpListener",
    "UdpSocket",
    "thread::spawn",
    "thread::Builder",
];

/// Dependencies the pure crates must not have, for the same reason.
const IMPURE_DEPS: &[&str] = &["tokio", "quinn", "socket2", "hyper", "axum", "reqwest"];

/// Uses of [`IMPURE`] names in the pure crates that are allowed, as (file, name, reason).
const IMPURE_ALLOWED: &[(&str, &str, &str)] = &[(
    "tuner/src/store.rs",
    "Instant::now",
    "the sled store times its own file I/O (the wait for a lock a closing handle still holds, \
     the pause between reopens after a failed write); no plan, cost or job decision reads it",
)];

/// The only file whose code may use bincode: the bytes on the wire are defined in one place.
/// Module cycles that stay, each with why: `crate: a -> b -> a` as the check reports it.
const CYCLES_ALLOWED: &[(&str, &str)] = &[
    (
        "workloads: spec -> torchrec -> spec",
        "a spec file may be a TorchRec table list: `ModelSpec::load` reads either, and the TorchRec \
         reader builds the spec's types",
    ),
    (
        "protocol: tuning -> wire -> tuning",
        "the wire carries jobs and trials, and a job's configuration names the wire format of its \
         measurements",
    ),
    (
        "coordinator: jobs -> server -> jobs",
        "tuning jobs are methods of the `Coordinator` that `server.rs` defines and dispatches \
         requests to: one type's `impl` split by concern",
    ),
    ("coordinator: jobs -> server -> replan -> jobs", "as `jobs -> server -> jobs`, through the re-planner"),
    (
        "coordinator: replan -> server -> replan",
        "the live re-planner is methods of the `Coordinator` too, its state a field of it",
    ),
    (
        "tuner: job -> propose -> job",
        "the job chains the proposers, which return the job's `Proposal`s: stages of one loop",
    ),
];

const BINCODE_HOME: &str = "protocol/src/codec.rs";

/// The workspace's root directory.
fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("cli/ has a parent").to_path_buf()
}

/// This file, which names every forbidden pattern and so is left out of the content checks.
const SELF: &str = "cli/tests/tidy.rs";

/// A source file: its path relative to the root (with `/`) and its text.
struct Source {
    path: String,
    text: String,
}

impl Source {
    /// The lines of code outside comments and outside the file's test module, with their
    /// line numbers. By the project's layout a `#[cfg(test)] mod tests { .. }` is a file's last
    /// item, so everything from it on is test code.
    fn code_lines(&self) -> impl Iterator<Item = (usize, &str)> {
        let lines: Vec<&str> = self.text.lines().collect();
        let end = lines
            .iter()
            .enumerate()
            .position(|(i, l)| {
                l.trim() == "#[cfg(test)]"
                    && lines
                        .get(i + 1)
                        .is_some_and(|n| n.trim_start().starts_with("mod ") && n.trim_end().ends_with('{'))
            })
            .unwrap_or(lines.len());
        lines
            .into_iter()
            .take(end)
            .enumerate()
            .filter(|(_, l)| !l.trim_start().starts_with("//"))
            .map(|(i, l)| (i + 1, l))
    }
}

/// Every `.rs` file of the workspace (fuzz targets, tests and benches too), sorted by path.
fn sources() -> Vec<Source> {
    fn walk(dir: &Path, root: &Path, out: &mut Vec<Source>) {
        let mut entries: Vec<_> = fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).collect();
        entries.sort();
        for p in entries {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            if p.is_dir() {
                if !name.starts_with('.') && name != "target" && name != "node_modules" {
                    walk(&p, root, out);
                }
            } else if name.ends_with(".rs") {
                let path = p.strip_prefix(root).unwrap().to_string_lossy().replace('\\', "/");
                out.push(Source { path, text: fs::read_to_string(&p).unwrap() });
            }
        }
    }
    let mut out = Vec::new();
    walk(&root(), &root(), &mut out);
    assert!(out.iter().any(|s| s.path == BINCODE_HOME), "the walk found no {BINCODE_HOME}: is the root right?");
    out
}

/// The workspace's member crates, as directories, from the root `Cargo.toml`.
fn members() -> Vec<String> {
    let manifest = fs::read_to_string(root().join("Cargo.toml")).unwrap();
    let line = manifest.lines().find(|l| l.trim_start().starts_with("members")).expect("a members list");
    line.split('"').skip(1).step_by(2).map(str::to_owned).collect()
}

/// The names of the dependencies (not dev- or build-dependencies) in a crate's `Cargo.toml`.
fn dependencies(krate: &str) -> BTreeSet<String> {
    let manifest = fs::read_to_string(root().join(krate).join("Cargo.toml")).unwrap();
    let mut section = String::new();
    let mut deps = BTreeSet::new();
    for line in manifest.lines().map(str::trim) {
        if line.starts_with('[') {
            section = line.trim_matches(['[', ']']).to_owned();
            // `[dependencies.foo]` names the dependency in its header.
            if let Some(name) = section.strip_prefix("dependencies.") {
                deps.insert(name.to_owned());
            }
        } else if (section == "dependencies" || section.ends_with(".dependencies") && section.starts_with("target."))
            && line.contains('=')
            && !line.starts_with('#')
        {
            // `name = ..`, `name.workspace = true` or `name = { .. }`.
            deps.insert(line.split(['=', '.']).next().unwrap_or_default().trim().to_owned());
        }
    }
    deps
}

/// Fails with every violation, one per line.
fn report(check: &str, violations: Vec<String>) {
    assert!(violations.is_empty(), "{check}:\n\n{}\n", violations.join("\n\n"));
}

/// Allow-list entries that matched nothing, as violations.
fn stale<'a>(list: &'a str, entries: impl Iterator<Item = &'a str>, used: &BTreeSet<String>) -> Vec<String> {
    entries
        .filter(|e| !used.contains(*e))
        .map(|e| format!("{list} has an entry for {e}, which no longer needs one: remove the entry."))
        .collect()
}

#[test]
fn bincode_is_used_only_by_the_codec() {
    let mut v = Vec::new();
    for s in sources().iter().filter(|s| s.path != BINCODE_HOME && s.path != SELF) {
        for (n, line) in s.code_lines() {
            if line.contains("bincode::") || line.contains("use bincode") {
                v.push(format!(
                    "{}:{n} uses bincode outside tests. Frames are encoded and decoded only in {BINCODE_HOME} \
                     (ARCHITECTURE.md, \"one module knows the bytes\"): call embtune_protocol::codec instead.",
                    s.path
                ));
            }
        }
    }
    for krate in members().iter().filter(|k| *k != "protocol") {
        if dependencies(krate).contains("bincode") {
            v.push(format!(
                "{krate}/Cargo.toml depends on bincode. Only the protocol crate encodes frames: use \
                 embtune_protocol::codec, or make bincode a dev-dependency if a test needs it."
            ));
        }
    }
    report("bincode outside protocol/src/codec.rs", v);
}

#[test]
fn quic_endpoints_are_built_only_by_the_transport() {
    let mut v = Vec::new();
    let mut used = BTreeSet::new();
    for s in sources().iter().filter(|s| s.path != ENDPOINT_HOME && s.path != SELF) {
        for (n, line) in s.code_lines() {
            if ENDPOINT_BUILDERS.iter().any(|b| line.contains(b)) {
                if ENDPOINT_ALLOWED.iter().any(|(f, _)| *f == s.path) {
                    used.insert(s.path.clone());
                } else {
                    v.push(format!(
                        "{}:{n} builds a QUIC endpoint. Every endpoint must come from {ENDPOINT_HOME} \
                         (server_endpoint, client_endpoint) so that it is mutual TLS (ARCHITECTURE.md, \
                         \"every QUIC connection is mutual TLS\"): call those, or add the file to \
                         ENDPOINT_ALLOWED in {SELF} with the reason it must not.",
                        s.path
                    ));
                }
            }
        }
    }
    v.extend(stale("ENDPOINT_ALLOWED", ENDPOINT_ALLOWED.iter().map(|(f, _)| *f), &used));
    report("QUIC endpoints built outside the transport", v);
}

#[test]
fn pure_crates_read_no_clock_and_open_no_sockets() {
    let mut v = Vec::new();
    let mut used = BTreeSet::new();
    for s in sources().iter().filter(|s| PURE_CRATES.iter().any(|k| s.path.starts_with(&format!("{k}/src/")))) {
        for (n, line) in s.code_lines() {
            for name in IMPURE.iter().filter(|name| line.contains(*name)) {
                let key = format!("{} ({name})", s.path);
                if IMPURE_ALLOWED.iter().any(|(f, i, _)| *f == s.path && i == name) {
                    used.insert(key);
                } else {
                    v.push(format!(
                        "{}:{n} uses {name}. The pure crates ({}) read no clock and do no network I/O \
                         (ARCHITECTURE.md, \"pure logic does no network I/O\"): take the value from the \
                         caller as an argument, or add an entry to IMPURE_ALLOWED in {SELF} with the reason.",
                        s.path,
                        PURE_CRATES.join(", ")
                    ));
                }
            }
        }
    }
    for krate in PURE_CRATES {
        for dep in dependencies(krate).iter().filter(|d| IMPURE_DEPS.contains(&d.as_str())) {
            v.push(format!(
                "{krate}/Cargo.toml depends on {dep}. The pure crates do no network I/O: put the code that \
                 needs it in transport, worker, client or coordinator."
            ));
        }
    }
    let entries: Vec<String> = IMPURE_ALLOWED.iter().map(|(f, i, _)| format!("{f} ({i})")).collect();
    v.extend(stale("IMPURE_ALLOWED", entries.iter().map(String::as_str), &used));
    report("clocks, runtimes or sockets in the pure crates", v);
}

#[test]
fn every_crate_and_module_file_has_a_doc_comment() {
    let members = members();
    let v: Vec<String> = sources()
        .iter()
        .filter(|s| members.iter().any(|k| s.path.starts_with(&format!("{k}/src/"))))
        .filter(|s| !s.text.lines().take(10).any(|l| l.starts_with("//!")))
        .map(|s| {
            format!(
                "{} has no `//!` comment in its first 10 lines. Start it with one that says what the \
                 module is for and what it keeps out of its callers' way.",
                s.path
            )
        })
        .collect();
    report("source files without a module doc", v);
}

#[test]
fn no_file_outgrows_the_line_budget() {
    let mut v = Vec::new();
    let mut used = BTreeSet::new();
    for s in sources() {
        let lines = s.text.lines().count();
        if lines <= LINE_BUDGET {
            continue;
        }
        if LONG_FILES.iter().any(|(f, _)| *f == s.path) {
            used.insert(s.path.clone());
        } else {
            v.push(format!(
                "{} has {lines} lines, over the budget of {LINE_BUDGET}. Split it into modules by concern, \
                 or add it to LONG_FILES in {SELF} with the reason it is one piece.",
                s.path
            ));
        }
    }
    v.extend(stale("LONG_FILES", LONG_FILES.iter().map(|(f, _)| *f), &used));
    report("files over the line budget", v);
}

#[test]
fn only_the_binary_reads_the_environment() {
    let members = members();
    let mut v = Vec::new();
    for s in sources().iter().filter(|s| s.path != SELF && !s.path.starts_with("cli/")) {
        if !members.iter().any(|k| s.path.starts_with(&format!("{k}/src/"))) {
            continue;
        }
        for (n, line) in s.code_lines() {
            if line.contains("env::var") {
                v.push(format!(
                    "{}:{n} reads an environment variable. A library's knobs are configuration with a \
                     default (a field or an argument); the `embtune` binary reads the environment, as \
                     clap's `env = \"..\"` on the flag that sets the knob.",
                    s.path
                ));
            }
        }
    }
    report("environment variables read outside the binary", v);
}

#[test]
fn the_modules_of_a_crate_import_one_another_one_way() {
    // ARCHITECTURE.md: within a crate, dependencies between top-level modules point one way,
    // so that each can be read with only what it imports in mind. A module is `src/X.rs` or
    // `src/X/`; its uses of another are the `crate::Y` paths in its code (tests excluded).
    let sources = sources();
    let mut v = Vec::new();
    let mut used = BTreeSet::new();
    for krate in members() {
        let prefix = format!("{krate}/src/");
        let module_of = |path: &str| -> Option<String> {
            let rest = path.strip_prefix(&prefix)?;
            let first = rest.split('/').next()?.trim_end_matches(".rs");
            (first != "lib" && first != "main").then(|| first.to_owned())
        };
        let modules: BTreeSet<String> = sources.iter().filter_map(|s| module_of(&s.path)).collect();
        let mut uses: std::collections::BTreeMap<String, BTreeSet<String>> = Default::default();
        for s in &sources {
            let Some(m) = module_of(&s.path) else { continue };
            for (_, line) in s.code_lines() {
                for (i, _) in line.match_indices("crate::") {
                    let name: String =
                        line[i + 7..].chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
                    if name != m && modules.contains(&name) {
                        uses.entry(m.clone()).or_default().insert(name);
                    }
                }
            }
        }
        // A cycle is a path back to where it started; each is reported once, from its
        // smallest module.
        for start in &modules {
            let mut stack = vec![(start.clone(), vec![start.clone()])];
            while let Some((at, path)) = stack.pop() {
                for next in uses.get(&at).into_iter().flatten() {
                    if next == start {
                        let mut cycle = path.clone();
                        cycle.push(start.clone());
                        let name = format!("{krate}: {}", cycle.join(" -> "));
                        if CYCLES_ALLOWED.iter().any(|(c, _)| *c == name) {
                            used.insert(name);
                        } else {
                            v.push(format!(
                                "{name}: these modules import one another in a cycle. Move what they share \
                                 into a module both can use, so that dependencies point one way, or add the \
                                 cycle to CYCLES_ALLOWED in {SELF} with the reason it stays."
                            ));
                        }
                    } else if next > start && !path.contains(next) {
                        let mut p = path.clone();
                        p.push(next.clone());
                        stack.push((next.clone(), p));
                    }
                }
            }
        }
    }
    v.extend(stale("CYCLES_ALLOWED", CYCLES_ALLOWED.iter().map(|(c, _)| *c), &used));
    report("import cycles between modules", v);
}
