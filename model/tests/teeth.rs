//! Teeth: the model built with a deliberately broken guard in a shipped
//! core (feature `mutants`, in its own target directory, switched on by
//! `--mutant`) must fail, with the counterexample printed.

use std::path::PathBuf;
use std::process::Command;

fn run_mutant(mutant: &str, only: &str) -> (bool, String) {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let out = Command::new(env!("CARGO"))
        .current_dir(&root)
        .args(["run", "-q", "-p", "tether-model", "--features", "mutants"])
        .arg("--target-dir")
        .arg(root.join("target/model-teeth"))
        .args(["--", "--mutant", mutant, "--only", only])
        .output()
        .expect("cargo runs");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

#[test]
fn gate_staleness_off_by_one_tick_is_caught() {
    let (ok, text) = run_mutant("gate", "demo");
    assert!(!ok, "the broken gate passed:\n{text}");
    assert!(
        text.contains("-- counterexample: never pets while a layer is stale (from its last write)"),
        "{text}"
    );
    assert!(text.contains("FAULT:"), "no timeline:\n{text}");
}

#[test]
fn layer_restart_budget_ignored_is_caught() {
    let (ok, text) = run_mutant("budget", "demo");
    assert!(!ok, "the ignored budget passed:\n{text}");
    assert!(
        text.contains("-- counterexample: an exhausted restart budget ends in one orderly reboot")
            && text.contains("crash loop: expected orderly reboot"),
        "{text}"
    );
    assert!(text.contains("FAULT:"), "no timeline:\n{text}");
}

#[test]
fn services_restart_delay_ignored_is_caught() {
    let (ok, text) = run_mutant("svc-delay", "services");
    assert!(!ok, "the core without restart_delay passed:\n{text}");
    assert!(
        text.contains(
            "-- counterexample: services: no start sooner than restart_delay after the last (but by hand)"
        ),
        "{text}"
    );
    assert!(text.contains("db exits"), "no timeline:\n{text}");
}

#[test]
fn services_requires_dropped_is_caught() {
    let (ok, text) = run_mutant("svc-requires", "services");
    assert!(!ok, "the core without requires passed:\n{text}");
    assert!(
        text.contains("-- counterexample: services: a stop of db signals app (requires db) first"),
        "{text}"
    );
    assert!(text.contains("operator: stop db"), "no timeline:\n{text}");
}
