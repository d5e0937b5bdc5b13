//! `flameprobe convert`: read a profile in any input format, write it in
//! any output format. Both ends go through [`Profile`](crate::profile::Profile).

use anyhow::Result;

use crate::config::ConvertConfig;
use crate::input;
use crate::output::{self, Output, WriteOptions};
use crate::profile::FrameNameOptions;

pub fn run(config: &ConvertConfig) -> Result<()> {
    let out = Output::prepare(&config.destination)?;
    let profile = input::read(&config.input)?;
    let opts = WriteOptions {
        svg: config.svg.clone(),
        folded: FrameNameOptions {
            threads: config.threads,
            group_by: config.group_by,
            ..FrameNameOptions::default()
        },
    };
    if let Some(note) = output::order_note(&profile, config.format, &opts) {
        log::info!("{note}");
    }
    output::write(&profile, config.format, &opts, out)?;
    Ok(())
}
