//! Names of JIT code as runtimes write them in perf maps, cleaned for
//! flame graphs: a short display name (folded stacks, SVG) and the full
//! system name (pprof), plus the language.
//!
//! Formats, as observed on this machine's runtimes and read in their
//! sources (fixtures under `tests/fixtures/jit/`):
//! - HotSpot (JDK 17 `Compiler.perfmap`, `CodeCache::write_perf_map`):
//!   compiled methods by `Method::external_name()`, `RET CLASS.METHOD(ARGS)`
//!   with dotted names (`long JitHot.fib(int)`,
//!   `void JitHot$Inner.<init>(int)`); other blobs by their plain name
//!   (`Interpreter`, `StubRoutines (1)`, `I2C/C2I adapters`).
//! - Node / V8 (`--perf-basic-prof`): `TAG:MARKERNAME SCRIPT:LINE:COLUMN`
//!   for JavaScript functions, TAG `JS` (V8 10+; `LazyCompile`, `Function`,
//!   `Script` before), `Eval`; MARKER `~` interpreted, `^` baseline
//!   (Sparkplug), `+` Maglev, `*` TurboFan, none when not optimizable; an
//!   empty name for anonymous functions. V8's own code is `Builtin:NAME`,
//!   `BytecodeHandler:NAME`, `Stub:`, `Handler:`, `RegExp:`, `Callback:`.
//! - CPython 3.12+ (`-X perf`): `py::QUALNAME:FILENAME`, one trampoline per
//!   code object.

/// The language of a JIT frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Language {
    Java,
    JavaScript,
    Python,
    /// A perf map of another producer, or a name of unknown shape.
    Unknown,
}

impl Language {
    pub fn as_str(self) -> &'static str {
        match self {
            Language::Java => "java",
            Language::JavaScript => "javascript",
            Language::Python => "python",
            Language::Unknown => "unknown",
        }
    }
}

/// A cleaned JIT frame name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JitName {
    /// Short, stable across compilation tiers: `JitHot.fib`,
    /// `fibJs /app/main.js:1`, `fib_py (/app/main.py)`.
    pub display: String,
    /// The name exactly as the runtime wrote it (signature, tier marker,
    /// column): `long JitHot.fib(int)`.
    pub system: String,
    pub language: Language,
}

/// Cleans a perf-map name. `runtime` is the language of the process the
/// map belongs to when known (from its mappings, see `jit::runtime`); with
/// [`Language::Unknown`] the shape of the name decides. A name that matches
/// no known shape is displayed as written.
pub fn clean(raw: &str, runtime: Language) -> JitName {
    let raw = raw.trim();
    let v8 = || v8_name(raw);
    let java = || java_method(raw);
    let python = || python_name(raw);
    let found = match runtime {
        Language::Java => java().map(|d| (d, Language::Java)),
        Language::JavaScript => v8().map(|d| (d, Language::JavaScript)),
        Language::Python => python().map(|d| (d, Language::Python)),
        Language::Unknown => python()
            .map(|d| (d, Language::Python))
            .or_else(|| v8().map(|d| (d, Language::JavaScript)))
            .or_else(|| java().map(|d| (d, Language::Java))),
    };
    let (display, language) = found.unwrap_or_else(|| (raw.to_string(), runtime));
    JitName {
        display,
        system: raw.to_string(),
        language,
    }
}

/// `RET CLASS.METHOD(ARGS)` -> `CLASS.METHOD`, the hidden-class address of
/// lambdas (`JitHot$$Lambda$1/0x00007f45dc000c10`) dropped so names are
/// the same from run to run.
fn java_method(raw: &str) -> Option<String> {
    let (ret, rest) = raw.split_once(' ')?;
    let args_at = rest.find('(')?;
    let (qualified, args) = rest.split_at(args_at);
    if ret.is_empty() || ret.contains('(') || !args.ends_with(')') || qualified.contains(' ') {
        return None;
    }
    let (class, method) = qualified.rsplit_once('.')?;
    if class.is_empty() || method.is_empty() {
        return None;
    }
    let class = match class.split_once("/0x") {
        Some((base, addr)) if !base.is_empty() && addr.bytes().all(|b| b.is_ascii_hexdigit()) => {
            base
        }
        _ => class,
    };
    Some(format!("{class}.{method}"))
}

/// Tags of V8 code objects that are JavaScript functions or scripts.
const V8_FUNCTION_TAGS: &[&str] = &[
    "JS",
    "LazyCompile",
    "Function",
    "Script",
    "Eval",
    "NativeFunction",
    "NativeLazyCompile",
    "NativeScript",
];

/// Tags of V8's own code, displayed as written.
const V8_CODE_TAGS: &[&str] = &[
    "Builtin",
    "BytecodeHandler",
    "Stub",
    "Handler",
    "RegExp",
    "Callback",
];

/// `JS:*fn /app/x.js:3:10` -> `fn /app/x.js:3`; anonymous functions keep
/// their column, the only thing telling them apart:
/// `JS:~ /app/x.js:3:28` -> `(anonymous) /app/x.js:3:28`.
fn v8_name(raw: &str) -> Option<String> {
    let (tag, rest) = raw.split_once(':')?;
    if V8_CODE_TAGS.contains(&tag) {
        return Some(raw.to_string());
    }
    if !V8_FUNCTION_TAGS.contains(&tag) {
        return None;
    }
    let rest = rest.trim_start_matches(['~', '^', '+', '*']);
    if let Some(location) = rest.strip_prefix(' ') {
        return Some(format!("(anonymous) {}", location.trim_start()));
    }
    if rest.is_empty() {
        return Some("(anonymous)".to_string());
    }
    // `name location`: drop the column of `file:line:column`.
    let Some((name, location)) = rest.rsplit_once(' ') else {
        return Some(rest.to_string());
    };
    let location = match location.rsplit_once(':') {
        Some((file_line, col))
            if is_number(col)
                && file_line
                    .rsplit_once(':')
                    .is_some_and(|(_, l)| is_number(l)) =>
        {
            file_line
        }
        _ => location,
    };
    Some(format!("{name} {location}"))
}

fn is_number(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

/// `py::Shape.area:/app/x.py` -> `Shape.area (/app/x.py)`; the qualified
/// name has no `:`, the file name may.
fn python_name(raw: &str) -> Option<String> {
    let rest = raw.strip_prefix("py::")?;
    match rest.split_once(':') {
        Some((qualname, file)) if !qualname.is_empty() && !file.is_empty() => {
            Some(format!("{qualname} ({file})"))
        }
        _ if !rest.is_empty() => Some(rest.to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn fixture(name: &str) -> String {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/jit")
            .join(name);
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    /// The names of a fixture map (third field on).
    fn names(map: &str) -> Vec<String> {
        fixture(map)
            .lines()
            .filter_map(|l| l.splitn(3, ' ').nth(2).map(str::to_string))
            .collect()
    }

    fn display(raw: &str, runtime: Language) -> String {
        clean(raw, runtime).display
    }

    #[test]
    fn java_methods_lose_return_type_and_arguments() {
        let n = clean("long JitHot.fib(int)", Language::Java);
        assert_eq!(n.display, "JitHot.fib");
        assert_eq!(n.system, "long JitHot.fib(int)");
        assert_eq!(n.language, Language::Java);
        for (raw, want) in [
            (
                "java.lang.Object jdk.internal.misc.Unsafe.getReferenceVolatile(java.lang.Object, long)",
                "jdk.internal.misc.Unsafe.getReferenceVolatile",
            ),
            ("void java.lang.Object.<init>()", "java.lang.Object.<init>"),
            ("double[][] a.b.C$D.m(java.lang.String[])", "a.b.C$D.m"),
            ("void JitHot.lambda$main$0()", "JitHot.lambda$main$0"),
            (
                "void JitHot$$Lambda$1/0x00007f45dc000c10.run()",
                "JitHot$$Lambda$1.run",
            ),
            // JDK 21+ (seen with Temurin 25) numbers hidden classes no more.
            (
                "void JitHot$$Lambda/0x00007f8b8c001a00.run()",
                "JitHot$$Lambda.run",
            ),
        ] {
            assert_eq!(display(raw, Language::Java), want, "{raw}");
            assert_eq!(display(raw, Language::Unknown), want, "{raw}");
        }
        // Blobs that are not methods stay as HotSpot names them.
        for raw in [
            "Interpreter",
            "StubRoutines (1)",
            "I2C/C2I adapters",
            "NullPointerException at call throw_exception",
            "new_instance Runtime1 stub",
        ] {
            let n = clean(raw, Language::Java);
            assert_eq!((n.display.as_str(), n.language), (raw, Language::Java));
        }
    }

    #[test]
    fn every_real_hotspot_name_is_clean() {
        for raw in names("hotspot17.map") {
            let n = clean(&raw, Language::Java);
            assert_eq!(n.system, raw);
            if raw.ends_with(')') && raw.contains('.') && !raw.contains(" (") {
                assert!(!n.display.contains('('), "{raw} -> {}", n.display);
                assert!(!n.display.contains(' '), "{raw} -> {}", n.display);
            }
        }
        let all = names("hotspot17.map");
        let fib = all
            .iter()
            .find(|n| n.contains("JitHot.fib("))
            .expect("fib in fixture");
        assert_eq!(display(fib, Language::Java), "JitHot.fib");
    }

    #[test]
    fn node_functions_lose_tag_tier_and_column() {
        for (raw, want) in [
            ("JS:*fibJs /tmp/jx/hot.js:1:15", "fibJs /tmp/jx/hot.js:1"),
            ("JS:~fibJs /tmp/jx/hot.js:1:15", "fibJs /tmp/jx/hot.js:1"),
            ("JS:^area /tmp/jx/hot.js:2:19", "area /tmp/jx/hot.js:2"),
            ("JS:+area /tmp/jx/hot.js:2:19", "area /tmp/jx/hot.js:2"),
            (
                "JS:~ /tmp/jx/hot.js:3:28",
                "(anonymous) /tmp/jx/hot.js:3:28",
            ),
            (
                "Eval:~ /tmp/jx/hot.js:1:1",
                "(anonymous) /tmp/jx/hot.js:1:1",
            ),
            ("JS:~resolve node:path:1217:10", "resolve node:path:1217"),
            (
                "LazyCompile:*Module._compile internal/modules/cjs/loader.js:1063",
                "Module._compile internal/modules/cjs/loader.js:1063",
            ),
            ("Function:~get foo /a b/x.js:4:9", "get foo /a b/x.js:4"),
            ("Script:~ /app/x.js", "(anonymous) /app/x.js"),
            ("JS:*", "(anonymous)"),
            ("JS:~noLocation", "noLocation"),
            ("Builtin:ArrayPrototypeMap", "Builtin:ArrayPrototypeMap"),
            ("BytecodeHandler:Ldar", "BytecodeHandler:Ldar"),
        ] {
            let n = clean(raw, Language::JavaScript);
            assert_eq!(n.display, want, "{raw}");
            assert_eq!(n.system, raw);
            assert_eq!(n.language, Language::JavaScript);
            assert_eq!(display(raw, Language::Unknown), want, "{raw}");
        }
    }

    #[test]
    fn every_real_node_name_is_recognized() {
        let all = names("node20.map");
        assert!(all.len() > 50);
        for raw in &all {
            let n = clean(raw, Language::Unknown);
            assert_eq!(n.language, Language::JavaScript, "{raw}");
            assert!(!n.display.starts_with("JS:"), "{raw}");
        }
        assert!(all
            .iter()
            .any(|raw| display(raw, Language::JavaScript).starts_with("fibJs ")));
    }

    #[test]
    fn python_functions_read_name_then_file() {
        for (raw, want) in [
            ("py::fib_py:/tmp/jx/hot.py", "fib_py (/tmp/jx/hot.py)"),
            (
                "py::Shape.area.<locals>.<genexpr>:/tmp/jx/hot.py",
                "Shape.area.<locals>.<genexpr> (/tmp/jx/hot.py)",
            ),
            (
                "py::_find_and_load:<frozen importlib._bootstrap>",
                "_find_and_load (<frozen importlib._bootstrap>)",
            ),
            ("py::<module>:C:\\x.py", "<module> (C:\\x.py)"),
        ] {
            let n = clean(raw, Language::Unknown);
            assert_eq!((n.display.as_str(), n.language), (want, Language::Python));
        }
        for raw in names("python312.map") {
            assert_eq!(clean(&raw, Language::Python).language, Language::Python);
            assert!(display(&raw, Language::Python).ends_with(')'), "{raw}");
        }
    }

    #[test]
    fn unknown_shapes_are_kept() {
        for raw in [
            "Lcom/foo/Bar;::run",
            "luajit trace 12",
            "py::",
            "weird:thing",
        ] {
            let n = clean(raw, Language::Unknown);
            assert_eq!((n.display.as_str(), n.language), (raw, Language::Unknown));
        }
        // The runtime's language is kept for its unrecognized names.
        assert_eq!(
            clean("whatever", Language::Python).language,
            Language::Python
        );
    }
}
