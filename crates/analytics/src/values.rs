//! [`Values`]: the distinct values of one dimension of a profile (IPs, places, event types),
//! each with what a model keeps of it.
//!
//! A vector sorted by value, grown one slot at a time. A user has a handful of values per
//! dimension; a hash table's buckets and slack were a third of a profile's memory (per user of
//! the anomaly bench: streamguard 987 B with hash maps, 624 B with this; robust 1,206 and
//! 795 B). New values are rare next to lookups, so
//! an insert's shift costs little, and a lookup is a binary search.

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Values and their `T`, sorted by value; a map `{value: T}` when serialized.
#[derive(Clone, Debug, PartialEq)]
pub struct Values<T>(Vec<(Box<str>, T)>);

impl<T> Default for Values<T> {
    fn default() -> Self {
        Values(Vec::new())
    }
}

impl<T> Values<T> {
    fn find(&self, value: &str) -> Result<usize, usize> {
        self.0.binary_search_by(|(k, _)| (**k).cmp(value))
    }

    /// What is kept of `value`, if it was seen.
    pub fn get(&self, value: &str) -> Option<&T> {
        self.find(value).ok().map(|i| &self.0[i].1)
    }

    /// The same, to change.
    pub fn get_mut(&mut self, value: &str) -> Option<&mut T> {
        self.find(value).ok().map(|i| &mut self.0[i].1)
    }

    /// The same values, each with `f` of what was kept.
    pub fn map<U>(self, mut f: impl FnMut(T) -> U) -> Values<U> {
        Values(self.0.into_iter().map(|(k, t)| (k, f(t))).collect())
    }

    /// Adds `value` (not present) with `kept`.
    pub fn insert(&mut self, value: &str, kept: T) -> &mut T {
        let i = self.find(value).unwrap_or_else(|i| i);
        self.0.reserve_exact(1);
        self.0.insert(i, (Box::from(value), kept));
        &mut self.0[i].1
    }

    /// Removes the value whose `key` is least and returns what was kept of it.
    pub fn remove_min_by_key<K: Ord>(&mut self, key: impl Fn(&T) -> K) -> Option<T> {
        let i = (0..self.0.len()).min_by_key(|i| key(&self.0[*i].1))?;
        Some(self.0.remove(i).1)
    }

    /// How many values.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Values and what is kept of them, in value order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &T)> {
        self.0.iter().map(|(k, v)| (&**k, v))
    }

    /// What is kept, to change, in value order.
    pub fn kept_mut(&mut self) -> impl Iterator<Item = &mut T> {
        self.0.iter_mut().map(|(_, v)| v)
    }
}

impl<T: Serialize> Serialize for Values<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.0.iter().map(|(k, v)| (k, v)))
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Values<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let map = std::collections::BTreeMap::<Box<str>, T>::deserialize(d)?;
        Ok(Values(map.into_iter().collect()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_stay_sorted_and_serialize_as_a_map() {
        let mut v = Values::default();
        for (k, n) in [("b", 2), ("a", 1), ("c", 3)] {
            v.insert(k, n);
        }
        *v.get_mut("b").unwrap() += 10;
        assert_eq!(
            v.iter().collect::<Vec<_>>(),
            [("a", &1), ("b", &12), ("c", &3)]
        );
        assert_eq!(v.remove_min_by_key(|n| *n), Some(1));
        let json = serde_json::to_string(&v).unwrap();
        assert_eq!(json, r#"{"b":12,"c":3}"#);
        let back: Values<i32> = serde_json::from_str(r#"{"c":3,"b":12}"#).unwrap();
        assert_eq!(back, v);
        // postcard (the state rows) round-trips too.
        let bytes = postcard::to_allocvec(&v).unwrap();
        assert_eq!(postcard::from_bytes::<Values<i32>>(&bytes).unwrap(), v);
        // Rows written when the values were a hash map read the same.
        let old: std::collections::HashMap<String, i32> =
            [("c".to_owned(), 3), ("b".to_owned(), 12)].into();
        let bytes = postcard::to_allocvec(&old).unwrap();
        assert_eq!(postcard::from_bytes::<Values<i32>>(&bytes).unwrap(), v);
    }
}
