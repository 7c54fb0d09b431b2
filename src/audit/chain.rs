//! Sealing records into a hash chain, and checking a chain record by record.
//!
//! A record is bound to its predecessor by `prev` = SHA-256 of the
//! predecessor's canonical bytes (signature included), and to the tenant by
//! `sig` = HMAC-SHA256 under the tenant's audit key. Without the key, an
//! attacker who edits, inserts, removes or reorders a record cannot produce a
//! valid signature for the records they would have to rewrite; with `seq` the
//! verifier names exactly where the chain broke.

use std::collections::{BTreeSet, HashMap};

use hmac::{Hmac, Mac};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use super::keys::{KeyRing, SigningKey};
use super::record::{Identity, canonical_bytes, field};

/// A SHA-256 digest.
pub type Hash = [u8; 32];

/// `prev` of the first record of a chain.
pub const GENESIS: Hash = [0; 32];

/// Where a chain stands: the last sealed sequence number (0 before the first
/// record) and that record's hash.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChainState {
    /// Sequence number of the last sealed record; 0 when none was sealed.
    pub seq: u64,
    /// Hash of the last sealed record; [`GENESIS`] when none was sealed.
    pub prev: Hash,
}

impl Default for ChainState {
    fn default() -> Self {
        Self { seq: 0, prev: GENESIS }
    }
}

/// One sealed record: its line (canonical JSON, no newline) and position.
#[derive(Clone, Debug)]
pub struct Sealed {
    /// The record's sequence number.
    pub seq: u64,
    /// The line to ship.
    pub line: String,
}

impl ChainState {
    /// Seals `record` as the next record of the chain and advances the state.
    pub fn seal(
        &mut self,
        who: &Identity,
        key: &SigningKey,
        time: jiff::Timestamp,
        record: Map<String, Value>,
    ) -> Sealed {
        let seq = self.seq + 1;
        let mut obj = Map::new();
        obj.insert(field::RECORD.into(), Value::Object(record));
        obj.insert(field::TENANT.into(), Value::String(who.tenant.clone()));
        obj.insert(field::NAMESPACE.into(), Value::String(who.namespace.clone()));
        obj.insert(field::POD.into(), Value::String(who.pod.clone()));
        obj.insert(field::CONTAINER.into(), Value::String(who.container.clone()));
        obj.insert(field::SEQ.into(), Value::from(seq));
        obj.insert(field::TIME.into(), Value::String(time.to_string()));
        obj.insert(field::PREV.into(), Value::String(hex::encode(self.prev)));
        obj.insert(field::KEY_ID.into(), Value::String(key.id().to_string()));
        let mut value = Value::Object(obj);
        let sig = sign(key, &canonical_bytes(&value));
        if let Value::Object(obj) = &mut value {
            obj.insert(field::SIG.into(), Value::String(hex::encode(sig)));
        }
        let bytes = canonical_bytes(&value);
        self.prev = Sha256::digest(&bytes).into();
        self.seq = seq;
        // canonical_bytes only emits UTF-8 (serde_json output and ASCII punctuation).
        let line = String::from_utf8(bytes).unwrap_or_default();
        Sealed { seq, line }
    }

    /// The state after `line`, a record this sidecar sealed earlier (restart recovery).
    pub fn after_line(line: &str) -> Option<(Identity, ChainState)> {
        let value: Value = serde_json::from_str(line).ok()?;
        let seq = value.get(field::SEQ)?.as_u64()?;
        let who = identity_of(value.as_object()?).ok()?;
        Some((who, ChainState { seq, prev: Sha256::digest(canonical_bytes(&value)).into() }))
    }
}

fn sign(key: &SigningKey, bytes: &[u8]) -> Hash {
    // HMAC accepts keys of any length, so this cannot fail for 32 bytes.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key.bytes()).expect("HMAC takes any key length");
    mac.update(bytes);
    mac.finalize().into_bytes().into()
}

fn check_sig(key: &SigningKey, bytes: &[u8], sig: &[u8]) -> bool {
    let Ok(mut mac) = <Hmac<Sha256> as Mac>::new_from_slice(key.bytes()) else {
        return false;
    };
    mac.update(bytes);
    // verify_slice compares in constant time.
    mac.verify_slice(sig).is_ok()
}

/// Why a record breaks the chain.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BreakReason {
    /// Not JSON, or not an object.
    #[error("not a JSON object: {0}")]
    NotJson(String),
    /// A required field is missing or has the wrong type.
    #[error("field `{0}` is missing or malformed")]
    Field(&'static str),
    /// `key_id` names a key the verifier does not have.
    #[error(
        "signed with key id {0:?}, which is not in the key directory (add its audit-key.{0} file, or use the tenant's own key directory)"
    )]
    UnknownKey(String),
    /// The signature does not match the record.
    #[error(
        "signature mismatch under key {0:?}: the record was edited after signing, or signed by someone without the tenant key"
    )]
    Signature(String),
    /// The chain's first record is not `seq` 1.
    #[error(
        "the chain of {who} starts at seq {seq}, not 1: its first records are missing (pass --partial to verify an excerpt)"
    )]
    MissingStart {
        /// The chain.
        who: String,
        /// The seq found.
        seq: u64,
    },
    /// The sequence number is not the previous one plus one.
    #[error(
        "seq {found} follows seq {last} of the same chain; expected {expected} (a record was removed, inserted or reordered)"
    )]
    Seq {
        /// Seq of the previous record of this chain.
        last: u64,
        /// The expected seq.
        expected: u64,
        /// The seq found.
        found: u64,
    },
    /// `prev` is not the hash of the previous record.
    #[error(
        "hash link broken: prev does not match the previous record of this chain (a record before it was edited, removed or replaced)"
    )]
    Link,
}

/// Checks records one at a time, keeping one state per chain so logs that
/// interleave several pods (a SIEM export) verify too.
#[derive(Debug)]
pub struct Verifier<'k> {
    keys: Option<&'k KeyRing>,
    partial: bool,
    chains: HashMap<Identity, ChainState>,
    key_ids: BTreeSet<String>,
    records: u64,
}

impl<'k> Verifier<'k> {
    /// A verifier; without keys it checks links and sequence numbers only.
    /// `partial` accepts chains that start after seq 1 (an excerpt).
    pub fn new(keys: Option<&'k KeyRing>, partial: bool) -> Self {
        Self { keys, partial, chains: HashMap::new(), key_ids: BTreeSet::new(), records: 0 }
    }

    /// Checks the next record; on success it becomes the head of its chain.
    pub fn check(&mut self, line: &str) -> Result<(), BreakReason> {
        let value: Value = serde_json::from_str(line).map_err(|e| BreakReason::NotJson(e.to_string()))?;
        let Value::Object(mut obj) = value else {
            return Err(BreakReason::NotJson("the line is JSON but not an object".into()));
        };
        let sig_hex = match obj.remove(field::SIG) {
            Some(Value::String(s)) => s,
            _ => return Err(BreakReason::Field(field::SIG)),
        };
        let sig = decode_hash(&sig_hex).ok_or(BreakReason::Field(field::SIG))?;
        let who = identity_of(&obj)?;
        let seq = obj.get(field::SEQ).and_then(Value::as_u64).ok_or(BreakReason::Field(field::SEQ))?;
        let prev = obj
            .get(field::PREV)
            .and_then(Value::as_str)
            .and_then(decode_hash)
            .ok_or(BreakReason::Field(field::PREV))?;
        let key_id =
            obj.get(field::KEY_ID).and_then(Value::as_str).ok_or(BreakReason::Field(field::KEY_ID))?.to_string();
        obj.get(field::TIME)
            .and_then(Value::as_str)
            .and_then(|t| t.parse::<jiff::Timestamp>().ok())
            .ok_or(BreakReason::Field(field::TIME))?;
        if !obj.get(field::RECORD).is_some_and(Value::is_object) {
            return Err(BreakReason::Field(field::RECORD));
        }

        let mut value = Value::Object(obj);
        if let Some(keys) = self.keys {
            let key = keys.get(&key_id).ok_or_else(|| BreakReason::UnknownKey(key_id.clone()))?;
            if !check_sig(key, &canonical_bytes(&value), &sig) {
                return Err(BreakReason::Signature(key_id));
            }
        }

        match self.chains.get(&who) {
            Some(state) => {
                if seq != state.seq + 1 {
                    return Err(BreakReason::Seq { last: state.seq, expected: state.seq + 1, found: seq });
                }
                if prev != state.prev {
                    return Err(BreakReason::Link);
                }
            }
            None if self.partial => {}
            None => {
                if seq != 1 {
                    return Err(BreakReason::MissingStart { who: who.to_string(), seq });
                }
                if prev != GENESIS {
                    return Err(BreakReason::Link);
                }
            }
        }

        if let Value::Object(obj) = &mut value {
            obj.insert(field::SIG.into(), Value::String(sig_hex));
        }
        let hash: Hash = Sha256::digest(canonical_bytes(&value)).into();
        self.chains.insert(who, ChainState { seq, prev: hash });
        self.key_ids.insert(key_id);
        self.records += 1;
        Ok(())
    }

    /// Records accepted so far.
    pub fn records(&self) -> u64 {
        self.records
    }

    /// Each chain seen and its last seq, sorted by identity.
    pub fn chains(&self) -> Vec<(Identity, u64)> {
        let mut out: Vec<_> = self.chains.iter().map(|(k, v)| (k.clone(), v.seq)).collect();
        out.sort();
        out
    }

    /// Key ids that signed the accepted records.
    pub fn key_ids(&self) -> &BTreeSet<String> {
        &self.key_ids
    }

    /// Whether signatures are checked.
    pub fn checks_signatures(&self) -> bool {
        self.keys.is_some()
    }
}

fn identity_of(obj: &Map<String, Value>) -> Result<Identity, BreakReason> {
    let get =
        |name: &'static str| obj.get(name).and_then(Value::as_str).map(str::to_string).ok_or(BreakReason::Field(name));
    Ok(Identity {
        tenant: get(field::TENANT)?,
        namespace: get(field::NAMESPACE)?,
        pod: get(field::POD)?,
        container: get(field::CONTAINER)?,
    })
}

fn decode_hash(s: &str) -> Option<Hash> {
    let mut out = [0u8; 32];
    hex::decode_to_slice(s, &mut out).ok()?;
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn who() -> Identity {
        Identity { tenant: "acme".into(), namespace: "acme-calls".into(), pod: "ivr-0".into(), container: "app".into() }
    }

    fn key(id: &str, b: u8) -> SigningKey {
        SigningKey::new(id, [b; 32]).unwrap()
    }

    fn chain_of(records: &[Map<String, Value>], keys: &[SigningKey], rotate_at: usize) -> Vec<String> {
        let mut state = ChainState::default();
        let t = jiff::Timestamp::from_second(1_700_000_000).unwrap();
        records
            .iter()
            .enumerate()
            .map(|(i, r)| {
                let k = if i < rotate_at { &keys[0] } else { &keys[keys.len() - 1] };
                state.seal(&who(), k, t, r.clone()).line
            })
            .collect()
    }

    fn verify(lines: &[String], ring: Option<&KeyRing>) -> Result<u64, (usize, BreakReason)> {
        let mut v = Verifier::new(ring, false);
        for (i, l) in lines.iter().enumerate() {
            v.check(l).map_err(|e| (i, e))?;
        }
        Ok(v.records())
    }

    fn ring_k1() -> KeyRing {
        KeyRing::from_keys(Some("k1"), [key("k1", 1)]).unwrap()
    }

    fn json_leaf() -> impl Strategy<Value = Value> {
        prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(Value::from),
            ".{0,12}".prop_map(Value::from),
        ]
    }

    fn json_value() -> impl Strategy<Value = Value> {
        json_leaf().prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::btree_map(".{0,6}", inner, 0..4).prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    fn record() -> impl Strategy<Value = Map<String, Value>> {
        prop::collection::btree_map("[a-z_é]{1,8}", json_value(), 0..5).prop_map(|m| m.into_iter().collect())
    }

    fn records() -> impl Strategy<Value = Vec<Map<String, Value>>> {
        prop::collection::vec(record(), 2..12)
    }

    /// Changes one field of a record line (metadata or the app record) to a different value.
    fn edit(line: &str, which: usize, salt: u64) -> String {
        let mut v: Value = serde_json::from_str(line).unwrap();
        let obj = v.as_object_mut().unwrap();
        let fields = ["record", "tenant", "namespace", "pod", "container", "seq", "time", "prev", "key_id", "sig"];
        let f = fields[which % fields.len()];
        let new = match f {
            "record" => {
                let mut r = obj["record"].as_object().cloned().unwrap();
                r.insert("injected".into(), json!(salt));
                Value::Object(r)
            }
            "seq" => json!(obj["seq"].as_u64().unwrap() + 1 + salt % 5),
            "time" => json!("2001-01-01T00:00:00Z"),
            "prev" | "sig" => {
                let mut h = decode_hash(obj[f].as_str().unwrap()).unwrap();
                h[(salt % 32) as usize] ^= 1 << (salt % 8);
                json!(hex::encode(h))
            }
            _ => json!(format!("{}x", obj[f].as_str().unwrap())),
        };
        obj.insert(f.into(), new);
        serde_json::to_string(&v).unwrap()
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

        #[test]
        fn an_untouched_chain_verifies_and_reserialising_keeps_it_valid(recs in records()) {
            let lines = chain_of(&recs, &[key("k1", 1)], usize::MAX);
            prop_assert_eq!(verify(&lines, Some(&ring_k1())), Ok(recs.len() as u64));
            // A pipeline that re-serialises the JSON (here: pretty, then compact) must not break it.
            let reser: Vec<String> = lines.iter().map(|l| {
                let v: Value = serde_json::from_str(l).unwrap();
                serde_json::to_string_pretty(&v).unwrap().replace('\n', " ")
            }).collect();
            prop_assert_eq!(verify(&reser, Some(&ring_k1())), Ok(recs.len() as u64));
        }

        #[test]
        fn any_single_edit_is_detected(recs in records(), at in any::<prop::sample::Index>(), which in 0usize..10, salt in any::<u64>()) {
            let mut lines = chain_of(&recs, &[key("k1", 1)], usize::MAX);
            let i = at.index(lines.len());
            lines[i] = edit(&lines[i], which, salt);
            let err = verify(&lines, Some(&ring_k1())).unwrap_err();
            prop_assert_eq!(err.0, i, "reported the wrong line: {:?}", err.1);
        }

        #[test]
        fn an_edit_with_recomputed_links_is_still_caught_without_the_key(recs in records(), at in any::<prop::sample::Index>()) {
            // The attacker edits a record and re-links every following record
            // but cannot sign: the edited record is reported.
            let mut lines = chain_of(&recs, &[key("k1", 1)], usize::MAX);
            let i = at.index(lines.len());
            let mut prev: Option<Hash> = None;
            for line in lines.iter_mut().skip(i) {
                let mut v: Value = serde_json::from_str(line).unwrap();
                let obj = v.as_object_mut().unwrap();
                if prev.is_none() {
                    obj.get_mut("record").unwrap().as_object_mut().unwrap().insert("forged".into(), json!(true));
                } else {
                    obj.insert("prev".into(), json!(hex::encode(prev.unwrap())));
                }
                prev = Some(Sha256::digest(canonical_bytes(&v)).into());
                *line = serde_json::to_string(&v).unwrap();
            }
            let err = verify(&lines, Some(&ring_k1())).unwrap_err();
            prop_assert_eq!(err.0, i);
            prop_assert!(matches!(err.1, BreakReason::Signature(_)));
        }

        #[test]
        fn any_insertion_is_detected(recs in records(), at in 0usize..20, from in any::<prop::sample::Index>(), forged in any::<bool>()) {
            let mut lines = chain_of(&recs, &[key("k1", 1)], usize::MAX);
            let at = at % (lines.len() + 1);
            let extra = if forged {
                // A record sealed by someone with a different key, for the right chain position.
                let mut state = ChainState::default();
                let mut out = String::new();
                for r in recs.iter().take(at + 1) {
                    out = state.seal(&who(), &key("k1", 9), jiff::Timestamp::UNIX_EPOCH, r.clone()).line;
                }
                if at >= recs.len() {
                    out = state.seal(&who(), &key("k1", 9), jiff::Timestamp::UNIX_EPOCH, Map::new()).line;
                }
                out
            } else {
                lines[from.index(lines.len())].clone()
            };
            lines.insert(at, extra);
            let err = verify(&lines, Some(&ring_k1())).unwrap_err();
            // A copy placed right before its original is indistinguishable from it;
            // then the second of the two identical lines is the one reported.
            prop_assert!(err.0 <= at + 1, "insertion at {} reported at {}", at, err.0);
        }

        #[test]
        fn any_deletion_but_the_last_is_detected(recs in records(), at in any::<prop::sample::Index>()) {
            let mut lines = chain_of(&recs, &[key("k1", 1)], usize::MAX);
            let i = at.index(lines.len() - 1);
            lines.remove(i);
            let err = verify(&lines, Some(&ring_k1())).unwrap_err();
            prop_assert_eq!(err.0, i);
            // Without keys the links and seq numbers still catch it.
            prop_assert_eq!(verify(&lines, None).unwrap_err().0, i);
        }

        #[test]
        fn any_reorder_is_detected(recs in records(), a in any::<prop::sample::Index>(), b in any::<prop::sample::Index>()) {
            let mut lines = chain_of(&recs, &[key("k1", 1)], usize::MAX);
            let (i, j) = (a.index(lines.len()), b.index(lines.len()));
            prop_assume!(i != j);
            lines.swap(i, j);
            let err = verify(&lines, Some(&ring_k1())).unwrap_err();
            prop_assert_eq!(err.0, i.min(j));
        }

        #[test]
        fn truncating_a_line_in_the_middle_is_detected(recs in records(), at in any::<prop::sample::Index>(), cut in any::<prop::sample::Index>()) {
            // A cut line merges with the next one (the newline is gone) or ends the file early.
            let lines = chain_of(&recs, &[key("k1", 1)], usize::MAX);
            let i = at.index(lines.len() - 1);
            let mut keep = cut.index(lines[i].len() - 1);
            while !lines[i].is_char_boundary(keep) {
                keep -= 1;
            }
            let mut text = String::new();
            for (n, l) in lines.iter().enumerate() {
                if n == i { text.push_str(&l[..keep]); } else { text.push_str(l); text.push('\n'); }
            }
            let cut_lines: Vec<String> = text.lines().map(str::to_string).collect();
            let err = verify(&cut_lines, Some(&ring_k1())).unwrap_err();
            prop_assert_eq!(err.0, i);
        }

        #[test]
        fn rotation_mid_chain_needs_both_keys(recs in records(), rot in any::<prop::sample::Index>()) {
            let rotate_at = 1 + rot.index(recs.len() - 1);
            let lines = chain_of(&recs, &[key("k1", 1), key("k2", 2)], rotate_at);
            let both = KeyRing::from_keys(Some("k2"), [key("k1", 1), key("k2", 2)]).unwrap();
            prop_assert_eq!(verify(&lines, Some(&both)), Ok(recs.len() as u64));
            let new_only = KeyRing::from_keys(Some("k2"), [key("k2", 2)]).unwrap();
            prop_assert_eq!(verify(&lines, Some(&new_only)), Err((0, BreakReason::UnknownKey("k1".into()))));
            // Same id, wrong bytes: a signature error, not a pass.
            let wrong = KeyRing::from_keys(Some("k2"), [key("k1", 7), key("k2", 2)]).unwrap();
            prop_assert!(matches!(verify(&lines, Some(&wrong)), Err((0, BreakReason::Signature(_)))));
        }
    }

    #[test]
    fn interleaved_chains_verify_independently() {
        let k = key("k1", 1);
        let t = jiff::Timestamp::UNIX_EPOCH;
        let (mut a, mut b) = (ChainState::default(), ChainState::default());
        let other = Identity { pod: "ivr-1".into(), ..who() };
        let lines = vec![
            a.seal(&who(), &k, t, Map::new()).line,
            b.seal(&other, &k, t, Map::new()).line,
            a.seal(&who(), &k, t, Map::new()).line,
            b.seal(&other, &k, t, Map::new()).line,
        ];
        assert_eq!(verify(&lines, Some(&ring_k1())), Ok(4));
        // Moving a record into another pod's chain is caught by its signature.
        let moved = lines[2].replace("ivr-0", "ivr-1");
        let err = verify(&[lines[0].clone(), lines[1].clone(), moved], Some(&ring_k1())).unwrap_err();
        assert_eq!(err.0, 2);
    }

    #[test]
    fn a_chain_must_start_at_one_unless_partial() {
        let lines = chain_of(&[Map::new(), Map::new(), Map::new()], &[key("k1", 1)], usize::MAX);
        let tail = &lines[1..];
        assert!(matches!(verify(tail, Some(&ring_k1())), Err((0, BreakReason::MissingStart { seq: 2, .. }))));
        let ring = ring_k1();
        let mut v = Verifier::new(Some(&ring), true);
        for l in tail {
            v.check(l).unwrap();
        }
        assert_eq!(v.chains()[0].1, 3);
    }

    #[test]
    fn sealed_lines_are_canonical_and_recoverable() {
        let mut state = ChainState::default();
        let rec = json!({"z": 1, "a": {"y": [1.5, "x"]}}).as_object().cloned().unwrap();
        let s = state.seal(&who(), &key("k1", 1), jiff::Timestamp::UNIX_EPOCH, rec);
        let v: Value = serde_json::from_str(&s.line).unwrap();
        assert_eq!(canonical_bytes(&v), s.line.as_bytes());
        assert!(
            s.line
                .starts_with(r#"{"container":"app","key_id":"k1","namespace":"acme-calls","pod":"ivr-0","prev":"0000"#),
            "{}",
            s.line
        );
        let (id, recovered) = ChainState::after_line(&s.line).unwrap();
        assert_eq!((id, recovered), (who(), state));
    }
}
