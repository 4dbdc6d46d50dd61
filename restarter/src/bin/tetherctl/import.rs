//! `tetherctl import FILE|DIR... [--out DIR] [--root DIR] [--force]`: the
//! shell around `tether_restarter::import`. It reads the units (a missing
//! `NAME@INSTANCE.service` is read from `NAME@.service`), the runit/s6
//! service directories and the environment files the units name (under
//! `--root`, default `/`), maps them all together (so that `After=`,
//! `Requires=` and s6-rc dependencies find each other), checks each result
//! with the restarter's own parser, writes `OUT/NAME.toml` (default: the
//! current directory; an existing file only with `--force`) and prints the
//! report: one line per directive. Exit 0 when every input was imported, 1
//! when one was refused or malformed, 2 on a usage error.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use tether_restarter::import::{self, map, runit, unit, Failure, Imported};

/// Largest unit, environment file or service-directory file read.
const MAX_FILE: u64 = 1 << 20;

pub const USAGE: &str = "usage: tetherctl import FILE|DIR... [--out DIR] [--root DIR] [--force]";

enum Input {
    Unit {
        file: String,
        unit_name: String,
        unit: unit::Unit,
    },
    Dir(runit::ServiceDir),
}

pub fn main(args: &[String]) -> ExitCode {
    let mut out = PathBuf::from(".");
    let mut root = PathBuf::from("/");
    let mut force = false;
    let mut inputs = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--out" | "--root" => {
                let Some(v) = it.next() else {
                    eprintln!("tetherctl import: {a} needs a directory\n{USAGE}");
                    return ExitCode::from(2);
                };
                if a == "--out" {
                    out = PathBuf::from(v);
                } else {
                    root = PathBuf::from(v);
                }
            }
            "--force" => force = true,
            "--help" | "-h" => {
                println!("{USAGE}");
                return ExitCode::SUCCESS;
            }
            s if s.starts_with("--") => {
                eprintln!("tetherctl import: unknown option {s:?}\n{USAGE}");
                return ExitCode::from(2);
            }
            s => inputs.push(PathBuf::from(s)),
        }
    }
    if inputs.is_empty() {
        eprintln!("tetherctl import: no unit file or service directory given\n{USAGE}");
        return ExitCode::from(2);
    }
    if !out.is_dir() {
        eprintln!("tetherctl import: --out {}: not a directory", out.display());
        return ExitCode::from(2);
    }
    let mut failed = 0usize;
    let mut stdout = std::io::stdout().lock();
    let mut say = |line: String| {
        let _ = writeln!(stdout, "{line}");
    };

    // Read and parse everything first.
    let mut loaded = Vec::new();
    for path in &inputs {
        match read_input(path) {
            Ok(i) => loaded.push(i),
            Err(e) => {
                say(e);
                failed += 1;
            }
        }
    }

    // Environment files of every unit, under --root.
    let mut env_files = BTreeMap::new();
    for i in &loaded {
        if let Input::Unit {
            unit, unit_name, ..
        } = i
        {
            for (p, _) in map::env_file_paths(unit, unit_name) {
                let at = root.join(p.trim_start_matches('/'));
                env_files.entry(p).or_insert_with(|| read_limited(&at).ok());
            }
        }
    }

    // Names of the run; a name whose import fails is taken out and the
    // rest mapped again, so that nothing points at a service not written.
    let mut names: BTreeMap<String, String> = BTreeMap::new();
    let mut dir_names: BTreeMap<String, String> = BTreeMap::new();
    for i in &loaded {
        match i {
            Input::Unit {
                unit,
                unit_name,
                file,
            } => {
                if let Ok(n) = map::tether_name(unit_name, file) {
                    names.insert(unit_name.clone(), n.clone());
                    for a in map::aliases(unit) {
                        names.entry(a).or_insert_with(|| n.clone());
                    }
                }
            }
            Input::Dir(d) => {
                let base = d.path.rsplit('/').next().unwrap_or_default().to_string();
                if let Some(n) = import::tether_name(&base) {
                    dir_names.insert(base, n);
                }
            }
        }
    }
    let results = loop {
        let units: Vec<(String, &unit::Unit)> = loaded
            .iter()
            .filter_map(|i| match i {
                Input::Unit {
                    unit, unit_name, ..
                } => names.get(unit_name).map(|n| (n.clone(), unit)),
                Input::Dir(_) => None,
            })
            .collect();
        let ctx = map::Context {
            befores: map::befores(&units, &names),
            names: names.clone(),
            env_files: env_files.clone(),
        };
        let results: Vec<Result<Imported, Failure>> = loaded
            .iter()
            .map(|i| match i {
                Input::Unit {
                    unit,
                    unit_name,
                    file,
                } => map::map(unit, unit_name, file, &ctx),
                Input::Dir(d) => runit::map(d, &dir_names),
            })
            .collect();
        let before = names.len() + dir_names.len();
        for (i, r) in loaded.iter().zip(&results) {
            if r.is_err() {
                match i {
                    Input::Unit { unit_name, .. } => {
                        if let Some(n) = names.get(unit_name).cloned() {
                            names.retain(|_, v| *v != n);
                        }
                    }
                    Input::Dir(d) => {
                        let base = d.path.rsplit('/').next().unwrap_or_default();
                        dir_names.remove(base);
                    }
                }
            }
        }
        if names.len() + dir_names.len() == before {
            break results;
        }
    };

    let mut written: BTreeMap<String, PathBuf> = BTreeMap::new();
    for (i, r) in loaded.iter().zip(results) {
        let shown = match i {
            Input::Unit { file, .. } => file.clone(),
            Input::Dir(d) => d.path.clone(),
        };
        let imported = match r {
            Ok(im) => im,
            Err(e) => {
                say(format!("{e}"));
                say(format!("{shown}: not imported"));
                failed += 1;
                continue;
            }
        };
        let target = out.join(format!("{}.toml", imported.name));
        if written.contains_key(&imported.name) {
            say(format!(
                "{shown}: not imported: a service named {} was imported from another input of this run",
                imported.name
            ));
            failed += 1;
            continue;
        }
        let text = imported.draft.render();
        if let Err(e) = tether_restarter::service::parse(&text, &target) {
            say(format!(
                "{shown}: not imported: the generated file does not parse ({e}); this is a bug of tetherctl import:\n{text}"
            ));
            failed += 1;
            continue;
        }
        if target.exists() && !force {
            say(format!(
                "{shown}: not imported: {} exists (--force replaces it)",
                target.display()
            ));
            failed += 1;
            continue;
        }
        if let Err(e) = write_atomically(&target, text.as_bytes()) {
            say(format!("{shown}: not imported: {}: {e}", target.display()));
            failed += 1;
            continue;
        }
        let count = |w: &str| {
            imported
                .findings
                .iter()
                .filter(|f| f.outcome.word() == w)
                .count()
        };
        say(format!(
            "{shown} -> {} ({} carried, {} changed, {} not carried over)",
            target.display(),
            count("carried"),
            count("changed"),
            count("not carried over")
        ));
        for f in &imported.findings {
            say(format!("  {f}"));
        }
        written.insert(imported.name.clone(), target);
    }

    // The directory as the restarter will load it: dependencies resolve.
    let set = tether_restarter::service::load_dir(&out);
    for (name, e) in &set.errors {
        if written.contains_key(name) {
            say(format!(
                "{}: {e}",
                out.join(format!("{name}.toml")).display()
            ));
            failed += 1;
        }
    }
    say(format!(
        "import: {} service(s) written to {}, {} input(s) not imported",
        written.len(),
        out.display(),
        failed
    ));
    if failed > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

fn read_input(path: &Path) -> Result<Input, String> {
    let shown = path.display().to_string();
    if path.is_dir() {
        if !path.join("run").exists() {
            return Err(format!(
                "{shown}: not a runit or s6 service directory (no run file)"
            ));
        }
        let abs = std::path::absolute(path).map_err(|e| format!("{shown}: {e}"))?;
        let abs = abs.to_string_lossy().trim_end_matches('/').to_string();
        let mut dir = runit::ServiceDir {
            path: abs,
            items: BTreeMap::new(),
        };
        let entries = std::fs::read_dir(path).map_err(|e| format!("{shown}: {e}"))?;
        for entry in entries {
            let entry = entry.map_err(|e| format!("{shown}: {e}"))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let p = entry.path();
            let item = match std::fs::metadata(&p) {
                Ok(m) if m.is_file() => {
                    use std::os::unix::fs::PermissionsExt;
                    runit::Item::File {
                        bytes: read_limited(&p).map_err(|e| format!("{}: {e}", p.display()))?,
                        executable: m.permissions().mode() & 0o111 != 0,
                    }
                }
                Ok(m) if m.is_dir() => {
                    let mut names: Vec<String> = std::fs::read_dir(&p)
                        .map_err(|e| format!("{}: {e}", p.display()))?
                        .filter_map(|e| e.ok())
                        .map(|e| e.file_name().to_string_lossy().into_owned())
                        .collect();
                    names.sort();
                    runit::Item::Dir(names)
                }
                _ => runit::Item::Other,
            };
            dir.items.insert(name, item);
        }
        return Ok(Input::Dir(dir));
    }
    let Some(mut unit_name) = path.file_name().map(|n| n.to_string_lossy().into_owned()) else {
        return Err(format!("{shown}: not a file name"));
    };
    // An alias (a symbolic link, /etc/systemd/system/sshd.service ->
    // ssh.service) is the unit it points to, as in systemd.
    if let Ok(real) = std::fs::canonicalize(path) {
        if let Some(n) = real.file_name().map(|n| n.to_string_lossy().into_owned()) {
            if n.ends_with(".service") {
                unit_name = n;
            }
        }
    }
    // An instance is read from its template, as systemd does.
    let mut read_from = path.to_path_buf();
    if !path.exists() {
        if let Some((prefix, rest)) = unit_name.split_once('@') {
            if let Some((_, suffix)) = rest.rsplit_once('.') {
                read_from = path.with_file_name(format!("{prefix}@.{suffix}"));
            }
        }
    }
    let bytes = read_limited(&read_from).map_err(|e| format!("{}: {e}", read_from.display()))?;
    let file = read_from.display().to_string();
    let unit = unit::parse(&bytes, &file).map_err(|e| e.to_string())?;
    Ok(Input::Unit {
        file,
        unit_name,
        unit,
    })
}

fn read_limited(path: &Path) -> std::io::Result<Vec<u8>> {
    let f = std::fs::File::open(path)?;
    let mut bytes = Vec::new();
    f.take(MAX_FILE + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > MAX_FILE {
        return Err(std::io::Error::other(format!(
            "larger than {MAX_FILE} bytes"
        )));
    }
    Ok(bytes)
}

fn write_atomically(target: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = target.with_extension("toml.tmp");
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, target)
}
