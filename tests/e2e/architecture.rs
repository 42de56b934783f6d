//! The code keeps the shape ARCHITECTURE.md describes, checked on the source
//! text (no build needed):
//! - no module cycle inside any crate, counting `use crate::…`/`use super::…`
//!   and inline `crate::…`/`super::…` paths, but not `mod` declarations or
//!   `pub use` re-exports;
//! - no module of `&str` constants standing in for an enum in the services;
//! - no service function taking an id as `&str`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).to_path_buf()
}

/// Source text with comments, string and character literals blanked out (so
/// `"crate::x"` in a string or a doc comment is not a path).
fn code_only(source: &str) -> String {
    let bytes = source.as_bytes();
    let mut out = String::with_capacity(source.len());
    let mut i = 0;
    while i < bytes.len() {
        let rest = &source[i..];
        if rest.starts_with("//") {
            let end = rest.find('\n').map_or(bytes.len(), |n| i + n);
            i = end;
        } else if rest.starts_with("/*") {
            let mut depth = 0;
            let mut j = i;
            while j < bytes.len() {
                if source[j..].starts_with("/*") {
                    depth += 1;
                    j += 2;
                } else if source[j..].starts_with("*/") {
                    depth -= 1;
                    j += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    j += 1;
                }
            }
            i = j;
        } else if rest.starts_with("r#\"") || rest.starts_with("r\"") || rest.starts_with("br\"") {
            let start = rest.find('r').unwrap() + 1;
            let hashes = rest[start..].chars().take_while(|c| *c == '#').count();
            let closing = format!("\"{}", "#".repeat(hashes));
            let body = i + start + hashes + 1;
            let end = source[body..]
                .find(&closing)
                .map_or(bytes.len(), |n| body + n + closing.len());
            out.push_str("\"\"");
            i = end;
        } else if bytes[i] == b'"' {
            let mut j = i + 1;
            while j < bytes.len() && bytes[j] != b'"' {
                if bytes[j] == b'\\' {
                    j += 1;
                }
                j += 1;
            }
            out.push_str("\"\"");
            i = j + 1;
        } else if bytes[i] == b'\'' {
            // A character literal ('a', '\n', '\u{..}') or a lifetime ('a).
            let literal_end = if bytes.get(i + 1) == Some(&b'\\') {
                source[i + 2..].find('\'').map(|n| i + 2 + n)
            } else if bytes.get(i + 2) == Some(&b'\'') {
                Some(i + 2)
            } else {
                rest.chars()
                    .nth(2)
                    .filter(|c| *c == '\'')
                    .map(|_| i + rest.chars().nth(1).map_or(1, |c| c.len_utf8()) + 1)
            };
            match literal_end {
                Some(end) => {
                    out.push_str("' '");
                    i = end + 1;
                }
                None => {
                    out.push('\'');
                    i += 1;
                }
            }
        } else {
            let c = rest.chars().next().unwrap();
            out.push(c);
            i += c.len_utf8();
        }
    }
    out
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Ident(String),
    Path,
    Punct(char),
}

fn tokens(code: &str) -> Vec<Token> {
    let chars: Vec<char> = code.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_alphanumeric() || c == '_' {
            let start = i;
            while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            out.push(Token::Ident(chars[start..i].iter().collect()));
        } else if c == ':' && chars.get(i + 1) == Some(&':') {
            out.push(Token::Path);
            i += 2;
        } else {
            if !c.is_whitespace() {
                out.push(Token::Punct(c));
            }
            i += 1;
        }
    }
    out
}

/// One module of a crate: its path from the crate root and its file.
struct Module {
    path: Vec<String>,
    code: String,
}

/// Every file module of the crate whose root is `entry`.
fn modules(entry: &Path) -> Vec<Module> {
    let mut found = Vec::new();
    walk(entry, Vec::new(), &mut found);
    found
}

fn walk(file: &Path, path: Vec<String>, found: &mut Vec<Module>) {
    let code = code_only(&std::fs::read_to_string(file).unwrap());
    let stem = file.file_stem().unwrap().to_str().unwrap();
    let dir = file.parent().unwrap();
    let children_dir = if matches!(stem, "lib" | "main" | "mod") {
        dir.to_path_buf()
    } else {
        dir.join(stem)
    };
    let list = tokens(&code);
    for (index, token) in list.iter().enumerate() {
        if token != &Token::Ident("mod".into()) {
            continue;
        }
        let (Some(Token::Ident(name)), Some(Token::Punct(';'))) =
            (list.get(index + 1), list.get(index + 2))
        else {
            continue;
        };
        for candidate in [
            children_dir.join(format!("{name}.rs")),
            children_dir.join(name).join("mod.rs"),
        ] {
            if candidate.exists() {
                let mut child = path.clone();
                child.push(name.clone());
                walk(&candidate, child, found);
                break;
            }
        }
    }
    found.push(Module { path, code });
}

/// The paths a module names through `crate::` or `super::`, resolved to
/// absolute segment lists, skipping `pub use` re-exports and following
/// inline modules for `super`.
fn referenced_paths(module: &Module) -> Vec<Vec<String>> {
    let list = tokens(&module.code);
    let mut out = Vec::new();
    // The inline modules the cursor is in, with the brace depth each opened at.
    let mut inline: Vec<(String, usize)> = Vec::new();
    let mut depth = 0_usize;
    let mut i = 0;
    while i < list.len() {
        match &list[i] {
            Token::Punct('{') => depth += 1,
            Token::Punct('}') => {
                depth = depth.saturating_sub(1);
                if inline.last().is_some_and(|(_, at)| *at == depth) {
                    inline.pop();
                }
            }
            Token::Ident(word) if word == "mod" => {
                if let (Some(Token::Ident(name)), Some(Token::Punct('{'))) =
                    (list.get(i + 1), list.get(i + 2))
                {
                    inline.push((name.clone(), depth));
                }
            }
            Token::Ident(word) if word == "pub" && is_use_after_visibility(&list, i) => {
                // A re-export: skip to its `;`.
                while i < list.len() && list[i] != Token::Punct(';') {
                    i += 1;
                }
            }
            Token::Ident(word)
                if (word == "crate" || word == "super")
                    && list.get(i + 1) == Some(&Token::Path)
                    && !matches!(i.checked_sub(1).map(|p| &list[p]), Some(Token::Path)) =>
            {
                let mut here: Vec<String> = module.path.clone();
                here.extend(inline.iter().map(|(name, _)| name.clone()));
                let (paths, next) = parse_tree(&list, i, &here);
                out.extend(paths);
                i = next;
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    out
}

fn is_use_after_visibility(list: &[Token], pub_at: usize) -> bool {
    let mut j = pub_at + 1;
    if list.get(j) == Some(&Token::Punct('(')) {
        while j < list.len() && list[j] != Token::Punct(')') {
            j += 1;
        }
        j += 1;
    }
    list.get(j) == Some(&Token::Ident("use".into()))
}

/// Parses a path or use tree starting at `start` (at `crate` or `super`),
/// returning every leaf path as absolute segments and the index after it.
fn parse_tree(list: &[Token], start: usize, here: &[String]) -> (Vec<Vec<String>>, usize) {
    let mut base: Vec<String> = Vec::new();
    let mut i = start;
    // Leading `crate` / `super` segments.
    let mut resolved: Vec<String> = here.to_vec();
    if list[i] == Token::Ident("crate".into()) {
        resolved.clear();
        i += 2;
    }
    while list.get(i) == Some(&Token::Ident("super".into())) {
        resolved.pop();
        i += 1;
        if list.get(i) == Some(&Token::Path) {
            i += 1;
        }
    }
    base.extend(resolved);
    let mut leaves = Vec::new();
    i = parse_rest(list, i, base, &mut leaves);
    (leaves, i)
}

fn parse_rest(
    list: &[Token],
    mut i: usize,
    mut path: Vec<String>,
    leaves: &mut Vec<Vec<String>>,
) -> usize {
    loop {
        match list.get(i) {
            Some(Token::Ident(name)) if name != "as" => {
                path.push(name.clone());
                i += 1;
                if list.get(i) == Some(&Token::Path) {
                    i += 1;
                    continue;
                }
                leaves.push(path);
                return i;
            }
            Some(Token::Punct('{')) => {
                i += 1;
                loop {
                    match list.get(i) {
                        Some(Token::Punct('}')) | None => return i + 1,
                        Some(Token::Punct(',')) => i += 1,
                        Some(Token::Ident(word)) if word == "as" => i += 2,
                        Some(Token::Ident(word)) if word == "self" => {
                            leaves.push(path.clone());
                            i += 1;
                        }
                        Some(Token::Punct('*')) => {
                            leaves.push(path.clone());
                            i += 1;
                        }
                        Some(_) => i = parse_rest(list, i, path.clone(), leaves),
                    }
                }
            }
            _ => {
                leaves.push(path);
                return i;
            }
        }
    }
}

/// Module-level edges of one crate: which file module names which.
fn edges(entry: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let all = modules(entry);
    let known: BTreeSet<Vec<String>> = all.iter().map(|m| m.path.clone()).collect();
    let name = |path: &[String]| {
        if path.is_empty() {
            "crate".to_owned()
        } else {
            path.join("::")
        }
    };
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for module in &all {
        let from = name(&module.path);
        let targets = graph.entry(from.clone()).or_default();
        for path in referenced_paths(module) {
            let mut target: Vec<String> = Vec::new();
            for segment in path {
                let mut longer = target.clone();
                longer.push(segment);
                if known.contains(&longer) {
                    target = longer;
                } else {
                    break;
                }
            }
            let to = name(&target);
            if to != from {
                targets.insert(to);
            }
        }
    }
    graph
}

/// The strongly connected components with more than one module (Tarjan).
fn cycles(graph: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    struct State<'a> {
        graph: &'a BTreeMap<String, BTreeSet<String>>,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on_stack: BTreeSet<&'a str>,
        next: usize,
        found: Vec<Vec<String>>,
    }
    fn visit<'a>(state: &mut State<'a>, node: &'a str) {
        state.index.insert(node, state.next);
        state.low.insert(node, state.next);
        state.next += 1;
        state.stack.push(node);
        state.on_stack.insert(node);
        let graph = state.graph;
        for next in graph.get(node).into_iter().flatten() {
            let next = next.as_str();
            if !state.index.contains_key(next) {
                visit(state, next);
                let low = state.low[node].min(state.low[next]);
                state.low.insert(node, low);
            } else if state.on_stack.contains(next) {
                let low = state.low[node].min(state.index[next]);
                state.low.insert(node, low);
            }
        }
        if state.low[node] == state.index[node] {
            let mut component = Vec::new();
            while let Some(member) = state.stack.pop() {
                state.on_stack.remove(member);
                component.push(member.to_owned());
                if member == node {
                    break;
                }
            }
            if component.len() > 1 {
                component.sort();
                state.found.push(component);
            }
        }
    }
    let mut state = State {
        graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        next: 0,
        found: Vec::new(),
    };
    for node in graph.keys() {
        if !state.index.contains_key(node.as_str()) {
            visit(&mut state, node);
        }
    }
    state.found
}

/// The root file of every crate of the workspace (and of the end-to-end test
/// crate).
fn crate_roots() -> Vec<PathBuf> {
    let root = root();
    let mut roots = Vec::new();
    for group in ["crates", "services"] {
        let mut members: Vec<PathBuf> = std::fs::read_dir(root.join(group))
            .unwrap()
            .map(|entry| entry.unwrap().path())
            .collect();
        members.sort();
        for member in members {
            for entry in ["src/lib.rs", "src/main.rs"] {
                if member.join(entry).exists() {
                    roots.push(member.join(entry));
                }
            }
        }
    }
    for entry in [
        "gateway/src/lib.rs",
        "gateway/src/main.rs",
        "src/lib.rs",
        "src/main.rs",
        "bench/src/main.rs",
        "tests/e2e/main.rs",
    ] {
        if root.join(entry).exists() {
            roots.push(root.join(entry));
        }
    }
    roots
}

#[test]
fn no_crate_has_a_module_cycle() {
    let mut found = Vec::new();
    let roots = crate_roots();
    assert!(roots.len() >= 15, "too few crates found: {roots:?}");
    for entry in roots {
        for cycle in cycles(&edges(&entry)) {
            found.push(format!("{}: {}", entry.display(), cycle.join(" ⇄ ")));
        }
    }
    assert!(found.is_empty(), "module cycles:\n{}", found.join("\n"));
}

#[test]
fn the_cycle_finder_sees_use_trees_inline_paths_and_super() {
    let dir = std::env::temp_dir().join(format!("marketbridge-arch-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("a")).unwrap();
    std::fs::write(
        dir.join("lib.rs"),
        "mod a;\nmod b;\nmod c;\npub use a::Thing;\n/// crate::c::x in a comment\nfn f() { let _ = \"crate::c\"; }\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("a.rs"),
        "mod inner;\nuse crate::{b::{self, B}, c as _};\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("a/inner.rs"),
        "fn g<'a>(x: &'a str) -> char { let _ = super::super::b::B; 'x' }\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("b.rs"),
        "fn h() { crate::a::inner::g(\"\"); }\n#[cfg(test)]\nmod tests { use super::*; }\n",
    )
    .unwrap();
    std::fs::write(dir.join("c.rs"), "pub use crate::a::Thing;\n").unwrap();
    let graph = edges(&dir.join("lib.rs"));
    std::fs::remove_dir_all(&dir).unwrap();
    let of = |name: &str| graph[name].iter().cloned().collect::<Vec<_>>();
    assert_eq!(
        of("crate"),
        Vec::<String>::new(),
        "comments, strings and `pub use` do not count"
    );
    assert_eq!(of("a"), ["b", "c"]);
    assert_eq!(of("a::inner"), ["b"]);
    assert_eq!(
        of("b"),
        ["a::inner"],
        "`super` inside an inline module is the file's own module"
    );
    assert_eq!(of("c"), Vec::<String>::new());
    assert_eq!(
        cycles(&graph),
        vec![vec!["a::inner".to_owned(), "b".to_owned()]]
    );
}

/// The non-test code of every service source file.
fn service_sources() -> Vec<(PathBuf, String)> {
    let mut out = Vec::new();
    for entry in crate_roots() {
        let relative = entry.strip_prefix(root()).unwrap().to_path_buf();
        if !relative.starts_with("services") {
            continue;
        }
        let dir = entry.parent().unwrap().to_path_buf();
        let mut pending = vec![dir];
        while let Some(dir) = pending.pop() {
            for item in std::fs::read_dir(&dir).unwrap() {
                let path = item.unwrap().path();
                if path.is_dir() {
                    pending.push(path);
                } else if path.extension().is_some_and(|e| e == "rs") {
                    let code =
                        without_test_modules(&code_only(&std::fs::read_to_string(&path).unwrap()));
                    out.push((path, code));
                }
            }
        }
    }
    out.sort();
    out.dedup_by(|a, b| a.0 == b.0);
    out
}

fn without_test_modules(code: &str) -> String {
    let mut out = String::new();
    let mut rest = code;
    while let Some(at) = rest.find("#[cfg(test)]") {
        out.push_str(&rest[..at]);
        let after = &rest[at..];
        let Some(open) = after.find('{') else { break };
        let mut depth = 0;
        let mut end = after.len();
        for (offset, c) in after[open..].char_indices() {
            match c {
                '{' => depth += 1,
                '}' => {
                    depth -= 1;
                    if depth == 0 {
                        end = open + offset + 1;
                        break;
                    }
                }
                _ => {}
            }
        }
        rest = &after[end..];
    }
    out.push_str(rest);
    out
}

#[test]
fn no_service_keeps_states_or_job_kinds_as_string_constants() {
    let mut found = Vec::new();
    for (path, code) in service_sources() {
        let list = tokens(&code);
        let mut i = 0;
        while i + 2 < list.len() {
            if list[i] == Token::Ident("mod".into())
                && let (Token::Ident(name), Token::Punct('{')) = (&list[i + 1], &list[i + 2])
            {
                let mut depth = 0;
                let mut string_constants = 0;
                let mut j = i + 2;
                while j < list.len() {
                    match &list[j] {
                        Token::Punct('{') => depth += 1,
                        Token::Punct('}') => {
                            depth -= 1;
                            if depth == 0 {
                                break;
                            }
                        }
                        Token::Ident(word)
                            if word == "const"
                                && list.get(j + 2) == Some(&Token::Punct(':'))
                                && list.get(j + 3) == Some(&Token::Punct('&'))
                                && matches!(list.get(j + 4), Some(Token::Ident(t)) if t == "str" || t == "static") =>
                        {
                            string_constants += 1;
                        }
                        _ => {}
                    }
                    j += 1;
                }
                if string_constants >= 2 {
                    found.push(format!(
                        "{}: mod {name} ({string_constants} &str constants)",
                        path.display()
                    ));
                }
            }
            i += 1;
        }
    }
    assert!(
        found.is_empty(),
        "modules of string constants standing in for enums:\n{}",
        found.join("\n")
    );
}

#[test]
fn no_service_function_takes_an_id_as_str() {
    let mut found = Vec::new();
    for (path, code) in service_sources() {
        let list = tokens(&code);
        for (i, token) in list.iter().enumerate() {
            if token != &Token::Ident("fn".into()) {
                continue;
            }
            let Some(Token::Ident(function)) = list.get(i + 1) else {
                continue;
            };
            // The parameter list: from the first `(` to its match.
            let Some(open) = list[i..].iter().position(|t| *t == Token::Punct('(')) else {
                continue;
            };
            let mut depth = 0;
            let mut params = Vec::new();
            for t in &list[i + open..] {
                match t {
                    Token::Punct('(') => depth += 1,
                    Token::Punct(')') => {
                        depth -= 1;
                        if depth == 0 {
                            break;
                        }
                    }
                    _ => {}
                }
                params.push(t.clone());
            }
            for (k, t) in params.iter().enumerate() {
                let Token::Ident(name) = t else { continue };
                let is_id = name == "id" || name.ends_with("_id") || name.ends_with("_ids");
                if !is_id || params.get(k + 1) != Some(&Token::Punct(':')) {
                    continue;
                }
                // The type, up to the next top-level comma.
                let ty: Vec<&Token> = params[k + 2..]
                    .iter()
                    .take_while(|t| **t != Token::Punct(','))
                    .collect();
                let textual = ty
                    .iter()
                    .any(|t| matches!(t, Token::Ident(w) if w == "str"));
                let typed_id = ty.iter().any(
                    |t| matches!(t, Token::Ident(w) if w.ends_with("Id") || w.ends_with("Ref")),
                );
                if textual && !typed_id {
                    found.push(format!("{}: fn {function}({name})", path.display()));
                }
            }
        }
    }
    assert!(
        found.is_empty(),
        "service functions taking ids as text:\n{}",
        found.join("\n")
    );
}
