//! Value types of the TC model: id sets, two-letter codes, dates, publisher restrictions.

use std::fmt;
use std::ops::RangeInclusive;
use std::str::FromStr;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::ser::{SerializeSeq, Serializer};
use serde::{Deserialize, Serialize};

/// A set of vendor ids (1–65535), kept as a bitmap: bit `id % 64` of word `id / 64`, with no
/// trailing zero words (so equal sets are equal values).
///
/// Decoding a bitfield is then a copy of 56 bits at a time, and a range entry is a fill of
/// whole words. A set takes at most 8 KiB (up to id 65535), so a decoded string cannot claim
/// more than that per vendor list, whatever its ranges say. In JSON it is a sorted array of
/// ids.
#[derive(Clone, Default, PartialEq, Eq, Hash)]
pub struct IdSet {
    words: Vec<u64>,
}

impl IdSet {
    /// The empty set.
    pub const fn new() -> Self {
        IdSet { words: Vec::new() }
    }

    /// Whether the set has no ids.
    pub fn is_empty(&self) -> bool {
        self.words.is_empty()
    }

    /// Number of ids in the set.
    pub fn len(&self) -> usize {
        self.words.iter().map(|w| w.count_ones() as usize).sum()
    }

    /// The largest id, if any (the vendor vector's MaxVendorId).
    pub fn max(&self) -> Option<u16> {
        let last = *self.words.last()?;
        Some(((self.words.len() - 1) * 64 + 63 - last.leading_zeros() as usize) as u16)
    }

    /// The smallest id, if any.
    pub fn min(&self) -> Option<u16> {
        self.next_set(0).map(|i| i as u16)
    }

    /// Whether `id` is in the set.
    pub fn contains(&self, id: u16) -> bool {
        let id = usize::from(id);
        self.words
            .get(id / 64)
            .is_some_and(|w| (w >> (id % 64)) & 1 == 1)
    }

    /// Adds one id; returns whether it was new.
    pub fn insert(&mut self, id: u16) -> bool {
        let id = usize::from(id);
        self.grow(id);
        let w = &mut self.words[id / 64];
        let bit = 1u64 << (id % 64);
        let new = *w & bit == 0;
        *w |= bit;
        new
    }

    /// Adds every id in `start..=end` (nothing if `start > end`).
    pub fn insert_range(&mut self, start: u16, end: u16) {
        if start > end {
            return;
        }
        let (a, b) = (usize::from(start), usize::from(end));
        self.grow(b);
        let (wa, wb) = (a / 64, b / 64);
        let head = u64::MAX << (a % 64);
        let tail = u64::MAX >> (63 - b % 64);
        if wa == wb {
            self.words[wa] |= head & tail;
        } else {
            self.words[wa] |= head;
            self.words[wa + 1..wb].fill(u64::MAX);
            self.words[wb] |= tail;
        }
    }

    /// Removes every id.
    pub fn clear(&mut self) {
        self.words.clear();
    }

    /// The ids in ascending order.
    pub fn iter(&self) -> impl Iterator<Item = u16> + '_ {
        self.words.iter().enumerate().flat_map(|(i, &w)| {
            let mut w = w;
            std::iter::from_fn(move || {
                (w != 0).then(|| {
                    let b = w.trailing_zeros() as usize;
                    w &= w - 1;
                    (i * 64 + b) as u16
                })
            })
        })
    }

    /// The maximal runs of consecutive ids, ascending: exactly the entries a range encoding
    /// writes.
    pub fn ranges(&self) -> impl Iterator<Item = RangeInclusive<u16>> + '_ {
        let mut pos = 0;
        std::iter::from_fn(move || {
            let start = self.next_set(pos)?;
            let end = self.next_clear(start);
            pos = end;
            Some(start as u16..=(end - 1) as u16)
        })
    }

    /// Number of maximal runs of consecutive ids.
    pub fn run_count(&self) -> usize {
        let mut carry = 0;
        let mut n = 0;
        for &w in &self.words {
            n += (w & !((w << 1) | carry)).count_ones() as usize;
            carry = w >> 63;
        }
        n
    }

    /// The ids as a vector, ascending.
    pub fn to_vec(&self) -> Vec<u16> {
        self.iter().collect()
    }

    /// A set with room for ids up to `max` (decoder fast path); call [`Self::trim`] when done.
    pub(crate) fn with_max(max: usize) -> Self {
        IdSet {
            words: vec![0; max / 64 + 1],
        }
    }

    /// ORs the low `n` (≤ 56) bits of `bits` in, bit `j` being id `pos + j`. The words must
    /// exist (see [`Self::with_max`]).
    #[inline]
    pub(crate) fn or_bits(&mut self, pos: usize, bits: u64, n: u32) {
        debug_assert!(n <= 56);
        let (w, b) = (pos / 64, pos % 64);
        self.words[w] |= bits << b;
        if b + n as usize > 64 {
            self.words[w + 1] |= bits >> (64 - b);
        }
    }

    /// `n` (≤ 32) bits for ids `pos..pos + n`, bit `j` being id `pos + j`.
    #[inline]
    pub(crate) fn bits_at(&self, pos: usize, n: u32) -> u64 {
        let (w, b) = (pos / 64, pos % 64);
        let lo = self.words.get(w).copied().unwrap_or(0) >> b;
        let hi = if b == 0 {
            0
        } else {
            self.words.get(w + 1).copied().unwrap_or(0) << (64 - b)
        };
        (lo | hi) & ((1u64 << n) - 1)
    }

    /// Drops trailing zero words, restoring the invariant.
    pub(crate) fn trim(&mut self) {
        while self.words.last() == Some(&0) {
            self.words.pop();
        }
    }

    fn grow(&mut self, id: usize) {
        if self.words.len() <= id / 64 {
            self.words.resize(id / 64 + 1, 0);
        }
    }

    /// The first id ≥ `pos` in the set.
    fn next_set(&self, pos: usize) -> Option<usize> {
        let mut i = pos / 64;
        let mut w = *self.words.get(i)? & (u64::MAX << (pos % 64));
        loop {
            if w != 0 {
                return Some(i * 64 + w.trailing_zeros() as usize);
            }
            i += 1;
            w = *self.words.get(i)?;
        }
    }

    /// The first id ≥ `pos` not in the set (65536 past the end).
    fn next_clear(&self, pos: usize) -> usize {
        let mut i = pos / 64;
        let Some(&first) = self.words.get(i) else {
            return pos;
        };
        let mut w = !first & (u64::MAX << (pos % 64));
        loop {
            if w != 0 {
                return i * 64 + w.trailing_zeros() as usize;
            }
            i += 1;
            match self.words.get(i) {
                Some(&x) => w = !x,
                None => return i * 64,
            }
        }
    }
}

impl fmt::Debug for IdSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut set = f.debug_set();
        for r in self.ranges() {
            if r.start() == r.end() {
                set.entry(r.start());
            } else {
                set.entry(&r);
            }
        }
        set.finish()
    }
}

impl FromIterator<u16> for IdSet {
    fn from_iter<I: IntoIterator<Item = u16>>(iter: I) -> Self {
        let mut set = IdSet::new();
        for id in iter {
            set.insert(id);
        }
        set
    }
}

impl<const N: usize> From<[u16; N]> for IdSet {
    fn from(ids: [u16; N]) -> Self {
        ids.into_iter().collect()
    }
}

impl Extend<u16> for IdSet {
    fn extend<I: IntoIterator<Item = u16>>(&mut self, iter: I) {
        for id in iter {
            self.insert(id);
        }
    }
}

impl Serialize for IdSet {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(self.len()))?;
        for id in self.iter() {
            seq.serialize_element(&id)?;
        }
        seq.end()
    }
}

impl<'de> Deserialize<'de> for IdSet {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = IdSet;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an array of ids from 1 to 65535")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<IdSet, A::Error> {
                let mut set = IdSet::new();
                while let Some(id) = seq.next_element::<u16>()? {
                    if id == 0 {
                        return Err(de::Error::custom("ids start at 1"));
                    }
                    set.insert(id);
                }
                Ok(set)
            }
        }
        d.deserialize_seq(V)
    }
}

/// A set of small ids (1–64) in one word: purposes (1–24), special features (1–12), custom
/// purposes (1–63). In JSON it is a sorted array of ids.
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct PurposeSet(u64);

impl PurposeSet {
    /// The empty set.
    pub const fn new() -> Self {
        PurposeSet(0)
    }

    /// The set whose id `i` is bit `i - 1` of `bits`.
    pub const fn from_bits(bits: u64) -> Self {
        PurposeSet(bits)
    }

    /// Bit `i - 1` is set when id `i` is in the set.
    pub const fn bits(self) -> u64 {
        self.0
    }

    /// Adds `id`.
    ///
    /// # Panics
    /// If `id` is 0 or greater than 64.
    pub fn insert(&mut self, id: u8) {
        assert!(
            (1..=64).contains(&id),
            "purpose set ids are 1..=64, not {id}"
        );
        self.0 |= 1 << (id - 1);
    }

    /// Removes `id` (no-op when absent or out of range).
    pub fn remove(&mut self, id: u8) {
        if (1..=64).contains(&id) {
            self.0 &= !(1 << (id - 1));
        }
    }

    /// Whether `id` is in the set.
    pub fn contains(self, id: u8) -> bool {
        (1..=64).contains(&id) && self.0 & (1 << (id - 1)) != 0
    }

    /// Whether the set is empty.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The largest id, if any.
    pub fn max(self) -> Option<u8> {
        (self.0 != 0).then(|| 64 - self.0.leading_zeros() as u8)
    }

    /// The ids in ascending order.
    pub fn iter(self) -> impl Iterator<Item = u8> {
        (1..=64u8).filter(move |&i| self.contains(i))
    }
}

impl fmt::Debug for PurposeSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.iter()).finish()
    }
}

impl FromIterator<u8> for PurposeSet {
    /// # Panics
    /// If an id is 0 or greater than 64.
    fn from_iter<I: IntoIterator<Item = u8>>(iter: I) -> Self {
        let mut set = PurposeSet::new();
        for id in iter {
            set.insert(id);
        }
        set
    }
}

impl<const N: usize> From<[u8; N]> for PurposeSet {
    fn from(ids: [u8; N]) -> Self {
        ids.into_iter().collect()
    }
}

impl Serialize for PurposeSet {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.iter())
    }
}

impl<'de> Deserialize<'de> for PurposeSet {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let ids = Vec::<u8>::deserialize(d)?;
        let mut set = PurposeSet::new();
        for id in ids {
            if !(1..=64).contains(&id) {
                return Err(de::Error::custom(format!("id {id} is not in 1..=64")));
            }
            set.insert(id);
        }
        Ok(set)
    }
}

/// Two uppercase letters A–Z: a consent language (ISO 639-1, `EN`) or a publisher country code
/// (ISO 3166-1 alpha-2, `AA` when unknown). Each letter is 6 bits in the string, A = 0.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Alpha2([u8; 2]);

impl Alpha2 {
    /// `EN`, the default consent language.
    pub const EN: Alpha2 = Alpha2(*b"EN");
    /// `AA`, the "unknown" publisher country code.
    pub const AA: Alpha2 = Alpha2(*b"AA");

    /// From two letters; lowercase is uppercased. `None` unless both are ASCII letters.
    pub fn new(a: u8, b: u8) -> Option<Alpha2> {
        (a.is_ascii_alphabetic() && b.is_ascii_alphabetic())
            .then(|| Alpha2([a.to_ascii_uppercase(), b.to_ascii_uppercase()]))
    }

    /// The two letters' values in the string (A = 0 … Z = 25).
    pub(crate) fn indices(self) -> (u8, u8) {
        (self.0[0] - b'A', self.0[1] - b'A')
    }

    /// From two letter values (A = 0); `None` if one is above 25.
    pub(crate) fn from_indices(a: u8, b: u8) -> Option<Alpha2> {
        (a < 26 && b < 26).then(|| Alpha2([b'A' + a, b'A' + b]))
    }

    /// The code as a string slice.
    pub fn as_str(&self) -> &str {
        // Always two ASCII letters.
        std::str::from_utf8(&self.0).unwrap_or("AA")
    }
}

impl Default for Alpha2 {
    fn default() -> Self {
        Alpha2::AA
    }
}

impl fmt::Display for Alpha2 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for Alpha2 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.as_str())
    }
}

impl FromStr for Alpha2 {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.as_bytes() {
            &[a, b] => Alpha2::new(a, b),
            _ => None,
        }
        .ok_or_else(|| format!("{s:?} is not two letters A-Z"))
    }
}

impl Serialize for Alpha2 {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Alpha2 {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(de::Error::custom)
    }
}

/// A TCF date: deciseconds since the Unix epoch, as the 36-bit Created and LastUpdated fields
/// hold it (iabtcf-es and iabgpp-es write `Math.round(ms / 100)`).
///
/// In JSON it is an RFC 3339 UTC string such as `"2025-06-03T00:00:00Z"` (with a fraction
/// only when the tenths are not zero), like the `Date`s of the IAB libraries' `created` and
/// `lastUpdated`. Deserializing also accepts an integer number of deciseconds.
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Deciseconds(pub u64);

impl Deciseconds {
    /// The largest value the 36-bit field holds (in the year 2187).
    pub const MAX: Deciseconds = Deciseconds((1 << 36) - 1);

    /// From a UTC instant, rounded to the nearest decisecond as the IAB libraries round.
    pub fn from_datetime(t: DateTime<Utc>) -> Deciseconds {
        let ms = t.timestamp_millis().max(0) as u64;
        Deciseconds((ms + 50) / 100)
    }

    /// Midnight UTC of the day of `t`: what TCF 2.2 requires for both Created and LastUpdated.
    pub fn day_of(t: DateTime<Utc>) -> Deciseconds {
        let secs = t.timestamp().max(0) as u64;
        Deciseconds(secs / 86_400 * 86_400 * 10)
    }

    /// The instant, or `None` if out of chrono's range (never for values ≤ [`Self::MAX`]).
    pub fn to_datetime(self) -> Option<DateTime<Utc>> {
        let ms = i64::try_from(self.0.checked_mul(100)?).ok()?;
        DateTime::from_timestamp_millis(ms)
    }
}

impl fmt::Debug for Deciseconds {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.to_datetime() {
            Some(t) => write!(f, "{}", t.to_rfc3339_opts(SecondsFormat::AutoSi, true)),
            None => write!(f, "{}ds", self.0),
        }
    }
}

impl From<DateTime<Utc>> for Deciseconds {
    fn from(t: DateTime<Utc>) -> Self {
        Deciseconds::from_datetime(t)
    }
}

impl Serialize for Deciseconds {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.to_datetime() {
            Some(t) => s.serialize_str(&t.to_rfc3339_opts(SecondsFormat::AutoSi, true)),
            None => s.serialize_u64(self.0),
        }
    }
}

impl<'de> Deserialize<'de> for Deciseconds {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Deciseconds;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an RFC 3339 date or a number of deciseconds since 1970")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Deciseconds, E> {
                Ok(Deciseconds(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Deciseconds, E> {
                u64::try_from(v)
                    .map(Deciseconds)
                    .map_err(|_| E::custom("dates before 1970 cannot be encoded"))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Deciseconds, E> {
                let t = DateTime::parse_from_rfc3339(v)
                    .map_err(|e| E::custom(format!("{v:?}: {e}")))?;
                if t.timestamp() < 0 {
                    return Err(E::custom("dates before 1970 cannot be encoded"));
                }
                Ok(Deciseconds::from_datetime(t.with_timezone(&Utc)))
            }
        }
        d.deserialize_any(V)
    }
}

/// What a publisher restriction requires of the vendors it names (2 bits).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RestrictionType {
    /// 0: the purpose is not allowed for these vendors.
    NotAllowed,
    /// 1: the vendors need consent for the purpose.
    RequireConsent,
    /// 2: the vendors need legitimate interest for the purpose.
    RequireLi,
    /// 3: undefined by the specification; kept so that decoding loses nothing.
    Undefined,
}

impl RestrictionType {
    pub(crate) fn from_bits(v: u64) -> RestrictionType {
        match v & 3 {
            0 => RestrictionType::NotAllowed,
            1 => RestrictionType::RequireConsent,
            2 => RestrictionType::RequireLi,
            _ => RestrictionType::Undefined,
        }
    }

    pub(crate) fn bits(self) -> u64 {
        match self {
            RestrictionType::NotAllowed => 0,
            RestrictionType::RequireConsent => 1,
            RestrictionType::RequireLi => 2,
            RestrictionType::Undefined => 3,
        }
    }
}

/// One PubRestrictionEntry: a purpose, a restriction type, and the vendors it applies to.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PublisherRestriction {
    /// The purpose restricted (1–24).
    pub purpose_id: u8,
    /// What the restriction requires.
    pub restriction_type: RestrictionType,
    /// The vendors it applies to.
    pub vendors: IdSet,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_set_merges_ranges() {
        let mut s = IdSet::new();
        s.insert_range(10, 12);
        s.insert_range(1, 2);
        s.insert(4);
        s.insert(3);
        assert_eq!(s.ranges().collect::<Vec<_>>(), vec![1..=4, 10..=12]);
        s.insert_range(5, 9);
        assert_eq!(s.ranges().collect::<Vec<_>>(), vec![1..=12]);
        s.insert_range(20, 30);
        s.insert_range(14, 25);
        assert_eq!(s.ranges().collect::<Vec<_>>(), vec![1..=12, 14..=30]);
        s.insert_range(0, 65535);
        assert_eq!(s.ranges().collect::<Vec<_>>(), vec![0..=65535]);
        assert_eq!(s.len(), 65536);
        assert!(s.contains(0) && s.contains(65535));
        let t: IdSet = [5u16, 3, 4, 9, 3].into();
        assert_eq!(t.to_vec(), vec![3, 4, 5, 9]);
        assert!(!t.contains(6) && t.contains(9) && !t.contains(1));
    }

    #[test]
    fn serde_forms() {
        let s: IdSet = [3u16, 1, 2].into();
        assert_eq!(serde_json::to_string(&s).unwrap(), "[1,2,3]");
        assert!(serde_json::from_str::<IdSet>("[0]").is_err());
        let p: PurposeSet = serde_json::from_str("[24,1]").unwrap();
        assert_eq!(p.bits(), 1 | 1 << 23);
        assert!(serde_json::from_str::<PurposeSet>("[65]").is_err());
        let d: Deciseconds = serde_json::from_str("\"2025-06-03T00:00:00Z\"").unwrap();
        assert_eq!(d, Deciseconds(17_489_088_000));
        assert_eq!(
            serde_json::to_string(&d).unwrap(),
            "\"2025-06-03T00:00:00Z\""
        );
        assert_eq!(
            serde_json::from_str::<Deciseconds>("17489088001")
                .unwrap()
                .0,
            17_489_088_001
        );
        assert_eq!(
            serde_json::to_string(&Deciseconds(17_489_088_001)).unwrap(),
            "\"2025-06-03T00:00:00.100Z\""
        );
        let l: Alpha2 = serde_json::from_str("\"fr\"").unwrap();
        assert_eq!(l.to_string(), "FR");
        assert!(serde_json::from_str::<Alpha2>("\"F1\"").is_err());
    }
}
