//! The docs, tested: README.md, CHANGELOG.md and every `docs/**/*.md`, read as a reader would
//! follow them. `docs/README.md` ("How the docs are tested") states the conventions; in short:
//!
//! - every relative link resolves: the file or directory exists, and a `#anchor` names a
//!   heading of the target (GitHub's anchors) or its `#L12` line;
//! - every path of the repository the text cites in backticks (`proactor/tests/races.rs`)
//!   exists;
//! - every Rust item the text cites in backticks with a workspace crate's prefix
//!   (`proactor::net::TcpStream::read_append`, `executor::Park`, `proactor::driver::budget`)
//!   exists in that crate's sources, and so does the member of `Type::member` where `Type` is a
//!   type of the workspace;
//! - the commands of ```` ```console ```` (`$ ` lines) and ```` ```sh ```` blocks are checked
//!   without running them: `echo-lab ARGS` and `cargo run -p echo-lab -- ARGS` by echo-lab's own
//!   argument parser (`--check-args`), other cargo commands for their subcommand, flags,
//!   packages and targets;
//! - ```` ```console,run ```` blocks run, and what they show after each `$` line must be what
//!   the command prints, once numbers are redacted.
//!
//! History is not held to today's names: in measurement records (`docs/measurements/*.md` but
//! its README) and in CHANGELOG.md's earlier rounds (below *Unreleased*), only links are
//! checked.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Component, Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use pulldown_cmark::{CodeBlockKind, Event, Options, Parser, Tag, TagEnd};

const EXE: &str = env!("CARGO_BIN_EXE_echo-lab");

/// Findings the docs are known to have today, each as (check: `link`, `path`, `item`,
/// `command` or `run`; file; what it is about: the link, the path, the item or the command):
/// prose the guide's rewrite replaces (issue 28). An entry that no
/// longer matches a finding fails the test, so that this list only shrinks.
const KNOWN: &[(&str, &str, &str)] = &[];

// ---------------------------------------------------------------------------------------------
// The documents

/// The repository's root.
fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("the workspace").to_path_buf()
}

/// A markdown file, parsed once.
struct Doc {
    /// Relative to the root, with `/`.
    name: String,
    path: PathBuf,
    /// The line from which the file is history, whose commands, paths and items are not
    /// checked: 1 for a measurement record; in CHANGELOG.md, its second round's heading (the
    /// first, *Unreleased*, is being written).
    history_from: usize,
    links: Vec<(usize, String)>,
    code_spans: Vec<(usize, String)>,
    blocks: Vec<Block>,
    anchors: HashSet<String>,
}

/// A fenced code block.
struct Block {
    /// The line of its first content line.
    line: usize,
    /// The info string's words: `console,run` is `["console", "run"]`.
    info: Vec<String>,
    text: String,
}

impl Doc {
    /// Whether line `line` is history (see `history_from`).
    fn is_history(&self, line: usize) -> bool {
        line >= self.history_from
    }
}

impl Block {
    fn is(&self, word: &str) -> bool {
        self.info.iter().any(|w| w == word)
    }
}

/// README.md, CHANGELOG.md and docs/**/*.md, in that order.
fn docs() -> &'static [Doc] {
    static DOCS: OnceLock<Vec<Doc>> = OnceLock::new();
    DOCS.get_or_init(|| {
        let root = root();
        let mut paths = vec![root.join("README.md"), root.join("CHANGELOG.md")];
        let mut docs_dir = Vec::new();
        markdown_under(&root.join("docs"), &mut docs_dir);
        docs_dir.sort();
        paths.extend(docs_dir);
        paths.iter().map(|p| parse(p)).collect()
    })
}

fn markdown_under(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            markdown_under(&path, out);
        } else if path.extension().is_some_and(|e| e == "md") {
            out.push(path);
        }
    }
}

fn parse(path: &Path) -> Doc {
    let text = fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let name = path.strip_prefix(root()).unwrap_or(path).to_string_lossy().replace('\\', "/");
    let record = name.starts_with("docs/measurements/") && !name.ends_with("/README.md");
    let mut rounds = 0;
    let line_of = |offset: usize| text[..offset].matches('\n').count() + 1;
    let mut doc = Doc {
        name,
        path: path.to_path_buf(),
        history_from: if record { 1 } else { usize::MAX },
        links: Vec::new(),
        code_spans: Vec::new(),
        blocks: Vec::new(),
        anchors: HashSet::new(),
    };
    let options = Options::ENABLE_TABLES | Options::ENABLE_STRIKETHROUGH | Options::ENABLE_FOOTNOTES;
    let mut heading: Option<String> = None;
    let mut block: Option<Block> = None;
    let mut seen: HashMap<String, usize> = HashMap::new();
    for (event, range) in Parser::new_ext(&text, options).into_offset_iter() {
        match event {
            Event::Start(Tag::Link { dest_url, .. } | Tag::Image { dest_url, .. }) => {
                doc.links.push((line_of(range.start), dest_url.to_string()));
            }
            Event::Start(Tag::Heading { level, .. }) => {
                heading = Some(String::new());
                if doc.name == "CHANGELOG.md" && level == pulldown_cmark::HeadingLevel::H2 {
                    rounds += 1;
                    if rounds == 2 {
                        doc.history_from = line_of(range.start);
                    }
                }
            }
            Event::End(TagEnd::Heading(_)) => {
                let anchor = github_anchor(&heading.take().unwrap_or_default());
                let n = seen.entry(anchor.clone()).or_insert(0);
                doc.anchors.insert(if *n == 0 { anchor } else { format!("{anchor}-{n}") });
                *n += 1;
            }
            Event::Start(Tag::CodeBlock(CodeBlockKind::Fenced(info))) => {
                let info = info.split(|c: char| c == ',' || c.is_whitespace()).filter(|w| !w.is_empty());
                block = Some(Block {
                    line: line_of(range.start) + 1,
                    info: info.map(str::to_string).collect(),
                    text: String::new(),
                });
            }
            Event::End(TagEnd::CodeBlock) => doc.blocks.extend(block.take()),
            Event::Text(t) => {
                if let Some(h) = &mut heading {
                    h.push_str(&t);
                }
                if let Some(b) = &mut block {
                    b.text.push_str(&t);
                }
            }
            Event::Code(code) => {
                if let Some(h) = &mut heading {
                    h.push_str(&code);
                }
                doc.code_spans.push((line_of(range.start), code.to_string()));
            }
            Event::Html(html) | Event::InlineHtml(html) => {
                // `<a id="x">` and `<a name="x">` are anchors too.
                for attr in ["id=\"", "name=\""] {
                    for (at, _) in html.match_indices(attr) {
                        let rest = &html[at + attr.len()..];
                        doc.anchors.extend(rest.split('"').next().map(str::to_string));
                    }
                }
            }
            _ => {}
        }
    }
    doc
}

/// The anchor GitHub gives a heading: lower case; letters, digits, `_` and `-` kept, spaces
/// made `-`, everything else dropped. (A repeated heading gets `-1`, `-2`, ...: see `parse`.)
fn github_anchor(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '_' || c == '-' => Some(c),
            _ => None,
        })
        .collect()
}

/// A problem found, and where.
struct Finding {
    doc: String,
    line: usize,
    /// What it is about (the link, the path, the command), matched against [`KNOWN`].
    subject: String,
    what: String,
}

/// Fails with every finding of `check` not in [`KNOWN`], and with every entry of [`KNOWN`] for
/// `check` that matched nothing.
fn report(check: &str, title: &str, findings: Vec<Finding>) {
    let known = KNOWN.iter().filter(|(c, _, _)| *c == check).map(|(_, doc, subject)| (*doc, *subject));
    let known: Vec<(&str, &str)> = known.collect();
    let is_known = |f: &Finding| known.iter().any(|(doc, subject)| *doc == f.doc && *subject == f.subject);
    let mut problems: Vec<String> = findings
        .iter()
        .filter(|f| !is_known(f))
        .map(|f| format!("{}:{}: {}", f.doc, f.line, f.what))
        .collect();
    for (doc, subject) in &known {
        if !findings.iter().any(|f| f.doc == *doc && f.subject == *subject) {
            problems
                .push(format!("{doc}: `{subject}` is in KNOWN but no longer found: remove it from the list"));
        }
    }
    assert!(problems.is_empty(), "{title}:\n{}", problems.join("\n"));
}

// ---------------------------------------------------------------------------------------------
// Links

#[test]
fn relative_links_resolve() {
    let docs = docs();
    let mut parsed_elsewhere: HashMap<PathBuf, HashSet<String>> = HashMap::new();
    let mut findings = Vec::new();
    for doc in docs {
        for (line, dest) in &doc.links {
            if let Err(what) = check_link(doc, dest, docs, &mut parsed_elsewhere) {
                findings.push(Finding { doc: doc.name.clone(), line: *line, subject: dest.clone(), what });
            }
        }
    }
    report("link", "broken relative links", findings);
}

fn check_link(
    doc: &Doc,
    dest: &str,
    docs: &[Doc],
    parsed_elsewhere: &mut HashMap<PathBuf, HashSet<String>>,
) -> Result<(), String> {
    let is_external = dest.starts_with("//")
        || dest.split_once(':').is_some_and(|(scheme, _)| {
            !scheme.is_empty() && scheme.chars().all(|c| c.is_ascii_alphanumeric() || "+.-".contains(c))
        });
    if is_external {
        return Ok(());
    }
    let (file, anchor) = match dest.split_once('#') {
        Some((f, a)) => (f, Some(percent_decode(a))),
        None => (dest, None),
    };
    let file = percent_decode(file);
    let target = if file.is_empty() {
        doc.path.clone()
    } else if let Some(from_root) = file.strip_prefix('/') {
        root().join(from_root)
    } else {
        doc.path.parent().expect("a doc's directory").join(&file)
    };
    let target = normalize(&target);
    if !target.exists() {
        return Err(format!("link `{dest}`: {} does not exist", shown(&target)));
    }
    if !target.starts_with(root()) {
        return Err(format!("link `{dest}`: {} is outside the repository", target.display()));
    }
    let Some(anchor) = anchor.filter(|a| !a.is_empty()) else { return Ok(()) };
    let page = if target.is_dir() { target.join("README.md") } else { target.clone() };
    if page.extension().is_some_and(|e| e == "md") && page.is_file() {
        let anchors = match docs.iter().find(|d| normalize(&d.path) == page) {
            Some(d) => &d.anchors,
            None => parsed_elsewhere.entry(page.clone()).or_insert_with(|| parse(&page).anchors),
        };
        if anchors.contains(&anchor) {
            return Ok(());
        }
        return Err(format!("link `{dest}`: {} has no heading with the anchor #{anchor}", shown(&page)));
    }
    // A source file: `#L12` or `#L12-L20` must be within it.
    if let Some(lines) = anchor.strip_prefix('L') {
        let count = fs::read_to_string(&page).map_or(0, |t| t.lines().count());
        for n in lines.split("-L") {
            match n.parse::<usize>() {
                Ok(n) if n >= 1 && n <= count => {}
                _ => return Err(format!("link `{dest}`: {} has {count} lines", shown(&page))),
            }
        }
    }
    Ok(())
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (bytes[i], bytes.get(i + 1).copied().and_then(hex), bytes.get(i + 2).copied().and_then(hex)) {
            (b'%', Some(h), Some(l)) => {
                out.push((h * 16 + l) as u8);
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `a/./b/../c` as `a/c`, without touching the file system.
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            c => out.push(c),
        }
    }
    out
}

/// A path as the reader knows it: from the repository's root.
fn shown(path: &Path) -> String {
    path.strip_prefix(root()).unwrap_or(path).display().to_string()
}

// ---------------------------------------------------------------------------------------------
// Rust items

/// One module of a crate: what it defines, what it re-exports, its submodules.
#[derive(Default)]
struct Module {
    items: HashSet<String>,
    reexports: HashSet<String>,
    /// A `pub use ...::*`.
    glob: bool,
    children: HashMap<String, usize>,
}

/// What a crate's sources define.
#[derive(Default)]
struct Crate {
    /// Module 0 is the crate's root.
    modules: Vec<Module>,
    /// Structs, enums, unions, traits and type aliases, anywhere in the crate.
    types: HashSet<String>,
    /// By type name: its methods and associated items (in any impl of the crate), variants,
    /// named fields, or a trait's items.
    members: HashMap<String, HashSet<String>>,
}

/// The workspace's crates, by the name Rust code uses (`echo_lab`, not `echo-lab`).
fn workspace() -> &'static HashMap<String, Crate> {
    static WORKSPACE: OnceLock<HashMap<String, Crate>> = OnceLock::new();
    WORKSPACE.get_or_init(|| {
        let mut crates = HashMap::new();
        for package in metadata()["packages"].as_array().expect("packages") {
            for target in package["targets"].as_array().expect("targets") {
                let kinds: Vec<&str> =
                    target["kind"].as_array().expect("kind").iter().filter_map(|k| k.as_str()).collect();
                let is_root =
                    kinds.contains(&"lib") || (kinds.contains(&"bin") && target["name"] == package["name"]);
                if !is_root {
                    continue;
                }
                let src = PathBuf::from(target["src_path"].as_str().expect("src_path"));
                let name = target["name"].as_str().expect("name").replace('-', "_");
                let mut krate = Crate::default();
                krate.modules.push(Module::default());
                let dir = src.parent().expect("a source directory").to_path_buf();
                index_file(&mut krate, 0, &src, &dir);
                crates.insert(name, krate);
            }
        }
        crates
    })
}

/// `cargo metadata` of the workspace (no dependencies).
fn metadata() -> &'static serde_json::Value {
    static METADATA: OnceLock<serde_json::Value> = OnceLock::new();
    METADATA.get_or_init(|| {
        let out = Command::new(cargo())
            .args(["metadata", "--no-deps", "--format-version", "1", "--offline"])
            .current_dir(root())
            .output()
            .expect("run cargo metadata");
        assert!(out.status.success(), "cargo metadata: {}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice(&out.stdout).expect("cargo metadata's JSON")
    })
}

fn cargo() -> &'static str {
    option_env!("CARGO").unwrap_or("cargo")
}

/// Indexes `file` as module `module`, whose submodules' files are under `dir`.
fn index_file(krate: &mut Crate, module: usize, file: &Path, dir: &Path) {
    let text = fs::read_to_string(file).unwrap_or_else(|e| panic!("cannot read {}: {e}", file.display()));
    let ast = syn::parse_file(&text).unwrap_or_else(|e| panic!("cannot parse {}: {e}", file.display()));
    index_items(krate, module, &ast.items, dir);
}

fn index_items(krate: &mut Crate, module: usize, items: &[syn::Item], dir: &Path) {
    use syn::Item;
    let define = |krate: &mut Crate, name: String| {
        krate.modules[module].items.insert(name);
    };
    for item in items {
        match item {
            Item::Fn(f) => define(krate, f.sig.ident.to_string()),
            Item::Const(c) => define(krate, c.ident.to_string()),
            Item::Static(s) => define(krate, s.ident.to_string()),
            Item::Type(t) => {
                define(krate, t.ident.to_string());
                krate.types.insert(t.ident.to_string());
            }
            Item::Struct(s) => {
                let name = s.ident.to_string();
                define(krate, name.clone());
                krate.types.insert(name.clone());
                let fields = s.fields.iter().filter_map(|f| f.ident.as_ref().map(ToString::to_string));
                krate.members.entry(name).or_default().extend(fields);
            }
            Item::Union(u) => {
                define(krate, u.ident.to_string());
                krate.types.insert(u.ident.to_string());
            }
            Item::Enum(e) => {
                let name = e.ident.to_string();
                define(krate, name.clone());
                krate.types.insert(name.clone());
                krate.members.entry(name).or_default().extend(e.variants.iter().map(|v| v.ident.to_string()));
            }
            Item::Trait(t) => {
                let name = t.ident.to_string();
                define(krate, name.clone());
                krate.types.insert(name.clone());
                let members = t.items.iter().filter_map(|i| match i {
                    syn::TraitItem::Fn(f) => Some(f.sig.ident.to_string()),
                    syn::TraitItem::Const(c) => Some(c.ident.to_string()),
                    syn::TraitItem::Type(t) => Some(t.ident.to_string()),
                    _ => None,
                });
                krate.members.entry(name).or_default().extend(members);
            }
            Item::Impl(imp) => {
                let syn::Type::Path(ty) = &*imp.self_ty else { continue };
                let Some(last) = ty.path.segments.last() else { continue };
                let members = imp.items.iter().filter_map(|i| match i {
                    syn::ImplItem::Fn(f) => Some(f.sig.ident.to_string()),
                    syn::ImplItem::Const(c) => Some(c.ident.to_string()),
                    syn::ImplItem::Type(t) => Some(t.ident.to_string()),
                    _ => None,
                });
                krate.members.entry(last.ident.to_string()).or_default().extend(members);
            }
            Item::Macro(m) => {
                if let Some(name) = &m.ident {
                    define(krate, name.to_string()); // macro_rules! name
                } else {
                    // What a macro invocation defines, read from its tokens: `struct Stats`.
                    let tokens = m.mac.tokens.to_string();
                    let words: Vec<&str> = tokens.split_whitespace().collect();
                    for pair in words.windows(2) {
                        if matches!(pair[0], "struct" | "enum" | "fn" | "trait" | "type" | "const" | "static")
                        {
                            let name = pair[1].trim_matches(|c: char| !c.is_alphanumeric() && c != '_');
                            define(krate, name.to_string());
                            if matches!(pair[0], "struct" | "enum" | "trait" | "type") {
                                krate.types.insert(name.to_string());
                            }
                        }
                    }
                }
            }
            Item::ForeignMod(f) => {
                for i in &f.items {
                    if let syn::ForeignItem::Fn(f) = i {
                        define(krate, f.sig.ident.to_string());
                    }
                }
            }
            Item::Use(u) if !matches!(u.vis, syn::Visibility::Inherited) => {
                let mut names = Vec::new();
                let glob = use_names(&u.tree, None, &mut names);
                let m = &mut krate.modules[module];
                m.reexports.extend(names);
                m.glob |= glob;
            }
            Item::Mod(m) => {
                let name = m.ident.to_string();
                define(krate, name.clone());
                let child = krate.modules.len();
                krate.modules.push(Module::default());
                krate.modules[module].children.insert(name.clone(), child);
                let child_dir = dir.join(&name);
                match &m.content {
                    Some((_, items)) => index_items(krate, child, items, &child_dir),
                    None => {
                        let file = [dir.join(format!("{name}.rs")), dir.join(&name).join("mod.rs")]
                            .into_iter()
                            .find(|f| f.is_file());
                        if let Some(file) = file {
                            index_file(krate, child, &file, &child_dir);
                        }
                    }
                }
            }
            _ => {}
        }
    }
}

/// The names a `use` tree brings in; whether it has a glob.
fn use_names(tree: &syn::UseTree, last: Option<String>, out: &mut Vec<String>) -> bool {
    match tree {
        syn::UseTree::Path(p) => use_names(&p.tree, Some(p.ident.to_string()), out),
        syn::UseTree::Name(n) if n.ident == "self" => {
            out.extend(last);
            false
        }
        syn::UseTree::Name(n) => {
            out.push(n.ident.to_string());
            false
        }
        syn::UseTree::Rename(r) => {
            out.push(r.rename.to_string());
            false
        }
        syn::UseTree::Glob(_) => true,
        syn::UseTree::Group(g) => {
            g.items.iter().fold(false, |glob, t| use_names(t, last.clone(), out) | glob)
        }
    }
}

/// The paths in a code span: `proactor::Builder::new().backend(Backend::PosixAio)` holds
/// `proactor::Builder::new` and `Backend::PosixAio`. A path is identifiers joined by `::`,
/// not preceded by `::`, `.` or an identifier's character.
fn paths_in(code: &str) -> Vec<Vec<&str>> {
    let bytes = code.as_bytes();
    let ident_char = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let starts = (bytes[i].is_ascii_alphabetic() || bytes[i] == b'_')
            && (i == 0 || !(ident_char(bytes[i - 1]) || bytes[i - 1] == b':' || bytes[i - 1] == b'.'));
        if !starts {
            i += 1;
            continue;
        }
        let start = i;
        let mut end = i;
        loop {
            while end < bytes.len() && ident_char(bytes[end]) {
                end += 1;
            }
            let next = end + 2;
            if code[end..].starts_with("::")
                && next < bytes.len()
                && (bytes[next].is_ascii_alphabetic() || bytes[next] == b'_')
            {
                end = next;
            } else {
                break;
            }
        }
        let path: Vec<&str> = code[start..end].split("::").collect();
        if path.len() >= 2 {
            out.push(path);
        }
        i = end.max(i + 1);
    }
    out
}

/// Whether `path` (a workspace crate's name first) exists; why not.
fn resolve(ws: &HashMap<String, Crate>, path: &[&str]) -> Result<(), String> {
    let krate = &ws[path[0]];
    let mut module = 0;
    let mut i = 1;
    while let Some(&child) = path.get(i).and_then(|s| krate.modules[module].children.get(*s)) {
        module = child;
        i += 1;
    }
    let in_module = path[..i].join("::");
    let visible = |name: &str| {
        let m = &krate.modules[module];
        m.items.contains(name)
            || m.reexports.contains(name)
            || (m.glob && ws.values().any(|c| c.modules.iter().any(|m| m.items.contains(name))))
    };
    match &path[i..] {
        [] => Ok(()),
        [item] if visible(item) => Ok(()),
        [item] => Err(format!("no `{item}` in `{in_module}`")),
        [ty, member] if visible(ty) => {
            if members_of(ws, Some(krate), ty).contains(*member) {
                Ok(())
            } else {
                Err(format!("`{in_module}::{ty}` has no `{member}`"))
            }
        }
        [ty, ..] if !visible(ty) => Err(format!("no `{ty}` in `{in_module}`")),
        _ => Err(format!(
            "`{}` is not an item, or one member of an item, of `{in_module}`",
            path[i..].join("::")
        )),
    }
}

/// The members of type `ty`: those of `krate` if it defines `ty`, else those of every crate
/// (a re-export).
fn members_of(ws: &HashMap<String, Crate>, krate: Option<&Crate>, ty: &str) -> HashSet<String> {
    if let Some(k) = krate.filter(|k| k.types.contains(ty)) {
        return k.members.get(ty).cloned().unwrap_or_default();
    }
    ws.values().filter_map(|k| k.members.get(ty)).flatten().cloned().collect()
}

#[test]
fn cited_rust_items_exist() {
    let ws = workspace();
    let types: HashSet<&String> = ws.values().flat_map(|k| &k.types).collect();
    let mut findings = Vec::new();
    let mut checked = 0;
    for doc in docs() {
        for (line, code) in doc.code_spans.iter().filter(|(line, _)| !doc.is_history(*line)) {
            for path in paths_in(code) {
                let subject = path.join("::");
                checked += 1;
                let why = if ws.contains_key(path[0]) {
                    resolve(ws, &path).err()
                } else if path.len() == 2
                    && path[0].starts_with(|c: char| c.is_ascii_uppercase())
                    && types.contains(&path[0].to_string())
                {
                    // `Type::member` without a crate: some workspace type of that name has it.
                    (!members_of(ws, None, path[0]).contains(path[1]))
                        .then(|| format!("no type `{}` of the workspace has a `{}`", path[0], path[1]))
                } else {
                    None
                };
                if let Some(why) = why {
                    let what = format!("`{subject}` (in `{code}`): {why}");
                    findings.push(Finding { doc: doc.name.clone(), line: *line, subject, what });
                }
            }
        }
    }
    eprintln!("{checked} paths in backticks");
    report("item", "Rust items cited in backticks that do not exist", findings);
}

/// Whether a code span is a path in the repository: `proactor/tests/races.rs`,
/// `echo/src/models/`, whose first component is a top-level entry of the repository, other
/// than `target` (`target/echo-lab/demo.json` is what a command writes).
fn repo_path(code: &str) -> Option<&str> {
    let path = code.trim();
    let (first, rest) = path.split_once('/')?;
    let plain = path.chars().all(|c| c.is_ascii_alphanumeric() || "_.-/".contains(c));
    let tracked = !matches!(first, "" | "target" | "." | "..") && root().join(first).exists();
    (plain && !rest.is_empty() && tracked && !path.contains("//")).then_some(path)
}

#[test]
fn cited_repository_paths_exist() {
    let mut findings = Vec::new();
    for doc in docs() {
        for (line, code) in doc.code_spans.iter().filter(|(line, _)| !doc.is_history(*line)) {
            let Some(path) = repo_path(code) else { continue };
            if !root().join(path).exists() {
                findings.push(Finding {
                    doc: doc.name.clone(),
                    line: *line,
                    subject: path.to_string(),
                    what: format!("`{path}` does not exist"),
                });
            }
        }
    }
    report("path", "paths of the repository cited in backticks that do not exist", findings);
}

// ---------------------------------------------------------------------------------------------
// Commands

/// A command of a block, and what the block shows it printing.
struct Step {
    line: usize,
    command: String,
    shown: Vec<String>,
}

/// The commands of a block: in `console` blocks the `$ ` lines, each followed by what it
/// prints; in `sh`, `bash` and `shell` blocks every line that is not a comment. A line ending in
/// `\` goes on on the next.
fn steps(block: &Block) -> Vec<Step> {
    let console = block.is("console");
    let mut steps: Vec<Step> = Vec::new();
    let mut lines = block.text.lines().enumerate();
    while let Some((i, line)) = lines.next() {
        let command = if console {
            match line.strip_prefix("$ ") {
                Some(c) => c,
                None => {
                    if let Some(step) = steps.last_mut() {
                        step.shown.push(line.to_string());
                    }
                    continue;
                }
            }
        } else {
            let trimmed = line.trim();
            if trimmed.is_empty() || trimmed.starts_with('#') {
                continue;
            }
            trimmed
        };
        let mut command = command.to_string();
        while command.ends_with('\\') {
            command.pop();
            match lines.next() {
                Some((_, more)) => command.push_str(more),
                None => break,
            }
        }
        steps.push(Step { line: block.line + i, command, shown: Vec::new() });
    }
    for step in &mut steps {
        while step.shown.last().is_some_and(|l| l.trim().is_empty()) {
            step.shown.pop();
        }
    }
    steps
}

/// A command split into words: its environment assignments, the program and its arguments, up
/// to the first shell operator (`|`, `&&`, `;`, `>`, ...), and whether it ends with `&`.
struct Words {
    env: Vec<(String, String)>,
    words: Vec<String>,
    background: bool,
}

fn split(command: &str) -> Option<Words> {
    let all = shlex::split(command)?;
    let mut env = Vec::new();
    let mut words = Vec::new();
    let mut background = false;
    for word in all {
        if words.is_empty() {
            if let Some((k, v)) = word.split_once('=') {
                if !k.is_empty()
                    && k.chars().all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
                {
                    env.push((k.to_string(), v.to_string()));
                    continue;
                }
            }
        }
        if word == "&" {
            background = true;
            break;
        }
        if matches!(word.as_str(), "|" | "||" | "&&" | ";") || word.starts_with('>') || word.starts_with("2>")
        {
            break;
        }
        words.push(word);
    }
    Some(Words { env, words, background })
}

/// If `words` run echo-lab (`echo-lab ...`, `target/release/echo-lab ...`, or `cargo run ...
/// -p echo-lab -- ...`), its arguments.
fn echo_lab_args(words: &[String]) -> Option<&[String]> {
    let program = words.first()?;
    if program == "echo-lab" || program.ends_with("/echo-lab") {
        return Some(&words[1..]);
    }
    if program != "cargo" {
        return None;
    }
    let dashes = words.iter().position(|w| w == "--").unwrap_or(words.len());
    let before = &words[..dashes];
    let run = before.iter().skip(1).find(|w| !w.starts_with('+') && !w.starts_with('-'))? == "run";
    let echo_lab = before
        .windows(2)
        .any(|p| matches!(p[0].as_str(), "-p" | "--package" | "--bin") && p[1] == "echo-lab")
        || before.iter().any(|w| w == "--package=echo-lab" || w == "--bin=echo-lab");
    (run && echo_lab).then(|| words.get(dashes + 1..).unwrap_or(&[]))
}

/// Why echo-lab's parser refuses `args`, if it does.
fn check_echo_lab(args: &[String]) -> Result<(), String> {
    let check = if args.iter().any(|a| a == "--check-args") { None } else { Some("--check-args") };
    let out = Command::new(EXE)
        .args(check)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run echo-lab: {e}"))?;
    if out.status.success() {
        return Ok(());
    }
    let err = String::from_utf8_lossy(&out.stderr);
    Err(err.lines().filter(|l| !l.trim().is_empty()).take(3).collect::<Vec<_>>().join(" / "))
}

/// `cargo SUBCOMMAND --help`, or why there is none.
fn cargo_help(sub: &str) -> Result<String, String> {
    static HELP: OnceLock<std::sync::Mutex<HashMap<String, Result<String, String>>>> = OnceLock::new();
    let mut cache = HELP.get_or_init(Default::default).lock().unwrap();
    cache
        .entry(sub.to_string())
        .or_insert_with(|| {
            let out = Command::new(cargo()).args([sub, "--help"]).output().map_err(|e| e.to_string())?;
            if out.status.success() {
                Ok(String::from_utf8_lossy(&out.stdout).into_owned())
            } else {
                Err(format!("`cargo {sub}` is not a cargo command"))
            }
        })
        .clone()
}

/// Whether `flag` (`--workspace`, `-p`) is in `help`, and whether it takes a value there.
fn flag_in_help(help: &str, flag: &str) -> Option<bool> {
    help.match_indices(flag).find_map(|(at, _)| {
        let before = help[..at].chars().next_back();
        let after = &help[at + flag.len()..];
        let boundary_before = before.is_none_or(|c| c.is_whitespace() || c == ',');
        let boundary_after =
            after.chars().next().is_none_or(|c| !(c.is_alphanumeric() || c == '-' || c == '_'));
        // `-p, --package [<SPEC>]`: the value is after the long form.
        let after = match after.strip_prefix(", --") {
            Some(long) => long.trim_start_matches(|c: char| c.is_alphanumeric() || c == '-'),
            None => after,
        };
        (boundary_before && boundary_after).then(|| after.starts_with(" <") || after.starts_with(" [<"))
    })
}

/// Why a cargo command (`words`, from `cargo` on) would fail on its package, target or flag
/// names, if it would.
fn check_cargo(words: &[String]) -> Result<(), String> {
    let dashes = words.iter().position(|w| w == "--").unwrap_or(words.len());
    let mut args = words[1..dashes].iter().filter(|w| !w.starts_with('+')).peekable();
    // Cargo's own flags before the subcommand.
    let mut sub = None;
    while let Some(w) = args.next() {
        if !w.starts_with('-') {
            sub = Some(w.as_str());
            break;
        }
        if matches!(w.as_str(), "-Z" | "-C" | "--config" | "--color") {
            args.next();
        }
    }
    let Some(sub) = sub else { return Ok(()) };
    let help = cargo_help(sub)?;
    let packages: Vec<&serde_json::Value> =
        metadata()["packages"].as_array().expect("packages").iter().collect();
    let mut selected: Vec<&serde_json::Value> = Vec::new();
    let mut targets: Vec<(String, String)> = Vec::new();
    let mut args: Vec<&String> = args.collect();
    args.reverse();
    while let Some(w) = args.pop() {
        if !w.starts_with('-') {
            continue;
        }
        let (flag, inline) = match w.split_once('=') {
            Some((f, v)) => (f.to_string(), Some(v.to_string())),
            None => (w.clone(), None),
        };
        // `-vv` is `-v` twice; `-Zflag` is `-Z flag`.
        let flag = if !flag.starts_with("--") && flag.len() > 2 { flag[..2].to_string() } else { flag };
        let Some(takes_value) = flag_in_help(&help, &flag) else {
            return Err(format!("`cargo {sub}` has no flag `{flag}`"));
        };
        let value = match inline {
            Some(v) => Some(v),
            None if takes_value && !w.starts_with("-Z") && w.len() <= flag.len() => args.pop().cloned(),
            None => None,
        };
        let Some(value) = value else { continue };
        match flag.as_str() {
            "-p" | "--package" => match packages.iter().find(|p| p["name"] == value.as_str()) {
                Some(p) => selected.push(p),
                None => return Err(format!("no package `{value}` in the workspace")),
            },
            "--example" | "--bin" | "--test" | "--bench" => {
                targets.push((flag.trim_start_matches("--").to_string(), value));
            }
            _ => {}
        }
    }
    let pool = if selected.is_empty() { packages.clone() } else { selected };
    for (kind, name) in targets {
        let found = pool.iter().any(|p| {
            p["targets"].as_array().expect("targets").iter().any(|t| {
                t["name"] == name.as_str()
                    && t["kind"].as_array().is_some_and(|k| k.iter().any(|k| k == kind.as_str()))
            })
        });
        if !found {
            return Err(format!("no {kind} target `{name}` in the package(s) selected"));
        }
    }
    Ok(())
}

#[test]
fn documented_commands_parse() {
    let mut findings = Vec::new();
    for doc in docs() {
        for block in doc.blocks.iter().filter(|b| !doc.is_history(b.line)) {
            if !["console", "sh", "bash", "shell"].iter().any(|lang| block.is(lang)) {
                continue;
            }
            for step in steps(block) {
                let Some(Words { words, .. }) = split(&step.command) else {
                    findings.push(Finding {
                        doc: doc.name.clone(),
                        line: step.line,
                        subject: step.command.clone(),
                        what: format!("`{}`: unbalanced quotes", step.command),
                    });
                    continue;
                };
                let mut result = Ok(());
                if words.first().is_some_and(|w| w == "cargo") {
                    result = check_cargo(&words);
                }
                if let (Ok(()), Some(args)) = (&result, echo_lab_args(&words)) {
                    result = check_echo_lab(args).map_err(|e| format!("echo-lab refuses it: {e}"));
                }
                if let Err(why) = result {
                    findings.push(Finding {
                        doc: doc.name.clone(),
                        line: step.line,
                        subject: step.command.clone(),
                        what: format!("`{}`: {why}", step.command),
                    });
                }
            }
        }
    }
    // Commands in running text: `echo-lab serve --stats`. One shown in part (`echo-lab`, or
    // `echo-lab serve --aio-threads` without its value) is not completed; one with placeholders (`--svg FILE`,
    // `[--messages N]`, `reactor|uring`) is not checked.
    for doc in docs() {
        for (line, code) in doc.code_spans.iter().filter(|(line, _)| !doc.is_history(*line)) {
            let Some(Words { words, .. }) = split(code) else { continue };
            let placeholder = |w: &String| {
                w.contains(['|', '[', ']', '<', '>'])
                    || (w.chars().all(|c| c.is_ascii_uppercase()) && !w.is_empty())
            };
            if !matches!(words.first().map(String::as_str), Some("echo-lab" | "cargo"))
                || words.iter().any(placeholder)
            {
                continue;
            }
            let mut result = Ok(());
            if words[0] == "cargo" {
                result = check_cargo(&words);
            }
            if let (Ok(()), Some(args)) = (&result, echo_lab_args(&words)) {
                result = match check_echo_lab(args) {
                    Err(e)
                        if ["a value is required", "the following required", "requires a subcommand"]
                            .iter()
                            .any(|partial| e.contains(partial)) =>
                    {
                        Ok(())
                    }
                    other => other.map_err(|e| format!("echo-lab refuses it: {e}")),
                };
            }
            if let Err(why) = result {
                let what = format!("`{code}`: {why}");
                findings.push(Finding {
                    doc: doc.name.clone(),
                    line: *line,
                    subject: code.to_string(),
                    what,
                });
            }
        }
    }
    report("command", "documented commands that would fail", findings);
}

// ---------------------------------------------------------------------------------------------
// Blocks that run

/// A line as compared: every number (digits, with `.` or `,` between digits) becomes `N`, runs
/// of spaces become one, and the ends are trimmed.
fn redact(line: &str) -> String {
    let chars: Vec<char> = line.chars().collect();
    let mut out = String::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_ascii_digit() {
            while i < chars.len()
                && (chars[i].is_ascii_digit()
                    || ((chars[i] == '.' || chars[i] == ',')
                        && chars.get(i + 1).is_some_and(char::is_ascii_digit)))
            {
                i += 1;
            }
            out.push('N');
            continue;
        }
        if c == ' ' && out.ends_with(' ') {
            i += 1;
            continue;
        }
        out.push(c);
        i += 1;
    }
    out.trim().to_string()
}

/// Whether `actual` is what `shown` shows (both redacted), where a line `...` in `shown`
/// stands for any number of lines.
fn matches_shown(shown: &[String], actual: &[String]) -> bool {
    match shown.split_first() {
        None => actual.is_empty(),
        Some((first, rest)) if first == "..." => {
            (0..=actual.len()).any(|skip| matches_shown(rest, &actual[skip..]))
        }
        Some((first, rest)) => {
            actual.split_first().is_some_and(|(a, more)| a == first && matches_shown(rest, more))
        }
    }
}

/// Replaces each loopback port a block names (`127.0.0.1:7000`, `localhost:7000`,
/// `[::1]:7000`) by a free one, the same for the same port throughout the block.
fn remap_ports(command: &str, ports: &mut HashMap<String, String>) -> String {
    let mut out = command.to_string();
    for host in ["127.0.0.1:", "localhost:", "[::1]:"] {
        let mut from = 0;
        while let Some(at) = out[from..].find(host).map(|a| a + from) {
            let start = at + host.len();
            let end = out[start..].find(|c: char| !c.is_ascii_digit()).map_or(out.len(), |e| e + start);
            let port = out[start..end].to_string();
            if port.is_empty() || port == "0" {
                from = end;
                continue;
            }
            let free = ports
                .entry(port)
                .or_insert_with(|| {
                    let l = TcpListener::bind("127.0.0.1:0").expect("a free port");
                    l.local_addr().expect("its address").port().to_string()
                })
                .clone();
            out.replace_range(start..end, &free);
            from = start + free.len();
        }
    }
    out
}

/// Waits up to `limit` for `child` to exit; kills it if it does not.
fn wait_bounded(child: &mut Child, limit: Duration) -> Result<std::process::ExitStatus, String> {
    let end = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().map_err(|e| e.to_string())? {
            return Ok(status);
        }
        if Instant::now() >= end {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("still running after {limit:?}: killed"));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Background commands of a block, killed when the block is done.
struct Background(Vec<Child>);

impl Drop for Background {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Runs the steps of a `console,run` block in `dir`; what differs from what it shows.
fn run_block(block: &Block, dir: &Path) -> Vec<(usize, String)> {
    let _ = fs::remove_dir_all(dir);
    fs::create_dir_all(dir).expect("a directory for the block");
    let mut problems = Vec::new();
    let mut ports = HashMap::new();
    let mut background = Background(Vec::new());
    for (n, step) in steps(block).into_iter().enumerate() {
        let command = remap_ports(&step.command, &mut ports);
        let Some(Words { env, words, background: in_background }) = split(&command) else {
            problems.push((step.line, "unbalanced quotes".to_string()));
            continue;
        };
        let Some(args) = echo_lab_args(&words) else {
            problems.push((step.line, format!("`{}`: a console,run block runs only echo-lab", step.command)));
            continue;
        };
        let log = dir.join(format!("step-{n}.out"));
        let file = fs::File::create(&log).expect("the step's output file");
        let child = Command::new(EXE)
            .args(args)
            .envs(env)
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("clone the output file"))
            .stderr(file)
            .spawn();
        let mut child = match child {
            Ok(c) => c,
            Err(e) => {
                problems.push((step.line, format!("cannot run echo-lab: {e}")));
                continue;
            }
        };
        let output = || fs::read_to_string(&log).unwrap_or_default();
        let printed: Vec<String> = if in_background {
            // What it prints first, once it has printed as many lines as shown; or, showing
            // nothing, once its port takes connections.
            let end = Instant::now() + Duration::from_secs(20);
            let ready = || {
                if step.shown.is_empty() {
                    ports.values().any(|p| {
                        let addr: SocketAddr = format!("127.0.0.1:{p}").parse().expect("an address");
                        command.contains(&format!(":{p}"))
                            && TcpStream::connect_timeout(&addr, Duration::from_millis(100)).is_ok()
                    })
                } else {
                    output().lines().count() >= step.shown.len()
                }
            };
            while !ready() && Instant::now() < end {
                std::thread::sleep(Duration::from_millis(20));
            }
            let lines: Vec<String> = output().lines().take(step.shown.len()).map(str::to_string).collect();
            background.0.push(child);
            lines
        } else {
            match wait_bounded(&mut child, Duration::from_secs(60)) {
                Ok(status) if status.success() => {}
                Ok(status) => {
                    problems.push((step.line, format!("`{}` failed ({status}):\n{}", step.command, output())))
                }
                Err(why) => problems.push((step.line, format!("`{}`: {why}", step.command))),
            }
            let mut lines: Vec<String> = output().lines().map(str::to_string).collect();
            while lines.last().is_some_and(|l| l.trim().is_empty()) {
                lines.pop();
            }
            lines
        };
        let shown: Vec<String> = step.shown.iter().map(|l| redact(l)).collect();
        let actual: Vec<String> = printed.iter().map(|l| redact(l)).collect();
        if !matches_shown(&shown, &actual) {
            let missing = shown.iter().find(|l| *l != "..." && !actual.contains(l));
            let first = missing.map_or(String::new(), |l| format!("first line shown but not printed: {l}\n"));
            problems.push((
                step.line,
                format!(
                    "`{}` prints something else than shown (numbers redacted as N):\n{first}--- shown\n{}\n--- printed\n{}",
                    step.command,
                    shown.join("\n"),
                    actual.join("\n")
                ),
            ));
        }
    }
    problems
}

#[test]
fn console_run_blocks_print_what_they_show() {
    let tmp = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("docs-run");
    let mut findings = Vec::new();
    for doc in docs() {
        for block in doc.blocks.iter().filter(|b| b.is("console") && b.is("run") && !doc.is_history(b.line)) {
            let dir = tmp.join(format!("{}-{}", doc.name.replace('/', "-"), block.line));
            for (line, what) in run_block(block, &dir) {
                findings.push(Finding { doc: doc.name.clone(), line, subject: String::new(), what });
            }
        }
    }
    report("run", "console,run blocks", findings);
}

// ---------------------------------------------------------------------------------------------
// The rules themselves

#[test]
fn the_rules_do_what_docs_readme_says() {
    assert_eq!(
        github_anchor("Owned buffers: why completion needs them"),
        "owned-buffers-why-completion-needs-them"
    );
    assert_eq!(github_anchor("A real demo run"), "a-real-demo-run");
    assert_eq!(github_anchor("io_uring at scale — 1,000 conns"), "io_uring-at-scale--1000-conns");
    assert_eq!(redact("   12. read(fd 7, 16384 bytes) → 7 bytes  "), "N. read(fd N, N bytes) → N bytes");
    assert_eq!(redact("  p99 1,204.5 µs   max 3 µs"), "pN N µs max N µs");
    let lines = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    assert!(matches_shown(&lines(&["a", "...", "d"]), &lines(&["a", "b", "c", "d"])));
    assert!(matches_shown(&lines(&["a", "..."]), &lines(&["a"])));
    assert!(!matches_shown(&lines(&["a", "d"]), &lines(&["a", "b", "d"])));
    let paths = paths_in("proactor::Builder::new().backend(Backend::PosixAio)");
    assert_eq!(paths, vec![vec!["proactor", "Builder", "new"], vec!["Backend", "PosixAio"]]);
    assert!(paths_in("executor::Runtime<D>") == vec![vec!["executor", "Runtime"]]);
    let mut ports = HashMap::new();
    let a = remap_ports("serve --addr 127.0.0.1:7000", &mut ports);
    let b = remap_ports("bench --addr 127.0.0.1:7000 --udp", &mut ports);
    assert!(!a.contains(":7000") && a[a.find(':').unwrap()..] == b[b.find(':').unwrap()..b.len() - 6]);
    let words = split("RUSTFLAGS=-Zx cargo +nightly test --workspace # all of it").unwrap();
    assert_eq!(words.env, vec![("RUSTFLAGS".to_string(), "-Zx".to_string())]);
    assert_eq!(words.words, ["cargo", "+nightly", "test", "--workspace"]);
    let run = |s: &str| split(s).unwrap().words;
    assert_eq!(
        echo_lab_args(&run("cargo run --release -p echo-lab -- demo --rounds 5")).unwrap(),
        ["demo", "--rounds", "5"]
    );
    assert!(echo_lab_args(&run("cargo run -p proactor --example uring-echo -- x")).is_none());
}
