//! `flameprobe convert`: read a profile in any input format, write it in
//! any output format. Both ends go through [`Profile`](crate::profile::Profile).

use anyhow::{Context, Result};

use crate::config::ConvertConfig;
use crate::input;
use crate::output::{self, atomic, Destination, WriteOptions};
use crate::profile::FrameNameOptions;

pub fn run(config: &ConvertConfig) -> Result<()> {
    if let Destination::File(path) = &config.destination {
        atomic::check_writable(path)
            .with_context(|| format!("cannot write output '{}'", path.display()))?;
    }
    let profile = input::read(&config.input)?;
    let opts = WriteOptions {
        svg: config.svg.clone(),
        folded: FrameNameOptions {
            threads: config.threads,
            group_by: config.group_by,
        },
    };
    output::write(&profile, config.format, &opts, &config.destination)
        .with_context(|| format!("writing {}", config.destination))
}
