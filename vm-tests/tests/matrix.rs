//! The fault matrix (issues #6, #13): one test per row of
//! `vm-tests/plans/busybox.toml`, each booting the demo appliance fresh
//! (`vm-tests/src/appliance.rs`, as a user would ship it: no fault agent
//! inside) in QEMU/TCG with the i6300esb, the agent injected at boot by
//! `tether-inject`'s overlay, the row run by the same code as the tool
//! (`tether_vm_tests::inject::run_row`; the rows and how they measure are
//! in `src/inject/rows.rs`), and checked against the row's bound from the
//! image's own budget table.
//!
//! Each row writes its line of `target/vm-matrix/matrix.md` (see
//! `report`), pass or fail. `tests/inject.rs` runs the `tether-inject`
//! binary itself.

use std::path::PathBuf;
use std::sync::OnceLock;
use tether_vm_tests::image::{run_dir, workspace_root};
use tether_vm_tests::inject::{self, plan::ImageFacts, plan::Plan, Target};
use tether_vm_tests::report;

struct Setup {
    plan: Plan,
    target: Target,
    facts: ImageFacts,
    initrd: PathBuf,
    bounds: Vec<(std::time::Duration, String)>,
}

/// The plan, the demo image with the overlay, its facts: once per process.
fn setup() -> &'static Setup {
    static S: OnceLock<Setup> = OnceLock::new();
    S.get_or_init(|| {
        let plan = Plan::read(&workspace_root().join("vm-tests/plans/busybox.toml"))
            .unwrap_or_else(|e| panic!("{}", e));
        let dir = report::matrix_dir().join("image");
        let target = inject::demo_target(&dir).unwrap_or_else(|e| panic!("{}", e));
        inject::check_qemu().unwrap_or_else(|e| panic!("{}", e));
        let (facts, initrd) = inject::prepare(&target, &dir).unwrap_or_else(|e| panic!("{}", e));
        let bounds = plan.check(&facts).unwrap_or_else(|e| panic!("{}", e));
        Setup {
            plan,
            target,
            facts,
            initrd,
            bounds,
        }
    })
}

/// Runs row `name` of the plan and records it; panics when it failed.
fn row(name: &str) {
    let s = setup();
    let i = s
        .plan
        .rows
        .iter()
        .position(|r| r.name == name)
        .unwrap_or_else(|| panic!("no row {:?} in the plan", name));
    let p = &s.plan.rows[i];
    let dir = run_dir(&format!("matrix-{}", inject::slug(p)));
    // TCG: the matrix's bounds are measured where KVM guests hang.
    let run = inject::run_row(
        &s.target,
        "tcg",
        &s.initrd,
        &s.facts,
        p,
        s.bounds[i].clone(),
        &dir,
    );
    let md = report::record(&run.result);
    eprintln!("{}", report::render(std::slice::from_ref(&run.result)));
    if let Ok(p) = md {
        eprintln!("matrix: {}", p.display());
    }
    assert!(
        run.result.pass,
        "{}: {}\n(transcript: {})",
        name,
        run.result.observed,
        run.transcript.display()
    );
}

#[test]
fn service_killed_is_restarted_and_nothing_else_is_touched() {
    row("service `ticker` kill -9");
}

#[test]
fn service_silent_on_sd_notify_watchdog_is_killed_and_restarted() {
    row("service `heartbeat` stops WATCHDOG=1");
}

#[test]
fn critical_service_crash_loop_reboots_in_order_and_next_boot_names_it() {
    row("critical service `sensor` crash loop");
}

#[test]
fn restarter_killed_is_restarted_by_init_and_adopts_every_service() {
    row("restarter kill -9");
}

#[test]
fn restarter_stopped_is_killed_after_hang_timeout_and_the_new_one_adopts_every_service() {
    row("restarter SIGSTOP");
}

#[test]
fn restarter_oom_killed_is_restarted_and_adopts_every_service() {
    row("restarter OOM-killed");
}

#[test]
fn watchdogd_killed_is_restarted_before_the_hardware_fires() {
    row("watchdogd kill -9");
}

#[test]
fn watchdogd_stopped_is_replaced_before_the_hardware_fires() {
    row("watchdogd SIGSTOP");
}

#[test]
fn hung_init_ends_in_a_hardware_reset_reported_on_next_boot() {
    row("init hung (ptrace stop)");
}

#[test]
fn kernel_panic_ends_in_a_hardware_reset() {
    row("kernel panic (panic=0)");
}

#[test]
fn tetherctl_reboot_is_clean_and_reported_as_requested() {
    row("tetherctl reboot");
}

#[test]
fn flooding_service_never_blocks_while_syslog_is_down_and_the_loss_is_reported() {
    row("syslogd kill -9 while `heartbeat` floods stdout");
}

#[test]
fn upgrading_restarter_and_init_in_place_under_load_keeps_every_service() {
    row("upgrade restarter and init in place under load");
}
