//! [`Thin`]: a list behind one pointer, for the per-series lists that are nearly always empty
//! (out-of-order samples, chunks and rollup blocks between two spills). A `Vec` takes 24
//! bytes and a boxed slice 16 in every series' entry; this takes 8 and allocates only when it
//! holds something. Three of them and the out-of-order buffer took a series' entry from 256
//! to 216 bytes (jemalloc's 224-byte class instead of 256: 32 bytes a series).

use std::ops::{Deref, DerefMut};

#[derive(Debug)]
// The box is the point: one pointer in the entry instead of the vector's three words.
#[allow(clippy::box_collection)]
pub(crate) struct Thin<T>(Option<Box<Vec<T>>>);

impl<T> Default for Thin<T> {
    fn default() -> Self {
        Thin(None)
    }
}

impl<T> Deref for Thin<T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        self.0.as_deref().map_or(&[], Vec::as_slice)
    }
}

impl<T> DerefMut for Thin<T> {
    fn deref_mut(&mut self) -> &mut [T] {
        match &mut self.0 {
            Some(v) => v.as_mut_slice(),
            None => &mut [],
        }
    }
}

impl<T> From<Vec<T>> for Thin<T> {
    /// Empty holds nothing; otherwise the vector, shrunk to its length.
    fn from(mut v: Vec<T>) -> Self {
        if v.is_empty() {
            return Thin(None);
        }
        v.shrink_to_fit();
        Thin(Some(Box::new(v)))
    }
}

impl<T> Thin<T> {
    /// The elements as a vector (no copy).
    pub fn into_vec(self) -> Vec<T> {
        self.0.map_or_else(Vec::new, |b| *b)
    }

    /// The vector to change in place (allocated when there is none); [`Thin::tidy`] after.
    pub fn vec_mut(&mut self) -> &mut Vec<T> {
        self.0.get_or_insert_with(Box::default)
    }

    /// Frees the allocation when nothing is left.
    pub fn tidy(&mut self) {
        if self.0.as_ref().is_some_and(|v| v.is_empty()) {
            self.0 = None;
        }
    }

    /// Elements the allocation has room for.
    pub fn capacity(&self) -> usize {
        self.0.as_ref().map_or(0, |v| v.capacity())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_pointer_that_allocates_only_when_it_holds_something() {
        assert_eq!(std::mem::size_of::<Thin<(i64, f64)>>(), 8);
        let mut t: Thin<u32> = Thin::default();
        assert!(t.is_empty() && t.capacity() == 0);
        t.vec_mut().extend([3, 1, 2]);
        t.sort_unstable();
        assert_eq!(&t[..], &[1, 2, 3]);
        t.vec_mut().clear();
        t.tidy();
        assert!(t.0.is_none());
        let t: Thin<u32> = vec![7, 8].into();
        assert_eq!(t.into_vec(), vec![7, 8]);
        assert!(Thin::<u32>::from(Vec::new()).0.is_none());
    }
}
