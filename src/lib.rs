//! flameprobe as a library: the binary in `main.rs` is a thin shell over
//! these modules. Data flows one way:
//! `cli` -> `config` -> `record` (target -> probe -> unwind -> symbolize)
//! -> `profile` -> `output`.

pub mod allocator;
pub mod buildid;
pub mod cli;
pub mod config;
pub mod container;
pub mod convert;
pub mod doctor;
pub mod generate;
pub mod input;
pub mod jit;
pub mod output;
pub mod probe;
pub mod proc;
pub mod process;
pub mod profile;
pub mod quality;
pub mod record;
pub mod report;
pub mod safe_fs;
pub mod signals;
pub mod stacks;
pub mod symbolize;
pub mod target;
pub mod unwind;
