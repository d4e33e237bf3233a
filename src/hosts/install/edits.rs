//! Our entries in a host's own config file (JSON or TOML), put in and taken out again without
//! touching anything else in it.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

#[derive(Debug, thiserror::Error)]
pub enum EditError {
    #[error("{path} is not valid {format}: {why}; fix or move it, then run this again")]
    Unreadable {
        path: String,
        format: &'static str,
        why: String,
    },
    #[error("{path}: {at} is not a {want}, so gts-webchat cannot add to it")]
    Shape {
        path: String,
        at: String,
        want: &'static str,
    },
}

/// One change to a config file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Edit {
    /// Keys from the top of the file to the value.
    pub at: Vec<String>,
    pub value: Value,
    pub how: How,
    /// How many of the objects along `at` (counted from its end, the value's own parent
    /// first) did not exist and were created, so removal takes them away again if empty.
    #[serde(default)]
    pub created: usize,
    /// For `Set`: the value the key held before (the person's), put back on removal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replaced: Option<Value>,
}

impl Edit {
    /// An edit not yet applied.
    pub fn new(at: &[&str], value: Value, how: How) -> Edit {
        Edit {
            at: at.iter().map(|s| s.to_string()).collect(),
            value,
            how,
            created: 0,
            replaced: None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum How {
    /// `at` names a key; the value is set there.
    Set,
    /// `at` names an array; the value is appended (once).
    Append,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Json,
    Toml,
}

impl Format {
    pub fn of(path: &std::path::Path) -> Format {
        match path.extension().and_then(|e| e.to_str()) {
            Some("toml") => Format::Toml,
            _ => Format::Json,
        }
    }
}

/// Applies `edits` to `text` (None: the file does not exist); returns the new text and the
/// edits with `created` filled in.
pub fn apply(
    path: &str,
    format: Format,
    text: Option<&str>,
    edits: &[Edit],
) -> Result<(String, Vec<Edit>), EditError> {
    let mut doc = parse(path, format, text)?;
    let mut done = Vec::new();
    for e in edits {
        // What the file already says is the person's, not ours: not recorded, never removed.
        let there = lookup(&doc, &e.at);
        let already = match e.how {
            How::Set => there == Some(&e.value),
            How::Append => there
                .and_then(Value::as_array)
                .is_some_and(|a| a.contains(&e.value)),
        };
        if already {
            continue;
        }
        let mut e = e.clone();
        if e.how == How::Set {
            e.replaced = there.cloned();
        }
        e.created = apply_one(path, &mut doc, &e)?;
        done.push(e);
    }
    Ok((render(format, &doc, text), done))
}

/// Takes `edits` back out of `text`; what else is in the file stays.
pub fn remove(path: &str, format: Format, text: &str, edits: &[Edit]) -> Result<String, EditError> {
    let mut doc = parse(path, format, Some(text))?;
    for e in edits.iter().rev() {
        remove_one(&mut doc, e);
    }
    Ok(render(format, &doc, Some(text)))
}

/// Whether every edit is still in `text`.
pub fn present(path: &str, format: Format, text: &str, edits: &[Edit]) -> bool {
    let Ok(doc) = parse(path, format, Some(text)) else {
        return false;
    };
    edits.iter().all(|e| {
        let found = lookup(&doc, &e.at);
        match e.how {
            How::Set => found == Some(&e.value),
            How::Append => found
                .and_then(Value::as_array)
                .is_some_and(|a| a.contains(&e.value)),
        }
    })
}

fn parse(path: &str, format: Format, text: Option<&str>) -> Result<Value, EditError> {
    let Some(text) = text.filter(|t| !t.trim().is_empty()) else {
        return Ok(Value::Object(Map::new()));
    };
    let unreadable = |format, why: String| EditError::Unreadable {
        path: path.to_string(),
        format,
        why,
    };
    match format {
        Format::Json => {
            let v: Value =
                serde_json::from_str(text).map_err(|e| unreadable("JSON", e.to_string()))?;
            if !v.is_object() {
                return Err(unreadable("JSON", "the top level is not an object".into()));
            }
            Ok(v)
        }
        Format::Toml => {
            let doc: toml_edit::DocumentMut = text
                .parse()
                .map_err(|e: toml_edit::TomlError| unreadable("TOML", e.to_string()))?;
            Ok(toml_to_json(doc.as_item()))
        }
    }
}

/// JSON: two-space pretty printing, keys in their order. TOML: the original document is edited
/// in place (comments and layout kept), only our tables change.
fn render(format: Format, doc: &Value, original: Option<&str>) -> String {
    match format {
        Format::Json => {
            let mut s = serde_json::to_string_pretty(doc).unwrap_or_else(|_| "{}".into());
            s.push('\n');
            s
        }
        Format::Toml => {
            let mut out: toml_edit::DocumentMut =
                original.and_then(|t| t.parse().ok()).unwrap_or_default();
            sync_toml(out.as_table_mut(), doc);
            out.to_string()
        }
    }
}

fn lookup<'a>(doc: &'a Value, at: &[String]) -> Option<&'a Value> {
    at.iter().try_fold(doc, |v, k| v.get(k))
}

fn apply_one(path: &str, doc: &mut Value, e: &Edit) -> Result<usize, EditError> {
    let (parents, last) = match e.how {
        How::Set => (&e.at[..e.at.len().saturating_sub(1)], e.at.last()),
        How::Append => (&e.at[..], None),
    };
    let mut created = 0;
    let mut cur = doc;
    for (i, k) in parents.iter().enumerate() {
        let obj = cur.as_object_mut().ok_or_else(|| EditError::Shape {
            path: path.to_string(),
            at: parents[..i].join("."),
            want: "table/object",
        })?;
        let leaf = i + 1 == parents.len() && e.how == How::Append;
        if !obj.contains_key(k) {
            created += 1;
            let fresh = if leaf {
                Value::Array(Vec::new())
            } else {
                Value::Object(Map::new())
            };
            obj.insert(k.clone(), fresh);
        } else {
            created = 0;
        }
        cur = obj
            .get_mut(k)
            .unwrap_or_else(|| unreachable!("inserted above"));
    }
    match (e.how, last) {
        (How::Set, Some(k)) => {
            let obj = cur.as_object_mut().ok_or_else(|| EditError::Shape {
                path: path.to_string(),
                at: parents.join("."),
                want: "table/object",
            })?;
            obj.insert(k.clone(), e.value.clone());
        }
        _ => {
            let arr = cur.as_array_mut().ok_or_else(|| EditError::Shape {
                path: path.to_string(),
                at: e.at.join("."),
                want: "list",
            })?;
            if !arr.contains(&e.value) {
                arr.push(e.value.clone());
            }
        }
    }
    Ok(created)
}

fn remove_one(doc: &mut Value, e: &Edit) {
    let parents = match e.how {
        How::Set => &e.at[..e.at.len().saturating_sub(1)],
        How::Append => &e.at[..e.at.len().saturating_sub(1)],
    };
    let Some(parent) = parents
        .iter()
        .try_fold(&mut *doc, |v, k| v.get_mut(k.as_str()))
    else {
        return;
    };
    let Some(key) = e.at.last() else {
        return;
    };
    match e.how {
        How::Set => {
            let Some(o) = parent.as_object_mut() else {
                return;
            };
            // Changed since by the person: theirs now, left alone.
            if o.get(key.as_str()) != Some(&e.value) {
                return;
            }
            match &e.replaced {
                Some(old) => {
                    o.insert(key.clone(), old.clone());
                    return;
                }
                None => {
                    o.shift_remove(key);
                }
            }
        }
        How::Append => {
            if let Some(a) = parent.get_mut(key.as_str()).and_then(Value::as_array_mut) {
                a.retain(|v| v != &e.value);
            }
        }
    }
    // Containers we created go too, when nothing else is in them.
    let depth = match e.how {
        How::Set => e.at.len() - 1,
        How::Append => e.at.len(),
    };
    for level in (depth + 1 - e.created.min(depth)..=depth).rev() {
        let (up, k) = (&e.at[..level - 1], &e.at[level - 1]);
        let Some(holder) = up.iter().try_fold(&mut *doc, |v, k| v.get_mut(k.as_str())) else {
            break;
        };
        let empty = holder.get(k.as_str()).is_some_and(|v| match v {
            Value::Object(o) => o.is_empty(),
            Value::Array(a) => a.is_empty(),
            _ => false,
        });
        if !empty {
            break;
        }
        if let Some(o) = holder.as_object_mut() {
            o.shift_remove(k);
        }
    }
}

fn toml_to_json(item: &toml_edit::Item) -> Value {
    use toml_edit::Item;
    match item {
        Item::None => Value::Null,
        Item::Value(v) => toml_value(v),
        Item::Table(t) => Value::Object(
            t.iter()
                .map(|(k, v)| (k.to_string(), toml_to_json(v)))
                .collect(),
        ),
        Item::ArrayOfTables(a) => Value::Array(
            a.iter()
                .map(|t| toml_to_json(&Item::Table(t.clone())))
                .collect(),
        ),
    }
}

fn toml_value(v: &toml_edit::Value) -> Value {
    use toml_edit::Value as T;
    match v {
        T::String(s) => Value::String(s.value().clone()),
        T::Integer(i) => Value::from(*i.value()),
        T::Float(f) => serde_json::Number::from_f64(*f.value())
            .map(Value::Number)
            .unwrap_or(Value::Null),
        T::Boolean(b) => Value::Bool(*b.value()),
        T::Datetime(d) => Value::String(d.value().to_string()),
        T::Array(a) => Value::Array(a.iter().map(toml_value).collect()),
        T::InlineTable(t) => Value::Object(
            t.iter()
                .map(|(k, v)| (k.to_string(), toml_value(v)))
                .collect(),
        ),
    }
}

fn json_to_toml(v: &Value) -> Option<toml_edit::Value> {
    Some(match v {
        Value::String(s) => s.as_str().into(),
        Value::Bool(b) => (*b).into(),
        Value::Number(n) => match n.as_i64() {
            Some(i) => i.into(),
            None => n.as_f64()?.into(),
        },
        Value::Array(a) => {
            let mut arr = toml_edit::Array::new();
            for x in a {
                arr.push(json_to_toml(x)?);
            }
            arr.into()
        }
        Value::Object(o) => {
            let mut t = toml_edit::InlineTable::new();
            for (k, x) in o {
                t.insert(k, json_to_toml(x)?);
            }
            t.into()
        }
        Value::Null => return None,
    })
}

/// Makes the TOML table say what `want` says, changing only keys whose value differs: the
/// rest (comments, order, formatting) is left as the person wrote it.
fn sync_toml(table: &mut toml_edit::Table, want: &Value) {
    let Some(want) = want.as_object() else {
        return;
    };
    let gone: Vec<String> = table
        .iter()
        .map(|(k, _)| k.to_string())
        .filter(|k| !want.contains_key(k))
        .collect();
    for k in gone {
        table.remove(&k);
    }
    for (k, v) in want {
        let same = table.get(k).map(toml_to_json).as_ref() == Some(v);
        if same {
            continue;
        }
        match (v, table.get_mut(k)) {
            (Value::Object(_), Some(toml_edit::Item::Table(t))) => sync_toml(t, v),
            (Value::Object(_), _) => {
                let mut t = toml_edit::Table::new();
                sync_toml(&mut t, v);
                table.insert(k, toml_edit::Item::Table(t));
            }
            _ => {
                if let Some(tv) = json_to_toml(v) {
                    table.insert(k, toml_edit::Item::Value(tv));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn set(at: &[&str], value: Value) -> Edit {
        Edit::new(at, value, How::Set)
    }

    fn append(at: &[&str], value: Value) -> Edit {
        Edit::new(at, value, How::Append)
    }

    #[test]
    fn json_round_trip_keeps_the_rest_and_drops_what_it_created() {
        let before = "{\n  \"theme\": \"dark\",\n  \"hooks\": {\"Stop\": [{\"hooks\": []}]}\n}\n";
        let edits = [
            set(&["mcpServers", "webchat"], json!({"command": "x"})),
            append(&["hooks", "Stop"], json!({"hooks": [{"command": "ours"}]})),
            append(
                &["hooks", "UserPromptSubmit"],
                json!({"hooks": [{"command": "ours"}]}),
            ),
        ];
        let (after, done) = apply("f", Format::Json, Some(before), &edits).unwrap();
        assert!(present("f", Format::Json, &after, &done));
        let v: Value = serde_json::from_str(&after).unwrap();
        assert_eq!(v["theme"], "dark");
        assert_eq!(v["hooks"]["Stop"].as_array().unwrap().len(), 2);
        // Applying again changes nothing.
        let (again, _) = apply("f", Format::Json, Some(&after), &edits).unwrap();
        assert_eq!(again, after);
        let back: Value =
            serde_json::from_str(&remove("f", Format::Json, &after, &done).unwrap()).unwrap();
        assert_eq!(back, serde_json::from_str::<Value>(before).unwrap());
    }

    #[test]
    fn toml_edits_keep_comments_and_other_tables() {
        let before = "# mine\nmodel = \"o3\"\n\n[mcp_servers.other]\ncommand = \"other\"\n";
        let edits = [set(
            &["mcp_servers", "webchat"],
            json!({"command": "/bin/gts-webchat", "args": ["mcp", "--task", "t"]}),
        )];
        let (after, done) = apply("c", Format::Toml, Some(before), &edits).unwrap();
        assert!(after.starts_with("# mine\nmodel = \"o3\""), "{after}");
        assert!(after.contains("[mcp_servers.webchat]"), "{after}");
        assert!(present("c", Format::Toml, &after, &done));
        let back = remove("c", Format::Toml, &after, &done).unwrap();
        assert_eq!(back, before);
    }

    #[test]
    fn a_value_we_replaced_is_put_back_and_one_changed_since_is_left() {
        let before = "{\"version\": 2, \"x\": 1}";
        let edits = [set(&["version"], json!(1))];
        let (after, done) = apply("f", Format::Json, Some(before), &edits).unwrap();
        assert_eq!(done[0].replaced, Some(json!(2)));
        let back: Value =
            serde_json::from_str(&remove("f", Format::Json, &after, &done).unwrap()).unwrap();
        assert_eq!(back, json!({"version": 2, "x": 1}));
        let changed = after.replace("\"version\": 1", "\"version\": 3");
        let kept: Value =
            serde_json::from_str(&remove("f", Format::Json, &changed, &done).unwrap()).unwrap();
        assert_eq!(kept["version"], 3);
    }

    #[test]
    fn a_file_that_is_not_an_object_is_refused_not_overwritten() {
        let e = apply("f", Format::Json, Some("[1,2]"), &[set(&["a"], json!(1))]);
        assert!(matches!(e, Err(EditError::Unreadable { .. })));
        let e = apply(
            "f",
            Format::Json,
            Some("{\"hooks\": 3}"),
            &[append(&["hooks", "Stop"], json!(1))],
        );
        assert!(matches!(e, Err(EditError::Shape { .. })));
    }
}
