//! The documented shape of `--json` output, checkable: ARCHITECTURE.md ("JSON output") holds a
//! fenced `bootenv-json` block, one line per verb, error and nested object, and [`check`]
//! checks a document against it. The unit tests run it on outcomes from the fakes, the
//! `cli-json` VM scenario on the real CLI's output, so the documentation cannot drift from
//! what bootenv prints.
//!
//! The block's grammar, one definition per line (`#` starts a comment):
//!
//! ```text
//! <name>: <key>=<type> <key>=<type> ...
//! ```
//!
//! where `<name>` is a verb (`activate`), `error` (a failed verb's document) or `@type` (a
//! nested object), and `<type>` is `string`, `number`, `bool`, `object` (any object), `array`
//! (any array), `a|b|c` (one of these strings) or `@type`, with `[]` for an array of it and a
//! trailing `?` when it may be `null`. A line `<name>: @type` gives a verb the keys of a type.
//! Every verb's document also has `schema=number verb=string`. A document must have exactly the
//! keys its line lists.

use serde_json::Value;
use std::collections::BTreeMap;

/// The parsed block: definitions by name, each a list of (key, type).
#[derive(Clone, Debug, Default)]
pub struct Spec {
    defs: BTreeMap<String, Vec<(String, String)>>,
}

/// The keys every document has.
const COMMON: [(&str, &str); 2] = [("schema", "number"), ("verb", "string")];

impl Spec {
    /// Parses the `bootenv-json` block out of a markdown text.
    pub fn from_markdown(md: &str) -> Result<Spec, String> {
        let start = md
            .find("```bootenv-json\n")
            .ok_or("no ```bootenv-json block")?
            + "```bootenv-json\n".len();
        let len = md[start..].find("```").ok_or("the block does not end")?;
        let mut defs = BTreeMap::new();
        for line in md[start..start + len].lines() {
            let line = line.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let (name, rest) = line
                .split_once(':')
                .ok_or_else(|| format!("no ':' in {line:?}"))?;
            let mut keys = Vec::new();
            let words: Vec<&str> = rest.split_whitespace().collect();
            let alias = match words[..] {
                [a] if a.starts_with('@') && !a.contains('=') => Some(a),
                _ => None,
            };
            if let Some(a) = alias {
                keys.push((String::new(), a.to_owned()));
            }
            for kv in words.iter().filter(|_| alias.is_none()) {
                let (k, t) = kv
                    .split_once('=')
                    .ok_or_else(|| format!("no '=' in {kv:?} ({name})"))?;
                keys.push((k.to_owned(), t.to_owned()));
            }
            if defs.insert(name.trim().to_owned(), keys).is_some() {
                return Err(format!("{name} is defined twice"));
            }
        }
        Ok(Spec { defs })
    }

    /// The names defined (verbs, `error`, `@types`).
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.defs.keys().map(String::as_str)
    }

    /// Checks a document bootenv printed: a verb's outcome, or an error (it has `error`).
    pub fn check(&self, doc: &Value) -> Result<(), String> {
        let verb = doc.get("verb").and_then(Value::as_str);
        let name = if doc.get("error").is_some() {
            "error"
        } else {
            verb.ok_or("a document without a verb")?
        };
        let mut keys = self.def(name)?.clone();
        let common: &[(&str, &str)] = if name == "error" {
            &[("schema", "number"), ("verb", "string?")]
        } else {
            &COMMON
        };
        keys.extend(common.iter().map(|(k, t)| (k.to_string(), t.to_string())));
        self.object(doc, &keys, name)
    }

    fn def(&self, name: &str) -> Result<&Vec<(String, String)>, String> {
        let d = self
            .defs
            .get(name)
            .ok_or_else(|| format!("{name} is not documented"))?;
        match d.as_slice() {
            [(k, alias)] if k.is_empty() => self.def(alias),
            _ => Ok(d),
        }
    }

    fn object(&self, v: &Value, keys: &[(String, String)], at: &str) -> Result<(), String> {
        let o = v
            .as_object()
            .ok_or_else(|| format!("{at}: not an object: {v}"))?;
        for k in o.keys() {
            if !keys.iter().any(|(d, _)| d == k) {
                return Err(format!("{at}.{k}: not documented"));
            }
        }
        for (k, t) in keys {
            let x = o
                .get(k)
                .ok_or_else(|| format!("{at}.{k}: missing (documented as {t})"))?;
            self.value(x, t, &format!("{at}.{k}"))?;
        }
        Ok(())
    }

    fn value(&self, v: &Value, t: &str, at: &str) -> Result<(), String> {
        let (t, nullable) = match t.strip_suffix('?') {
            Some(t) => (t, true),
            None => (t, false),
        };
        if v.is_null() {
            return if nullable {
                Ok(())
            } else {
                Err(format!("{at}: null, documented as {t}"))
            };
        }
        if let Some(item) = t.strip_suffix("[]") {
            let a = v
                .as_array()
                .ok_or_else(|| format!("{at}: not an array: {v}"))?;
            for (i, x) in a.iter().enumerate() {
                self.value(x, item, &format!("{at}[{i}]"))?;
            }
            return Ok(());
        }
        let ok = match t {
            "string" => v.is_string(),
            "number" => v.is_number(),
            "bool" => v.is_boolean(),
            "object" => v.is_object(),
            "array" => v.is_array(),
            named if named.starts_with('@') => return self.object(v, self.def(named)?, at),
            one_of if one_of.contains('|') => v
                .as_str()
                .is_some_and(|s| one_of.split('|').any(|x| x == s)),
            other => return Err(format!("{at}: unknown type {other}")),
        };
        if ok {
            Ok(())
        } else {
            Err(format!("{at}: {v} is not a {t}"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const MD: &str = "text\n```bootenv-json\n@k: be=string dir=string?  # a kernel\nsync: @sync\n@sync: kernels=@k[] n=number\nerror: error=@e\n@e: kind=usage|failed message=string\n```\n";

    #[test]
    fn documents_are_checked_key_by_key_and_type_by_type() {
        let s = Spec::from_markdown(MD).unwrap();
        let good =
            json!({"schema": 1, "verb": "sync", "n": 2, "kernels": [{"be": "v1", "dir": null}]});
        s.check(&good).unwrap();
        let extra = json!({"schema": 1, "verb": "sync", "n": 2, "kernels": [], "x": 1});
        assert!(s
            .check(&extra)
            .unwrap_err()
            .contains("sync.x: not documented"));
        let wrong = json!({"schema": 1, "verb": "sync", "n": "2", "kernels": []});
        assert!(s.check(&wrong).unwrap_err().contains("sync.n"));
        let nested = json!({"schema": 1, "verb": "sync", "n": 2, "kernels": [{"dir": "d"}]});
        assert!(s
            .check(&nested)
            .unwrap_err()
            .contains("sync.kernels[0].be: missing"));
        let err = json!({"schema": 1, "verb": null, "error": {"kind": "usage", "message": "m"}});
        s.check(&err).unwrap();
        let odd = json!({"schema": 1, "verb": null, "error": {"kind": "odd", "message": "m"}});
        assert!(s.check(&odd).unwrap_err().contains("error.error.kind"));
        let unknown = json!({"schema": 1, "verb": "frob"});
        assert!(s
            .check(&unknown)
            .unwrap_err()
            .contains("frob is not documented"));
    }
}
