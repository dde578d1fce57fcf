//! Read-only memory maps of sealed chunk files: the only `unsafe` code in kasane.
#![allow(unsafe_code)]

use std::fs::File;
use std::io;

use memmap2::Mmap;

/// Maps a sealed chunk file read-only.
pub fn map_sealed_chunk(file: &File) -> io::Result<Mmap> {
    // SAFETY: a mapped file must not be truncated or written while the map lives, or reads
    // through it may fault or change under us. Kura maps only sealed chunks, which it never
    // writes or truncates again (the tail cut at open happens before any map is taken, and
    // only the last chunk is ever cut), and docs/KURA-FORMAT.md requires that nothing else
    // writes a store while a node has it open.
    unsafe { Mmap::map(file) }
}
