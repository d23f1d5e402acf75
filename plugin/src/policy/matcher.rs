//! Container-name matching as kivebpf defines it: `regex:` (RE2 syntax,
//! unanchored, like Go's `regexp.MatchString`), `glob:` (Go's
//! `filepath.Match`), otherwise exact.

use regex::Regex;

/// A compiled `containerName` selector.
#[derive(Debug, Clone)]
pub enum NameMatcher {
    /// Matches any name (field absent or empty).
    Any,
    /// Exact comparison.
    Exact(String),
    /// Unanchored regular expression.
    Regex(Regex),
    /// Shell-style pattern over the whole name.
    Glob(glob::Pattern),
}

impl NameMatcher {
    /// Compiles a selector; the error says what is wrong with it.
    pub fn compile(spec: Option<&str>) -> Result<Self, String> {
        let Some(spec) = spec.filter(|s| !s.is_empty()) else {
            return Ok(Self::Any);
        };
        if let Some(re) = spec.strip_prefix("regex:") {
            return Regex::new(re)
                .map(Self::Regex)
                .map_err(|e| format!("invalid regex {re:?}: {e}"));
        }
        if let Some(g) = spec.strip_prefix("glob:") {
            // Go's filepath.Match negates a class with `^`; the glob crate with `!`
            let translated = g.replace("[^", "[!");
            return glob::Pattern::new(&translated)
                .map(Self::Glob)
                .map_err(|e| format!("invalid glob {g:?}: {e}"));
        }
        Ok(Self::Exact(spec.to_string()))
    }

    /// Whether `name` is selected.
    pub fn matches(&self, name: &str) -> bool {
        match self {
            Self::Any => true,
            Self::Exact(s) => s == name,
            Self::Regex(r) => r.is_match(name),
            Self::Glob(g) => g.matches_with(
                name,
                glob::MatchOptions {
                    case_sensitive: true,
                    require_literal_separator: true,
                    require_literal_leading_dot: false,
                },
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(spec: &str, name: &str) -> bool {
        NameMatcher::compile(Some(spec))
            .unwrap_or_else(|e| panic!("{spec}: {e}"))
            .matches(name)
    }

    #[test]
    fn table() {
        let cases = [
            ("nginx", "nginx", true),
            ("nginx", "nginx-sidecar", false),
            ("regex:ngi.*", "nginx", true),
            ("regex:ngi", "my-nginx-1", true), // unanchored
            ("regex:^ngi$", "nginx", false),
            ("regex:123.*", "nginx", false),
            ("glob:ng*", "nginx", true),
            ("glob:ng*", "my-nginx", false), // glob covers the whole name
            ("glob:ngin?", "nginx", true),
            ("glob:[^a]ginx", "nginx", true),
            ("glob:[^n]ginx", "nginx", false),
            ("", "anything", true),
        ];
        for (spec, name, want) in cases {
            assert_eq!(m(spec, name), want, "{spec} vs {name}");
        }
        assert!(NameMatcher::compile(None).expect("absent").matches("x"));
    }

    #[test]
    fn bad_patterns_are_errors_naming_the_pattern() {
        let e = NameMatcher::compile(Some("regex:(unclosed")).expect_err("bad regex");
        assert!(e.contains("(unclosed"), "{e}");
        let e = NameMatcher::compile(Some("glob:[abc")).expect_err("bad glob");
        assert!(e.contains("[abc"), "{e}");
    }
}
