//! `unsafe` is denied in every crate, and allowed only in two small modules: kura's memory map
//! and the node's two calls into glibc's allocator (node/src/allocator.rs), each block with its
//! `// SAFETY:` comment.

use std::path::{Path, PathBuf};

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name();
        if path.is_dir() && name != "target" && !name.to_string_lossy().starts_with('.') {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|extension| extension == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn unsafe_code_is_allowed_only_in_the_mmap_and_allocator_modules() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut files = Vec::new();
    rust_files(&root, &mut files);
    assert!(
        files.len() > 20,
        "found only {} source files under {}",
        files.len(),
        root.display()
    );
    let allow = ["allow(", "unsafe_code)"].concat();
    let offenders: Vec<String> = files
        .iter()
        .filter(|path| {
            !path.ends_with("kura/src/mmap.rs")
                && !path.ends_with("node/src/allocator.rs")
                && !path.ends_with("kura/tests/unsafe_confined.rs")
        })
        .filter(|path| std::fs::read_to_string(path).is_ok_and(|text| text.contains(&allow)))
        .map(|path| path.display().to_string())
        .collect();
    assert!(
        offenders.is_empty(),
        "unsafe code allowed outside kura/src/mmap.rs and node/src/allocator.rs: {offenders:?}"
    );
    let workspace = std::fs::read_to_string(root.join("Cargo.toml")).expect("workspace manifest");
    assert!(
        workspace.contains("unsafe_code = \"deny\""),
        "the workspace must deny unsafe code"
    );
}
