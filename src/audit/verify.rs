//! `bulkhead audit verify`: reads a log of sealed records and proves it
//! untampered, or names the first record where it is not.
//!
//! What it proves: every record is signed by a tenant key (when keys are
//! given), each chain starts at seq 1 (unless `--partial`), and within each
//! chain every seq is the previous plus one and every `prev` is the hash of the
//! previous record. So a record edited, inserted, removed or reordered
//! anywhere is caught. What no log check can prove: that records were not cut
//! off at the *end*; compare the last seq with what the sink last received.

use std::fmt;
use std::io::{BufRead, Read};

use super::chain::{BreakReason, Verifier};
use super::keys::KeyRing;
use super::record::Identity;

/// Longest line read; a longer one is reported instead of exhausting memory.
pub const MAX_LINE_BYTES: usize = 16 << 20;

/// Why a log does not verify.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// A record breaks the chain.
    #[error("line {line}{}: {reason}", seq.map(|s| format!(" (seq {s})")).unwrap_or_default())]
    Broken {
        /// 1-based line number.
        line: u64,
        /// The record's seq, if it has one.
        seq: Option<u64>,
        /// What is wrong.
        reason: BreakReason,
    },
    /// A line is longer than [`MAX_LINE_BYTES`].
    #[error("line {0} is longer than {MAX_LINE_BYTES} bytes; this is not an audit log")]
    TooLong(u64),
    /// The input holds no record.
    #[error("no audit record found; is this the right file?")]
    Empty,
    /// The input cannot be read.
    #[error("cannot read the log: {0}")]
    Io(#[from] std::io::Error),
}

/// What a successful verification covered.
#[derive(Debug)]
pub struct Report {
    /// Records verified.
    pub records: u64,
    /// Each chain and its last seq.
    pub chains: Vec<(Identity, u64)>,
    /// Key ids that signed them; empty when signatures were not checked.
    pub key_ids: Vec<String>,
    /// Whether signatures were checked.
    pub signatures_checked: bool,
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let chains = match self.chains.as_slice() {
            [(id, last)] => format!("1 chain ({id}, last seq {last})"),
            many => format!("{} chains", many.len()),
        };
        write!(f, "OK: {} records in {chains}: hash links and sequence numbers intact", self.records)?;
        if self.signatures_checked {
            write!(f, ", signatures valid (key ids {})", self.key_ids.join(", "))
        } else {
            write!(f, "; signatures NOT checked (no --keys given)")
        }
    }
}

/// Verifies every line of `input`; blank lines are skipped.
pub fn verify_reader(mut input: impl BufRead, keys: Option<&KeyRing>, partial: bool) -> Result<Report, VerifyError> {
    let mut verifier = Verifier::new(keys, partial);
    let mut buf = Vec::new();
    let mut line_no = 0u64;
    loop {
        buf.clear();
        let n = input.by_ref().take(MAX_LINE_BYTES as u64 + 1).read_until(b'\n', &mut buf)?;
        if n == 0 {
            break;
        }
        line_no += 1;
        if buf.len() > MAX_LINE_BYTES {
            return Err(VerifyError::TooLong(line_no));
        }
        let Ok(text) = std::str::from_utf8(&buf) else {
            return Err(VerifyError::Broken {
                line: line_no,
                seq: None,
                reason: BreakReason::NotJson("not UTF-8".into()),
            });
        };
        let text = text.trim();
        if text.is_empty() {
            continue;
        }
        if let Err(reason) = verifier.check(text) {
            let seq = serde_json::from_str::<serde_json::Value>(text).ok().and_then(|v| v.get("seq")?.as_u64());
            return Err(VerifyError::Broken { line: line_no, seq, reason });
        }
    }
    if verifier.records() == 0 {
        return Err(VerifyError::Empty);
    }
    Ok(Report {
        records: verifier.records(),
        chains: verifier.chains(),
        key_ids: verifier.key_ids().iter().cloned().collect(),
        signatures_checked: verifier.checks_signatures(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::chain::ChainState;
    use crate::audit::keys::SigningKey;

    fn log(n: usize) -> (String, KeyRing) {
        let key = SigningKey::new("k1", [3; 32]).unwrap();
        let who = Identity { tenant: "t".into(), namespace: "t-a".into(), pod: "p".into(), container: "c".into() };
        let mut s = ChainState::default();
        let mut text = String::new();
        for i in 0..n {
            let rec = serde_json::json!({ "i": i }).as_object().cloned().unwrap();
            text.push_str(&s.seal(&who, &key, jiff::Timestamp::UNIX_EPOCH, rec).line);
            text.push('\n');
        }
        (text, KeyRing::from_keys(Some("k1"), [key]).unwrap())
    }

    #[test]
    fn a_good_log_gives_a_one_line_summary() {
        let (text, ring) = log(5);
        let report = verify_reader(text.as_bytes(), Some(&ring), false).unwrap();
        let line = report.to_string();
        assert_eq!(report.records, 5);
        assert!(
            line.starts_with("OK: 5 records in 1 chain (t/t-a/p/c, last seq 5)") && line.contains("key ids k1"),
            "{line}"
        );
        assert!(!line.contains('\n'));
        let unsigned = verify_reader(text.as_bytes(), None, false).unwrap().to_string();
        assert!(unsigned.contains("NOT checked"), "{unsigned}");
    }

    #[test]
    fn a_broken_log_names_the_line_and_reason() {
        let (text, ring) = log(5);
        let lines: Vec<&str> = text.lines().collect();
        let without_third = [lines[0], lines[1], lines[3], lines[4]].join("\n");
        let err = verify_reader(without_third.as_bytes(), Some(&ring), false).unwrap_err().to_string();
        assert!(err.starts_with("line 3 (seq 4): seq 4 follows seq 2"), "{err}");
        let edited = text.replacen("\"i\":1", "\"i\":7", 1);
        let err = verify_reader(edited.as_bytes(), Some(&ring), false).unwrap_err().to_string();
        assert!(err.starts_with("line 2 (seq 2): signature mismatch"), "{err}");
        assert!(matches!(verify_reader(&b"\n\n"[..], Some(&ring), false), Err(VerifyError::Empty)));
        let other = KeyRing::from_keys(None, [SigningKey::new("k2", [3; 32]).unwrap()]).unwrap();
        let err = verify_reader(text.as_bytes(), Some(&other), false).unwrap_err().to_string();
        assert!(err.contains("key id \"k1\", which is not in the key directory"), "{err}");
    }
}
