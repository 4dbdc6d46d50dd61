//! The SERVICES model at the coarse tick (CI): the restarter's shipped
//! `Supervisor` core, every `always` holding and every `sometimes` found.

use stateright::HasDiscoveries;
use tether_model::services::{self, check};

#[test]
fn the_supervisor_keeps_its_promises_in_every_services_configuration() {
    let mut bad = Vec::new();
    for m in services::all(1) {
        let report = check(m, HasDiscoveries::All);
        eprintln!(
            "{}: {} states, {:.1}s",
            report.model.name,
            report.unique,
            report.elapsed.as_secs_f64()
        );
        if !report.complete() {
            bad.push(format!("{}: state cap hit", report.model.name));
        }
        for o in report.outcomes.iter().filter(|o| !o.ok()) {
            let mut line = format!("{}: {} {}", report.model.name, o.word(), o.name);
            if let Some(path) = &o.path {
                line += "\n";
                line += &services::render(&report.model, path);
            }
            bad.push(line);
        }
    }
    assert!(bad.is_empty(), "{}", bad.join("\n"));
}
