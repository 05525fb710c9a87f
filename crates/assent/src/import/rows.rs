//! Reading import files as a stream of rows, each one event or the reason it cannot be one.
//!
//! NDJSON (`.ndjson`, `.jsonl`) holds one event per line, or one user with its events per line
//! as exports write them; `.json` holds a JSON array of events (or NDJSON); any of them may be
//! gzipped (`.gz`; `.json.gz` is read as NDJSON, as export parts are); CSV (`.csv`) holds one purpose choice per row under the header
//! `organization_user_id,purpose,enabled,created_at[,id][,regulation]`. Files are read as a
//! stream: memory does not grow with their size.

use assent_model::Timestamp;
use serde::de::{Deserializer, SeqAccess, Visitor};
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};
use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// The longest line or event accepted: the server's body limit.
pub const MAX_ROW_BYTES: usize = 1024 * 1024;

/// One row of an input file.
#[derive(Debug, Clone)]
pub struct Row {
    /// The file it comes from.
    pub file: Arc<str>,
    /// Its line (NDJSON, CSV) or its position in the array (JSON), from 1.
    pub record: u64,
    /// The event it becomes, or why it cannot become one.
    pub event: Result<Value, String>,
    /// The row as read, for the rejects file.
    pub raw: Value,
}

/// The kinds of input file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// One JSON event per line.
    Ndjson,
    /// A JSON array of events.
    JsonArray,
    /// One purpose choice per row, with a header.
    Csv,
}

/// The format of `path`, from its extension (and, for `.json`, its first character).
pub fn format_of(path: &Path) -> Result<Format, String> {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or_default()
        .to_ascii_lowercase();
    if ext == "gz" {
        // Compressed files are read as a stream too; `.json.gz` is NDJSON, as in exports.
        let inner = Path::new(path.file_stem().unwrap_or_default());
        let inner_ext = inner
            .extension()
            .and_then(|e| e.to_str())
            .unwrap_or_default()
            .to_ascii_lowercase();
        return match inner_ext.as_str() {
            "csv" => Ok(Format::Csv),
            "ndjson" | "jsonl" | "json" => Ok(Format::Ndjson),
            _ => Err(format!(
                "{}: unknown file type; name it .ndjson.gz, .jsonl.gz, .json.gz or .csv.gz",
                path.display()
            )),
        };
    }
    match ext.as_str() {
        "csv" => Ok(Format::Csv),
        "ndjson" | "jsonl" => Ok(Format::Ndjson),
        "json" => {
            let mut first = [0u8; 1];
            let mut file = std::fs::File::open(path).map_err(|e| open_error(path, &e))?;
            loop {
                if file.read(&mut first).map_err(|e| open_error(path, &e))? == 0 {
                    return Ok(Format::Ndjson);
                }
                if !first[0].is_ascii_whitespace() {
                    break;
                }
            }
            Ok(if first[0] == b'[' {
                Format::JsonArray
            } else {
                Format::Ndjson
            })
        }
        _ => Err(format!(
            "{}: unknown file type; name it .ndjson, .jsonl, .json or .csv",
            path.display()
        )),
    }
}

fn open_error(path: &Path, e: &std::io::Error) -> String {
    format!("cannot read {}: {e}", path.display())
}

/// A reader that counts the bytes read through it, for progress.
pub struct Counting<R> {
    inner: R,
    count: Arc<AtomicU64>,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

/// Reads `path` and hands each row to `emit`; stops early when `emit` returns false. Bytes
/// read are added to `read`.
pub fn read_file(
    path: &Path,
    read: Arc<AtomicU64>,
    emit: &mut dyn FnMut(Row) -> bool,
) -> Result<(), String> {
    let format = format_of(path)?;
    let file = std::fs::File::open(path).map_err(|e| open_error(path, &e))?;
    let counted = Counting {
        inner: file,
        count: read,
    };
    let compressed = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("gz"));
    let input: Box<dyn Read> = if compressed {
        Box::new(flate2::read::MultiGzDecoder::new(BufReader::new(counted)))
    } else {
        Box::new(counted)
    };
    let reader = BufReader::with_capacity(256 * 1024, input);
    let name: Arc<str> = path.display().to_string().into();
    match format {
        Format::Ndjson => read_ndjson(reader, &name, emit),
        Format::JsonArray => read_array(reader, &name, emit),
        Format::Csv => read_csv(reader, &name, emit),
    }
    .map_err(|e| format!("{name}: {e}"))
}

/// A stable event id for a row that has none: the same file, position and content always give
/// the same id, so an interrupted import run again creates nothing twice.
///
/// The id is a UUIDv8 laid out so that the ids of one file grow with the record number: 48
/// bits of the file name's hash, then the record number (40 bits), then 34 bits of the hash of
/// the file name, record and content. The server keeps event ids in a B-tree, so ids that grow
/// are appended at one place instead of landing on a random page each (random ids import at
/// about half the speed), while a changed row still gets a different id.
pub fn derived_id(file: &str, record: u64, content: &[u8]) -> String {
    let name = Path::new(file)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let name_hash = Sha256::digest(name.as_bytes());
    let mut hash = Sha256::new();
    hash.update(name.as_bytes());
    hash.update([0]);
    hash.update(record.to_be_bytes());
    hash.update(content);
    let content_hash = hash.finalize();
    // Version (4 bits, byte 6) and variant (2 bits, byte 8) are set by `new_v8` and skipped.
    let r = record & ((1 << 40) - 1);
    let mut bytes = [0u8; 16];
    bytes[..6].copy_from_slice(&name_hash[..6]);
    bytes[6] = (r >> 36) as u8 & 0x0f;
    bytes[7] = (r >> 28) as u8;
    bytes[8] = (r >> 22) as u8 & 0x3f;
    bytes[9] = (r >> 14) as u8;
    bytes[10] = (r >> 6) as u8;
    bytes[11] = ((r as u8 & 0x3f) << 2) | (content_hash[0] & 0x03);
    bytes[12..].copy_from_slice(&content_hash[1..5]);
    uuid::Uuid::new_v8(bytes).to_string()
}

/// An event read from JSON: it must be an object; it gets a derived id if it has none.
fn json_event(value: Value, file: &str, record: u64, content: &[u8]) -> Result<Value, String> {
    let Value::Object(mut event) = value else {
        return Err("must be a JSON object (one event)".to_owned());
    };
    if event.get("id").is_none_or(Value::is_null) {
        event.insert(
            "id".to_owned(),
            Value::String(derived_id(file, record, content)),
        );
    }
    Ok(Value::Object(event))
}

/// The events of a line of an Assent (or Didomi) export, ready to send again: a line is an
/// object with `organization_user_id`, a `user` object and an `events` array. Each event
/// keeps its id, user and content; what the server sets itself (`organization_id`,
/// `updated_at`) is left out.
fn export_record_events(value: &Value) -> Option<Vec<Value>> {
    let Value::Object(line) = value else {
        return None;
    };
    let events = line.get("events")?.as_array()?;
    if !line.contains_key("organization_user_id") || !line.get("user")?.is_object() {
        return None;
    }
    Some(
        events
            .iter()
            .map(|e| match e {
                Value::Object(fields) => {
                    let mut fields = fields.clone();
                    fields.remove("organization_id");
                    fields.remove("updated_at");
                    Value::Object(fields)
                }
                other => other.clone(),
            })
            .collect(),
    )
}

fn read_ndjson(
    mut reader: impl BufRead,
    file: &Arc<str>,
    emit: &mut dyn FnMut(Row) -> bool,
) -> Result<(), String> {
    let mut line = Vec::new();
    let mut record = 0u64;
    loop {
        line.clear();
        let n = reader
            .by_ref()
            .take(MAX_ROW_BYTES as u64 + 1)
            .read_until(b'\n', &mut line)
            .map_err(|e| e.to_string())?;
        if n == 0 {
            return Ok(());
        }
        record += 1;
        if line.len() > MAX_ROW_BYTES && line.last() != Some(&b'\n') {
            // Skip the rest of the overlong line.
            let mut rest = Vec::new();
            loop {
                rest.clear();
                let m = reader
                    .by_ref()
                    .take(64 * 1024)
                    .read_until(b'\n', &mut rest)
                    .map_err(|e| e.to_string())?;
                if m == 0 || rest.last() == Some(&b'\n') {
                    break;
                }
            }
            let row = Row {
                file: file.clone(),
                record,
                event: Err(format!("line longer than {MAX_ROW_BYTES} bytes")),
                raw: Value::String(String::from_utf8_lossy(&line[..200]).into_owned() + "…"),
            };
            if !emit(row) {
                return Ok(());
            }
            continue;
        }
        let text = String::from_utf8_lossy(&line);
        let text = text.trim();
        if text.is_empty() {
            continue;
        }
        let value = serde_json::from_str::<Value>(text).map_err(|e| format!("not valid JSON: {e}"));
        if let Ok(value) = &value
            && let Some(events) = export_record_events(value)
        {
            for event in events {
                let row = Row {
                    file: file.clone(),
                    record,
                    event: Ok(event.clone()),
                    raw: event,
                };
                if !emit(row) {
                    return Ok(());
                }
            }
            continue;
        }
        let event = value.and_then(|v| json_event(v, file, record, text.as_bytes()));
        let row = Row {
            file: file.clone(),
            record,
            event,
            raw: Value::String(text.to_owned()),
        };
        if !emit(row) {
            return Ok(());
        }
    }
}

fn read_array(
    reader: impl Read,
    file: &Arc<str>,
    emit: &mut dyn FnMut(Row) -> bool,
) -> Result<(), String> {
    struct Elements<'a> {
        file: &'a Arc<str>,
        emit: &'a mut dyn FnMut(Row) -> bool,
    }
    impl<'de> Visitor<'de> for Elements<'_> {
        type Value = ();
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a JSON array of events")
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
            let mut record = 0u64;
            while let Some(value) = seq.next_element::<Value>()? {
                record += 1;
                let content = value.to_string();
                let event = json_event(value.clone(), self.file, record, content.as_bytes());
                let row = Row {
                    file: self.file.clone(),
                    record,
                    event,
                    raw: value,
                };
                if !(self.emit)(row) {
                    break;
                }
            }
            Ok(())
        }
    }
    let mut de = serde_json::Deserializer::from_reader(reader);
    de.deserialize_seq(Elements { file, emit })
        .map_err(|e| format!("not a valid JSON array: {e}"))
}

/// The columns of an import CSV.
#[derive(Debug, Default)]
struct Columns {
    organization_user_id: usize,
    purpose: usize,
    enabled: usize,
    created_at: usize,
    id: Option<usize>,
    regulation: Option<usize>,
}

impl Columns {
    fn of(header: &csv::StringRecord) -> Result<Columns, String> {
        let mut found: [Option<usize>; 6] = [None; 6];
        const NAMES: [&str; 6] = [
            "organization_user_id",
            "purpose",
            "enabled",
            "created_at",
            "id",
            "regulation",
        ];
        for (i, name) in header.iter().enumerate() {
            let name = name.trim();
            let Some(at) = NAMES.iter().position(|n| *n == name) else {
                return Err(format!(
                    "unknown column '{name}' in the header; the columns are \
                     organization_user_id,purpose,enabled,created_at[,id][,regulation]"
                ));
            };
            if found[at].replace(i).is_some() {
                return Err(format!("column '{name}' appears twice in the header"));
            }
        }
        let required = |at: usize| {
            found[at].ok_or_else(|| format!("the header lacks the column '{}'", NAMES[at]))
        };
        Ok(Columns {
            organization_user_id: required(0)?,
            purpose: required(1)?,
            enabled: required(2)?,
            created_at: required(3)?,
            id: found[4],
            regulation: found[5],
        })
    }
}

fn read_csv(
    reader: impl Read,
    file: &Arc<str>,
    emit: &mut dyn FnMut(Row) -> bool,
) -> Result<(), String> {
    let mut csv = csv::ReaderBuilder::new()
        .has_headers(true)
        .flexible(true)
        .from_reader(reader);
    let header = csv
        .headers()
        .map_err(|e| format!("cannot read the CSV header: {e}"))?
        .clone();
    let columns = Columns::of(&header)?;
    let mut record = csv::StringRecord::new();
    loop {
        let line = csv.position().line() + 1;
        let (event, raw) = match csv.read_record(&mut record) {
            Ok(false) => return Ok(()),
            Ok(true) => {
                let raw = Value::Array(record.iter().map(|f| json!(f)).collect());
                (csv_event(&record, &header, &columns), raw)
            }
            Err(e) => (Err(format!("not valid CSV: {e}")), Value::Null),
        };
        let record_line = record.position().map_or(line, |p| p.line());
        let event = event.map(|mut e| {
            if e.get("id").is_none() {
                let content = record.iter().collect::<Vec<_>>().join("\u{1f}");
                e["id"] = Value::String(derived_id(file, record_line, content.as_bytes()));
            }
            e
        });
        let row = Row {
            file: file.clone(),
            record: record_line,
            event,
            raw,
        };
        if !emit(row) {
            return Ok(());
        }
    }
}

/// The event of one CSV row: one purpose choice of one user at one instant.
fn csv_event(
    record: &csv::StringRecord,
    header: &csv::StringRecord,
    columns: &Columns,
) -> Result<Value, String> {
    if record.len() != header.len() {
        return Err(format!(
            "has {} fields; the header has {}",
            record.len(),
            header.len()
        ));
    }
    let field = |i: usize| record.get(i).unwrap_or_default().trim();
    let user = field(columns.organization_user_id);
    if user.is_empty() {
        return Err("organization_user_id is empty".to_owned());
    }
    let purpose = field(columns.purpose);
    if purpose.is_empty() {
        return Err("purpose is empty".to_owned());
    }
    let enabled = match field(columns.enabled).to_ascii_lowercase().as_str() {
        "true" | "1" => true,
        "false" | "0" => false,
        other => {
            return Err(format!(
                "enabled: '{other}' is not a boolean (true, false, 1 or 0)"
            ));
        }
    };
    let created_at = field(columns.created_at);
    Timestamp::parse(created_at).map_err(|e| format!("created_at: {e}"))?;
    let mut event = Map::new();
    if let Some(i) = columns.id.filter(|&i| !field(i).is_empty()) {
        event.insert("id".to_owned(), json!(field(i)));
    }
    event.insert("created_at".to_owned(), json!(created_at));
    if let Some(i) = columns.regulation.filter(|&i| !field(i).is_empty()) {
        event.insert("regulation".to_owned(), json!(field(i)));
    }
    event.insert("user".to_owned(), json!({"organization_user_id": user}));
    event.insert(
        "consents".to_owned(),
        json!({"purposes": [{"id": purpose, "enabled": enabled}]}),
    );
    Ok(Value::Object(event))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(path: &Path) -> Vec<Row> {
        let mut out = Vec::new();
        read_file(path, Arc::default(), &mut |r| {
            out.push(r);
            true
        })
        .unwrap();
        out
    }

    #[test]
    fn csv_rows_become_events_and_bad_rows_say_why() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("h.csv");
        std::fs::write(
            &path,
            "organization_user_id,purpose,enabled,created_at\n\
             alice,analytics,true,2024-05-01T12:00:00Z\n\
             bob,ads,maybe,2024-05-01T12:00:00Z\n\
             carol,ads,false,yesterday\n\
             dave,ads\n",
        )
        .unwrap();
        let rows = rows(&path);
        assert_eq!(rows.len(), 4);
        let alice = rows[0].event.as_ref().unwrap();
        assert_eq!(alice["user"]["organization_user_id"], "alice");
        assert_eq!(alice["consents"]["purposes"][0]["enabled"], true);
        assert!(alice["id"].is_string());
        assert_eq!(rows[0].record, 2);
        assert!(rows[1].event.as_ref().unwrap_err().contains("enabled"));
        assert_eq!(rows[1].record, 3);
        assert!(rows[2].event.as_ref().unwrap_err().contains("created_at"));
        assert!(rows[3].event.as_ref().unwrap_err().contains("fields"));
        assert_eq!(rows[3].record, 5);
    }

    #[test]
    fn an_unknown_csv_column_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("h.csv");
        std::fs::write(&path, "organization_user_id,purpose,enabled,when\n").unwrap();
        let err = read_file(&path, Arc::default(), &mut |_| true).unwrap_err();
        assert!(err.contains("unknown column 'when'"), "{err}");
    }

    #[test]
    fn derived_ids_are_stable_and_distinct() {
        let a = derived_id("/x/h.ndjson", 3, b"{}");
        assert_eq!(
            a,
            derived_id("/y/h.ndjson", 3, b"{}"),
            "the folder does not count"
        );
        assert_ne!(a, derived_id("/x/h.ndjson", 4, b"{}"));
        assert_ne!(a, derived_id("/x/h.ndjson", 3, b"{ }"));
    }

    #[test]
    fn derived_ids_of_a_file_grow_with_the_record() {
        let ids: Vec<String> = [
            1,
            2,
            63,
            64,
            65,
            1 << 14,
            1 << 22,
            1 << 28,
            1 << 36,
            (1 << 40) - 1,
        ]
        .iter()
        .map(|r| derived_id("h.ndjson", *r, format!("row {r}").as_bytes()))
        .collect();
        for pair in ids.windows(2) {
            assert!(pair[0] < pair[1], "{} then {}", pair[0], pair[1]);
        }
        for id in &ids {
            let uuid = uuid::Uuid::parse_str(id).unwrap();
            assert_eq!(uuid.get_version_num(), 8, "{id}");
        }
        let other = derived_id("other.ndjson", 2, b"row 2");
        assert_ne!(ids[1][..13], other[..13], "another file starts elsewhere");
    }

    #[test]
    fn json_arrays_stream_their_elements() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("h.json");
        std::fs::write(&path, r#" [{"user":{"id":"u1"}}, 5, {"id":"e2"}]"#).unwrap();
        let rows = rows(&path);
        assert_eq!(rows.len(), 3);
        assert!(rows[0].event.as_ref().unwrap()["id"].is_string());
        assert!(rows[1].event.is_err());
        assert_eq!(rows[2].event.as_ref().unwrap()["id"], "e2");
    }

    #[test]
    fn ndjson_lines_that_are_not_json_are_rejected_with_their_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("h.ndjson");
        std::fs::write(&path, "{\"user\":{\"id\":\"u1\"}}\n\n{\"user\":\n").unwrap();
        let rows = rows(&path);
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[1].record, 3);
        assert!(rows[1].event.as_ref().unwrap_err().contains("JSON"));
    }
}
