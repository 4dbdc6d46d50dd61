//! `tether-model [--fine | --div N] [--pairs] [--only SUBSTRING] [--skip FAULT]... [--mutant gate|budget|svc-delay|svc-requires]`:
//! explores every configuration at its coarse tick (`--fine`: half of
//! it, `--div N`: an N-th) (or those whose name contains SUBSTRING)
//! with single faults, or pairs of faults with `--pairs` (what the design
//! does not promise), then the services models (not with `--pairs`),
//! prints one line per model and property, and a timeline for every
//! violated `always`. Exit status 1 when a single-fault
//! property is violated or a `sometimes` is not found.

use std::process::ExitCode;

use stateright::Expectation;
use stateright::HasDiscoveries;
use tether_model::configs;
use tether_model::env::Chain;
use tether_model::run::{check, check_until, Report};
use tether_model::services::{self, SvcReport};
use tether_model::timeline;

fn usage() -> ExitCode {
    eprintln!(
        "usage: tether-model [--fine | --div N] [--pairs] [--only SUBSTRING] [--skip FAULT]... [--mutant gate|budget|svc-delay|svc-requires]"
    );
    ExitCode::from(2)
}

fn print(report: &Report, pairs: bool) {
    let c = &report.chain;
    println!(
        "== {} | tick {:?} | {} | {} states ({} generated){} | {:.1}s | peak RSS {} MiB",
        c.name,
        c.tick,
        if pairs {
            "pairs of faults"
        } else {
            "single faults"
        },
        report.unique,
        report.generated,
        if report.complete() {
            ""
        } else {
            " INCOMPLETE: state cap hit"
        },
        report.elapsed.as_secs_f64(),
        report.peak_kib.map(|k| k / 1024).unwrap_or(0)
    );
    for o in &report.outcomes {
        println!("   {:<22} {}", o.word(), o.name);
    }
    for o in &report.outcomes {
        if let (Expectation::Always, Some(path)) = (&o.expectation, &o.path) {
            println!("-- counterexample: {} ({})", o.name, c.name);
            if let Some(f) = path.last().and_then(|(s, _)| s.faults.first()) {
                let e = c.expect(f.fault);
                println!(
                    "   fault {}: expected {} within {:?} ({})",
                    f.fault.name(),
                    e.rung,
                    e.bound,
                    e.source
                );
            }
            print!("{}", timeline::render(c, path.clone()));
        }
    }
}

fn print_services(report: &SvcReport) {
    let m = &report.model;
    println!(
        "== {} | tick {:?} | {} states ({} generated){} | {:.1}s | peak RSS {} MiB",
        m.name,
        m.tick,
        report.unique,
        report.generated,
        if report.complete() {
            ""
        } else {
            " INCOMPLETE: state cap hit"
        },
        report.elapsed.as_secs_f64(),
        report.peak_kib.map(|k| k / 1024).unwrap_or(0)
    );
    for o in &report.outcomes {
        println!("   {:<22} {}", o.word(), o.name);
    }
    for o in &report.outcomes {
        if let (Expectation::Always, Some(path)) = (&o.expectation, &o.path) {
            println!("-- counterexample: {} ({})", o.name, m.name);
            print!("{}", services::render(m, path));
        }
    }
}

fn main() -> ExitCode {
    let mut div = 1u32;
    let mut mutant = false;
    let mut pairs = false;
    let mut only: Option<String> = None;
    let mut skip: Vec<String> = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--fine" => div = 2,
            "--div" => match args.next().and_then(|n| n.parse().ok()) {
                Some(n) => div = n,
                None => return usage(),
            },
            "--pairs" => pairs = true,
            "--only" => match args.next() {
                Some(s) => only = Some(s),
                None => return usage(),
            },
            "--skip" => match args.next() {
                Some(s) => skip.push(s),
                None => return usage(),
            },
            "--mutant" => match args.next().as_deref() {
                Some(m) => {
                    mutant = true;
                    if let Err(e) = tether_model::mutant(m) {
                        eprintln!("{e}");
                        return ExitCode::from(2);
                    }
                }
                None => return usage(),
            },
            _ => return usage(),
        }
    }
    let mut failed = false;
    for named in configs::all(div) {
        if only
            .as_ref()
            .is_some_and(|o| !named.name.contains(o.as_str()))
        {
            continue;
        }
        let tick = named.tick;
        let mut chain = Chain::new(&named.name, named.config, tick, if pairs { 2 } else { 1 });
        chain.faults.retain(|f| !skip.contains(&f.name()));
        // A mutant only has to be caught: stop at its first counterexample.
        let report = if mutant {
            check_until(chain, HasDiscoveries::AnyFailures)
        } else {
            check(chain)
        };
        print(&report, pairs);
        failed |= !report.all_ok();
    }
    if !pairs {
        for m in services::all(div) {
            if only.as_ref().is_some_and(|o| !m.name.contains(o.as_str())) {
                continue;
            }
            let finish = if mutant {
                HasDiscoveries::AnyFailures
            } else {
                HasDiscoveries::All
            };
            let report = services::check(m, finish);
            print_services(&report);
            failed |= !report.all_ok();
        }
    }
    if failed && !pairs {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}
