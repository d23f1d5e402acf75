//! rules/kive_rules.yaml read as Falco reads it, and a small evaluator of
//! its conditions with Falco's semantics (macros, lists, `and`/`or`/`not`,
//! `=`, `!=`, `contains`, `in`, `exists`), for the rules tests.

use std::collections::BTreeMap;

use serde_yaml::Value as Yaml;

pub struct Rules {
    pub rules: Vec<(String, String, String)>, // name, condition, priority
    pub macros: BTreeMap<String, String>,
    pub lists: BTreeMap<String, Vec<String>>,
    pub docs: Vec<Yaml>,
}

pub fn load_rules() -> Rules {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../rules/kive_rules.yaml");
    let text = std::fs::read_to_string(path).expect("rules/kive_rules.yaml");
    let docs: Vec<Yaml> = serde_yaml::from_str(&text).expect("rules file is YAML");
    let mut r = Rules {
        rules: Vec::new(),
        macros: BTreeMap::new(),
        lists: BTreeMap::new(),
        docs: docs.clone(),
    };
    let s = |v: &Yaml, k: &str| {
        v[k].as_str()
            .unwrap_or_else(|| panic!("{k} in {v:?}"))
            .to_string()
    };
    for d in &docs {
        if d.get("rule").is_some() {
            r.rules
                .push((s(d, "rule"), s(d, "condition"), s(d, "priority")));
        } else if d.get("macro").is_some() {
            r.macros.insert(s(d, "macro"), s(d, "condition"));
        } else if d.get("list").is_some() {
            let items = d["items"]
                .as_sequence()
                .expect("items")
                .iter()
                .map(|i| i.as_str().expect("item").to_string())
                .collect();
            r.lists.insert(s(d, "list"), items);
        }
    }
    r
}

/// A value as Falco compares it: none, or its text.
pub type FieldValue = Option<String>;

pub struct Eval<'a> {
    pub rules: &'a Rules,
    pub get: &'a mut dyn FnMut(&str) -> FieldValue,
}

impl Eval<'_> {
    fn tokens(cond: &str) -> Vec<String> {
        let mut out = Vec::new();
        let mut cur = String::new();
        let mut depth_bracket = 0;
        for c in cond.chars() {
            match c {
                '[' => {
                    depth_bracket += 1;
                    cur.push(c);
                }
                ']' => {
                    depth_bracket -= 1;
                    cur.push(c);
                }
                '(' | ')' | ',' if depth_bracket == 0 => {
                    if !cur.is_empty() {
                        out.push(std::mem::take(&mut cur));
                    }
                    out.push(c.to_string());
                }
                c if c.is_whitespace() && depth_bracket == 0 => {
                    if !cur.is_empty() {
                        out.push(std::mem::take(&mut cur));
                    }
                }
                c => cur.push(c),
            }
        }
        if !cur.is_empty() {
            out.push(cur);
        }
        out
    }

    pub fn eval(&mut self, cond: &str) -> bool {
        let toks = Self::tokens(cond);
        let mut pos = 0;
        let v = self.or(&toks, &mut pos);
        assert_eq!(
            pos,
            toks.len(),
            "unparsed tail in {cond:?}: {:?}",
            &toks[pos..]
        );
        v
    }

    fn or(&mut self, t: &[String], p: &mut usize) -> bool {
        let mut v = self.and(t, p);
        while t.get(*p).map(String::as_str) == Some("or") {
            *p += 1;
            let r = self.and(t, p);
            v = v || r;
        }
        v
    }

    fn and(&mut self, t: &[String], p: &mut usize) -> bool {
        let mut v = self.not(t, p);
        while t.get(*p).map(String::as_str) == Some("and") {
            *p += 1;
            let r = self.not(t, p);
            v = v && r;
        }
        v
    }

    fn not(&mut self, t: &[String], p: &mut usize) -> bool {
        if t.get(*p).map(String::as_str) == Some("not") {
            *p += 1;
            return !self.not(t, p);
        }
        self.atom(t, p)
    }

    fn set(&self, t: &[String], p: &mut usize) -> Vec<String> {
        assert_eq!(t[*p], "(", "a set starts with (");
        *p += 1;
        let mut items = Vec::new();
        while t[*p] != ")" {
            if t[*p] != "," {
                match self.rules.lists.get(&t[*p]) {
                    Some(list) => items.extend(list.iter().cloned()),
                    None => items.push(t[*p].trim_matches('"').to_string()),
                }
            }
            *p += 1;
        }
        *p += 1;
        items
    }

    fn atom(&mut self, t: &[String], p: &mut usize) -> bool {
        let tok = t[*p].clone();
        *p += 1;
        if tok == "(" {
            let v = self.or(t, p);
            assert_eq!(t[*p], ")");
            *p += 1;
            return v;
        }
        if let Some(m) = self.rules.macros.get(&tok) {
            let m = m.clone();
            return self.eval(&m);
        }
        assert!(tok.starts_with("kive."), "unknown macro or field {tok}");
        let value = (self.get)(&tok);
        let op = t[*p].clone();
        *p += 1;
        match op.as_str() {
            "exists" => value.is_some(),
            "=" | "!=" | "contains" => {
                let rhs = t[*p].trim_matches('"').to_string();
                *p += 1;
                match (op.as_str(), value) {
                    (_, None) => false,
                    ("=", Some(v)) => v == rhs,
                    ("!=", Some(v)) => v != rhs,
                    (_, Some(v)) => v.contains(&rhs),
                }
            }
            "in" => {
                let set = self.set(t, p);
                value.is_some_and(|v| set.contains(&v))
            }
            other => panic!("operator {other} not handled by this test"),
        }
    }
}
