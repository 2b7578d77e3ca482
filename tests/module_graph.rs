//! Dependencies between the modules of `src/` point one way: no module reaches, through the
//! modules it uses, back to itself. Checked on the source text (each file is a module; `use`
//! statements and `crate::`/`super::` paths are its dependencies; unit-test modules are left
//! out), at two granularities: file by file, and by top-level module (`auth`, `tls`, …).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Module path (`["auth", "mtls"]`) of every `.rs` file under `src/`, except the crate roots.
fn modules(src: &Path) -> BTreeMap<Vec<String>, PathBuf> {
    let mut out = BTreeMap::new();
    let mut dirs = vec![src.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).expect("read src") {
            let path = entry.expect("dir entry").path();
            if path.is_dir() {
                dirs.push(path);
                continue;
            }
            if path.extension().and_then(|e| e.to_str()) != Some("rs") {
                continue;
            }
            let rel = path
                .strip_prefix(src)
                .expect("under src")
                .with_extension("");
            let mut parts: Vec<String> = rel
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect();
            if parts.last().map(String::as_str) == Some("mod") {
                parts.pop();
            }
            if parts == ["lib"] || parts == ["main"] {
                continue;
            }
            out.insert(parts, path);
        }
    }
    out
}

/// The file without comments and without its `#[cfg(test)] mod tests { … }` (always last).
fn code_of(text: &str) -> String {
    let text = match text.find("#[cfg(test)]\nmod tests") {
        Some(i) => &text[..i],
        None => text,
    };
    text.lines()
        .map(|line| match line.find("//") {
            // a `//` inside a string literal is rare in `use` lines; good enough here
            Some(i) if !line[..i].contains('"') => &line[..i],
            _ => line,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Every path of a `use` tree, braces expanded: `a::{b, c::{d}}` -> `a::b`, `a::c::d`.
fn expand_use(tree: &str) -> Vec<String> {
    let tree = tree.trim();
    let Some(open) = tree.find('{') else {
        return vec![tree.split(" as ").next().unwrap_or("").trim().to_string()];
    };
    let prefix = tree[..open].trim_end_matches("::").trim();
    let close = tree.rfind('}').filter(|c| *c > open).unwrap_or(tree.len());
    let inner = &tree[open + 1..close];
    let mut items = Vec::new();
    let (mut depth, mut start) = (0, 0);
    for (i, c) in inner.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                items.push(&inner[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    items.push(&inner[start..]);
    items
        .into_iter()
        .filter(|i| !i.trim().is_empty())
        .flat_map(expand_use)
        .map(|rest| {
            if rest == "self" {
                prefix.to_string()
            } else {
                format!("{prefix}::{rest}")
            }
        })
        .collect()
}

/// `crate::`/`super::`/`self::` paths written in `code`.
fn paths_in(code: &str) -> Vec<String> {
    let mut paths = Vec::new();
    // `use` statements start a line (after `pub ` or `pub(crate) `) and end at `;`
    let mut offset = 0;
    for line in code.split_inclusive('\n') {
        let trimmed = line.trim_start();
        let body = ["use ", "pub use ", "pub(crate) use ", "pub(super) use "]
            .iter()
            .find_map(|p| trimmed.strip_prefix(p));
        if let Some(body) = body {
            let start = offset + (line.len() - body.len());
            if let Some(end) = code[start..].find(';') {
                paths.extend(expand_use(&code[start..start + end]));
            }
        }
        offset += line.len();
    }
    for root in ["crate::", "super::"] {
        let mut rest = code;
        while let Some(i) = rest.find(root) {
            let tail = &rest[i..];
            let end = tail
                .find(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':'))
                .unwrap_or(tail.len());
            paths.push(tail[..end].trim_end_matches(':').to_string());
            rest = &tail[root.len()..];
        }
    }
    paths
}

/// The module a path names (its longest prefix that is a module), seen from `from`.
fn resolve(
    from: &[String],
    from_is_dir_module: bool,
    path: &str,
    known: &BTreeMap<Vec<String>, PathBuf>,
) -> Option<Vec<String>> {
    let mut segs: Vec<&str> = path.split("::").filter(|s| !s.is_empty()).collect();
    let mut base: Vec<String> = match *segs.first()? {
        "crate" => Vec::new(),
        "self" if from_is_dir_module => from.to_vec(),
        "self" => from[..from.len() - 1].to_vec(),
        "super" => from[..from.len().saturating_sub(1)].to_vec(),
        _ => return None,
    };
    let first = segs.remove(0);
    while first == "super" && segs.first() == Some(&"super") {
        segs.remove(0);
        base.pop();
    }
    (1..=segs.len()).rev().find_map(|n| {
        let mut candidate = base.clone();
        candidate.extend(segs[..n].iter().map(|s| s.to_string()));
        known.contains_key(&candidate).then_some(candidate)
    })
}

type Graph = BTreeMap<String, BTreeSet<String>>;

fn graph(src: &Path) -> Graph {
    let known = modules(src);
    let mut edges: Graph = BTreeMap::new();
    for (module, file) in &known {
        let code = code_of(&std::fs::read_to_string(file).expect("read module"));
        let is_dir = file.file_name().is_some_and(|n| n == "mod.rs");
        let targets = edges.entry(module.join("::")).or_default();
        for path in paths_in(&code) {
            if let Some(target) = resolve(module, is_dir, &path, &known) {
                if &target != module {
                    targets.insert(target.join("::"));
                }
            }
        }
    }
    edges
}

/// The same graph with every module replaced by its top-level module.
fn top_level(g: &Graph) -> Graph {
    let top = |m: &str| m.split("::").next().unwrap_or(m).to_string();
    let mut out: Graph = BTreeMap::new();
    for (from, tos) in g {
        let targets = out.entry(top(from)).or_default();
        targets.extend(tos.iter().map(|t| top(t)).filter(|t| *t != top(from)));
    }
    out
}

/// One cycle, as a list of modules, if there is any.
fn find_cycle(g: &Graph) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        g: &Graph,
        state: &mut BTreeMap<String, u8>,
        stack: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        state.insert(node.to_string(), 1);
        stack.push(node.to_string());
        for next in g.get(node).into_iter().flatten() {
            match state.get(next.as_str()) {
                Some(1) => {
                    let at = stack.iter().position(|m| m == next).unwrap_or(0);
                    let mut cycle = stack[at..].to_vec();
                    cycle.push(next.clone());
                    return Some(cycle);
                }
                Some(_) => {}
                None => {
                    if let Some(c) = visit(next, g, state, stack) {
                        return Some(c);
                    }
                }
            }
        }
        stack.pop();
        state.insert(node.to_string(), 2);
        None
    }
    let mut state = BTreeMap::new();
    for node in g.keys() {
        if !state.contains_key(node) {
            if let Some(c) = visit(node, g, &mut state, &mut Vec::new()) {
                return Some(c);
            }
        }
    }
    None
}

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

#[test]
fn no_module_of_src_depends_on_itself_through_others() {
    let g = graph(&src());
    assert!(
        g.len() > 30,
        "expected the whole crate, found {} modules",
        g.len()
    );
    // the reader sees real dependencies (guards the check against reading nothing)
    assert!(
        g["auth::mtls"].contains("tls::handshake"),
        "{:?}",
        g["auth::mtls"]
    );
    assert!(g["ingress"].contains("auth"), "{:?}", g["ingress"]);
    if let Some(cycle) = find_cycle(&g) {
        panic!("module cycle: {}", cycle.join(" -> "));
    }
    let top = top_level(&g);
    if let Some(cycle) = find_cycle(&top) {
        panic!("cycle between top-level modules: {}", cycle.join(" -> "));
    }
}

#[test]
fn the_check_finds_a_cycle_when_there_is_one() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path();
    std::fs::create_dir_all(src.join("a")).unwrap();
    std::fs::write(src.join("a/mod.rs"), "pub mod x;\nuse crate::b::Thing;\n").unwrap();
    std::fs::write(src.join("a/x.rs"), "use super::super::c::{self, d::E};\n").unwrap();
    std::fs::write(src.join("b.rs"), "pub struct Thing;\n").unwrap();
    std::fs::write(
        src.join("c.rs"),
        "// use crate::b; in a comment is no dependency\nfn f() { crate::a::x::g(); }\nconst S: &str = \"or use https: {}\";\n",
    )
    .unwrap();
    let g = graph(src);
    assert_eq!(g["a::x"], BTreeSet::from(["c".to_string()]));
    assert_eq!(g["c"], BTreeSet::from(["a::x".to_string()]));
    let cycle = find_cycle(&g).expect("a::x -> c -> a::x");
    assert!(cycle.contains(&"c".to_string()), "{cycle:?}");
    assert!(find_cycle(&top_level(&g)).is_some());
    assert_eq!(find_cycle(&top_level(&graph_without(&g, "c"))), None);
}

fn graph_without(g: &Graph, module: &str) -> Graph {
    g.iter()
        .filter(|(m, _)| m.as_str() != module)
        .map(|(m, t)| {
            (
                m.clone(),
                t.iter().filter(|x| *x != module).cloned().collect(),
            )
        })
        .collect()
}

/// The modules `from` reaches through its dependencies (itself not included).
fn reach(g: &Graph, from: &str) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    let mut todo: Vec<&str> = vec![from];
    while let Some(m) = todo.pop() {
        for next in g.get(m).into_iter().flatten() {
            if seen.insert(next.clone()) {
                todo.push(next);
            }
        }
    }
    seen
}

/// A chain of top-level modules by which `from` (its file and every file under its folder)
/// depends on `to`, directly or through others; `None` when it does not.
fn chain(g: &Graph, from: &str, to: &str) -> Option<Vec<String>> {
    let top = top_level(g);
    let mut came_from: BTreeMap<&str, &str> = BTreeMap::new();
    let mut todo = std::collections::VecDeque::from([from]);
    while let Some(m) = todo.pop_front() {
        for next in top.get(m).into_iter().flatten() {
            if next == from || came_from.contains_key(next.as_str()) {
                continue;
            }
            came_from.insert(next, m);
            if next == to {
                let mut path = vec![to.to_string()];
                let mut at = to;
                while at != from {
                    at = came_from[at];
                    path.push(at.to_string());
                }
                path.reverse();
                return Some(path);
            }
            todo.push_back(next);
        }
    }
    None
}

/// The ingress decisions do not depend on the egress routes, directly or through another
/// module: what both directions share (the `poa` rewriting of bodies, the request loop) has its
/// own home.
#[test]
fn ingress_does_not_import_from_egress() {
    let g = graph(&src());
    let top = top_level(&g);
    assert!(
        top["ingress"].contains("poa"),
        "the reader sees ingress's dependencies: {:?}",
        top["ingress"]
    );
    assert!(
        reach(&top, "ingress").contains("rules"),
        "the reader sees what ingress reaches: {:?}",
        reach(&top, "ingress")
    );
    if let Some(chain) = chain(&g, "ingress", "egress") {
        panic!(
            "ingress imports from egress: {} (ingress's direct dependencies: {:?})",
            chain.join(" -> "),
            top["ingress"]
        );
    }
}

#[test]
fn the_check_finds_an_import_of_egress_in_ingress() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path();
    for d in ["ingress", "egress", "forward"] {
        std::fs::create_dir_all(src.join(d)).unwrap();
    }
    let write = |path: &str, text: &str| std::fs::write(src.join(path), text).unwrap();
    write(
        "ingress.rs",
        "pub mod side;\nuse crate::poa::rewrite::Rewriter;\n",
    );
    write(
        "ingress/side.rs",
        "// use crate::egress::Route; in a comment is no import\nuse super::super::forward::Side;\n#[cfg(test)]\nmod tests {\n    use crate::egress::listener::Egress;\n}\n",
    );
    write(
        "egress/mod.rs",
        "pub mod listener;\nuse crate::poa::rewrite::Rewriter;\n",
    );
    write("egress/listener.rs", "use crate::forward::Side;\n");
    write("forward/mod.rs", "pub trait Side {}\n");
    write("poa.rs", "pub mod rewrite;\n");
    std::fs::create_dir_all(src.join("poa")).unwrap();
    write("poa/rewrite.rs", "pub struct Rewriter;\n");
    // what both share is in its own module: no chain
    assert_eq!(chain(&graph(src), "ingress", "egress"), None);
    assert_eq!(
        chain(&graph(src), "egress", "poa"),
        Some(vec!["egress".to_string(), "poa".to_string()])
    );

    // a file under src/ingress/ that names egress, in a path rather than a `use`
    write(
        "ingress/side.rs",
        "use super::super::forward::Side;\nfn f() { crate::egress::listener::g(); }\n",
    );
    assert_eq!(
        chain(&graph(src), "ingress", "egress"),
        Some(vec!["ingress".to_string(), "egress".to_string()])
    );

    // through another module: ingress -> forward -> egress
    write("ingress/side.rs", "use super::super::forward::Side;\n");
    write(
        "forward/mod.rs",
        "pub trait Side {}\nuse crate::egress::{self, listener};\n",
    );
    assert_eq!(
        chain(&graph(src), "ingress", "egress"),
        Some(vec![
            "ingress".to_string(),
            "forward".to_string(),
            "egress".to_string()
        ])
    );
}
