//! Release archives: deterministic packing and hardened extraction.

pub mod extract;
pub mod pack;
pub mod path;

pub use extract::{extract, ExtractError, ExtractStats};
pub use pack::{collect_entries, write_archive, FileSelection, PackError, Packed};
