//! flameprobe as a library: the binary in `main.rs` is a thin shell over
//! these modules. Data flows one way:
//! `cli` -> `config` -> `record` (target -> probe -> unwind -> symbolize)
//! -> `profile` -> `output`.

pub mod allocator;
pub mod buildid;
pub mod cli;
pub mod config;
pub mod generate;
pub mod output;
pub mod probe;
pub mod proc;
pub mod process;
pub mod profile;
pub mod record;
pub mod signals;
pub mod stacks;
pub mod symbolize;
pub mod target;
pub mod unwind;
