//! The committed C header must equal what build.rs generates from the sources, and its version macros
//! must match Cargo.toml.

const GENERATED: &str = include_str!(concat!(env!("OUT_DIR"), "/specblock.h"));
const COMMITTED: &str = include_str!("../include/specblock.h");

#[test]
fn committed_header_is_up_to_date() {
    if GENERATED != COMMITTED {
        let line = GENERATED
            .lines()
            .zip(COMMITTED.lines())
            .position(|(a, b)| a != b)
            .map_or_else(
                || GENERATED.lines().count().min(COMMITTED.lines().count()) + 1,
                |i| i + 1,
            );
        panic!(
            "include/specblock.h is stale (first difference at line {line}); regenerate it with `make header` and commit it"
        );
    }
}

#[test]
fn header_version_matches_cargo() {
    let version = env!("CARGO_PKG_VERSION");
    assert!(COMMITTED.contains(&format!("#define SB_VERSION \"{version}\"")));
    let mut parts = version.split('.');
    for name in ["MAJOR", "MINOR", "PATCH"] {
        let want = format!("#define SB_VERSION_{name} {}", parts.next().unwrap());
        assert!(COMMITTED.contains(&want), "missing `{want}`");
    }
}

#[test]
fn every_export_is_declared_and_documented() {
    // Each `sb_*` function in the header is preceded by a doc comment.
    let lines: Vec<&str> = COMMITTED.lines().collect();
    let mut functions = 0;
    for (i, line) in lines.iter().enumerate() {
        let is_fn =
            line.contains(" sb_") && line.contains('(') && !line.trim_start().starts_with('*');
        if is_fn {
            functions += 1;
            let prev = lines[..i]
                .iter()
                .rev()
                // A deprecated alias's attribute macro may stand on its own line before it.
                .find(|l| !l.trim().is_empty() && !l.trim_start().starts_with("SB_DEPRECATED("))
                .unwrap();
            assert!(
                prev.trim_end().ends_with("*/"),
                "undocumented declaration: {line}"
            );
        }
    }
    assert!(
        functions >= 25,
        "only {functions} functions found in the header"
    );
}

/// Every identifier the header declares (macros, types, enum constants, struct tags, functions) starts
/// with `sb_` / `SB_`, apart from the include guard: the header leaks no names into a C program.
#[test]
fn every_declared_name_is_prefixed() {
    let mut names: Vec<String> = Vec::new();
    let word = |s: &str| -> String {
        s.chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect()
    };
    let mut in_comment = false;
    for raw in COMMITTED.lines() {
        let line = raw.trim();
        if in_comment {
            in_comment = !line.contains("*/");
            continue;
        }
        if line.starts_with("/*") {
            in_comment = !line.contains("*/");
            continue;
        }
        if line.starts_with("//") || line.starts_with('*') || line.is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix("#define ") {
            names.push(word(rest));
        } else if let Some(rest) = line
            .strip_prefix("typedef struct ")
            .or_else(|| line.strip_prefix("typedef enum "))
            .or_else(|| line.strip_prefix("struct "))
            .or_else(|| line.strip_prefix("enum "))
        {
            names.push(word(rest));
        } else if let Some(rest) = line.strip_prefix("} ") {
            names.push(word(rest));
        } else if line.contains(" = ") && line.ends_with(',') {
            names.push(word(line));
        } else if let Some(open) = line.find('(')
            && !line.starts_with('#')
            && !line.starts_with("typedef")
            && line.ends_with([';', ','])
            && !raw.starts_with(' ')
        {
            let head = line[..open].trim_end();
            names.push(word(head.rsplit([' ', '*']).next().unwrap_or("")));
        }
    }
    names.retain(|n| !n.is_empty() && n != "SPECBLOCK_H");
    assert!(
        names.len() > 100,
        "found only {} names: {names:?}",
        names.len()
    );
    let bad: Vec<&String> = names
        .iter()
        .filter(|n| !n.starts_with("sb_") && !n.starts_with("SB_"))
        .collect();
    assert!(bad.is_empty(), "names without the sb_/SB_ prefix: {bad:?}");
}
