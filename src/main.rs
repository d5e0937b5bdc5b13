//! flameprobe: eBPF flame-graph profiler. `main` parses arguments, sets up
//! logging, dispatches and maps errors to exit codes; nothing else.

use std::io::{self, Write};
use std::process::ExitCode;

use clap::Parser;

use flameprobe::cli::{Cli, Cmd, EXIT_ERROR, EXIT_USAGE};
// Messages on stderr that cannot be written are dropped, never a panic.
use flameprobe::eprintln;
use flameprobe::{convert, diff, doctor, generate, push, record, report, text};

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { EXIT_USAGE } else { 0 });
        }
    };
    init_logging(cli.verbose);
    // A recording holds a descriptor per binary it has seen.
    if let Err(e) = flameprobe::limits::raise_nofile() {
        log::debug!("cannot read the open-file limit: {e}");
    }
    let result = match cli.command {
        Cmd::Record(args) => match args.into_config() {
            Ok(config) => record::run(&config),
            Err(msg) => {
                eprintln!("error: {msg}");
                return ExitCode::from(EXIT_USAGE);
            }
        },
        Cmd::Report(args) => match args.into_config() {
            Ok(config) => report::run(&config),
            Err(msg) => {
                eprintln!("error: {msg}");
                return ExitCode::from(EXIT_USAGE);
            }
        },
        Cmd::Convert(args) => match args.into_config() {
            Ok(config) => convert::run(&config),
            Err(msg) => {
                eprintln!("error: {msg}");
                return ExitCode::from(EXIT_USAGE);
            }
        },
        Cmd::Diff(args) => match args.into_config() {
            Ok(config) => diff::run(&config),
            Err(msg) => {
                eprintln!("error: {msg}");
                return ExitCode::from(EXIT_USAGE);
            }
        },
        Cmd::Push(args) => match args.into_config() {
            Ok(config) => push::run(&config),
            Err(msg) => {
                eprintln!("error: {msg}");
                return ExitCode::from(EXIT_USAGE);
            }
        },
        Cmd::Doctor(args) => match doctor::run(args.json) {
            Ok(true) => Ok(()),
            Ok(false) => return ExitCode::from(EXIT_ERROR),
            Err(e) => Err(e),
        },
        Cmd::Completions { shell } => generate::completions(shell, &mut io::stdout()),
        Cmd::Generate { dir } => generate::all(&dir),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            let _ = writeln!(io::stderr(), "error: {}", text::message(&format!("{e:#}")));
            ExitCode::from(EXIT_ERROR)
        }
    }
}

/// A reader that went away (`flameprobe ... -o - | head`) is a normal end.
fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<io::Error>()
            .is_some_and(|io| io.kind() == io::ErrorKind::BrokenPipe)
    })
}

fn init_logging(verbose: u8) {
    let level = match verbose {
        0 => log::LevelFilter::Warn,
        1 => log::LevelFilter::Info,
        _ => log::LevelFilter::Debug,
    };
    env_logger::Builder::new()
        .filter_level(level)
        .format(|f, record| {
            // Messages may hold names a target controls: no control
            // sequence reaches the terminal.
            let args = record.args().to_string();
            let msg = text::message(&args);
            match record.level() {
                // Warnings read like the rest of flameprobe's messages; the
                // details of -v and -vv keep their level.
                log::Level::Error => writeln!(f, "flameprobe: error: {msg}"),
                log::Level::Warn => writeln!(f, "flameprobe: warning: {msg}"),
                level => writeln!(f, "[{level:<5}] {msg}"),
            }
        })
        .parse_env("FLAMEPROBE_LOG")
        .init();
}
