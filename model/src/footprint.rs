//! Estimates of the memory a node's tables hold, for the `kasane_table_bytes` metric: enough to
//! tell which table grew, not an allocator's exact count. A hash map is counted by its capacity
//! (hashbrown keeps 1 byte of control per slot and at most 7 of 8 slots full), a vector or
//! deque by its capacity; the heap memory an element owns in turn is left out unless the
//! table's own estimate adds it.

use std::collections::{HashMap, VecDeque};
use std::mem::size_of;

/// The slots of a hash map of `capacity` and their control bytes.
pub fn map_bytes<K, V, S>(map: &HashMap<K, V, S>) -> usize {
    map.capacity() * (size_of::<(K, V)>() + 1) * 8 / 7
}

pub fn deque_bytes<T>(deque: &VecDeque<T>) -> usize {
    deque.capacity() * size_of::<T>()
}

pub fn vec_bytes<T>(vec: &Vec<T>) -> usize {
    vec.capacity() * size_of::<T>()
}
