//! The shape of the house, checked: the library's modules import only downward (no import
//! cycle, as `scripts/module-cycles.py` measures it) and no source file passes 800 lines.

use std::process::Command;

#[test]
fn the_modules_import_only_downward() {
    let out = Command::new("python3")
        .arg("scripts/module-cycles.py")
        .output()
        .expect("python3 runs scripts/module-cycles.py (Debian package python3)");
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "import cycles between modules:\n{report}");
    assert!(report.contains("no import cycle"), "{report}");
}

#[test]
fn no_source_file_passes_800_lines() {
    let mut long = Vec::new();
    let mut dirs = vec![std::path::PathBuf::from("src")];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let lines = std::fs::read_to_string(&path).unwrap().lines().count();
                if lines > 800 {
                    long.push(format!("{} ({lines} lines)", path.display()));
                }
            }
        }
    }
    assert!(long.is_empty(), "files over 800 lines: {long:?}");
}
