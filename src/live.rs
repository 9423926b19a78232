//! A value a configuration reload replaces while readers keep using the one
//! they took: a reader holds an `Arc` of the value in force when it looked,
//! so a delivery or a request that started before a reload finishes with
//! the settings it started with.

use std::sync::{Arc, RwLock};

#[derive(Debug)]
pub struct Live<T>(Arc<RwLock<Arc<T>>>);

impl<T> Clone for Live<T> {
    fn clone(&self) -> Self {
        Self(self.0.clone())
    }
}

impl<T> Live<T> {
    pub fn new(value: T) -> Self {
        Self(Arc::new(RwLock::new(Arc::new(value))))
    }

    /// The value in force now.
    pub fn current(&self) -> Arc<T> {
        // A writer never panics while holding the lock (it only swaps an
        // Arc), so a poisoned lock still holds a whole value.
        self.0.read().map(|guard| guard.clone()).unwrap_or_else(|poisoned| poisoned.into_inner().clone())
    }

    pub fn replace(&self, value: T) {
        self.replace_arc(Arc::new(value));
    }

    pub fn replace_arc(&self, value: Arc<T>) {
        match self.0.write() {
            Ok(mut guard) => *guard = value,
            Err(poisoned) => *poisoned.into_inner() = value,
        }
    }
}
