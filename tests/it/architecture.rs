//! The dependency direction docs/ARCHITECTURE.md draws, checked on the
//! source: no top-level module of `src/` imports another that imports it
//! back, directly or through others.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Each top-level module of `src/` and the top-level modules it names as
/// `crate::NAME`, from every file under it.
fn imports() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut pending = vec![src.clone()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                pending.push(path);
                continue;
            }
            if path.extension().is_none_or(|ext| ext != "rs") {
                continue;
            }
            let relative = path.strip_prefix(&src).unwrap();
            let top = relative.iter().next().unwrap().to_str().unwrap().trim_end_matches(".rs").to_string();
            if top == "main" || top == "lib" {
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            let named = graph.entry(top.clone()).or_default();
            for (at, _) in text.match_indices("crate::") {
                let after = &text[at + "crate::".len()..];
                // `crate::{a, b::c}` names every module in the braces.
                let names = match after.strip_prefix('{') {
                    Some(group) => top_level_names(group),
                    None => vec![after],
                };
                for name in names {
                    let name: String = name.chars().take_while(|c| c.is_ascii_lowercase() || *c == '_').collect();
                    if !name.is_empty() && name != top {
                        named.insert(name);
                    }
                }
            }
        }
    }
    graph
}

/// The first name of each item of a `{…}` group (its opening brace
/// already read), nested groups skipped: `a::{b, c}, d}` → `a`, `d`.
fn top_level_names(group: &str) -> Vec<&str> {
    let (mut names, mut depth, mut start) = (Vec::new(), 0, 0);
    for (at, c) in group.char_indices() {
        match c {
            '{' => depth += 1,
            '}' if depth == 0 => {
                names.push(group[start..at].trim());
                break;
            }
            '}' => depth -= 1,
            ',' if depth == 0 => {
                names.push(group[start..at].trim());
                start = at + 1;
            }
            _ => {}
        }
    }
    names
}

/// A path from `from` back to `from` through `graph`, if there is one.
fn circle(graph: &BTreeMap<String, BTreeSet<String>>, from: &str) -> Option<Vec<String>> {
    let mut stack = vec![vec![from.to_string()]];
    let mut seen = BTreeSet::new();
    while let Some(path) = stack.pop() {
        let last = path.last().unwrap();
        for next in graph.get(last).into_iter().flatten() {
            if next == from {
                let mut found = path.clone();
                found.push(next.clone());
                return Some(found);
            }
            if graph.contains_key(next) && seen.insert(next.clone()) {
                let mut longer = path.clone();
                longer.push(next.clone());
                stack.push(longer);
            }
        }
    }
    None
}

#[test]
fn no_module_imports_another_in_a_circle() {
    let graph = imports();
    assert!(graph.len() > 15, "the source was read: {:?}", graph.keys());
    let circles: Vec<String> = graph.keys().filter_map(|m| circle(&graph, m)).map(|c| c.join(" → ")).collect();
    assert!(circles.is_empty(), "modules import each other in a circle:\n{}", circles.join("\n"));
}

#[test]
fn grouped_imports_name_each_module() {
    assert_eq!(
        top_level_names("service, store::{Store, Queue}, telemetry};"),
        ["service", "store::{Store, Queue}", "telemetry"]
    );
}

#[test]
fn the_shared_types_import_nothing_but_ids() {
    let graph = imports();
    for module in ["domain", "jobs", "ids"] {
        let named: Vec<&String> = graph[module].iter().filter(|m| *m != "ids").collect();
        assert!(named.is_empty(), "{module} imports {named:?}");
    }
}
