//! `--help` as a new user reads it: every `results` and `plan` subcommand shows examples, every
//! argument and flag of every command says what it is, `--format` lists its values, and no
//! command offers both `--format` and `--json`.

mod common;

use std::process::Command;

use common::exe;

fn help(args: &[&str]) -> String {
    let out = Command::new(exe()).args(args).arg("--help").output().unwrap();
    assert!(out.status.success(), "{args:?} --help: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// The subcommands a `--help` page lists.
fn subcommands(page: &str) -> Vec<String> {
    let mut in_commands = false;
    let mut out = Vec::new();
    for line in page.lines() {
        if line == "Commands:" {
            in_commands = true;
            continue;
        }
        if in_commands {
            if !line.starts_with("  ") {
                break;
            }
            let name = line.split_whitespace().next().unwrap_or("");
            if name != "help" && !line.starts_with("   ") {
                out.push(name.to_string());
            }
        }
    }
    out
}

/// The arguments and options of a `--help` page that have no description.
fn undescribed(page: &str) -> Vec<String> {
    let lines: Vec<&str> = page.lines().collect();
    let mut bad = Vec::new();
    let mut section = "";
    for (i, line) in lines.iter().enumerate() {
        // A line at the margin starts a section (`Options:`) or a paragraph of other text.
        if !line.is_empty() && !line.starts_with(' ') {
            section = line;
            continue;
        }
        if section != "Arguments:" && section != "Options:" {
            continue;
        }
        let t = line.trim_start();
        let indent = line.len() - t.len();
        // An entry starts at a small indent with `-`, `--` or `<`, `[`; its help follows after two
        // spaces on the same line, or on the next, more indented line.
        if indent > 6 || !(t.starts_with('-') || t.starts_with('<') || t.starts_with('[')) {
            continue;
        }
        let same_line = t.split("  ").skip(1).any(|p| !p.trim().is_empty());
        let next_line = lines.get(i + 1).is_some_and(|n| {
            let nt = n.trim_start();
            n.len() - nt.len() > indent && !nt.is_empty() && !nt.starts_with("--") && !nt.starts_with('<')
        });
        if !same_line && !next_line {
            bad.push(t.to_string());
        }
    }
    bad
}

#[test]
fn results_and_plan_help_show_examples_and_describe_every_argument() {
    for group in ["results", "plan"] {
        let subs = subcommands(&help(&[group]));
        assert!(subs.len() >= 3, "{group}: {subs:?}");
        for sub in subs {
            let page = help(&[group, &sub]);
            assert!(page.contains("Examples:\n  embtune "), "`embtune {group} {sub} --help` has no examples:\n{page}");
            let bad = undescribed(&page);
            assert!(bad.is_empty(), "`embtune {group} {sub} --help`: no description for {bad:?}:\n{page}");
            assert!(
                !(page.contains("--format") && page.contains("--json")),
                "`embtune {group} {sub}` has both --format and --json"
            );
        }
    }
    // `--format` lists its values (each with what it writes, in the long help).
    let export = help(&["results", "export"]);
    assert!(export.contains("- json:") && export.contains("- csv:"), "{export}");
}

#[test]
fn every_command_describes_its_arguments() {
    let mut missing = Vec::new();
    let top = help(&[]);
    for cmd in subcommands(&top) {
        let page = help(&[&cmd]);
        let subs = subcommands(&page);
        if subs.is_empty() {
            missing.extend(undescribed(&page).into_iter().map(|a| format!("{cmd}: {a}")));
        }
        for sub in subs {
            let page = help(&[&cmd, &sub]);
            missing.extend(undescribed(&page).into_iter().map(|a| format!("{cmd} {sub}: {a}")));
        }
    }
    assert!(missing.is_empty(), "arguments without a description:\n{}", missing.join("\n"));
}
