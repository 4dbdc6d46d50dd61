//! The Debian package (issue 15): `./package.sh` builds
//! `target/debian/tether_VERSION_amd64.deb`; these tests run it once, then
//! check what the package holds, install it into a scratch root with
//! `dpkg --root`, run the installed binaries there, and run `lintian`,
//! which must report no error and no warning that is not overridden (with
//! its reason) in `packaging/lintian-overrides`.
//!
//! Needs `dpkg-deb`, `dpkg`, `lintian` and binutils (`strip`, `readelf`);
//! `test.sh` installs lintian and binutils when missing. A missing tool is
//! a failure, never a skip.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("integration/ has a parent")
        .to_path_buf()
}

fn run(cmd: &mut Command) -> Output {
    let shown = format!("{cmd:?}");
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {shown}: {e} (is the package installed?)"))
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Runs `./package.sh` once per test process and returns the .deb.
fn deb() -> &'static Path {
    static DEB: OnceLock<PathBuf> = OnceLock::new();
    DEB.get_or_init(|| {
        let out = run(Command::new(workspace().join("package.sh")).current_dir(workspace()));
        assert!(
            out.status.success(),
            "./package.sh failed ({}):\n{}\n{}",
            out.status,
            text(&out.stdout),
            text(&out.stderr)
        );
        let printed = text(&out.stdout);
        let last = printed
            .lines()
            .last()
            .unwrap_or_default()
            .trim()
            .to_string();
        let deb = workspace().join(&last);
        let name = deb.file_name().map(|n| n.to_string_lossy().into_owned());
        let version = env!("CARGO_PKG_VERSION");
        assert_eq!(
            name.as_deref(),
            Some(format!("tether_{version}-1_amd64.deb").as_str()),
            "package.sh printed {last:?}"
        );
        assert!(
            deb.starts_with(workspace().join("target/debian")),
            "{deb:?}"
        );
        assert!(deb.is_file(), "{deb:?} is not a file");
        deb
    })
}

/// `dpkg-deb -c`: (mode, owner, path) of each entry.
fn listing(deb: &Path) -> Vec<(String, String, String)> {
    let out = run(Command::new("dpkg-deb").arg("-c").arg(deb));
    assert!(out.status.success(), "dpkg-deb -c: {}", text(&out.stderr));
    text(&out.stdout)
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            assert!(f.len() >= 6, "odd dpkg-deb -c line {l:?}");
            let path = f[5].trim_start_matches('.').trim_end_matches('/');
            (f[0].to_string(), f[1].to_string(), path.to_string())
        })
        .collect()
}

#[test]
fn the_package_holds_the_binaries_config_man_pages_and_docs() {
    let deb = deb();
    let entries = listing(deb);
    let find = |p: &str| entries.iter().find(|e| e.2 == p);
    for (path, mode) in [
        ("/sbin/tether-init", "-rwxr-xr-x"),
        ("/usr/sbin/tether-restarter", "-rwxr-xr-x"),
        ("/usr/sbin/tether-watchdogd", "-rwxr-xr-x"),
        ("/usr/bin/tetherctl", "-rwxr-xr-x"),
        ("/etc/tether/tether.toml", "-rw-r--r--"),
        ("/etc/tether/services", "drwxr-xr-x"),
        ("/usr/share/man/man1/tetherctl.1.gz", "-rw-r--r--"),
        ("/usr/share/man/man8/tether-init.8.gz", "-rw-r--r--"),
        ("/usr/share/man/man8/tether-restarter.8.gz", "-rw-r--r--"),
        ("/usr/share/man/man8/tether-watchdogd.8.gz", "-rw-r--r--"),
        ("/usr/share/man/man5/tether.toml.5.gz", "-rw-r--r--"),
        ("/usr/share/man/man5/tether.service.5.gz", "-rw-r--r--"),
        ("/usr/share/doc/tether/README.Debian", "-rw-r--r--"),
        ("/usr/share/doc/tether/copyright", "-rw-r--r--"),
        ("/usr/share/doc/tether/changelog.Debian.gz", "-rw-r--r--"),
    ] {
        let Some(e) = find(path) else {
            panic!("{path} is not in the package; it has {entries:#?}")
        };
        assert_eq!(e.0, mode, "mode of {path}");
    }
    for e in &entries {
        assert_eq!(e.1, "root/root", "owner of {}", e.2);
    }

    let out = run(Command::new("dpkg-deb").arg("-I").arg(deb).arg("conffiles"));
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout).trim(), "/etc/tether/tether.toml");

    let out = run(Command::new("dpkg-deb").args(["-f"]).arg(deb).args([
        "Package",
        "Version",
        "Architecture",
        "Depends",
    ]));
    let fields = text(&out.stdout);
    assert!(fields.contains("Package: tether\n"), "{fields}");
    assert!(
        fields.contains(&format!("Version: {}-1\n", env!("CARGO_PKG_VERSION"))),
        "{fields}"
    );
    assert!(fields.contains("Architecture: amd64\n"), "{fields}");
    // Static binaries: nothing to depend on.
    assert!(!fields.contains("Depends:"), "{fields}");
}

#[test]
fn the_package_installs_into_a_scratch_root_and_its_binaries_run_there() {
    let deb = deb();
    let root = tempdir("scratch-root");
    for d in ["var/lib/dpkg/updates", "var/lib/dpkg/info", "var/log"] {
        std::fs::create_dir_all(root.join(d)).expect("mkdir");
    }
    std::fs::write(root.join("var/lib/dpkg/status"), b"").expect("status");
    let out = run(Command::new("dpkg")
        .arg(format!("--root={}", root.display()))
        .arg(format!("--log={}", root.join("var/log/dpkg.log").display()))
        .args(["--force-script-chrootless", "--force-not-root", "-i"])
        .arg(deb));
    assert!(
        out.status.success(),
        "dpkg -i: {}\n{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    let out = run(Command::new("dpkg")
        .arg(format!("--root={}", root.display()))
        .args(["-s", "tether"]));
    assert!(
        text(&out.stdout).contains("Status: install ok installed"),
        "{}",
        text(&out.stdout)
    );
    let conf = std::fs::read_to_string(root.join("var/lib/dpkg/info/tether.conffiles"))
        .expect("dpkg recorded the conffiles");
    assert_eq!(conf.trim(), "/etc/tether/tether.toml");

    // Every installed binary runs on its own (static) and knows its version.
    for bin in [
        "sbin/tether-init",
        "usr/sbin/tether-restarter",
        "usr/sbin/tether-watchdogd",
        "usr/bin/tetherctl",
    ] {
        let path = root.join(bin);
        let elf = run(Command::new("readelf")
            .args(["--program-headers", "--dynamic"])
            .arg(&path));
        let elf = text(&elf.stdout);
        assert!(
            !elf.contains("INTERP") && !elf.contains("(NEEDED)"),
            "{bin} is not static:\n{elf}"
        );
    }
    let out = run(Command::new(root.join("usr/bin/tetherctl")).arg("--version"));
    assert!(out.status.success());
    assert!(
        text(&out.stdout).contains(env!("CARGO_PKG_VERSION")),
        "{}",
        text(&out.stdout)
    );

    // The shipped tether.toml is valid, and points init at the layers'
    // directory of the package.
    let toml = root.join("etc/tether/tether.toml");
    let out = run(Command::new(root.join("usr/bin/tetherctl"))
        .arg("check")
        .arg("--config")
        .arg(&toml));
    let report = text(&out.stdout);
    assert!(
        report
            .lines()
            .next()
            .is_some_and(|l| l == format!("{}: ok", toml.display())),
        "tetherctl check on the shipped tether.toml:\n{report}{}",
        text(&out.stderr)
    );
    let shipped = std::fs::read_to_string(&toml).expect("read tether.toml");
    assert!(
        shipped.lines().any(|l| l.trim() == "bin = \"/usr/sbin\""),
        "{shipped}"
    );
    assert!(root.join("usr/sbin/tether-restarter").is_file());
    assert!(root.join("usr/sbin/tether-watchdogd").is_file());
    let _ = std::fs::remove_dir_all(&root);
}

#[test]
fn lintian_reports_no_error_and_no_unexplained_warning() {
    let deb = deb();
    let out = run(Command::new("lintian")
        .args(["--fail-on", "error,warning", "--info"])
        .arg(deb));
    let report = text(&out.stdout);
    println!("lintian {}:\n{report}", deb.display());
    assert!(
        out.status.success(),
        "lintian failed ({}):\n{report}\n{}",
        out.status,
        text(&out.stderr)
    );
    for line in report.lines() {
        assert!(
            !line.starts_with("E: ") && !line.starts_with("W: "),
            "lintian: {line}"
        );
    }
}

fn tempdir(what: &str) -> PathBuf {
    let dir = workspace()
        .join("target/tmp")
        .join(format!("package-{what}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create scratch dir");
    dir
}
