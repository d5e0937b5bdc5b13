//! Command-line behaviour that needs no BPF: usage errors, exit codes,
//! generated completions and man pages.

use crate::util::*;

#[test]
fn usage_errors_exit_2() {
    for args in [
        &["record", "-d", "0s"][..],
        &["record", "-F", "0"],
        &["record", "--bogus"],
        &["record", "-a", "-p", "1"],
        &["record", "-o", "out.unknownext"],
        &["record", "-p", "1", "--", "true"],
        &["record", "--colors", "nope"],
        &["record", "--min-width", "-1"],
        &["report"],
        &["report", "x.folded", "--min-percent", "200"],
        &["report", "x.folded", "--focus", "("],
        &["convert", "x.folded"],
        &["convert", "x.folded", "-o", "out.unknownext"],
    ] {
        let out = run(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!err.is_empty() && out.stdout.is_empty(), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{err}");
    }
}

#[test]
fn help_documents_exit_codes() {
    let out = run_ok(&["record", "--help"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("Exit codes: 0 success, 1 error, 2 usage error."));
    let min_age = text
        .split("--min-age")
        .nth(1)
        .and_then(|t| t.split("\n\n").next())
        .unwrap_or_default();
    assert!(
        min_age.contains("500ms"),
        "--min-age shows its default: {min_age}"
    );
    for page in ["flameprobe.1", "flameprobe-record.1", "flameprobe-report.1"] {
        let roff = std::fs::read_to_string(repo_root().join("man").join(page)).unwrap();
        assert!(roff.contains(".SH \"EXIT STATUS\""), "{page}");
    }
}

#[test]
fn completions_and_man_pages_are_current() {
    let dir = tempfile::tempdir().unwrap();
    run_ok(&["generate", dir.path().to_str().unwrap()]);
    let bless = std::env::var("FLAMEPROBE_BLESS").as_deref() == Ok("1");
    let mut stale = Vec::new();
    for sub in ["completions", "man"] {
        for entry in std::fs::read_dir(dir.path().join(sub)).unwrap() {
            let entry = entry.unwrap();
            let fresh = std::fs::read(entry.path()).unwrap();
            let checked_in = repo_root().join(sub).join(entry.file_name());
            if std::fs::read(&checked_in).ok().as_deref() != Some(&fresh[..]) {
                if bless {
                    std::fs::write(&checked_in, &fresh).unwrap();
                } else {
                    stale.push(checked_in.display().to_string());
                }
            }
        }
    }
    assert!(
        stale.is_empty(),
        "stale generated files (run `FLAMEPROBE_BLESS=1 cargo test completions` to update): {stale:?}"
    );
}

#[test]
fn completions_subcommand_prints_script() {
    let out = run_ok(&["completions", "bash"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("flameprobe"));
}

#[test]
fn out_of_range_values_say_so() {
    let out = run(&["record", "--stack-size", "1M"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("out of range"), "{err}");
    assert!(!err.contains("invalid stack size"), "{err}");
}
