//! Errors with their causes on one line.
//!
//! Every dml error says what failed in its own message (`cannot read data/list.csv`) and keeps
//! the reason as [`std::error::Error::source`], never both: so a front end prints the chain
//! once, and a library that must turn an error into text (a message inside another error) uses
//! [`chain`] so the reason is not lost.
//!
//! ```
//! use std::io;
//! let err = dml_core::atomic::write_file(std::path::Path::new("/no/such/folder/x"), b"")
//!     .unwrap_err();
//! assert_eq!(err.to_string(), "/no/such/folder/x");
//! assert!(dml_core::error::chain(&err).starts_with("/no/such/folder/x: "));
//! # let _ = io::ErrorKind::NotFound;
//! ```

/// `err`'s message and those of its sources, joined with `: `.
pub fn chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut cause = err.source();
    while let Some(inner) = cause {
        text.push_str(": ");
        text.push_str(&inner.to_string());
        cause = inner.source();
    }
    text
}

#[cfg(test)]
mod tests {
    #[derive(Debug)]
    struct Outer(std::io::Error);

    impl std::fmt::Display for Outer {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("cannot read a.txt")
        }
    }

    impl std::error::Error for Outer {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }

    #[test]
    fn every_cause_once_in_order() {
        let err = Outer(std::io::Error::other("disk on fire"));
        assert_eq!(super::chain(&err), "cannot read a.txt: disk on fire");
    }
}
