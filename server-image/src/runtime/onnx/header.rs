//! The header of an ONNX file (`ModelProto` without its graph): IR version, opsets, producer, metadata.
//!
//! Read from the downloaded file before ONNX Runtime builds a session, so a model newer than the runtime is refused
//! by name (the highest opset and IR version this build loads) without spending a session on it, and so `/status`
//! can show what the file says about itself. Only the top-level fields are decoded; the graph, by far the largest
//! field, is skipped with a seek.

use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::Path;

use crate::contract::{capabilities, ModelMetadataView, Reason};
use crate::failure::Failure;

/// Field numbers of `onnx.ModelProto`.
mod field {
    pub const IR_VERSION: u64 = 1;
    pub const PRODUCER_NAME: u64 = 2;
    pub const PRODUCER_VERSION: u64 = 3;
    pub const DOMAIN: u64 = 4;
    pub const MODEL_VERSION: u64 = 5;
    pub const DOC_STRING: u64 = 6;
    pub const OPSET_IMPORT: u64 = 8;
    pub const METADATA_PROPS: u64 = 14;
}

/// Header strings larger than this are not read into memory (they are kept empty).
const MAX_HEADER_FIELD_BYTES: u64 = 1 << 20;

/// The name ONNX gives the default operator domain (empty in the file).
pub const DEFAULT_DOMAIN: &str = "ai.onnx";

/// Reads the header of the ONNX file at `path`. A file that is not a protobuf message fails as `CorruptModel`.
pub fn read(path: &Path) -> Result<ModelMetadataView, Failure> {
    let file = std::fs::File::open(path).map_err(|e| {
        Failure::new(
            Reason::CorruptModel,
            format!("cannot read the model file: {e}"),
        )
    })?;
    let size = file.metadata().map(|m| m.len()).unwrap_or(0);
    parse(BufReader::new(file), size).map_err(|e| {
        Failure::new(
            Reason::CorruptModel,
            format!("not an ONNX model: its header cannot be read ({e})"),
        )
    })
}

/// Refuses an IR version or an opset of a known domain newer than ONNX Runtime 1.31 loads, naming the limit.
pub fn check_supported(header: &ModelMetadataView) -> Result<(), Failure> {
    let limits = || {
        let opsets: Vec<String> = capabilities::ONNX_OPSETS
            .iter()
            .map(|(domain, _, max)| format!("{domain} opset {max}"))
            .collect();
        format!(
            "ONNX Runtime {} loads up to {} and IR version {}",
            capabilities::ONNXRUNTIME_VERSION,
            opsets.join(", "),
            capabilities::ONNX_MAX_IR_VERSION
        )
    };
    if header.ir_version > i64::from(capabilities::ONNX_MAX_IR_VERSION) {
        return Err(Failure::new(
            Reason::UnsupportedFormat,
            format!(
                "the model's IR version {} is newer than the highest supported IR version {} ({}); export it \
                 with an older IR version",
                header.ir_version,
                capabilities::ONNX_MAX_IR_VERSION,
                limits()
            ),
        ));
    }
    for (domain, version) in &header.opsets {
        let Some((_, _, max)) = capabilities::ONNX_OPSETS
            .iter()
            .find(|(known, _, _)| known == domain)
        else {
            // A custom domain: whether its operators exist is ONNX Runtime's to say (UnsupportedOperator).
            continue;
        };
        if *version > i64::from(*max) {
            return Err(Failure::new(
                Reason::UnsupportedFormat,
                format!(
                    "the model imports opset {version} of domain {domain}, newer than the highest supported opset \
                     {max} of {domain} ({}); export it with target opset {max} or lower",
                    limits()
                ),
            ));
        }
    }
    Ok(())
}

#[derive(Debug, PartialEq, Eq)]
enum Wire {
    Varint(u64),
    Fixed,
    /// Length-delimited: the length; the bytes are still to be read or skipped.
    Bytes(u64),
}

struct Reader<R> {
    inner: R,
    offset: u64,
    size: u64,
}

impl<R: Read + Seek> Reader<R> {
    fn byte(&mut self) -> Result<Option<u8>, String> {
        let mut b = [0u8];
        match self.inner.read(&mut b) {
            Ok(0) => Ok(None),
            Ok(_) => {
                self.offset += 1;
                Ok(Some(b[0]))
            }
            Err(e) => Err(e.to_string()),
        }
    }

    fn varint(&mut self, first: Option<u8>) -> Result<u64, String> {
        let mut value = 0u64;
        let mut next = first;
        for shift in (0..64).step_by(7) {
            let b = match next.take() {
                Some(b) => b,
                None => self
                    .byte()?
                    .ok_or_else(|| format!("truncated at byte {}", self.offset))?,
            };
            value |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(format!("varint too long at byte {}", self.offset))
    }

    /// The next field's number and value, or `None` at the end of the message.
    fn field(&mut self) -> Result<Option<(u64, Wire)>, String> {
        let Some(first) = self.byte()? else {
            return Ok(None);
        };
        let key = self.varint(Some(first))?;
        let number = key >> 3;
        if number == 0 {
            return Err(format!("field number 0 at byte {}", self.offset));
        }
        let wire = match key & 7 {
            0 => Wire::Varint(self.varint(None)?),
            1 => {
                self.skip(8)?;
                Wire::Fixed
            }
            2 => {
                let length = self.varint(None)?;
                if length > self.size.saturating_sub(self.offset) {
                    return Err(format!(
                        "field {number} of {length} bytes at byte {} runs past the end of the file ({} bytes)",
                        self.offset, self.size
                    ));
                }
                Wire::Bytes(length)
            }
            5 => {
                self.skip(4)?;
                Wire::Fixed
            }
            other => {
                return Err(format!(
                    "wire type {other} of field {number} at byte {}",
                    self.offset
                ))
            }
        };
        Ok(Some((number, wire)))
    }

    fn skip(&mut self, bytes: u64) -> Result<(), String> {
        if bytes > self.size.saturating_sub(self.offset) {
            return Err(format!("truncated at byte {}", self.offset));
        }
        let delta = i64::try_from(bytes).map_err(|e| e.to_string())?;
        self.inner
            .seek(SeekFrom::Current(delta))
            .map_err(|e| e.to_string())?;
        self.offset += bytes;
        Ok(())
    }

    fn bytes(&mut self, length: u64) -> Result<Vec<u8>, String> {
        let mut buffer = vec![0u8; usize::try_from(length).map_err(|e| e.to_string())?];
        self.inner
            .read_exact(&mut buffer)
            .map_err(|e| format!("truncated at byte {}: {e}", self.offset))?;
        self.offset += length;
        Ok(buffer)
    }

    fn text(&mut self, length: u64) -> Result<String, String> {
        if length > MAX_HEADER_FIELD_BYTES {
            self.skip(length)?;
            return Ok(String::new());
        }
        let bytes = self.bytes(length)?;
        String::from_utf8(bytes)
            .map_err(|_| format!("a string field before byte {} is not UTF-8", self.offset))
    }
}

/// Decodes the top-level fields of a `ModelProto` of `size` bytes.
fn parse<R: Read + Seek>(inner: R, size: u64) -> Result<ModelMetadataView, String> {
    let mut reader = Reader {
        inner,
        offset: 0,
        size,
    };
    let mut header = ModelMetadataView::default();
    let mut graphs = 0;
    while let Some((number, wire)) = reader.field()? {
        match (number, wire) {
            (field::IR_VERSION, Wire::Varint(v)) => header.ir_version = v as i64,
            (field::MODEL_VERSION, Wire::Varint(v)) => header.model_version = v as i64,
            (field::PRODUCER_NAME, Wire::Bytes(n)) => header.producer_name = reader.text(n)?,
            (field::PRODUCER_VERSION, Wire::Bytes(n)) => {
                header.producer_version = reader.text(n)?
            }
            (field::DOMAIN, Wire::Bytes(n)) => header.domain = reader.text(n)?,
            (field::DOC_STRING, Wire::Bytes(n)) => header.description = reader.text(n)?,
            (field::OPSET_IMPORT, Wire::Bytes(n)) => {
                let (domain, version) = opset(&reader.bytes(n)?)?;
                let domain = if domain.is_empty() {
                    DEFAULT_DOMAIN.to_owned()
                } else {
                    domain
                };
                header.opsets.insert(domain, version);
            }
            (field::METADATA_PROPS, Wire::Bytes(n)) => {
                let (key, value) = string_pair(&reader.bytes(n)?)?;
                header.metadata_props.insert(key, value);
            }
            (7, Wire::Bytes(n)) => {
                graphs += 1;
                reader.skip(n)?;
            }
            (_, Wire::Bytes(n)) => reader.skip(n)?,
            (number, Wire::Varint(_)) if is_string_field(number) => {
                return Err(format!("field {number} has the wrong wire type"))
            }
            _ => {}
        }
    }
    if graphs == 0 {
        return Err("it has no graph".to_owned());
    }
    Ok(header)
}

fn is_string_field(number: u64) -> bool {
    matches!(
        number,
        field::PRODUCER_NAME
            | field::PRODUCER_VERSION
            | field::DOMAIN
            | field::DOC_STRING
            | field::OPSET_IMPORT
            | field::METADATA_PROPS
            | 7
    )
}

/// A field of a small embedded message: a varint (`Ok`) or bytes (`Err`).
type Embedded = (u64, Result<u64, Vec<u8>>);

/// The fields of a small embedded message.
fn embedded(bytes: &[u8]) -> Result<Vec<Embedded>, String> {
    let size = bytes.len() as u64;
    let mut reader = Reader {
        inner: std::io::Cursor::new(bytes),
        offset: 0,
        size,
    };
    let mut fields = Vec::new();
    while let Some((number, wire)) = reader.field()? {
        match wire {
            Wire::Varint(v) => fields.push((number, Ok(v))),
            Wire::Bytes(n) => fields.push((number, Err(reader.bytes(n)?))),
            Wire::Fixed => {}
        }
    }
    Ok(fields)
}

fn utf8(bytes: Vec<u8>) -> Result<String, String> {
    String::from_utf8(bytes).map_err(|_| "a string is not UTF-8".to_owned())
}

/// `OperatorSetIdProto`: domain (1), version (2).
fn opset(bytes: &[u8]) -> Result<(String, i64), String> {
    let mut domain = String::new();
    let mut version = 0;
    for (number, value) in embedded(bytes)? {
        match (number, value) {
            (1, Err(text)) => domain = utf8(text)?,
            (2, Ok(v)) => version = v as i64,
            _ => {}
        }
    }
    Ok((domain, version))
}

/// `StringStringEntryProto`: key (1), value (2).
fn string_pair(bytes: &[u8]) -> Result<(String, String), String> {
    let (mut key, mut value) = (String::new(), String::new());
    for (number, item) in embedded(bytes)? {
        match (number, item) {
            (1, Err(text)) => key = utf8(text)?,
            (2, Err(text)) => value = utf8(text)?,
            _ => {}
        }
    }
    Ok((key, value))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn varint(mut v: u64, out: &mut Vec<u8>) {
        loop {
            let b = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                out.push(b);
                return;
            }
            out.push(b | 0x80);
        }
    }

    fn bytes_field(number: u64, bytes: &[u8], out: &mut Vec<u8>) {
        varint(number << 3 | 2, out);
        varint(bytes.len() as u64, out);
        out.extend_from_slice(bytes);
    }

    fn varint_field(number: u64, v: u64, out: &mut Vec<u8>) {
        varint(number << 3, out);
        varint(v, out);
    }

    /// A `ModelProto` with `ir_version`, the given opsets and a placeholder graph.
    fn model(ir_version: u64, opsets: &[(&str, u64)]) -> Vec<u8> {
        let mut out = Vec::new();
        varint_field(1, ir_version, &mut out);
        bytes_field(2, b"test", &mut out);
        for (domain, version) in opsets {
            let mut opset = Vec::new();
            bytes_field(1, domain.as_bytes(), &mut opset);
            varint_field(2, *version, &mut opset);
            bytes_field(8, &opset, &mut out);
        }
        bytes_field(7, &[0x0a, 0x01, b'n'], &mut out);
        out
    }

    fn parse_bytes(bytes: &[u8]) -> Result<ModelMetadataView, String> {
        parse(std::io::Cursor::new(bytes), bytes.len() as u64)
    }

    #[test]
    fn every_committed_model_has_a_readable_header() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/models");
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let header = read(&path).unwrap_or_else(|f| panic!("{}: {f}", path.display()));
            assert!(header.ir_version >= 3, "{}: {header:?}", path.display());
            assert!(!header.opsets.is_empty(), "{}: {header:?}", path.display());
        }
        let described = read(
            &std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("testdata/models/described.onnx"),
        )
        .unwrap();
        assert_eq!(described.producer_name, "ferry-testdata");
        assert_eq!(described.producer_version, "1.2.3");
        assert_eq!(described.domain, "dev.ferry.example");
        assert_eq!(described.model_version, 42);
        assert_eq!(described.ir_version, 8);
        assert_eq!(described.metadata_props["trained_on"], "iris");
        assert_eq!(described.opsets["ai.onnx"], 17);
        assert_eq!(described.opsets["ai.onnx.ml"], 3);
    }

    #[test]
    fn supported_versions_pass_and_newer_ones_are_refused_naming_the_limit() {
        let ok = parse_bytes(&model(
            8,
            &[("", 17), ("ai.onnx.ml", 3), ("ferry.example", 99)],
        ))
        .unwrap();
        assert_eq!(ok.opsets["ai.onnx"], 17);
        check_supported(&ok).unwrap();

        let failure = check_supported(&parse_bytes(&model(8, &[("", 30)])).unwrap()).unwrap_err();
        assert_eq!(failure.reason, Reason::UnsupportedFormat);
        assert!(
            failure.message.contains("opset 30 of domain ai.onnx")
                && failure.message.contains("highest supported opset 26")
                && failure.message.contains("IR version 13"),
            "{failure}"
        );
        let failure =
            check_supported(&parse_bytes(&model(8, &[("ai.onnx.ml", 6)])).unwrap()).unwrap_err();
        assert!(
            failure
                .message
                .contains("highest supported opset 5 of ai.onnx.ml"),
            "{failure}"
        );
        let failure = check_supported(&parse_bytes(&model(14, &[("", 17)])).unwrap()).unwrap_err();
        assert_eq!(failure.reason, Reason::UnsupportedFormat);
        assert!(
            failure.message.contains("IR version 14")
                && failure.message.contains("highest supported IR version 13")
                && failure.message.contains("ai.onnx opset 26"),
            "{failure}"
        );
    }

    #[test]
    fn truncated_or_foreign_bytes_are_not_a_header() {
        let whole = model(8, &[("", 17)]);
        for cut in 1..whole.len() {
            assert!(parse_bytes(&whole[..cut]).is_err(), "cut at {cut}");
        }
        assert!(parse_bytes(b"").is_err());
        assert!(parse_bytes(b"definitely not protobuf").is_err());
    }
}
