//! `tetherctl import` on the units Debian ships (issue 15): the packages are
//! fetched with `apt-get download` into `target/debian-units/` (kept there:
//! later runs reuse them), unpacked with `dpkg-deb -x`, and their units
//! imported together with `--root` at the unpacked tree (for their
//! `EnvironmentFile=`s). Each generated file is checked by the restarter's
//! own parser (`tetherctl check` on a `tether.toml` naming the output
//! directory), and the report is checked to name every directive line of
//! every unit. A runit and an s6 service directory (hand-written: Debian's
//! runit and s6 packages ship none) and malformed input complete it.
//!
//! The archive must be reachable: when `apt-get download` fails (after an
//! `apt-get update`), the test fails, it is never skipped.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Mutex, OnceLock};
use tether_integration::bins::bin;

/// Packages whose units are imported, and the units.
const PACKAGES: &[&str] = &[
    "openssh-server",
    "rsyslog",
    "cron",
    "chrony",
    "dbus",
    "haveged",
    "nginx-common",
    "systemd",
];
const UNITS: &[&str] = &[
    "ssh.service",
    "rsyslog.service",
    "cron.service",
    "dbus.service",
    "haveged.service",
    "chrony.service",
    "chrony-wait.service",
    "nginx.service",
    "serial-getty@ttyS0.service",
];

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("integration/ has a parent")
        .to_path_buf()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn run(cmd: &mut Command) -> Output {
    let shown = format!("{cmd:?}");
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {shown}: {e}"))
}

/// The unpacked packages (`target/debian-units/root`), downloaded once.
fn debian_root() -> &'static Path {
    static ROOT: OnceLock<PathBuf> = OnceLock::new();
    static LOCK: Mutex<()> = Mutex::new(());
    ROOT.get_or_init(|| {
        let _g = LOCK.lock().unwrap_or_else(|e| e.into_inner());
        let cache = workspace().join("target/debian-units");
        std::fs::create_dir_all(&cache).expect("create target/debian-units");
        let have = |pkg: &str| {
            std::fs::read_dir(&cache)
                .map(|d| {
                    d.filter_map(|e| e.ok()).any(|e| {
                        let n = e.file_name().to_string_lossy().into_owned();
                        n.starts_with(&format!("{pkg}_")) && n.ends_with(".deb")
                    })
                })
                .unwrap_or(false)
        };
        let missing: Vec<&str> = PACKAGES.iter().copied().filter(|p| !have(p)).collect();
        if !missing.is_empty() {
            let download = || {
                run(Command::new("apt-get")
                    .arg("download")
                    .args(&missing)
                    .current_dir(&cache))
            };
            let mut out = download();
            if !out.status.success() {
                // Empty package lists (a fresh container): update once.
                let up = run(Command::new("apt-get").args(["update", "-q"]));
                assert!(
                    up.status.success(),
                    "the Debian archive cannot be reached: apt-get update failed:\n{}",
                    text(&up.stderr)
                );
                out = download();
            }
            assert!(
                out.status.success(),
                "the Debian archive cannot be reached: apt-get download {} failed:\n{}",
                missing.join(" "),
                text(&out.stderr)
            );
        }
        let root = cache.join("root");
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(&root).expect("create root");
        for e in std::fs::read_dir(&cache).expect("read cache") {
            let p = e.expect("entry").path();
            if p.extension().is_some_and(|x| x == "deb") {
                let out = run(Command::new("dpkg-deb").arg("-x").arg(&p).arg(&root));
                assert!(
                    out.status.success(),
                    "dpkg-deb -x {}: {}",
                    p.display(),
                    text(&out.stderr)
                );
            }
        }
        root
    })
}

fn scratch(what: &str) -> PathBuf {
    let d = workspace()
        .join("target/tmp")
        .join(format!("import-{what}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("scratch");
    d
}

/// `tetherctl check` on a configuration whose services directory is `dir`:
/// the restarter's parser and dependency check on every file there.
fn check_dir(dir: &Path) -> String {
    let conf = dir.with_extension("tether.toml");
    std::fs::write(
        &conf,
        format!("[paths]\nservices = \"{}\"\n", dir.display()),
    )
    .expect("write tether.toml");
    let out = run(Command::new(bin("tetherctl"))
        .arg("check")
        .arg("--config")
        .arg(&conf));
    let report = text(&out.stdout);
    assert!(
        out.status.success(),
        "tetherctl check of the imported files failed:\n{report}{}",
        text(&out.stderr)
    );
    report
}

/// Lines of a unit file that hold an assignment.
fn directive_lines(file: &Path) -> BTreeSet<usize> {
    let t = std::fs::read_to_string(file).expect("read unit");
    let mut set = BTreeSet::new();
    let mut continued = false;
    for (i, l) in t.lines().enumerate() {
        let s = l.trim();
        let was_continued = continued;
        continued = s.ends_with('\\');
        if was_continued
            || s.is_empty()
            || s.starts_with('#')
            || s.starts_with(';')
            || s.starts_with('[')
        {
            continue;
        }
        set.insert(i + 1);
    }
    set
}

#[test]
fn debian_units_import_parse_and_every_directive_is_reported() {
    let root = debian_root();
    let units_dir = root.join("lib/systemd/system");
    let out_dir = scratch("debian");
    let out = run(Command::new(bin("tetherctl"))
        .arg("import")
        .args(UNITS.iter().map(|u| units_dir.join(u)))
        .arg("--root")
        .arg(root)
        .arg("--out")
        .arg(&out_dir));
    let report = text(&out.stdout);
    println!("{report}");
    // Four are refused (two Type=forking, one Type=oneshot, a getty on its
    // terminal): exit 1.
    assert_eq!(out.status.code(), Some(1), "{report}{}", text(&out.stderr));
    let has = |s: &str| report.lines().any(|l| l.contains(s));
    for (unit, why) in [
        ("chrony.service", "Type=forking: refused"),
        ("nginx.service", "Type=forking: refused"),
        ("chrony-wait.service", "Type=oneshot: refused"),
        ("serial-getty@.service", "StandardInput=tty: refused"),
    ] {
        assert!(
            has(&format!("{unit}:")) && report.lines().any(|l| l.contains(unit) && l.contains(why)),
            "{unit}: {why}\n{report}"
        );
        assert!(!out_dir
            .join(
                unit.replace("@.service", "@ttyS0.toml")
                    .replace(".service", ".toml")
            )
            .exists());
    }
    assert!(has("import: 5 service(s) written"), "{report}");

    // Every generated file parses with the restarter's parser, and the set
    // loads (dependencies resolve).
    let check = check_dir(&out_dir);
    assert!(check.contains("5 services ok, 0 with errors"), "{check}");

    // sshd: Type=notify in its unit → notify mode; its runtime directory.
    let ssh = std::fs::read_to_string(out_dir.join("ssh.toml")).expect("ssh.toml");
    assert!(ssh.lines().any(|l| l == "notify = \"ready\""), "{ssh}");
    assert!(ssh.contains("mkdir -p -m 0755 /run/sshd"), "{ssh}");
    assert!(ssh.contains("\"/usr/sbin/sshd\", \"-D\"]"), "{ssh}");
    let rsyslog = std::fs::read_to_string(out_dir.join("rsyslog.toml")).expect("rsyslog.toml");
    assert!(
        rsyslog.lines().any(|l| l == "notify = \"ready\""),
        "{rsyslog}"
    );
    assert!(rsyslog.lines().any(|l| l == "nofile = 16384"), "{rsyslog}");

    // Never dropped silently: every directive line of every imported unit
    // has its line in the report, and what is not carried over says so.
    for u in [
        "ssh.service",
        "rsyslog.service",
        "cron.service",
        "dbus.service",
        "haveged.service",
    ] {
        let file = units_dir.join(u);
        for line in directive_lines(&file) {
            let tag = format!("{}:{line}: ", file.display());
            assert!(
                report.contains(&tag),
                "{tag} is not in the report:\n{report}"
            );
        }
    }
    for s in [
        "ssh.service:9: ExecStartPre=/usr/sbin/sshd -t: not carried over",
        "ssh.service:13: KillMode=process: not carried over",
        "ssh.service:16: Type=notify: carried",
        "rsyslog.service:3: Requires=syslog.socket: not carried over: syslog.socket is socket activation",
        "cron.service:8: ExecStart=/usr/sbin/cron -f $EXTRA_OPTS: carried",
        "haveged.service:15: PrivateTmp=true: not carried over: sandboxing",
    ] {
        assert!(has(s), "{s:?} not in the report:\n{report}");
    }
}

#[test]
fn runit_and_s6_directories_import() {
    let base = scratch("sv");
    let sv = base.join("sv");
    let exe = |p: &Path, body: &str| {
        use std::os::unix::fs::PermissionsExt;
        std::fs::write(p, body).expect("write");
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    };
    // runit: run, finish, log/run, down.
    let r = sv.join("ticker");
    std::fs::create_dir_all(r.join("log")).expect("mkdir");
    exe(&r.join("run"), "#!/bin/sh\nexec 2>&1\nexec sleep 1000\n");
    exe(&r.join("finish"), "#!/bin/sh\nexit 0\n");
    exe(&r.join("log/run"), "#!/bin/sh\nexec svlogd -tt ./main\n");
    std::fs::write(r.join("down"), "").expect("down");
    // s6 (s6-rc source): run, type, notification-fd, timeout-kill,
    // down-signal, dependencies.d naming the runit one.
    let s = sv.join("web");
    std::fs::create_dir_all(s.join("dependencies.d")).expect("mkdir");
    exe(&s.join("run"), "#!/bin/sh\nexec sleep 1000\n");
    std::fs::write(s.join("type"), "longrun\n").expect("type");
    std::fs::write(s.join("notification-fd"), "3\n").expect("nfd");
    std::fs::write(s.join("timeout-kill"), "2500\n").expect("tk");
    std::fs::write(s.join("down-signal"), "SIGINT\n").expect("ds");
    std::fs::write(s.join("dependencies.d/ticker"), "").expect("dep");
    std::fs::write(s.join("dependencies.d/base"), "").expect("dep");

    let out_dir = base.join("out");
    std::fs::create_dir_all(&out_dir).expect("out");
    let out = run(Command::new(bin("tetherctl"))
        .arg("import")
        .arg(&r)
        .arg(&s)
        .arg("--out")
        .arg(&out_dir));
    let report = text(&out.stdout);
    println!("{report}");
    assert!(out.status.success(), "{report}{}", text(&out.stderr));
    let check = check_dir(&out_dir);
    assert!(check.contains("2 services ok, 0 with errors"), "{check}");
    let ticker = std::fs::read_to_string(out_dir.join("ticker.toml")).expect("ticker");
    assert!(
        ticker.contains(&format!("exec = [\"{}/run\"]", r.display())),
        "{ticker}"
    );
    assert!(ticker.lines().any(|l| l == "disabled = true"), "{ticker}");
    let web = std::fs::read_to_string(out_dir.join("web.toml")).expect("web");
    assert!(web.lines().any(|l| l == "after = [\"ticker\"]"), "{web}");
    assert!(
        web.lines().any(|l| l == "stop_timeout = \"2500ms\""),
        "{web}"
    );
    assert!(web.lines().any(|l| l == "stop_signal = \"INT\""), "{web}");
    for s in [
        "ticker/finish:0: finish: not carried over",
        "ticker/log:0: log: not carried over",
        "web/notification-fd:1: notification-fd: not carried over",
        "dependencies.d: not carried over: base is not imported in this run",
    ] {
        assert!(report.contains(s), "{s:?} not in the report:\n{report}");
    }

    // An existing file is kept without --force.
    let again = run(Command::new(bin("tetherctl"))
        .arg("import")
        .arg(&r)
        .arg("--out")
        .arg(&out_dir));
    assert_eq!(again.status.code(), Some(1));
    assert!(text(&again.stdout).contains("exists (--force replaces it)"));
}

#[test]
fn malformed_and_refused_input_is_named_by_file_and_line() {
    let base = scratch("bad");
    let out_dir = base.join("out");
    std::fs::create_dir_all(&out_dir).expect("out");
    let bad = base.join("bad.service");
    std::fs::write(&bad, b"[Service]\nExecStart=/bin/true\nUser=\xff\xfe\n").expect("write");
    let noeq = base.join("noeq.service");
    std::fs::write(&noeq, "[Service]\nExecStart=/bin/true\nType\n").expect("write");
    let quote = base.join("quote.service");
    std::fs::write(&quote, "[Service]\nExecStart=/bin/echo 'unterminated\n").expect("write");
    let host = base.join("host.service");
    std::fs::write(&host, "[Service]\nExecStart=/bin/echo %H\n").expect("write");
    let out = run(Command::new(bin("tetherctl"))
        .arg("import")
        .args([&bad, &noeq, &quote, &host])
        .arg(base.join("missing.service"))
        .arg("--out")
        .arg(&out_dir));
    let report = text(&out.stdout);
    println!("{report}");
    assert_eq!(out.status.code(), Some(1), "{report}");
    for s in [
        format!("{}:3: line is not valid UTF-8", bad.display()),
        format!("{}:3: expected KEY=VALUE or [Section], got \"Type\"", noeq.display()),
        format!("{}:2: field ExecStart: unterminated ' quote", quote.display()),
        format!("{}:2: ExecStart=/bin/echo %H: refused: specifier %H (host name) is known only on the running system", host.display()),
        format!("{}: No such file or directory", base.join("missing.service").display()),
        "import: 0 service(s) written".to_string(),
    ] {
        assert!(report.contains(&s), "{s:?} not in:\n{report}");
    }
    assert_eq!(std::fs::read_dir(&out_dir).expect("out").count(), 0);

    // An alias (a link to a unit) is the unit it names.
    let real = base.join("real.service");
    std::fs::write(&real, "[Service]\nExecStart=/bin/true\n").expect("write");
    let alias = base.join("alias.service");
    std::os::unix::fs::symlink(&real, &alias).expect("symlink");
    let out = run(Command::new(bin("tetherctl"))
        .arg("import")
        .arg(&alias)
        .arg("--out")
        .arg(&out_dir));
    assert!(out.status.success(), "{}", text(&out.stdout));
    assert!(out_dir.join("real.toml").is_file() && !out_dir.join("alias.toml").exists());
    // Usage errors: exit 2.
    let out = run(Command::new(bin("tetherctl")).arg("import"));
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn an_imported_notify_unit_runs_under_the_restarter() {
    use std::time::Duration;
    use tether_integration::svc::Restarter;
    // A notify unit with what the import carries over: a $VAR and a
    // specifier in ExecStart, Environment=, a RuntimeDirectory= (the /bin/sh
    // prelude, argv passed on untouched) and Restart=.
    let base = scratch("run");
    let runtime = format!("tether-import-test-{}", std::process::id());
    let unit = base.join("demo.service");
    std::fs::write(
        &unit,
        format!(
            "[Service]\nType=notify\nEnvironment=\"GREETING=hello there\"\n\
             ExecStart=/bin/sh -c 'echo \"$$1 from %n, in $$(pwd)\"; systemd-notify --ready; exec sleep 1000' sh ${{GREETING}}\n\
             RuntimeDirectory={runtime}\nRuntimeDirectoryMode=0710\nRestart=always\n"
        ),
    )
    .expect("write unit");
    let out_dir = base.join("out");
    std::fs::create_dir_all(&out_dir).expect("out");
    let out = run(Command::new(bin("tetherctl"))
        .arg("import")
        .arg(&unit)
        .arg("--out")
        .arg(&out_dir));
    assert!(out.status.success(), "{}", text(&out.stdout));
    let file = std::fs::read_to_string(out_dir.join("demo.toml")).expect("demo.toml");
    let r = Restarter::builder("import-run")
        .service("demo", &file)
        .start();
    let t = Duration::from_secs(10);
    r.wait_state("demo", "ready", t);
    r.log.wait_for("hello there from demo.service, in /", t);
    let dir = Path::new("/run").join(&runtime);
    let mode = std::fs::metadata(&dir).map(|m| {
        use std::os::unix::fs::PermissionsExt;
        m.permissions().mode() & 0o7777
    });
    let _ = std::fs::remove_dir(&dir);
    assert_eq!(mode.ok(), Some(0o710), "{} from the prelude", dir.display());
}
