//! Kura, kasane's block store: chunk files of committed blocks, crash recovery, and fast and
//! strict init into the world state. The byte layout is docs/KURA-FORMAT.md.
#![deny(unsafe_code)]

pub mod backend;
pub mod checkpoint;
pub mod fixture;
pub mod format;
pub mod init;
mod mmap;
pub mod store;

pub use backend::{Backend, FileBackend, MemoryBackend};
pub use init::{
    audit, audit_to, fast_init, fast_init_from_checkpoint, strict_init, AuditTarget, InitError, InitReport,
};
pub use store::{FsyncPolicy, Kura, KuraConfig, KuraError, OpenReport, TailCut};
