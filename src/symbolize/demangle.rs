//! Demangling: only names that are mangled are demangled. A C function
//! called `Sa`, `St`, `i` or `f` is a valid C++ *type* encoding (and would
//! come out as `std::allocator`, `std`, `int`, `float`); only symbol
//! encodings (`_Z...`, Rust's `_R...` and its legacy `_ZN...E`) are.

use std::borrow::Cow;

/// `name` demangled when it is a C++ or Rust symbol name, else unchanged.
pub fn demangle(name: &str) -> Cow<'_, str> {
    if name.starts_with("_R") || name.starts_with("_ZN") {
        // Rust v0 and legacy names; `{:#}` leaves out the hash.
        if let Ok(d) = rustc_demangle::try_demangle(name) {
            return Cow::Owned(format!("{d:#}"));
        }
    }
    if name.starts_with("_Z") {
        if let Some(d) = cpp_demangle::Symbol::new(name)
            .ok()
            .and_then(|s| s.demangle(&cpp_demangle::DemangleOptions::default()).ok())
        {
            return Cow::Owned(d);
        }
    }
    Cow::Borrowed(name)
}

#[cfg(test)]
mod tests {
    use super::demangle;

    #[test]
    fn only_mangled_names_are_demangled() {
        for plain in ["Sa", "St", "i", "f", "c", "main", "hot_a", "runtime.main"] {
            assert_eq!(demangle(plain), plain);
        }
        assert_eq!(demangle("_Z3fooi"), "foo(int)");
        assert_eq!(
            demangle("_ZNSt6vectorIiSaIiEE9push_backERKi"),
            "std::vector<int, std::allocator<int> >::push_back(int const&)"
        );
        assert_eq!(
            demangle("_ZN4core3fmt5write17h0123456789abcdefE"),
            "core::fmt::write"
        );
        assert_eq!(demangle("_RNvCs1234_7mycrate4main"), "mycrate::main");
        // Not a valid encoding: kept as written.
        assert_eq!(demangle("_Zzz"), "_Zzz");
    }
}
