//! The source tree's shape, checked on every run: the top-level modules
//! under `src/` form no import circle (each imports only modules below
//! it), no file is over 700 lines, no function over 150 lines, and the
//! layout doc at the top of `lib.rs` names every top-level module.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use syn::visit::Visit;

const MAX_FILE_LINES: usize = 700;
const MAX_FN_LINES: usize = 150;

fn sources() -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(&p, out);
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push(p);
            }
        }
    }
    let mut v = Vec::new();
    walk(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"), &mut v);
    v.sort();
    v
}

/// `src/engine/apply/lead.rs` → `engine`; `src/lib.rs`, `src/main.rs` → `None`.
fn top_module(path: &Path) -> Option<String> {
    let rel = path
        .strip_prefix(Path::new(env!("CARGO_MANIFEST_DIR")).join("src"))
        .unwrap();
    let first = rel.components().next()?.as_os_str().to_str()?.to_string();
    let name = first.strip_suffix(".rs").unwrap_or(&first).to_string();
    (name != "lib" && name != "main").then_some(name)
}

fn rel(path: &Path) -> String {
    path.strip_prefix(env!("CARGO_MANIFEST_DIR"))
        .unwrap()
        .display()
        .to_string()
}

/// Every `crate::x…` path (in `use` trees and in expressions / types).
#[derive(Default)]
struct CrateRefs(BTreeSet<String>);

impl<'a> Visit<'a> for CrateRefs {
    /// Test modules are not part of the layering.
    fn visit_item_mod(&mut self, m: &'a syn::ItemMod) {
        let is_test = m.attrs.iter().any(|a| {
            a.path().is_ident("cfg") && a.parse_args::<syn::Ident>().is_ok_and(|i| i == "test")
        });
        if !is_test {
            syn::visit::visit_item_mod(self, m);
        }
    }

    fn visit_path(&mut self, p: &'a syn::Path) {
        let segs: Vec<String> = p.segments.iter().map(|s| s.ident.to_string()).collect();
        if segs.len() >= 2 && segs[0] == "crate" {
            self.0.insert(segs[1].clone());
        }
        syn::visit::visit_path(self, p);
    }

    fn visit_use_tree(&mut self, t: &'a syn::UseTree) {
        fn firsts(t: &syn::UseTree, out: &mut BTreeSet<String>) {
            match t {
                syn::UseTree::Path(p) => out.insert(p.ident.to_string()),
                syn::UseTree::Name(n) => out.insert(n.ident.to_string()),
                syn::UseTree::Rename(r) => out.insert(r.ident.to_string()),
                syn::UseTree::Group(g) => {
                    for t in &g.items {
                        firsts(t, out);
                    }
                    true
                }
                syn::UseTree::Glob(_) => false,
            };
        }
        if let syn::UseTree::Path(p) = t {
            if p.ident == "crate" {
                firsts(&p.tree, &mut self.0);
                return;
            }
        }
        syn::visit::visit_use_tree(self, t);
    }
}

/// Every function body with its first line and length.
#[derive(Default)]
struct Fns(Vec<(String, usize, usize)>);

impl Fns {
    fn add(&mut self, name: &syn::Ident, body: &syn::Block) {
        let start = name.span().start().line;
        let end = body.brace_token.span.close().end().line;
        self.0.push((name.to_string(), start, end + 1 - start));
    }
}

impl<'a> Visit<'a> for Fns {
    fn visit_item_fn(&mut self, f: &'a syn::ItemFn) {
        self.add(&f.sig.ident, &f.block);
        syn::visit::visit_item_fn(self, f);
    }
    fn visit_impl_item_fn(&mut self, f: &'a syn::ImplItemFn) {
        self.add(&f.sig.ident, &f.block);
        syn::visit::visit_impl_item_fn(self, f);
    }
    fn visit_trait_item_fn(&mut self, f: &'a syn::TraitItemFn) {
        if let Some(b) = &f.default {
            self.add(&f.sig.ident, b);
        }
        syn::visit::visit_trait_item_fn(self, f);
    }
}

fn parse(path: &Path) -> syn::File {
    let text = std::fs::read_to_string(path).unwrap();
    syn::parse_file(&text).unwrap_or_else(|e| panic!("{}: {e}", rel(path)))
}

#[test]
fn no_file_in_src_is_over_700_lines() {
    let long: Vec<String> = sources()
        .iter()
        .filter_map(|p| {
            let n = std::fs::read_to_string(p).unwrap().lines().count();
            (n > MAX_FILE_LINES).then(|| format!("{}: {n} lines", rel(p)))
        })
        .collect();
    assert!(long.is_empty(), "over {MAX_FILE_LINES} lines:\n{long:#?}");
}

#[test]
fn no_function_in_src_is_over_150_lines() {
    let mut long = Vec::new();
    let mut seen = 0;
    for p in sources() {
        let mut f = Fns::default();
        f.visit_file(&parse(&p));
        seen += f.0.len();
        for (name, line, n) in f.0 {
            if n > MAX_FN_LINES {
                long.push(format!("{}:{line} {name}: {n} lines", rel(&p)));
            }
        }
    }
    assert!(
        seen > 500,
        "only {seen} functions found: the visitor is broken"
    );
    assert!(long.is_empty(), "over {MAX_FN_LINES} lines:\n{long:#?}");
}

/// The import graph of the top-level modules (`src/x.rs` or `src/x/`).
fn module_graph() -> BTreeMap<String, BTreeMap<String, BTreeSet<String>>> {
    let mut g: BTreeMap<String, BTreeMap<String, BTreeSet<String>>> = BTreeMap::new();
    for p in sources() {
        let Some(from) = top_module(&p) else { continue };
        let mut refs = CrateRefs::default();
        refs.visit_file(&parse(&p));
        let edges = g.entry(from.clone()).or_default();
        for to in refs.0 {
            if to != from && to != "pb" {
                edges.entry(to).or_default().insert(rel(&p));
            }
        }
    }
    g
}

/// A circle in `g`, if any, as the modules along it.
fn find_circle(g: &BTreeMap<String, BTreeMap<String, BTreeSet<String>>>) -> Option<Vec<String>> {
    fn dfs(
        g: &BTreeMap<String, BTreeMap<String, BTreeSet<String>>>,
        n: &str,
        stack: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(i) = stack.iter().position(|s| s == n) {
            let mut c = stack[i..].to_vec();
            c.push(n.to_string());
            return Some(c);
        }
        if done.contains(n) {
            return None;
        }
        stack.push(n.to_string());
        for to in g.get(n).into_iter().flat_map(|e| e.keys()) {
            if let Some(c) = dfs(g, to, stack, done) {
                return Some(c);
            }
        }
        stack.pop();
        done.insert(n.to_string());
        None
    }
    let mut done = BTreeSet::new();
    g.keys().find_map(|n| dfs(g, n, &mut Vec::new(), &mut done))
}

#[test]
fn the_top_level_modules_form_no_import_circle() {
    let g = module_graph();
    assert!(g.len() >= 10, "modules: {:?}", g.keys());
    assert!(
        g.values().map(|e| e.len()).sum::<usize>() >= 10,
        "edges found: the visitor is broken"
    );
    if let Some(c) = find_circle(&g) {
        let why: Vec<String> = c
            .windows(2)
            .map(|w| format!("{} → {} (in {:?})", w[0], w[1], g[&w[0]][&w[1]]))
            .collect();
        panic!("import circle {}:\n{}", c.join(" → "), why.join("\n"));
    }
}

#[test]
fn the_circle_finder_finds_a_circle() {
    let mut g: BTreeMap<String, BTreeMap<String, BTreeSet<String>>> = BTreeMap::new();
    for (a, b) in [("a", "b"), ("b", "c"), ("c", "a"), ("c", "d")] {
        g.entry(a.into()).or_default().entry(b.into()).or_default();
    }
    assert_eq!(
        find_circle(&g),
        Some(vec!["a".into(), "b".into(), "c".into(), "a".into()])
    );
    g.get_mut("c").unwrap().remove("a");
    assert_eq!(find_circle(&g), None);
}

/// The top-level modules in the order the layout doc of `lib.rs` first
/// names them (as [`name`] or `name/`).
fn doc_order(doc: &str, modules: &BTreeSet<String>) -> Vec<String> {
    let mut order: Vec<(usize, String)> = modules
        .iter()
        .filter_map(|m| {
            let a = doc.find(&format!("[`{m}`]"));
            let b = doc.find(&format!("`{m}/`"));
            a.into_iter().chain(b).min().map(|i| (i, m.clone()))
        })
        .collect();
    order.sort();
    order.into_iter().map(|(_, m)| m).collect()
}

fn layout_doc() -> String {
    let lib =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("src/lib.rs")).unwrap();
    lib.lines()
        .take_while(|l| l.starts_with("//!"))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn each_module_imports_only_modules_the_layout_doc_lists_before_it() {
    let g = module_graph();
    let modules: BTreeSet<String> = g.keys().cloned().collect();
    let order = doc_order(&layout_doc(), &modules);
    assert_eq!(order.len(), modules.len(), "{order:?}");
    let rank = |m: &str| order.iter().position(|x| x == m);
    let mut upward = Vec::new();
    for (from, edges) in &g {
        for (to, files) in edges {
            if let (Some(f), Some(t)) = (rank(from), rank(to)) {
                if t > f {
                    upward.push(format!("{from} → {to} (in {files:?})"));
                }
            }
        }
    }
    assert!(
        upward.is_empty(),
        "imports of a module the layout doc lists later ({order:?}):\n{}",
        upward.join("\n")
    );
}

#[test]
fn the_layout_doc_in_lib_rs_names_every_top_level_module() {
    let doc = layout_doc();
    let modules: BTreeSet<String> = sources().iter().filter_map(|p| top_module(p)).collect();
    let missing: Vec<&String> = modules
        .iter()
        .filter(|m| !doc.contains(&format!("`{m}/`")) && !doc.contains(&format!("[`{m}`]")))
        .collect();
    assert!(missing.is_empty(), "lib.rs layout doc misses {missing:?}");
}
