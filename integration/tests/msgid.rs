//! RFC 5424 for a collector (issue 16): with `[log] format = "rfc5424"`
//! (here `TETHER_LOG_FORMAT=rfc5424`), every line the whole chain sends to
//! syslog is RFC 5424 with a MSGID from the fixed vocabulary; liveness
//! lines of all three layers, service exits and starts (restarter), layer
//! exits and starts (init) carry structured data a collector can filter
//! on. The MSGIDs come from the call sites' `log` targets in init,
//! restarter (`restarter/src/msgid.rs` for the supervisor's sentences) and
//! watchdogd; this test runs the real binaries, so a reworded sentence that
//! loses its MSGID fails here.

use std::collections::BTreeMap;
use std::time::Duration;
use tether_integration::chain::{Chain, ChainOptions};
use tether_integration::hw::Timings;

const VOCABULARY: &[&str] = &[
    "START", "STOP", "LIVENESS", "RESET", "ALERT", "EXIT", "STATE", "CONFIG", "OUTPUT", "DROPPED",
    "PANIC", "LOG",
];

#[derive(Debug)]
struct Line {
    app: String,
    msgid: String,
    /// Params of `[tether@32473 ...]`.
    sd: BTreeMap<String, String>,
    msg: String,
}

/// `<PRI>1 TIME HOST APP PROCID MSGID SD [MSG]`, or why not.
fn parse(raw: &str) -> Result<Line, String> {
    let rest = raw
        .strip_prefix('<')
        .and_then(|r| r.split_once('>'))
        .ok_or("no PRI")?
        .1;
    let rest = rest.strip_prefix("1 ").ok_or("not version 1")?;
    let mut it = rest.splitn(6, ' ');
    let _time = it.next().ok_or("no TIMESTAMP")?;
    let _host = it.next().ok_or("no HOSTNAME")?;
    let app = it.next().ok_or("no APP-NAME")?.to_string();
    let _pid = it.next().ok_or("no PROCID")?;
    let msgid = it.next().ok_or("no MSGID")?.to_string();
    let rest = it.next().ok_or("no SD")?;
    let mut sd = BTreeMap::new();
    let msg = if let Some(m) = rest.strip_prefix('-') {
        m.strip_prefix(' ').unwrap_or(m).to_string()
    } else {
        let body = rest.strip_prefix("[tether@32473").ok_or("SD-ID")?;
        let mut chars = body.char_indices().peekable();
        let end;
        loop {
            match chars.next() {
                Some((i, ']')) => {
                    end = i + 1;
                    break;
                }
                Some((_, ' ')) => {
                    let mut name = String::new();
                    for (_, c) in chars.by_ref() {
                        if c == '=' {
                            break;
                        }
                        name.push(c);
                    }
                    if chars.next().map(|x| x.1) != Some('"') {
                        return Err(format!("param {name}: no quote"));
                    }
                    let mut value = String::new();
                    loop {
                        match chars.next().ok_or("unterminated value")?.1 {
                            '\\' => value.push(chars.next().ok_or("escape")?.1),
                            '"' => break,
                            c => value.push(c),
                        }
                    }
                    sd.insert(name, value);
                }
                other => return Err(format!("SD: unexpected {other:?}")),
            }
        }
        let m = &body[end..];
        m.strip_prefix(' ').unwrap_or(m).to_string()
    };
    Ok(Line {
        app,
        msgid,
        sd,
        msg,
    })
}

fn lines(chain: &Chain) -> Vec<Line> {
    chain
        .syslog(&[])
        .iter()
        .map(|l| {
            parse(&l.text)
                .unwrap_or_else(|e| panic!("not RFC 5424 ({e}): {:?}\n{}", l.text, chain.dump()))
        })
        .collect()
}

fn wait_line(chain: &Chain, what: &str, f: impl Fn(&Line) -> bool) -> Line {
    let until = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        if let Some(l) = lines(chain).into_iter().find(|l| f(l)) {
            return l;
        }
        assert!(
            std::time::Instant::now() < until,
            "no {what}:\n{}",
            chain.dump()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn sd<'a>(l: &'a Line, k: &str) -> &'a str {
    l.sd.get(k).map_or("", |v| v.as_str())
}

#[test]
fn every_line_of_the_chain_has_a_msgid_and_the_key_ones_structured_data() {
    let mut chain = Chain::start(
        "msgid",
        ChainOptions {
            timings: Timings::chain(),
            env: vec![("TETHER_LOG_FORMAT".into(), "rfc5424".into())],
            services: vec![(
                "crashy".into(),
                "exec = [\"/bin/sh\", \"-c\", \"echo hello; sleep 0.3; exit 3\"]\nrestart_delay = \"500ms\"\n"
                    .into(),
            )],
            ..ChainOptions::default()
        },
    );
    for (app, layer) in [
        ("tether-init", "init"),
        ("tether-restarter", "restarter"),
        ("tether-watchdogd", "watchdog"),
    ] {
        let l = wait_line(&chain, &format!("LIVENESS from {app}"), |l| {
            l.msgid == "LIVENESS" && l.app == app
        });
        assert_eq!(sd(&l, "layer"), layer, "{l:?}");
        assert!(!sd(&l, "state").is_empty(), "{l:?}");
        assert!(l.msg.starts_with("liveness: "), "{l:?}");
    }
    let l = wait_line(&chain, "the service's EXIT", |l| {
        l.msgid == "EXIT" && sd(l, "service") == "crashy"
    });
    assert_eq!(
        (l.app.as_str(), sd(&l, "code")),
        ("tether-restarter", "3"),
        "{l:?}"
    );
    let l = wait_line(&chain, "the service's START", |l| {
        l.msgid == "START" && sd(l, "service") == "crashy"
    });
    assert!(sd(&l, "pid").parse::<i32>().is_ok(), "{l:?}");
    wait_line(&chain, "the service's output", |l| {
        l.msgid == "OUTPUT" && l.app == "crashy" && l.msg == "hello"
    });

    // A layer killed: init's EXIT names it and the signal, then START.
    let pid = chain.layer("tether-restarter").expect("restarter running");
    assert!(tether_integration::chain::signal(
        pid,
        nix::sys::signal::Signal::SIGKILL
    ));
    let l = wait_line(&chain, "init's EXIT of the restarter", |l| {
        l.msgid == "EXIT" && l.app == "tether-init" && sd(l, "layer") == "restarter"
    });
    assert_eq!(sd(&l, "signal"), "9", "{l:?}");
    let until = std::time::Instant::now() + Duration::from_secs(15);
    while lines(&chain)
        .iter()
        .filter(|l| l.msgid == "START" && l.app == "tether-init" && sd(l, "layer") == "restarter")
        .count()
        < 2
    {
        assert!(
            std::time::Instant::now() < until,
            "no second START of the restarter:\n{}",
            chain.dump()
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    // Nothing outside the vocabulary, and every tether line parsed.
    let all = lines(&chain);
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for l in &all {
        assert!(VOCABULARY.contains(&l.msgid.as_str()), "{l:?}");
        *counts.entry(l.msgid.as_str()).or_default() += 1;
    }
    eprintln!("MSGIDs seen: {counts:?}");
    chain.kill();
}
