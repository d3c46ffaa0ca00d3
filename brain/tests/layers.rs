//! The brain's modules form layers: no module reaches back up to one that
//! depends on it (`correlate` ↔ `diagnose` and `api` ↔ `engine` were such
//! cycles). Read from the sources, so a new cycle fails here.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
};

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The code of a file without its tests, comments and string literals.
fn code(text: &str) -> String {
    let text = text.split("#[cfg(test)]").next().unwrap_or("");
    let strings = regex::Regex::new(r#""(?:[^"\\]|\\.)*""#).unwrap();
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect();
    strings.replace_all(&lines.join("\n"), "\"\"").into_owned()
}

fn module_graph() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut modules = BTreeSet::new();
    for e in std::fs::read_dir(&src).unwrap() {
        let p = e.unwrap().path();
        let name = p.file_stem().unwrap().to_string_lossy().into_owned();
        if name != "lib" && (p.is_dir() || p.extension().is_some_and(|x| x == "rs")) {
            modules.insert(name);
        }
    }
    let path_use = regex::Regex::new(r"crate::(\w+)").unwrap();
    let group_use = regex::Regex::new(r"(?s)use crate::\{(.*?)\};").unwrap();
    let word = regex::Regex::new(r"(?:^|[,{\s])(\w+)(?:::|,|\s|$)").unwrap();
    let mut graph = BTreeMap::new();
    for m in &modules {
        let mut files = Vec::new();
        let file = src.join(format!("{m}.rs"));
        if file.exists() {
            files.push(file);
        }
        if src.join(m).is_dir() {
            rust_files(&src.join(m), &mut files);
        }
        let mut deps = BTreeSet::new();
        for f in files.iter().filter(|f| !f.ends_with("tests.rs")) {
            let c = code(&std::fs::read_to_string(f).unwrap());
            let mut add = |d: &str| {
                if d != m && modules.contains(d) {
                    deps.insert(d.to_string());
                }
            };
            for cap in path_use.captures_iter(&c) {
                add(&cap[1]);
            }
            for g in group_use.captures_iter(&c) {
                for w in word.captures_iter(&g[1]) {
                    add(&w[1]);
                }
            }
        }
        graph.insert(m.clone(), deps);
    }
    graph
}

fn path(
    g: &BTreeMap<String, BTreeSet<String>>,
    from: &str,
    to: &str,
    seen: &mut BTreeSet<String>,
) -> Option<Vec<String>> {
    if from == to {
        return Some(vec![to.to_string()]);
    }
    if !seen.insert(from.to_string()) {
        return None;
    }
    for n in &g[from] {
        if let Some(mut p) = path(g, n, to, seen) {
            p.insert(0, from.to_string());
            return Some(p);
        }
    }
    None
}

#[test]
fn no_module_reaches_back_up_the_flow() {
    let g = module_graph();
    assert!(g.len() > 10, "modules found: {:?}", g.keys());
    // The graph is read right: the engine routes between the stages.
    for stage in ["act", "correlate", "diagnose", "incident", "verify"] {
        assert!(g["engine"].contains(stage), "engine -> {stage}: {g:?}");
    }
    let mut cycles = Vec::new();
    for (a, deps) in &g {
        for b in deps {
            if let Some(back) = path(&g, b, a, &mut BTreeSet::new()) {
                cycles.push(format!("{a} -> {}", back.join(" -> ")));
            }
        }
    }
    assert!(cycles.is_empty(), "module cycles: {cycles:#?}");
    // No HTTP server types below the API (the action gateway's HTTP
    // actuator is a client: reqwest).
    for m in [
        "engine",
        "incident",
        "correlate",
        "act",
        "verify",
        "diagnose",
    ] {
        let mut files = Vec::new();
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        if src.join(m).is_dir() {
            rust_files(&src.join(m), &mut files);
        } else {
            files.push(src.join(format!("{m}.rs")));
        }
        for f in files.iter().filter(|f| !f.ends_with("tests.rs")) {
            let c = code(&std::fs::read_to_string(f).unwrap());
            assert!(
                !c.contains("axum") && !c.contains("hyper"),
                "{} uses HTTP server types",
                f.display()
            );
        }
    }
}
