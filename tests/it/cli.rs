//! The command line: `taskd --help` lists every option of `taskd serve`, with its environment
//! twin and default — checked against clap's own definition of `serve`, so it cannot drift.

use std::process::Command;

use clap::CommandFactory;
use taskd::config::Cli;

/// Whitespace runs as one space: help text wraps wherever the terminal width says.
fn squeeze(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[test]
fn top_level_help_lists_every_serve_option() {
    let output = Command::new(env!("CARGO_BIN_EXE_taskd"))
        .arg("--help")
        .output()
        .expect("taskd --help runs");
    assert!(output.status.success(), "taskd --help failed: {output:?}");
    let help = squeeze(&String::from_utf8(output.stdout).expect("UTF-8 help"));

    let cli = Cli::command();
    let serve = cli.find_subcommand("serve").expect("a `serve` subcommand");
    let mut checked = 0;
    for arg in serve.get_arguments().filter(|arg| !arg.is_hide_set()) {
        let Some(long) = arg.get_long() else {
            continue;
        };
        if long == "help" {
            continue;
        }
        let flag = format!("--{long}");
        assert!(help.contains(&flag), "`taskd --help` lacks {flag}:\n{help}");
        let env = arg.get_env().expect("every serve flag has an env twin");
        let env = env.to_str().expect("an ASCII env name");
        assert!(
            help.contains(env),
            "`taskd --help` lacks {env} ({flag}):\n{help}"
        );
        // A hidden default (an empty `--allow-outbound`) is told in the help text instead.
        let defaults = if arg.is_hide_default_value_set() {
            &[][..]
        } else {
            arg.get_default_values()
        };
        for default in defaults {
            let shown = format!("[default: {}]", default.to_string_lossy());
            assert!(
                help.contains(&shown),
                "`taskd --help` lacks {shown} ({flag}):\n{help}"
            );
        }
        checked += 1;
    }
    assert!(checked >= 10, "only {checked} serve flags found");
}
