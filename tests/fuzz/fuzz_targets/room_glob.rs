//! Room-name glob matching against a plain dynamic-programming reference.
#![no_main]
use libfuzzer_sys::fuzz_target;
use wsedge::testing::glob_match;

fn reference(p: &[u8], n: &[u8]) -> bool {
    // m[i][j]: p[..i] matches n[..j].
    let mut m = vec![vec![false; n.len() + 1]; p.len() + 1];
    m[0][0] = true;
    for i in 1..=p.len() {
        for j in 0..=n.len() {
            m[i][j] = if p[i - 1] == b'*' {
                m[i - 1][j] || (j > 0 && m[i][j - 1])
            } else {
                j > 0 && m[i - 1][j - 1] && p[i - 1] == n[j - 1]
            };
        }
    }
    m[p.len()][n.len()]
}

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else { return };
    let (pattern, name) = s.split_once('\n').unwrap_or((s, ""));
    if pattern.len() > 256 || name.len() > 256 {
        return;
    }
    assert_eq!(
        glob_match(pattern, name),
        reference(pattern.as_bytes(), name.as_bytes()),
        "{pattern:?} vs {name:?}"
    );
});
