//! Shell completions and man pages, generated from the CLI definition.
//! The checked-in copies under completions/ and man/ are tested for
//! staleness against this output.

use std::fs;
use std::io::Write;
use std::path::Path;

use anyhow::{Context, Result};
use clap::CommandFactory;
use clap_complete::Shell;

use crate::cli::Cli;
use crate::output::{Destination, Output};

pub fn completions(shell: Shell, w: &mut dyn Write) -> Result<()> {
    let mut cmd = Cli::command();
    clap_complete::generate(shell, &mut cmd, "flameprobe", w);
    Ok(())
}

/// Writes `completions/` (bash, zsh, fish) and `man/` pages into `dir`.
pub fn all(dir: &Path) -> Result<()> {
    let comp = dir.join("completions");
    let man = dir.join("man");
    for d in [&comp, &man] {
        fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
    }
    for (shell, name) in [
        (Shell::Bash, "flameprobe.bash"),
        (Shell::Zsh, "_flameprobe"),
        (Shell::Fish, "flameprobe.fish"),
    ] {
        let mut buf = Vec::new();
        completions(shell, &mut buf)?;
        write(&comp.join(name), &buf)?;
    }
    let cmd = Cli::command();
    let mut buf = Vec::new();
    clap_mangen::Man::new(cmd.clone()).render(&mut buf)?;
    exit_status_section(&mut buf);
    write(&man.join("flameprobe.1"), &buf)?;
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        let name = format!("flameprobe-{}", sub.get_name());
        let sub = sub.clone().name(name.clone());
        let mut buf = Vec::new();
        clap_mangen::Man::new(sub).render(&mut buf)?;
        exit_status_section(&mut buf);
        write(&man.join(format!("{name}.1")), &buf)?;
    }
    Ok(())
}

/// The EXIT STATUS section of a man page (roff).
fn exit_status_section(buf: &mut Vec<u8>) {
    buf.extend_from_slice(b".SH \"EXIT STATUS\"\n");
    for (code, meaning) in crate::cli::EXIT_CODES {
        buf.extend_from_slice(format!(".TP\n\\fB{code}\\fR\n{meaning}\n").as_bytes());
    }
}

fn write(path: &Path, data: &[u8]) -> Result<()> {
    let dest = Destination::File(path.to_path_buf());
    Output::prepare(&dest)?.write(|w| w.write_all(data))?;
    Ok(())
}
