//! Release archives: deterministic packing and hardened extraction, with the
//! limits that bound them and the Landlock confinement of the extractor.

pub mod confine;
pub(crate) mod dirfd;
pub mod extract;
pub mod limits;
pub mod listing;
pub mod member;
pub mod pack;
pub mod path;

pub use extract::{extract, extract_buffered, ExtractError, ExtractStats};
pub use limits::Limits;
pub use pack::{
    collect_entries, write_archive, write_archive_keeping, write_archive_observed,
    write_archive_with, FileSelection, Keep, Kept, PackError, PackFormat, PackOptions, Packed,
};
